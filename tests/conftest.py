"""Fixtures shared by the integration and cluster tests: the lab's base images
and a work directory for throwaway test hosts (see tests/lab/hosts.py)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


#: The platforms the single-server tests run on: Debian 12 and 13, by suite.
PLATFORMS = {"debian12": "bookworm", "debian13": "trixie"}


@pytest.fixture(scope="session")
def lab_image() -> Callable[[str], Path]:
    """The cached base image of a platform (``debian12``, ``debian13``); built on first use (a few minutes, cold)."""
    from tests.lab import hosts

    missing = hosts.missing_requirements()
    if missing:
        pytest.fail(f"lab tests need {', '.join(missing)} (make test installs them)")
    hosts.cleanup_stale()
    ready: dict[str, Path] = {}

    def image(platform: str) -> Path:
        if platform not in ready:
            started = time.monotonic()
            ready[platform] = hosts.ensure_base(suite=PLATFORMS[platform])
            print(f"\n[lab] {platform} base image ready in {time.monotonic() - started:.1f} s")
        return ready[platform]

    return image


@pytest.fixture(scope="session")
def lab_base(lab_image: Callable[[str], Path]) -> Path:
    """The Debian 12 base image, which most tests use."""
    return lab_image("debian12")


@pytest.fixture(scope="session")
def lab_workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where hosts keep their overlay upper dirs; removed after the session."""
    path = Path(os.environ.get("SALT_DJANGO_LAB_WORK", "/var/tmp")) / f"salt-django-lab-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


#: make test runs two pytest-xdist workers (--dist loadfile: a module never
#: spans two workers, its test hosts are module fixtures), each its own lab
#: session (tests/lab/hosts.py). Each worker takes the next module in this
#: order when it is free (--no-loadscope-reorder): longest first, as last
#: measured (seconds in a cold run), so that the two end together; modules
#: not listed follow in collection order.
LONGEST_FIRST = (
    "tests/cluster/test_cluster_deploy.py",  # 960
    "tests/integration/test_single_server.py",  # 530
    "tests/integration/test_release_lifecycle.py",  # 340
    "tests/integration/test_app_servers.py",
    "tests/integration/test_any_project.py",  # 215
    "tests/integration/test_container_host.py",  # 155
    "tests/cluster/test_make_cluster.py",  # 145
    "tests/integration/test_vagrant_provisioning.py",  # 60
    "tests/cluster/test_frozen_minion.py",  # 45
    "tests/cluster/test_cluster_lab.py",  # 27
    "tests/unit/test_render.py",  # 25
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {module: n for n, module in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


#: Seconds spent per test module (setup, call and teardown), for the budget
#: line at the end of a run: the cold suite must stay under 35 minutes.
_MODULE_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    module = report.nodeid.split("::", 1)[0]
    _MODULE_SECONDS[module] = _MODULE_SECONDS.get(module, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    slow = sorted(((s, m) for m, s in _MODULE_SECONDS.items() if s >= 10), reverse=True)
    if slow:
        terminalreporter.section("seconds per test module")
        for seconds, module in slow:
            terminalreporter.write_line(f"{seconds:8.1f}  {module}")
