"""Release bookkeeping: where releases are kept and pruned (``django_store``), the
audit log (``django_audit``), and how a failed operation ends (``django_release``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.unit.conftest import Utils, load

django_release = load("_modules/django_release.py")
django_store = load("_modules/django_store.py")
django_audit = load("_modules/django_audit.py")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "srv" / "demo"


@pytest.fixture
def configure_loader_modules(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setattr(django_audit, "AUDIT_ROOT", str(tmp_path / "log"))
    utils = Utils()
    monkeypatch.setattr(utils.module("saltdjango_files"), "LOCK_DIR", str(tmp_path / "run"))
    salt = {
        "saltdjango.project": lambda project: {"keep_releases": 2, "health_timeout": 60},
        "django_manage.project_root": lambda project: str(root),
        "app_slots.slot_releases": lambda project: [],
        "django_static.prune": lambda project: {"releases": [], "files": 0},
        "pillar.get": lambda key, default=None: default,
    }
    salt.update({f"django_store.{name}": getattr(django_store, name) for name in ("current", "is_built", "list_releases", "prune")})
    salt["django_audit.record"] = django_audit.record
    return {module: {"__salt__": salt, "__utils__": utils} for module in (django_release, django_store, django_audit)}


def make_release(root: Path, name: str, built: str, digest: str = "") -> None:
    directory = root / "releases" / name
    directory.mkdir(parents=True)
    marker = {"id": name, "digest": digest or name, "built": built}
    (directory / django_store.MARKER).write_text(json.dumps(marker))


def go_live(root: Path, name: str) -> None:
    link = root / "current"
    if link.is_symlink():
        link.unlink()
    os.symlink(f"releases/{name}", link)


def test_releases_are_listed_in_build_order_and_found_by_digest(root: Path) -> None:
    make_release(root, "r2", "2026-01-02T00:00:00", digest="bbb")
    make_release(root, "r1", "2026-01-01T00:00:00", digest="aaa")
    (root / "releases" / "half-built").mkdir()
    go_live(root, "r2")
    assert django_store.list_releases("demo") == {"releases": ["r1", "r2"], "current": "r2"}
    assert django_store.find("demo", "aaa") == "r1"
    assert django_store.find("demo", "ccc") is None


def test_prune_keeps_the_live_and_the_previous_release(root: Path) -> None:
    for day in range(1, 5):
        make_release(root, f"r{day}", f"2026-01-0{day}T00:00:00")
    go_live(root, "r4")
    assert django_store.prune("demo") == ["r1", "r2"]
    assert sorted(p.name for p in (root / "releases").iterdir()) == ["r3", "r4"]


def test_prune_after_a_rollback_still_keeps_the_live_and_the_one_before(root: Path) -> None:
    for day in range(1, 5):
        make_release(root, f"r{day}", f"2026-01-0{day}T00:00:00")
    go_live(root, "r2")
    assert django_store.prune("demo") == ["r3", "r4"]
    assert django_store.list_releases("demo")["releases"] == ["r1", "r2"]


def test_audit_log_is_appended_and_read_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SALT_DJANGO_TRIGGER", "make release")
    django_audit.record("demo", "release", "ok", 12.34, source="repo@v2", to="r2")
    django_audit.record("demo", "rollback", "failed", 0.01, error="no release")
    entries = django_audit.audit("demo")
    summary = [(e["operation"], e["result"], e["trigger"]) for e in entries]
    assert summary == [("release", "ok", "make release"), ("rollback", "failed", "make release")]
    assert entries[0]["seconds"] == 12.3 and entries[0]["to"] == "r2"


def test_a_refused_rollback_fails_salt_calls_exit_code(root: Path) -> None:
    make_release(root, "r1", "2026-01-01T00:00:00")
    go_live(root, "r1")
    context: dict = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(django_release, "__context__", context, raising=False)
        outcome = django_release.rollback("demo")
    assert outcome["ok"] is False and "no release of demo before r1" in outcome["comment"]
    assert context["retcode"] == 1
