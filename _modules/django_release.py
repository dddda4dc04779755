"""Build releases of a Django project beside the live one (switching is gunicorn_slots' job).

Layout (see DESIGN.md)::

    /srv/<project>/releases/<id>/   code + its own virtualenv (built as root,
                                    read-only for the app user)
    /srv/<project>/current          symlink to releases/<id>, replaced by rename

A release id is derived from the content of the source, so applying the same
source twice finds the release already built: that is what makes a second
``state.apply`` a no-op. A directory without the completion marker is a
build that died half-way and is rebuilt from scratch.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import subprocess
import time
from typing import Any

__virtualname__ = "django_release"

MARKER = ".salt-django-release.json"
# Never copied into a release: VCS data, caches, a developer's virtualenv,
# and at the top level the directories that a deploy itself fills.
IGNORED_ANYWHERE = frozenset({".git", "__pycache__", ".venv", "node_modules"})
IGNORED_TOP = frozenset({"venv", "static", "media"})
IGNORED_SUFFIXES = (".pyc", ".pyo", ".sqlite3")


def __virtual__() -> str:
    """Stdlib only."""
    return __virtualname__


def _root(project: str) -> str:
    return __salt__["django_manage.project_root"](project)  # noqa: F821


def _wanted(relpath: str) -> bool:
    parts = relpath.split("/")
    if IGNORED_ANYWHERE.intersection(parts) or relpath.endswith(IGNORED_SUFFIXES):
        return False
    return len(parts) == 1 or parts[0] not in IGNORED_TOP


def source_files(source: str, saltenv: str = "base") -> dict[str, str]:
    """Map each file of the source to a local path: ``salt://dir`` or a local dir.

    For ``salt://`` the list comes from the fileserver, not from the minion's
    cache, so a file deleted upstream never lingers in a new release.
    """
    if source.startswith("salt://"):
        prefix = source[len("salt://") :].strip("/") + "/"
        listed = [f for f in __salt__["cp.list_master"](saltenv=saltenv, prefix=prefix) if f.startswith(prefix)]  # noqa: F821
        files = {}
        for path in listed:
            relpath = path[len(prefix) :]
            if _wanted(relpath):
                cached = __salt__["cp.cache_file"](f"salt://{path}", saltenv=saltenv)  # noqa: F821
                if not cached:
                    raise RuntimeError(f"could not fetch salt://{path}")
                files[relpath] = cached
        if not files:
            raise RuntimeError(f"source {source} has no files")
        return files
    if not os.path.isdir(source):
        raise RuntimeError(f"source {source} is not a directory")
    files = {}
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_ANYWHERE)
        for filename in filenames:
            full = os.path.join(dirpath, filename)
            relpath = os.path.relpath(full, source)
            if _wanted(relpath) and os.path.isfile(full):
                files[relpath] = full
    return files


def tree_digest(files: dict[str, str]) -> str:
    """SHA-256 over the relative paths and contents of a file tree."""
    digest = hashlib.sha256()
    for relpath in sorted(files):
        digest.update(relpath.encode() + b"\0")
        with open(files[relpath], "rb") as handle:
            digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()


def release_id(source: str, saltenv: str = "base") -> str:
    """The id a build of ``source`` gets: ``src-`` and 12 hex digits of its digest."""
    return "src-" + tree_digest(source_files(source, saltenv))[:12]


def current(project: str) -> str | None:
    """Id of the live release, or None before the first switch."""
    link = os.path.join(_root(project), "current")
    if not os.path.islink(link):
        return None
    return os.path.basename(os.readlink(link).rstrip("/"))


def is_built(project: str, release: str) -> bool:
    """True when the release directory holds a finished build."""
    return os.path.isfile(os.path.join(_root(project), "releases", release, MARKER))


def info(project: str, release: str) -> dict[str, Any]:
    """The completion marker of a release: source, digest, build seconds."""
    with open(os.path.join(_root(project), "releases", release, MARKER), encoding="utf-8") as handle:
        return json.load(handle)


def list_releases(project: str) -> dict[str, Any]:
    """Built releases (oldest first) and the live one."""
    directory = os.path.join(_root(project), "releases")
    names = [n for n in os.listdir(directory) if is_built(project, n)] if os.path.isdir(directory) else []
    names.sort(key=lambda n: os.path.getmtime(os.path.join(directory, n, MARKER)))
    return {"releases": names, "current": current(project)}


def pip_args(pip: dict[str, Any] | None) -> list[str]:
    """pip options from pillar ``salt_django:pip``: a local index or wheelhouse."""
    pip = pip or {}
    args = []
    if pip.get("index_url"):
        args += ["--index-url", str(pip["index_url"])]
    for link in pip.get("find_links") or []:
        args += ["--find-links", str(link)]
    if pip.get("no_index"):
        args.append("--no-index")
    return args


def _run(cmd: list[str], cwd: str, step: str) -> None:
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/root", "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"{step} failed (exit {proc.returncode}): {tail}")


def build(
    project: str,
    source: str,
    python: str = "/usr/bin/python3",
    pip: dict[str, Any] | None = None,
    saltenv: str = "base",
) -> dict[str, Any]:
    """Copy the source and build its virtualenv in ``releases/<id>``; not switched.

    Returns ``{"id", "built"}``; ``built`` is False when the release already
    existed. A failed build removes its directory and raises.
    """
    files = source_files(source, saltenv)
    rid = "src-" + tree_digest(files)[:12]
    if is_built(project, rid):
        return {"id": rid, "built": False}
    started = time.monotonic()
    directory = os.path.join(_root(project), "releases", rid)
    shutil.rmtree(directory, ignore_errors=True)
    try:
        for relpath, path in files.items():
            target = os.path.join(directory, relpath)
            os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
            shutil.copyfile(path, target)
            os.chmod(target, 0o644)
        _run([python, "-m", "venv", os.path.join(directory, "venv")], directory, "virtualenv")
        requirements = os.path.join(directory, "requirements.txt")
        if os.path.exists(requirements):
            _run(
                [
                    os.path.join(directory, "venv", "bin", "pip"),
                    "install",
                    "--quiet",
                    "--cache-dir",
                    "/var/cache/salt-django/pip",
                    *pip_args(pip),
                    "-r",
                    requirements,
                ],
                directory,
                "pip install -r requirements.txt",
            )
        _run([os.path.join(directory, "venv", "bin", "python"), "-m", "compileall", "-q", "-x", r"/venv/", "."], directory, "compileall")
        static = os.path.join(directory, "static")
        os.makedirs(static, exist_ok=True)
        account = pwd.getpwnam(__salt__["django_manage.app_user"](project))  # noqa: F821
        os.chown(static, account.pw_uid, account.pw_gid)
        with open(os.path.join(directory, MARKER), "w", encoding="utf-8") as handle:
            json.dump({"id": rid, "source": source, "seconds": round(time.monotonic() - started, 1)}, handle)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return {"id": rid, "built": True}
