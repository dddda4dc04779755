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


class Utils(dict):
    """``__utils__`` as Salt's loader gives it: ``"<module>.<function>"`` of
    the tree's ``_utils/``, each module loaded on first use."""

    def __init__(self) -> None:
        super().__init__()
        self.modules: dict[str, ModuleType] = {}

    def module(self, name: str) -> ModuleType:
        """``_utils/<name>.py`` as this ``__utils__`` loaded it (to patch its constants)."""
        if name not in self.modules:
            self.modules[name] = _import(f"_utils/{name}.py")
        return self.modules[name]

    def __missing__(self, key: str) -> object:
        module, _, function = key.partition(".")
        value = getattr(self.module(module), function)
        self[key] = value
        return value


def _import(relpath: str) -> ModuleType:
    name = "salt_django_test_" + relpath.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, ROOT / relpath)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tree_file(url: str) -> str:
    """``cp.get_file_str`` of a ``salt://`` URL: the state tree's file (a ``defaults.yaml``)."""
    return (ROOT / "salt" / url.removeprefix("salt://")).read_text()


#: The fileserver, for ``__salt__`` mappings that a test sets itself.
FILESERVER = {"cp.get_file_str": tree_file}


def load(relpath: str) -> ModuleType:
    """Import ``relpath`` (e.g. ``_modules/saltdjango.py``) as a fresh module,
    with the ``__utils__`` that Salt's loader would give it, and the state
    tree as its fileserver."""
    module = _import(relpath)
    module.__utils__ = Utils()
    module.__salt__ = dict(FILESERVER)
    module.__context__ = {}
    return module
