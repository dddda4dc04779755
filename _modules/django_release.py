"""Releases of a Django project: build beside the live one, gate, migrate, switch.

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

``release`` and ``rollback`` hold the project's deploy lock, write one line
per operation to the audit log ``/var/log/salt-django/<project>/deploys.log``
(root's: the app user cannot rewrite history) and switch
with ``gunicorn_slots.activate`` (no request dropped).
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
from collections.abc import Callable
from typing import Any

__virtualname__ = "django_release"

MARKER = ".salt-django-release.json"
# Never copied into a release: VCS data, caches, a developer's virtualenv,
# and at the top level the directories that a deploy itself fills.
IGNORED_ANYWHERE = frozenset({".git", "__pycache__", ".venv", "node_modules"})
IGNORED_TOP = frozenset({"venv", "static", "media"})
IGNORED_SUFFIXES = (".pyc", ".pyo", ".sqlite3")
GIT_CACHE = "/var/cache/salt-django/git"
AUDIT_ROOT = "/var/log/salt-django"
_CLEAN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/root", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


class ReleaseError(RuntimeError):
    """A release step failed; the message names the step and the cause."""


def __virtual__() -> str:
    """Stdlib only (git is needed only for git sources)."""
    return __virtualname__


def _root(project: str) -> str:
    return __salt__["django_manage.project_root"](project)  # noqa: F821


def _pillar(key: str, default: Any = None) -> Any:
    return __salt__["pillar.get"](key, default)  # noqa: F821


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
                    raise ReleaseError(f"could not fetch salt://{path}")
                files[relpath] = cached
        if not files:
            raise ReleaseError(f"source {source} has no files")
        return files
    if not os.path.isdir(source):
        raise ReleaseError(f"source {source} is not a directory")
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
        raise ReleaseError(f"git {args[0]} failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
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

        salt-call django_release.resolve demo repo=https://git.example.org/demo.git ref=v2
    """
    if repo:
        mirror = _git_mirror(project, repo)
        commit = _git("rev-parse", "--verify", "--quiet", f"{ref or 'HEAD'}^{{commit}}", cwd=mirror)
        return {"kind": "git", "digest": commit, "label": f"{repo}@{ref or 'HEAD'}", "mirror": mirror, "commit": commit, "ref": ref}
    if not source:
        raise ReleaseError("no source: pass repo (and ref) or source")
    files = _source_files(source)
    return {"kind": "dir", "digest": _tree_digest(files), "label": source, "files": files}


# ------------------------------------------------------------------ layout


def current(project: str) -> str | None:
    """Id of the live release, or None before the first switch.

    CLI Example:

    .. code-block:: bash

        salt-call django_release.current demo
    """
    link = os.path.join(_root(project), "current")
    if not os.path.islink(link):
        return None
    return os.path.basename(os.readlink(link).rstrip("/"))


def is_built(project: str, release: str) -> bool:
    """True when the release directory holds a finished build.

    CLI Example:

    .. code-block:: bash

        salt-call django_release.is_built demo 20261129T040000Z-1a2b3c4
    """
    return os.path.isfile(os.path.join(_root(project), "releases", release, MARKER))


def info(project: str, release: str) -> dict[str, Any]:
    """The completion marker of a release: source, digest, build seconds, time.

    CLI Example:

    .. code-block:: bash

        salt-call django_release.info demo 20261129T040000Z-1a2b3c4
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

        salt-call django_release.list_releases demo
    """
    return {"releases": [m["id"] for m in _markers(project)], "current": current(project)}


