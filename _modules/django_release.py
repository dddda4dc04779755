"""Operations on a Django project's releases: release, prepare, activate,
rollback, restart: build beside the live one (``django_store``), gate,
migrate, switch.

Each operation holds the project's deploy lock, writes one line to the
audit log (``django_audit``) and switches the queue workers
(``django_workers``, no job lost), then the app server with
``app_slots.activate`` (no request dropped).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any

__virtualname__ = "django_release"

log = logging.getLogger(__name__)


class ReleaseError(RuntimeError):
    """A release step failed; the message names the step and the cause."""


def __virtual__() -> str:
    """Stdlib only; builds and the audit log are django_store's and django_audit's."""
    return __virtualname__


def _root(project: str) -> str:
    return __salt__["django_manage.project_root"](project)  # noqa: F821


def _store(function: str) -> Callable[..., Any]:
    """A function of ``django_store``: where releases are kept and built."""
    return __salt__[f"django_store.{function}"]  # noqa: F821


def _record(project: str, operation: str, result: str, seconds: float, **details: Any) -> None:
    __salt__["django_audit.record"](project, operation, result, seconds, **details)  # noqa: F821


def _pillar(key: str, default: Any = None) -> Any:
    return __salt__["pillar.get"](key, default)  # noqa: F821


def _format_issues(issues: list[dict[str, str]]) -> str:
    return "; ".join(f"{i['id']} ({i['level']}): {i['message']}" for i in issues)


def _step(what: str) -> None:
    """Say which step an operation starts: ``make release`` prints these
    info lines as they come (scripts/salt_django.py), a build takes minutes."""
    log.info("salt-django step: %s", what)


def _switch(project: str, rid: str, restart: bool = False) -> dict[str, Any]:
    """Switch this server to ``rid``: its queue workers first (``django_workers``:
    the running jobs finish), then, where it serves requests, blue/green: a
    new slot gets ``health_timeout`` seconds to be healthy, asked with the
    project's first domain as Host. A server that serves no request only
    repoints ``current``. If the slot fails, the workers go back too."""
    mods = __salt__  # noqa: F821
    config = mods["saltdjango.project"](project)
    if config["runs"]["workers"]:
        _step(f"workers: the running jobs finish, then they start on {rid}")
    workers = mods["django_workers.switch"](project, rid, restart=restart)
    if not config["runs"]["web"]:
        __utils__["saltdjango_files.relink"](os.path.join(_root(project), "current"), os.path.join("releases", rid))  # noqa: F821
        return {"release": rid, "workers": workers}
    _step(f"switch to {rid} (a new slot, healthy, then the socket link)")
    host = config["primary_domain"] or "localhost"
    try:
        return {**mods["app_slots.activate"](project, rid, host, timeout=float(config["health_timeout"])), "workers": workers}
    except RuntimeError:
        if workers["changed"] and workers["old"]:
            mods["django_workers.switch"](project, workers["old"])
        raise


def is_live(project: str, release: str) -> bool:
    """True when ``release`` is what this server runs: its serving slot (where
    it serves requests) and its queue workers (where it runs them).

    CLI Example:

    .. code-block:: bash

        salt-call django_release.is_live demo 20261129T040000Z-1a2b3c4
    """
    mods = __salt__  # noqa: F821
    if not mods["django_workers.is_running"](project, release):
        return False
    if mods["saltdjango.project"](project)["runs"]["web"]:
        return bool(mods["app_slots.is_serving"](project, release))
    return _store("current")(project) == release


def _gate(project: str, rid: str, fail_level: str) -> None:
    """Everything a release must pass before it may receive a request."""
    mods = __salt__  # noqa: F821
    _step("check --deploy")
    gate = mods["django_manage.check_deploy"](project, release=rid, fail_level=fail_level)
    if not gate["ok"]:
        raise ReleaseError(f"release {rid} refused by check --deploy: {_format_issues(gate['issues'])}")
    _step("load the WSGI application")
    wsgi = mods["django_manage.wsgi_check"](project, release=rid)
    if not wsgi["ok"]:
        raise ReleaseError(f"release {rid} refused: its WSGI application does not load: {wsgi['error']}")
    _step("collectstatic")
    static = mods["django_manage.collectstatic"](project, release=rid)
    if not static["ok"]:
        raise ReleaseError(f"release {rid}: collectstatic failed: {static['error']}")
    mods["django_static.add"](project, rid)


def _migrate(project: str, rid: str) -> dict[str, Any]:
    """Back up the database, then apply the release's pending migrations."""
    mods = __salt__  # noqa: F821
    _step("pending migrations")
    pending = mods["django_manage.unapplied_migrations"](project, release=rid)
    if not pending["ok"]:
        raise ReleaseError(f"release {rid}: showmigrations failed: {pending['error']}")
    if not pending["migrations"]:
        return {}
    changes: dict[str, Any] = {}
    if "db" in (_pillar("salt_django:roles", []) or []):
        _step("back up the database")
        changes["backup"] = mods["django_db.backup"](project, reason=f"before-{rid}")["file"]
    _step(f"migrate: {', '.join(pending['migrations'])}")
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
        _step(f"{stage} hook {hook['label']!r}")
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
    _step(f"resolve {repo + '@' + (ref or 'HEAD') if repo else source}")
    resolved = _store("resolve")(project, source=source, repo=repo, ref=ref)
    details["source"] = resolved["label"]
    _step(f"build {resolved['label']} (or find it built)")
    built = _store("build")(project, resolved, rid=rid)
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
        _record(project, operation, "failed", time.monotonic() - started, error=str(exc), **details)
        if exit_code:
            __context__["retcode"] = 1  # noqa: F821
        return {"ok": False, "id": details.get("to"), "previous": details.get("from"), "changes": {}, "comment": str(exc)}
    _record(project, operation, "ok", time.monotonic() - started, **details)
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

    Returns ``{"ok", "id", "previous", "changes", "comment"}``.

    CLI Example:

    .. code-block:: bash

        salt-call django_release.release demo repo=https://git.example.org/demo.git ref=v2
        salt-call django_release.release demo source=salt://projects/demo
    """
    previous = _store("current")(project)
    if not repo and not source:
        source = __salt__["saltdjango.project"](project)["source"]  # noqa: F821
    details: dict[str, Any] = {"from": previous, "source": repo or source, "ref": ref}

    def work() -> dict[str, Any]:
        _, changes = _built_and_checked(project, details, source, repo, ref, rid, fail_level, migrate)
        new = details["to"]
        if previous != new or not is_live(project, new):
            ran = _switch_with_hooks(project, new, previous, "all")
            changes["release"] = {"old": previous, "new": new}
            if ran:
                changes["hooks"] = ran
        pruned = _store("prune")(project)
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
    live = _store("current")(project)

    def work() -> dict[str, Any]:
        if not _store("is_built")(project, release):
            raise ReleaseError(f"release {release} of {project} is not built on this server")
        if live == release and is_live(project, release):
            return {"comment": f"release {release} already serves"}
        if hooks:
            _switch_with_hooks(project, release, live, "each")
        else:
            _switch(project, release)
        _store("prune")(project)
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
    live = _store("current")(project)
    details: dict[str, Any] = {"from": live}

    def work() -> dict[str, Any]:
        releases = _store("list_releases")(project)["releases"]
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
    live = _store("current")(project)

    def work() -> dict[str, Any]:
        if live is None:
            raise ReleaseError(f"{project} has no live release to restart")
        try:
            outcome = _switch(project, live, restart=True)
        except OPERATION_ERRORS as exc:
            raise ReleaseError(f"restart of {live} failed, the running processes keep serving: {exc}") from exc
        where = f"in slot {outcome['slot']['new']}" if "slot" in outcome else "(its workers)"
        return {"changes": {"restarted": outcome}, "comment": f"release {live} restarted {where}"}

    return _operation(project, "restart", {"from": live, "to": live}, work)
