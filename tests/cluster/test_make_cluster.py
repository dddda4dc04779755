"""`make cluster` / `make cluster-down`: the README's cluster without a
hypervisor, run exactly as a user types it, from this repository."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.cluster.helpers import DOMAIN
from tests.cluster.traffic import get
from tests.lab.hosts import REPO_ROOT

pytestmark = pytest.mark.slow


def make(target: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SALT_DJANGO_CLUSTER": str(home)}
    return subprocess.run(["make", "-s", target], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1500, check=False)


def test_make_cluster_brings_up_a_serving_cluster_and_cluster_down_removes_it() -> None:
    home = Path("/var/tmp") / f"sdc-{os.getpid()}"
    try:
        up = make("cluster", home)
        assert up.returncode == 0, (up.stdout + up.stderr)[-3000:]
        address = re.search(r"on the load balancer (\S+) ", up.stdout)
        assert address, up.stdout[-2000:]
        page = get(address.group(1), DOMAIN)
        assert page.status == 200 and page.release, page
        again = make("cluster", home)
        assert again.returncode == 0 and "up already" in again.stdout, again.stdout[-1000:]
    finally:
        down = make("cluster-down", home)
    assert down.returncode == 0 and "no cluster left" in down.stdout, (down.stdout + down.stderr)[-2000:]
    mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(home) in line]
    assert not mounts, mounts[:5]
