"""Load salt-django's loader modules by path, under names that cannot clash
(``_modules/saltdjango.py`` and ``_states/saltdjango.py`` share a name)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
#: Seconds a unit test may take: the slowest needs about 10 (rendering every
#: state tree); the suite's 20 minutes are for lab tests, a hung unit test fails in 2.
UNIT_TIMEOUT = 120


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(UNIT_TIMEOUT))


def load(relpath: str) -> ModuleType:
    """Import ``relpath`` (e.g. ``_modules/saltdjango.py``) as a fresh module."""
    name = "salt_django_test_" + relpath.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, ROOT / relpath)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
