"""Kept static files of ``_modules/django_static.py``: what is kept, for how long, and what is never trusted."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import pytest

from tests.unit.conftest import Utils, load

django_static = load("_modules/django_static.py")
django_store = load("_modules/django_store.py")

NOW = datetime.datetime(2026, 11, 28, 12, 0, tzinfo=datetime.UTC)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "srv" / "demo"


@pytest.fixture
def keep() -> dict:
    return {"releases": 1, "days": 0}


@pytest.fixture
def configure_loader_modules(root: Path, keep: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    salt: dict = {
        "django_manage.project_root": lambda project: str(root),
        "app_slots.slot_releases": lambda project: [],
        "saltdjango.project": lambda project: {"static": {"keep": keep}, "keep_releases": 2},
    }
    for name in ("current", "info", "list_releases", "prune"):
        salt[f"django_store.{name}"] = getattr(django_store, name)
    for name in ("add", "prune"):
        salt[f"django_static.{name}"] = getattr(django_static, name)
    return {django_store: {"__salt__": salt, "__utils__": Utils()}, django_static: {"__salt__": salt, "__utils__": Utils()}}


def build(root: Path, rid: str, day: int, files: dict[str, str]) -> None:
    """A built release whose collectstatic wrote ``files`` (hashed name -> content) and its manifest."""
    release = root / "releases" / rid
    static = release / "static"
    static.mkdir(parents=True)
    paths = {}
    for hashed, content in files.items():
        (static / hashed).parent.mkdir(parents=True, exist_ok=True)
        (static / hashed).write_text(content)
        paths[hashed.replace(hashed.rsplit(".", 2)[1] + ".", "")] = hashed
    (static / "staticfiles.json").write_text(json.dumps({"paths": paths, "version": "1.1"}))
    (release / django_store.MARKER).write_text(json.dumps({"id": rid, "digest": rid, "built": f"2026-11-{day:02d}T00:00:00"}))
    django_static.add("demo", rid)


def go_live(root: Path, rid: str) -> None:
    link = root / "current"
    if link.is_symlink():
        link.unlink()
    os.symlink(f"releases/{rid}", link)


def kept(root: Path) -> set[str]:
    top = root / "static-kept" / "static"
    return {str(p.relative_to(top)) for p in top.rglob("*") if p.is_file()}


def test_each_built_release_adds_its_hashed_files_as_hard_links(root: Path) -> None:
    build(root, "r1", 1, {"visits/site.aaaaaaaaaaaa.css": "old"})
    build(root, "r2", 2, {"visits/site.bbbbbbbbbbbb.css": "new"})
    assert kept(root) == {"visits/site.aaaaaaaaaaaa.css", "visits/site.bbbbbbbbbbbb.css"}
    original = root / "releases" / "r1" / "static" / "visits" / "site.aaaaaaaaaaaa.css"
    assert os.path.samefile(original, root / "static-kept" / "static" / "visits" / "site.aaaaaaaaaaaa.css")
    assert "staticfiles.json" not in kept(root), "unhashed names follow the live release only"


def test_a_release_pruned_from_disk_and_out_of_the_window_takes_only_its_own_files(root: Path) -> None:
    shared = {"admin/base.cccccccccccc.css": "same in every release"}
    for day, rid in enumerate(["r1", "r2", "r3"], start=1):
        build(root, rid, day, {f"visits/site.{rid * 6}.css": rid, **shared})
        go_live(root, rid)
        django_store.prune("demo")
    assert sorted(os.listdir(root / "releases")) == ["r2", "r3"]
    assert kept(root) == {"visits/site.r2r2r2r2r2r2.css", "visits/site.r3r3r3r3r3r3.css", "admin/base.cccccccccccc.css"}
    assert not (root / "static-kept" / "static" / "visits" / "site.r1r1r1r1r1r1.css").exists()


@pytest.mark.parametrize("keep", [{"releases": 3, "days": 0}])
def test_the_newest_releases_stay_in_the_window_after_their_directories_are_gone(root: Path, keep: dict) -> None:
    for day, rid in enumerate(["r1", "r2", "r3"], start=1):
        build(root, rid, day, {f"visits/site.{rid * 6}.css": rid})
        go_live(root, rid)
        django_store.prune("demo")
    assert "r1" not in os.listdir(root / "releases")
    assert "visits/site.r1r1r1r1r1r1.css" in kept(root)


def test_the_window_keeps_releases_on_disk_the_newest_and_those_live_lately() -> None:
    day = datetime.timedelta(days=1)
    index = {
        "old": {"built": "2026-11-01T00:00:00", "seen_live": (NOW - 30 * day).isoformat()},
        "lately": {"built": "2026-11-02T00:00:00", "seen_live": (NOW - 2 * day).isoformat()},
        "on-disk": {"built": "2026-11-03T00:00:00"},
        "newest": {"built": "2026-11-04T00:00:00"},
    }
    window = django_static._retained(index, {"on-disk"}, {"releases": 1, "days": 7}, NOW)
    assert window == {"lately", "on-disk", "newest"}
    assert django_static._retained(index, set(), {"releases": 0, "days": 0}, NOW) == set()
    assert django_static._retained(index, set(), {"releases": 4, "days": 0}, NOW) == set(index)


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "a/../../b", "", None, 7, "..", "a/\0b"])
def test_names_that_leave_the_static_tree_are_refused(name: object) -> None:
    assert django_static._safe_relpath(name) is None


def test_a_manifest_written_by_the_app_user_cannot_smuggle_files_in(tmp_path: Path) -> None:
    static = tmp_path / "static"
    (static / "visits").mkdir(parents=True)
    (static / "visits" / "site.aaaaaaaaaaaa.css").write_text("ok")
    (tmp_path / "secret").write_text("not static")
    (static / "visits" / "link.bbbbbbbbbbbb.css").symlink_to(tmp_path / "secret")
    (static / "escape").symlink_to(tmp_path)
    paths = {"a": "visits/site.aaaaaaaaaaaa.css", "b": "visits/link.bbbbbbbbbbbb.css", "c": "escape/secret", "d": "../secret"}
    (static / "staticfiles.json").write_text(json.dumps({"paths": paths}))
    assert django_static._hashed_files(str(static)) == ["visits/site.aaaaaaaaaaaa.css"]
    (static / "staticfiles.json").write_text("[not a manifest")
    assert django_static._hashed_files(str(static)) == []