def find(project: str, digest: str) -> str | None:
    """The built release of this exact source (commit or content), if any.

    CLI Example:

    .. code-block:: bash

        salt-call django_release.find demo 1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b
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
    python = _pillar("salt_django:python", "/usr/bin/python3")
    index = mods["django_build.pip_args"](_pillar("salt_django:pip", {}))
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


def _build(project: str, resolved: dict[str, Any], rid: str | None = None) -> dict[str, Any]:
    """Build ``resolved`` (see ``resolve``) in ``releases/<id>``; nothing is switched.

    ``rid``: the id to give a new build (a cluster rollout names the same
    code alike on every server); by default ``<UTC time>-<short digest>``.
    Returns ``{"id", "built", "seconds"}``; ``built`` is False when this
    source was built before (under whatever id it got then). A failed build
    removes its directory and raises ReleaseError naming the step.
    """
    existing = find(project, resolved["digest"])
    if existing:
        return {"id": existing, "built": False, "seconds": 0.0}
    mods = __salt__  # noqa: F821
    cfg, app = mods["saltdjango.project"](project), mods["saltdjango.app_settings"]()
    started = time.monotonic()
    now = datetime.datetime.now(datetime.UTC)
    if rid and not (__utils__["saltdjango_releases.is_release_id"](rid) and rid.endswith("-" + resolved["digest"][:7])):  # noqa: F821
        raise ReleaseError(f"release id {rid} does not name this source (digest {resolved['digest'][:7]})")
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
            raise ReleaseError(f"release of {project} not built: {exc}") from None
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


# ------------------------------------------------------------ lock & audit


def _audit_path(project: str) -> str:
    return os.path.join(AUDIT_ROOT, project, "deploys.log")


def record(project: str, operation: str, result: str, seconds: float, **details: Any) -> dict[str, Any]:
    """Append one line to the audit log: when, who, what, from, to, result.

    CLI Example:

    .. code-block:: bash

        salt-call django_release.record demo restart ok 2.5 to=20261129T040000Z-1a2b3c4
    """
    entry = {
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "operation": operation,
        "by": __utils__["saltdjango_files.actor"](),  # noqa: F821
        "trigger": os.environ.get("SALT_DJANGO_TRIGGER", "salt"),
        "result": result,
        "seconds": round(seconds, 1),
        **details,
    }
    path = _audit_path(project)
    os.makedirs(os.path.dirname(path), mode=0o750, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, sort_keys=True) + "\n")
    return entry


def audit(project: str, limit: int = 50) -> list[dict[str, Any]]:
    """The last ``limit`` operations of the audit log, oldest first.

    CLI Example:

    .. code-block:: bash

        salt-call django_release.audit demo
    """
    try:
        with open(_audit_path(project), encoding="utf-8") as handle:
            lines = handle.readlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines[-int(limit) :] if line.strip()]


# --------------------------------------------------------------- operations


def _format_issues(issues: list[dict[str, str]]) -> str:
    return "; ".join(f"{i['id']} ({i['level']}): {i['message']}" for i in issues)


def _switch(project: str, rid: str) -> dict[str, Any]:
    """Blue/green switch to ``rid``; a new slot gets ``health_timeout`` seconds to be
    healthy, asked with the project's first domain as Host."""
    config = __salt__["saltdjango.project"](project)  # noqa: F821
    host = config["primary_domain"] or "localhost"
    return __salt__["gunicorn_slots.activate"](project, rid, host, timeout=float(config["health_timeout"]))  # noqa: F821


def _gate(project: str, rid: str, fail_level: str) -> None:
    """Everything a release must pass before it may receive a request."""
    mods = __salt__  # noqa: F821
    gate = mods["django_manage.check_deploy"](project, release=rid, fail_level=fail_level)
    if not gate["ok"]:
        raise ReleaseError(f"release {rid} refused by check --deploy: {_format_issues(gate['issues'])}")
    wsgi = mods["django_manage.wsgi_check"](project, release=rid)
    if not wsgi["ok"]:
        raise ReleaseError(f"release {rid} refused: its WSGI application does not load: {wsgi['error']}")
    static = mods["django_manage.collectstatic"](project, release=rid)
    if not static["ok"]:
        raise ReleaseError(f"release {rid}: collectstatic failed: {static['error']}")
    mods["django_static.add"](project, rid)


