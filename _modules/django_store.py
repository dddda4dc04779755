"""Where a Django project's releases are kept, and how one is built.

Layout (see README.md, "On the server")::

    /srv/<project>/releases/<id>/   code (built as root, read-only for the app
                                    user); venv -> ../../venvs/<key>
    /srv/<project>/venvs/<key>/     one virtualenv per distinct requirements file
    /srv/<project>/current          symlink to the live release

A release id says what was deployed and when: ``<UTC time>-<short commit>``
for a git source, ``<UTC time>-<short content hash>`` for a directory. A
source already built (same commit or same content) is never rebuilt, which
is what makes a second ``state.apply`` a no-op. A directory without the
completion marker is a build that died half-way and is rebuilt.

Nothing here switches what serves: ``django_release`` does, with these.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from typing import Any

__virtualname__ = "django_store"

MARKER = ".salt-django-release.json"
# Never copied into a release: VCS data, caches, a developer's virtualenv,
# and at the top level the directories that a deploy itself fills.
IGNORED_ANYWHERE = frozenset({".git", "__pycache__", ".venv", "node_modules"})
IGNORED_TOP = frozenset({"venv", "static", "media"})
IGNORED_SUFFIXES = (".pyc", ".pyo", ".sqlite3")
GIT_CACHE = "/var/cache/salt-django/git"
_CLEAN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/root", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


class StoreError(RuntimeError):
    """A source could not be read or a build failed; the message names the step and the cause."""


def __virtual__() -> str:
    """Stdlib only (git is needed only for git sources)."""
    return __virtualname__


def _root(project: str) -> str:
    return __salt__["django_manage.project_root"](project)  # noqa: F821


# ----------------------------------------------------------------- sources


def _wanted(relpath: str) -> bool:
    parts = relpath.split("/")
    if IGNORED_ANYWHERE.intersection(parts) or relpath.endswith(IGNORED_SUFFIXES):
        return False
    return len(parts) == 1 or parts[0] not in IGNORED_TOP


def _source_files(source: str, saltenv: str = "base") -> dict[str, str]:
    """Map each file of a ``salt://`` or local directory to a local path.

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
                    raise StoreError(f"could not fetch salt://{path}")
                files[relpath] = cached
        if not files:
            raise StoreError(f"source {source} has no files")
        return files
    if not os.path.isdir(source):
        raise StoreError(f"source {source} is not a directory")
    files = {}
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_ANYWHERE)
        for filename in filenames:
            full = os.path.join(dirpath, filename)
            relpath = os.path.relpath(full, source)
            if _wanted(relpath) and os.path.isfile(full):
                files[relpath] = full
    return files


def _tree_digest(files: dict[str, str]) -> str:
    """SHA-256 over the relative paths and contents of a file tree."""
    digest = hashlib.sha256()
    for relpath in sorted(files):
        digest.update(relpath.encode() + b"\0")
        with open(files[relpath], "rb") as handle:
            digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()


