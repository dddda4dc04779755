"""Load salt-django's loader modules by path, under names that cannot clash
(``_modules/saltdjango.py`` and ``_states/saltdjango.py`` share a name)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load(relpath: str) -> ModuleType:
    """Import ``relpath`` (e.g. ``_modules/saltdjango.py``) as a fresh module."""
    name = "salt_django_test_" + relpath.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, ROOT / relpath)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