def _migrate(project: str, rid: str) -> dict[str, Any]:
    """Back up the database, then apply the release's pending migrations."""
    mods = __salt__  # noqa: F821
    pending = mods["django_manage.unapplied_migrations"](project, release=rid)
    if not pending["ok"]:
        raise ReleaseError(f"release {rid}: showmigrations failed: {pending['error']}")
    if not pending["migrations"]:
        return {}
    changes: dict[str, Any] = {}
    if "db" in (_pillar("salt_django:roles", []) or []):
        changes["backup"] = mods["django_db.backup"](project, reason=f"before-{rid}")["file"]
    outcome = mods["django_manage.migrate"](project, release=rid)
    if not outcome["ok"]:
        raise ReleaseError(f"release {rid} not switched: migration {outcome['failed']} failed: {outcome['error']}")
    changes["migrations"] = outcome["applied"]
    return changes


def run_hooks(project: str, stage: str, release: str | None = None, scope: str = "all") -> dict[str, Any]:
    """Run the ``before_switch`` or ``after_switch`` hooks of ``release`` as the app user.

    ``scope``: ``all`` (one server), ``once`` (hooks a cluster runs on one
    server per rollout) or ``each`` (hooks marked ``each: true``, run on
    every server). Returns ``{"ok", "ran", "comment"}``; the first failing
    hook stops the rest and its output (secrets masked) is in the comment.

    CLI Example:

    .. code-block:: bash

        salt-call django_release.run_hooks demo after_switch
    """
    mods = __salt__  # noqa: F821
    if stage not in ("before_switch", "after_switch"):
        return {"ok": False, "ran": [], "comment": f"unknown hook stage {stage}: before_switch or after_switch"}
    cfg = mods["saltdjango.project"](project)
    hooks = [mods["saltdjango.hook_command"](item) for item in (cfg.get("hooks") or {}).get(stage) or []]
    ran = []
    for hook in hooks:
        if scope != "all" and hook["each"] != (scope == "each"):
            continue
        if "manage" in hook:
            result = mods["django_manage.run"](project, *hook["manage"], release=release)
        else:
            result = mods["django_manage.command"](project, hook["run"], release=release)
        if result["retcode"] != 0:
            output = "\n".join((result["stderr"].strip() or result["stdout"].strip()).splitlines()[-5:])
            masked = mods["saltdjango.mask_secrets"](output, project)
            comment = f"{stage} hook {hook['label']!r} failed (exit {result['retcode']}): {masked}"
            return {"ok": False, "ran": ran, "comment": comment}
        ran.append(hook["label"])
    return {"ok": True, "ran": ran, "comment": f"{stage} hooks: {', '.join(ran) or 'none'}"}


def _hooks(project: str, stage: str, rid: str, scope: str) -> list[str]:
    outcome = run_hooks(project, stage, rid, scope)
    if not outcome["ok"]:
        raise ReleaseError(f"release {rid} refused: {outcome['comment']}")
    return outcome["ran"]


def _switch_with_hooks(project: str, rid: str, previous: str | None, scope: str) -> list[str]:
    """The ``before_switch`` hooks, the switch to ``rid``, the ``after_switch``
    hooks; a failing after_switch hook switches back to ``previous``."""
    ran = _hooks(project, "before_switch", rid, scope)
    _switch(project, rid)
    try:
        ran += _hooks(project, "after_switch", rid, scope)
    except ReleaseError:
        if previous:
            _switch(project, previous)
        raise
    return ran