def _git(*args: str, cwd: str | None = None) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False, env=_CLEAN_ENV)
    if proc.returncode != 0:
        raise StoreError(f"git {args[0]} failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    return proc.stdout.strip()


def _git_mirror(project: str, repo: str) -> str:
    """A bare mirror of ``repo`` in the minion's cache, fetched now."""
    mirror = os.path.join(GIT_CACHE, project, hashlib.sha256(repo.encode()).hexdigest()[:16] + ".git")
    if os.path.isdir(mirror):
        _git("fetch", "--prune", "--tags", "--force", "origin", "+refs/heads/*:refs/heads/*", cwd=mirror)
    else:
        os.makedirs(os.path.dirname(mirror), mode=0o700, exist_ok=True)
        _git("clone", "--quiet", "--mirror", repo, mirror)
    return mirror


def resolve(project: str, source: str | None = None, repo: str | None = None, ref: str | None = None) -> dict[str, Any]:
    """What a release would be built from: ``{"kind", "digest", "label", ...}``.

    ``repo`` + ``ref``: a git repository (path or URL) at a branch, tag or
    commit; the digest is the commit. Otherwise ``source``: a ``salt://`` or
    local directory; the digest is a hash of its content.

    CLI Example:

    .. code-block:: bash

        salt-call django_store.resolve demo repo=https://git.example.org/demo.git ref=v2
    """
    if repo:
        mirror = _git_mirror(project, repo)
        commit = _git("rev-parse", "--verify", "--quiet", f"{ref or 'HEAD'}^{{commit}}", cwd=mirror)
        return {"kind": "git", "digest": commit, "label": f"{repo}@{ref or 'HEAD'}", "mirror": mirror, "commit": commit, "ref": ref}
    if not source:
        raise StoreError("no source: pass repo (and ref) or source")
    files = _source_files(source)
    return {"kind": "dir", "digest": _tree_digest(files), "label": source, "files": files}


# ------------------------------------------------------------------ layout


def current(project: str) -> str | None:
    """Id of the live release, or None before the first switch.

    CLI Example:

    .. code-block:: bash

        salt-call django_store.current demo
    """
    link = os.path.join(_root(project), "current")
    if not os.path.islink(link):
        return None
    return os.path.basename(os.readlink(link).rstrip("/"))


def is_built(project: str, release: str) -> bool:
    """True when the release directory holds a finished build.

    CLI Example:

    .. code-block:: bash

        salt-call django_store.is_built demo 20261129T040000Z-1a2b3c4
    """
    return os.path.isfile(os.path.join(_root(project), "releases", release, MARKER))


def info(project: str, release: str) -> dict[str, Any]:
    """The completion marker of a release: source, digest, build seconds, time.

    CLI Example:

    .. code-block:: bash

        salt-call django_store.info demo 20261129T040000Z-1a2b3c4
    """
    with open(os.path.join(_root(project), "releases", release, MARKER), encoding="utf-8") as handle:
        return json.load(handle)


def _markers(project: str) -> list[dict[str, Any]]:
    """The completion markers of all built releases, oldest first (each file read once)."""
    directory = os.path.join(_root(project), "releases")
    names = [n for n in os.listdir(directory) if is_built(project, n)] if os.path.isdir(directory) else []
    markers = [{**info(project, name), "id": name} for name in names]
    return sorted(markers, key=lambda m: (m.get("built", ""), m["id"]))


def list_releases(project: str) -> dict[str, Any]:
    """Built releases, oldest first, and the live one.

    CLI Example:

    .. code-block:: bash

        salt-call django_store.list_releases demo
    """
    return {"releases": [m["id"] for m in _markers(project)], "current": current(project)}


def find(project: str, digest: str) -> str | None:
    """The built release of this exact source (commit or content), if any.

    CLI Example:

    .. code-block:: bash

        salt-call django_store.find demo 1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b
    """
    return next((m["id"] for m in _markers(project) if m.get("digest") == digest), None)


# ------------------------------------------------------------------- build


def _materialize(resolved: dict[str, Any], directory: str) -> None:
    if resolved["kind"] == "git":
        with tempfile.TemporaryFile() as archive:
            subprocess.run(["git", "archive", resolved["commit"]], cwd=resolved["mirror"], stdout=archive, check=True, env=_CLEAN_ENV)
            archive.seek(0)
            subprocess.run(["tar", "-x", "-C", directory, "--no-same-owner"], stdin=archive, check=True)
        return
    for relpath, path in resolved["files"].items():
        target = os.path.join(directory, relpath)
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        shutil.copyfile(path, target)
        os.chmod(target, 0o644)


def _virtualenv(project: str, release_dir: str, cfg: dict[str, Any], app: dict[str, Any]) -> str:
    """``venvs/<key>``, built once per distinct set of dependencies and shared.

    A virtualenv is not relocatable (absolute paths in its scripts), so it
    is built where it stays; releases link to it. A release that changes
    only code therefore costs no virtualenv at all.
    """
    mods = __salt__  # noqa: F821
    deps = mods["django_build.plan"](release_dir, cfg.get("requirements"))
    python = app["python"]
    index = mods["django_build.pip_args"](app["pip"])
    installer = f"uv {app['uv_version']}" if app["installer"] == "uv" else "pip"
    additions = mods["django_build.additions"](cfg)
    version = mods["django_build.python_version"](python)
    python_info = f"{python} {version}"
    key = mods["django_build.venv_key"](python_info, deps, installer, json.dumps(additions), index)
    venv = os.path.join(_root(project), "venvs", key)
    if os.path.isfile(os.path.join(venv, MARKER)):
        return key
    shutil.rmtree(venv, ignore_errors=True)
    settings = {
        "python": python,
        "version": version,
        "installer": app["installer"],
        "uv": os.path.join(app["tools_dir"], "bin", "uv"),
        "index": index,
        "user": app["build_user"],
        "home": app["build_home"],
        "additions": additions,
    }
    try:
        mods["django_build.install"](venv, release_dir, deps, settings)
        mods["django_build.seal"](venv)
        with open(os.path.join(venv, MARKER), "w", encoding="utf-8") as handle:
            json.dump({"key": key, "dependencies": deps["kind"], "entry": deps["entry"], "files": sorted(deps["files"])}, handle)
    except BaseException:
        shutil.rmtree(venv, ignore_errors=True)
        raise
    return key


def _build_steps(project: str, directory: str, cfg: dict[str, Any], app: dict[str, Any]) -> None:
    """compileall and the build hooks, as the build user, in the release tree.

    Build hooks see the app's environment with every secret replaced by a
    throwaway value: a build never needs (and never gets) production secrets.
    """
    mods = __salt__  # noqa: F821
    user = app["build_user"]
    python = os.path.join(directory, "venv", "bin", "python")
    compile_env = mods["django_build.build_env"](app["build_home"])
    mods["django_build.run_as"](user, [python, "-m", "compileall", "-q", "-x", r"/venv/", "."], directory, "compileall", compile_env)
    env = mods["django_build.build_env"](app["build_home"], mods["django_manage.masked_env"](project, directory))
    for item in (cfg.get("hooks") or {}).get("build") or []:
        hook = mods["saltdjango.hook_command"](item)
        argv = mods["django_build.hook_argv"](hook, cfg["manage_py"], python)
        mods["django_build.run_as"](user, argv, directory, f"build hook {hook['label']!r}", env=env)


def build(project: str, resolved: dict[str, Any], rid: str | None = None) -> dict[str, Any]:
    """Build ``resolved`` (see ``resolve``) in ``releases/<id>``; nothing is switched.

    ``rid``: the id to give a new build (a cluster rollout names the same
    code alike on every server); by default ``<UTC time>-<short digest>``.
    Returns ``{"id", "built", "seconds"}``; ``built`` is False when this
    source was built before (under whatever id it got then). A failed build
    removes its directory and raises StoreError naming the step.

    CLI Example:

    .. code-block:: bash

        salt-call django_store.build demo "$(salt-call --out=json django_store.resolve demo source=salt://projects/demo)"
    """
    mods = __salt__  # noqa: F821
    cfg, app = mods["saltdjango.project"](project), mods["saltdjango.app_settings"]()
    server = cfg["app_server"]
    # A build of this source for another app server (the kind changed) is not this release.
    for existing in reversed([m["id"] for m in _markers(project) if m.get("digest") == resolved["digest"]]):
        venv = os.path.join(_root(project), "releases", existing, "venv")
        if not server["module"] or mods["django_build.importable"](venv, [server["module"]]):
            return {"id": existing, "built": False, "seconds": 0.0}
    started = time.monotonic()
    now = datetime.datetime.now(datetime.UTC)
    if rid and not (__utils__["saltdjango_releases.is_release_id"](rid) and rid.endswith("-" + resolved["digest"][:7])):  # noqa: F821
        raise StoreError(f"release id {rid} does not name this source (digest {resolved['digest'][:7]})")
    if rid and is_built(project, rid):
        raise StoreError(f"release {rid} exists, built for another app server than {server['kind']}: release a new commit")
    rid = rid or f"{now:%Y%m%dT%H%M%SZ}-{resolved['digest'][:7]}"
    directory = os.path.join(_root(project), "releases", rid)
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory, mode=0o755)
    try:
        _materialize(resolved, directory)
        # The build user owns the tree while it builds (a local package's
        # setup.py writes beside itself); root owns it from then on.
        mods["django_build.hand_to"](app["build_user"], directory)
        try:
            key = _virtualenv(project, directory, cfg, app)
            os.symlink(os.path.join("..", "..", "venvs", key), os.path.join(directory, "venv"))
            _build_steps(project, directory, cfg, app)
        except RuntimeError as exc:
            raise StoreError(f"release of {project} not built: {exc}") from None
        finally:
            mods["django_build.seal"](directory)
        static = os.path.join(directory, "static")
        os.makedirs(static, exist_ok=True)
        account = pwd.getpwnam(cfg["user"])
        os.chown(static, account.pw_uid, account.pw_gid)
        seconds = round(time.monotonic() - started, 1)
        marker = {
            "id": rid,
            "digest": resolved["digest"],
            "source": resolved["label"],
            "venv": key,
            "seconds": seconds,
            "built": now.isoformat(),
        }
        with open(os.path.join(directory, MARKER), "w", encoding="utf-8") as handle:
            json.dump(marker, handle)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return {"id": rid, "built": True, "seconds": seconds}


