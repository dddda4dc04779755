"""Today's Django on today's Debian: a Django 6 ``startproject`` deploys on
Debian 13 (Python 3.13) and is refused early on Debian 12 (Python 3.11),
naming both Pythons, while the demo beside it keeps being served.

The project (tests/projects/sixsite) is what Django 6.1.3's ``startproject``
wrote, plus a requirements.txt; it deploys by pillar only (no Gunicorn, no
/healthz, its own settings: DEBUG on, SQLite).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import PLATFORMS
from tests.integration.helpers import DOMAIN, REPO_IN_HOST, fetch, make, repo_host
from tests.lab.hosts import Host

pytestmark = [pytest.mark.lab, pytest.mark.slow]

PILLAR = {"projects": {"sixsite": {"domains": ["sixsite.localhost"], "source": f"{REPO_IN_HOST}/tests/projects/sixsite"}}}


@pytest.fixture(scope="module", params=sorted(PLATFORMS))
def host(request: pytest.FixtureRequest, lab_image: Callable[[str], Path], lab_workdir: Path) -> Iterator[Host]:
    with repo_host(f"six{request.param[-2:]}", lab_image(request.param), lab_workdir, local_pillar=yaml.safe_dump(PILLAR)) as server:
        started = time.monotonic()
        server.first_deploy = make(server, check=False)  # type: ignore[attr-defined]
        server.platform = request.param  # type: ignore[attr-defined]
        print(f"\n[{request.param}] fresh make deploy (demo + Django 6 startproject): {time.monotonic() - started:.1f} s")
        yield server


def python_version(host: Host) -> str:
    return host.run(["/usr/bin/python3", "-c", "import platform; print(platform.python_version())"]).stdout.strip()


def test_django6_deploys_on_debian13_and_is_refused_on_debian12_naming_both_pythons(host: Host) -> None:
    first = host.first_deploy  # type: ignore[attr-defined]
    demo = fetch(host, f"https://{DOMAIN}/")
    assert demo.status == 200, "the demo is served whatever happens to the other project"
    if host.platform == "debian12":  # type: ignore[attr-defined]
        assert first.returncode != 0
        assert python_version(host) in first.output and ">=3.12" in first.output, first.output[-3000:]
        assert not host.path("/srv/sixsite/current").exists(), "nothing of the refused project is live"
        return
    assert first.returncode == 0 and first.failed == 0, first.output[-4000:]
    assert python_version(host).startswith("3.13")
    assert fetch(host, "https://sixsite.localhost/admin/login/", domain="sixsite.localhost").status == 200
    health = fetch(host, "http://sixsite.localhost/healthz", domain="sixsite.localhost")
    assert health.status == 200 and json.loads(health.body)["checks"] == {"database": "ok", "cache": "ok"}
    assert "django-6.1.3.dist-info" in host.run("ls /srv/sixsite/current/venv/lib/python3.13/site-packages").stdout


def test_second_deploy_changes_nothing_on_debian13(host: Host) -> None:
    if host.platform == "debian12":  # type: ignore[attr-defined]
        pytest.skip("Debian 12 refuses the project: see the test above")
    started = time.monotonic()
    second = make(host)
    print(f"\n[{host.platform}] no-op make deploy: {time.monotonic() - started:.1f} s")  # type: ignore[attr-defined]
    assert (second.changed, second.failed) == (0, 0), second.output[-3000:]