def _built_and_checked(
    project: str,
    details: dict[str, Any],
    source: str | None,
    repo: str | None,
    ref: str | None,
    rid: str | None,
    fail_level: str,
    migrate: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Resolve and build (or find) a release, gate it, and migrate if asked.

    Records ``source`` and ``to`` in ``details`` (the audit line). Returns
    the resolved source and the changes (``built``, ``backup``,
    ``migrations``). A new build that is refused is deleted: it never
    served, so it is no rollback target.
    """
    resolved = resolve(project, source=source, repo=repo, ref=ref)
    details["source"] = resolved["label"]
    built = _build(project, resolved, rid=rid)
    rid = details["to"] = built["id"]
    changes: dict[str, Any] = {"built": rid} if built["built"] else {}
    try:
        _gate(project, rid, fail_level)
        if migrate:
            changes.update(_migrate(project, rid))
    except ReleaseError:
        if built["built"]:
            shutil.rmtree(os.path.join(_root(project), "releases", rid), ignore_errors=True)
        raise
    return resolved, changes


#: What an operation's failure raises: said in its result, never a traceback.
OPERATION_ERRORS = (ReleaseError, RuntimeError, OSError, subprocess.CalledProcessError)


def _operation(
    project: str, operation: str, details: dict[str, Any], work: Callable[[], dict[str, Any]], exit_code: bool = True
) -> dict[str, Any]:
    """Run ``work`` as one operation on ``project``: under the deploy lock, with
    one audit line (``details``, as ``work`` leaves them), and one result
    shape: ``{"ok", "id", "previous", "changes", "comment", ...}``. A failure
    is said in ``comment`` and, with ``exit_code``, fails salt-call's exit
    code too, so that scripts and CI that call Salt directly see it (the
    rollout runner reads ``ok`` of the operations it drives)."""
    started = time.monotonic()
    try:
        with __utils__["saltdjango_files.deploy_lock"](project, operation, ReleaseError):  # noqa: F821
            outcome = work()
    except OPERATION_ERRORS as exc:
        record(project, operation, "failed", time.monotonic() - started, error=str(exc), **details)
        if exit_code:
            __context__["retcode"] = 1  # noqa: F821
        return {"ok": False, "id": details.get("to"), "previous": details.get("from"), "changes": {}, "comment": str(exc)}
    record(project, operation, "ok", time.monotonic() - started, **details)
    return {"ok": True, "id": details.get("to"), "previous": details.get("from"), "changes": {}, **outcome}


def release(
    project: str,
    source: str | None = None,
    repo: str | None = None,
    ref: str | None = None,
    migrate: bool = True,
    fail_level: str = "WARNING",
    rid: str | None = None,
) -> dict[str, Any]:
    """Build, gate, migrate and switch to a new release; the live one is untouched on failure.

    ``rid``: the id a new build gets (a cluster names a release alike on every server).
    Without ``repo`` or ``source``: the pillar's ``source``. The
    ``before_switch`` hooks run before the switch, the ``after_switch`` hooks
    after it; a failing after_switch hook switches back to the previous release.

    CLI examples::

        salt-call django_release.release demo repo=/srv/git/demo.git ref=v2
        salt-call django_release.release demo source=salt://projects/demo

    Returns ``{"ok", "id", "previous", "changes", "comment"}``.

    CLI Example:

    .. code-block:: bash

        salt-call django_release.release demo repo=https://git.example.org/demo.git ref=v2
    """
    previous = current(project)
    if not repo and not source:
        source = __salt__["saltdjango.project"](project)["source"]  # noqa: F821
    details: dict[str, Any] = {"from": previous, "source": repo or source, "ref": ref}

    def work() -> dict[str, Any]:
        _, changes = _built_and_checked(project, details, source, repo, ref, rid, fail_level, migrate)
        new = details["to"]
        if previous != new or not __salt__["gunicorn_slots.is_serving"](project, new):  # noqa: F821
            ran = _switch_with_hooks(project, new, previous, "all")
            changes["release"] = {"old": previous, "new": new}
            if ran:
                changes["hooks"] = ran
        pruned = prune(project)
        if pruned:
            changes["pruned"] = pruned
        return {"changes": changes, "comment": f"release {new} is live" if "release" in changes else f"release {new} was already live"}

    return _operation(project, "release", details, work)


def prepare(
    project: str,
    source: str | None = None,
    repo: str | None = None,
    ref: str | None = None,
    release: str | None = None,
    fail_level: str = "WARNING",
) -> dict[str, Any]:
    """Build and gate a release, but neither migrate nor switch: a cluster's
    rollout does those once per cluster and server by server.

    ``release``: the id a new build gets (the id the first server chose).
    Returns ``{"ok", "id", "digest", "built", "comment"}`` (``digest``: the
    commit of a git source); a refused build is deleted.

    CLI Example:

    .. code-block:: bash

        salt app1 django_release.prepare demo repo=/srv/git/demo.git ref=v2
    """
    details: dict[str, Any] = {"source": repo or source, "ref": ref}

    def work() -> dict[str, Any]:
        resolved, changes = _built_and_checked(project, details, source, repo, ref, release, fail_level, migrate=False)
        comment = f"release {details['to']} is built and passed its checks"
        return {"digest": resolved["digest"], "built": "built" in changes, "comment": comment}

    return {"built": False, **_operation(project, "prepare", details, work, exit_code=False)}


def activate(project: str, release: str, hooks: bool = True) -> dict[str, Any]:
    """Serve ``release`` (built before) on this server, no request dropped; no-op if it already serves.

    A rollout calls it server by server once the release is prepared and
    the database migrated; the hooks marked ``each: true`` run here, around
    the switch (``hooks=False``: a rollback runs none). Returns ``{"ok", "id", "previous", "changes", "comment"}``.

    CLI Example:

    .. code-block:: bash

        salt app1 django_release.activate demo 20261127T120000Z-1a2b3c4
    """
    live = current(project)

    def work() -> dict[str, Any]:
        if not is_built(project, release):
            raise ReleaseError(f"release {release} of {project} is not built on this server")
        if live == release and __salt__["gunicorn_slots.is_serving"](project, release):  # noqa: F821
            return {"comment": f"release {release} already serves"}
        if hooks:
            _switch_with_hooks(project, release, live, "each")
        else:
            _switch(project, release)
        prune(project)
        return {"changes": {"release": {"old": live, "new": release}}, "comment": f"release {release} is live"}

    return _operation(project, "activate", {"from": live, "to": release}, work, exit_code=False)


def rollback(project: str, to: str | None = None) -> dict[str, Any]:
    """Switch back to the release before the live one (or to release ``to``).

    The database is not touched: migrations of the newer release stay
    applied. Refuses when there is no earlier release.

    CLI Example:

    .. code-block:: bash

        salt-call django_release.rollback demo
    """
    live = current(project)
    details: dict[str, Any] = {"from": live}

    def work() -> dict[str, Any]:
        releases = list_releases(project)["releases"]
        target = to
        if target is None:
            earlier = releases[: releases.index(live)] if live in releases else []
            if not earlier:
                raise ReleaseError(f"no release of {project} before {live} to roll back to")
            target = earlier[-1]
        elif target not in releases:
            raise ReleaseError(f"release {target} of {project} is not built; built: {', '.join(releases) or 'none'}")
        details["to"] = target
        if target == live:
            raise ReleaseError(f"release {target} is already live")
        _switch(project, target)
        return {"changes": {"release": {"old": live, "new": target}}, "comment": f"rolled back to {target}"}

    return _operation(project, "rollback", details, work)


def restart(project: str) -> dict[str, Any]:
    """Restart the live release in the idle slot, no request dropped (e.g. its env changed).

    CLI Example:

    .. code-block:: bash

        salt-call django_release.restart demo
    """
    live = current(project)

    def work() -> dict[str, Any]:
        if live is None:
            raise ReleaseError(f"{project} has no live release to restart")
        try:
            outcome = _switch(project, live)
        except OPERATION_ERRORS as exc:
            raise ReleaseError(f"restart of {live} failed, the running processes keep serving: {exc}") from exc
        return {"changes": {"restarted": outcome}, "comment": f"release {live} restarted in slot {outcome['slot']['new']}"}

    return _operation(project, "restart", {"from": live, "to": live}, work)


def prune(project: str, keep: int | None = None) -> list[str]:
    """Remove the oldest releases beyond ``keep`` (pillar ``projects:<p>:keep_releases``).

    Never removes the live release, the one a slot still runs, or the
    release before the live one (the rollback target). Then prunes the kept
    static files of earlier releases to their window (``django_static.prune``).

    CLI Example:

    .. code-block:: bash

        salt-call django_release.prune demo keep=3
    """
    keep = int(keep if keep is not None else __salt__["saltdjango.project"](project)["keep_releases"])  # noqa: F821
    listing = list_releases(project)
    releases, live = listing["releases"], listing["current"]
    protected = {live} | {__salt__["gunicorn_slots.slot_release"](project, s) for s in ("a", "b")}  # noqa: F821
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