# ------------------------------------------------------------------ prune


def prune(project: str, keep: int | None = None) -> list[str]:
    """Remove the oldest releases beyond ``keep`` (pillar ``projects:<p>:keep_releases``).

    Never removes the live release, the one a slot still runs, or the
    release before the live one (the rollback target). Then prunes the kept
    static files of earlier releases to their window (``django_static.prune``).

    CLI Example:

    .. code-block:: bash

        salt-call django_store.prune demo keep=3
    """
    keep = int(keep if keep is not None else __salt__["saltdjango.project"](project)["keep_releases"])  # noqa: F821
    listing = list_releases(project)
    releases, live = listing["releases"], listing["current"]
    protected = {live, *__salt__["app_slots.slot_releases"](project)}  # noqa: F821
    if live in releases and releases.index(live) > 0:
        protected.add(releases[releases.index(live) - 1])
    removable = [r for r in releases if r not in protected]
    excess = max(len(releases) - max(keep, 2), 0)
    removed = removable[:excess]
    for name in removed:
        shutil.rmtree(os.path.join(_root(project), "releases", name), ignore_errors=True)
    in_use = {m.get("venv") for m in _markers(project)}
    venvs = os.path.join(_root(project), "venvs")
    for key in os.listdir(venvs) if os.path.isdir(venvs) else []:
        if key not in in_use:
            shutil.rmtree(os.path.join(venvs, key), ignore_errors=True)
    __salt__["django_static.prune"](project)  # noqa: F821
    return removed
