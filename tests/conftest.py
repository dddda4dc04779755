"""Fixtures shared by the integration and cluster tests: the lab's base image
and a work directory for throwaway test hosts (see tests/lab/hosts.py)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def lab_base() -> Path:
    """The cached base image; built on first use (a few minutes, cold)."""
    from tests.lab import hosts

    missing = hosts.missing_requirements()
    if missing:
        pytest.fail(f"lab tests need {', '.join(missing)} (make test installs them)")
    hosts.cleanup_stale()
    started = time.monotonic()
    base = hosts.ensure_base()
    print(f"\n[lab] base image ready in {time.monotonic() - started:.1f} s")
    return base


@pytest.fixture(scope="session")
def lab_workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where hosts keep their overlay upper dirs; removed after the session."""
    path = Path(os.environ.get("SALT_DJANGO_LAB_WORK", "/var/tmp")) / f"salt-django-lab-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)
