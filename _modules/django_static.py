"""Hashed static files of earlier releases, kept so that pages already out there keep their CSS and JS.

Each release collects its static files into its own ``static/``, and Nginx
serves ``/static/`` from the live release first. A page that a browser, a
cache or a CDN still holds names the hashed files of the release that
rendered it; in a cluster rolling a release out, the page and its assets
may even come from servers on different releases. So Nginx falls back to
``/srv/<project>/static-kept/static/``: the hashed files (the names in the
release's ``staticfiles.json``) of every release in the retention window,
hard links into the releases' own trees, so they cost no disk while their
release is on disk.

A release's files are added as soon as it is built and gated (in a cluster
every app server has them before the first one switches). The window
(pillar ``projects:<p>:static:keep``) holds, together: every release still
on disk (any of them may serve again after a rollback), the ``releases``
newest builds, and every release seen live less than ``days`` days ago.
Unhashed names are never kept: they follow the live release.

The index ``static-kept/index.json`` (outside the served tree) records, per
release, its files, when it was built and when it was last seen live.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import posixpath
import shutil
import stat
from typing import Any

__virtualname__ = "django_static"

KEPT_DIR = "static-kept"
MANIFEST = "staticfiles.json"
# Precompressed siblings that Nginx's gzip_static or WhiteNoise may serve.
COMPRESSED = (".gz", ".br")


def __virtual__() -> str:
    """Stdlib only."""
    return __virtualname__


def _root(project: str) -> str:
    return __salt__["django_manage.project_root"](project)  # noqa: F821


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _safe_relpath(name: Any) -> str | None:
    """``name`` as a relative path inside a static tree, or None when it could leave it."""
    if not isinstance(name, str) or not name or "\0" in name or name.startswith("/"):
        return None
    normal = posixpath.normpath(name)
    if normal.startswith("../") or normal in (".", "..") or "/../" in f"/{normal}/":
        return None
    return normal


def _hashed_files(static_dir: str) -> list[str]:
    """The hashed files a release's manifest names (and their compressed siblings).

    The manifest is written by the app user, so each name is checked: only
    regular files inside ``static_dir`` count, never a symlink or a path
    that climbs out.
    """
    try:
        with open(os.path.join(static_dir, MANIFEST), encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError):
        return []
    paths = manifest.get("paths") if isinstance(manifest, dict) else None
    names = set()
    for value in (paths or {}).values() if isinstance(paths, dict) else []:
        relpath = _safe_relpath(value)
        if relpath:
            names.update(relpath + suffix for suffix in ("", *COMPRESSED))
    top = os.path.realpath(static_dir) + "/"
    found = []
    for relpath in sorted(names):
        path = os.path.join(static_dir, relpath)
        try:
            regular = stat.S_ISREG(os.lstat(path).st_mode)
        except OSError:
            continue
        if regular and os.path.realpath(path).startswith(top):
            found.append(relpath)
    return found


def _retained(index: dict[str, dict[str, Any]], on_disk: set[str], keep: dict[str, Any], now: datetime.datetime) -> set[str]:
    """The releases of ``index`` inside the retention window (see the module's docstring)."""
    count = int(keep.get("releases") or 0)
    by_age = sorted(index, key=lambda rid: (index[rid].get("built", ""), rid))
    newest = set(by_age[-count:]) if count > 0 else set()
    horizon = (now - datetime.timedelta(days=float(keep.get("days") or 0))).isoformat()
    recent = {rid for rid, entry in index.items() if entry.get("seen_live") and entry["seen_live"] > horizon}
    return (set(index) & on_disk) | newest | recent


def _kept(project: str) -> str:
    return os.path.join(_root(project), KEPT_DIR)


def _read_index(project: str) -> dict[str, dict[str, Any]]:
    try:
        with open(os.path.join(_kept(project), "index.json"), encoding="utf-8") as handle:
            index = json.load(handle)
    except (OSError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}


def _write_index(project: str, index: dict[str, dict[str, Any]]) -> None:
    path = os.path.join(_kept(project), "index.json")
    __utils__["saltdjango_files.replace"](path, json.dumps(index, sort_keys=True), mode=0o644)  # noqa: F821


def _link(source: str, target: str) -> None:
    """Hard-link ``source`` at ``target`` (a copy across filesystems); an existing target stays."""
    if os.path.lexists(target):
        return
    os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.copy2(source, target, follow_symlinks=False)


def _mark_live(project: str, index: dict[str, dict[str, Any]]) -> None:
    """Note the time on every release that serves now (live, or run by a slot)."""
    mods = __salt__  # noqa: F821
    serving = {mods["django_store.current"](project), *mods["app_slots.slot_releases"](project)}
    stamp = _now().isoformat(timespec="seconds")
    for rid in serving:
        if rid in index:
            index[rid]["seen_live"] = stamp


def add(project: str, release: str) -> dict[str, Any]:
    """Keep the hashed static files of ``release`` (collected before) beside the others'.

    Returns ``{"release", "files", "added"}``: how many files the release
    has, and how many were new to the kept tree.

    CLI Example:

    .. code-block:: bash

        salt-call django_static.add demo 20261127T120000Z-1a2b3c4
    """
    root = _root(project)
    static_dir = os.path.join(root, "releases", release, "static")
    served = os.path.join(_kept(project), "static")
    os.makedirs(served, mode=0o755, exist_ok=True)
    files = _hashed_files(static_dir)
    added = 0
    for relpath in files:
        target = os.path.join(served, relpath)
        if not os.path.lexists(target):
            _link(os.path.join(static_dir, relpath), target)
            added += 1
    index = _read_index(project)
    info = __salt__["django_store.info"](project, release)  # noqa: F821
    index[release] = {**index.get(release, {}), "files": files, "built": info.get("built", "")}
    _mark_live(project, index)
    _write_index(project, index)
    return {"release": release, "files": len(files), "added": added}


def prune(project: str, keep: dict[str, Any] | None = None) -> dict[str, Any]:
    """Forget the releases outside the window and remove the files only they named.

    ``keep``: ``{"releases": N, "days": D}``, by default pillar
    ``projects:<p>:static:keep``. Returns ``{"releases": [...forgotten], "files": removed}``.

    CLI Example:

    .. code-block:: bash

        salt-call django_static.prune demo
    """
    mods = __salt__  # noqa: F821
    keep = keep if keep is not None else mods["saltdjango.project"](project)["static"]["keep"]
    index = _read_index(project)
    if not index:
        return {"releases": [], "files": 0}
    _mark_live(project, index)
    on_disk = set(mods["django_store.list_releases"](project)["releases"])
    window = _retained(index, on_disk, keep, _now())
    forgotten = sorted(set(index) - window)
    wanted = {relpath for rid in window for relpath in index[rid].get("files", [])}
    removed = 0
    served = os.path.join(_kept(project), "static")
    for rid in forgotten:
        for relpath in index.pop(rid).get("files", []):
            path = os.path.join(served, relpath)
            if relpath not in wanted and os.path.lexists(path):
                os.unlink(path)
                removed += 1
                _remove_empty_parents(os.path.dirname(path), served)
    _write_index(project, index)
    return {"releases": forgotten, "files": removed}


def _remove_empty_parents(directory: str, top: str) -> None:
    while directory != top and directory.startswith(top + "/"):
        try:
            os.rmdir(directory)
        except OSError:
            return
        directory = os.path.dirname(directory)
