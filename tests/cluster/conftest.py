"""Fixtures of the multi-host cluster tests: a salt-master on this machine
plus minion hosts on a private bridge (tests/lab/cluster.py).

Every test under tests/cluster is marked ``cluster`` and ``lab``. Tests get
clusters from the module-scoped factory :func:`make_cluster`; a cluster lives
until the end of its test module (or an explicit ``down()``) and its teardown
is guaranteed, with a leak check.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.lab import hosts as lab
from tests.lab.cluster import Cluster, ensure_minion_layer, minion_layer_key

HERE = Path(__file__).resolve().parent
_numbers = itertools.count(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.cluster)
            item.add_marker(pytest.mark.lab)


def timing(what: str, seconds: float) -> None:
    """A timing line in the test output (shown with -s)."""
    print(f"\n[lab timing] {what}: {seconds:.1f}s", flush=True)


@pytest.fixture(scope="session")
def minion_layer(lab_base: Path) -> Path:
    """The cached minion layer (Salt venv + salt-minion.service) over the base image."""
    cold = not (lab_base.parent / f"minion-{minion_layer_key()}").is_dir()
    started = time.monotonic()
    layer = ensure_minion_layer(lab_base, lab_base.parent)
    timing(f"minion layer {'cold build' if cold else 'ready (cached)'}", time.monotonic() - started)
    return layer


MakeCluster = Callable[..., Cluster]


@pytest.fixture(scope="module")
def make_cluster(lab_base: Path, minion_layer: Path, lab_workdir: Path) -> Iterator[MakeCluster]:
    """Factory: ``make_cluster(hosts, file_roots=(), pillar_roots=(), master_opts=None, minion_files=None)``
    returns a cluster that is up (every minion connected). All clusters made
    are torn down at the end of the module, then nothing of them may be left
    on the machine (mounts, cgroups, netns, links, processes)."""
    before = {kind: set(map(str, found)) for kind, found in lab.session_resources().items()}
    made: list[Cluster] = []

    def make(
        hosts: Mapping[str, str | None] | Sequence[str],
        file_roots: Sequence[Path] = (),
        pillar_roots: Sequence[Path] = (),
        master_opts: Mapping[str, Any] | None = None,
        minion_files: Mapping[str, str] | None = None,
    ) -> Cluster:
        cluster = Cluster(
            lab_workdir / f"cluster-{next(_numbers)}",
            hosts,
            file_roots,
            pillar_roots,
            master_opts,
            minion_files=minion_files,
            base=lab_base,
            layer=minion_layer,
        )
        made.append(cluster)
        cluster.up()
        return cluster

    yield make

    errors = []
    for cluster in reversed(made):
        started = time.monotonic()
        try:
            cluster.down()
        except lab.LabError as exc:
            errors.append(str(exc))
        timing("cluster down", time.monotonic() - started)
    after = {kind: set(map(str, found)) for kind, found in lab.session_resources().items()}
    left = {kind: sorted(found - before.get(kind, set())) for kind, found in after.items() if found - before.get(kind, set())}
    masters = [c.master_dir for c in made if c._master is not None]
    assert not errors, "\n".join(errors)
    assert not left, f"cluster teardown left behind: {left}"
    assert not masters, f"salt-master still running for {masters}"
