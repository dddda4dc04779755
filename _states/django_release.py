"""States for the release of a Django project.

``deployed`` hands the whole release (build, gate, backup, migrate,
zero-downtime switch) to ``django_release.release``, the same code path as
the ``make release`` and ``make rollback`` commands. It releases the pillar's
source when that source changed since the last apply that released it, so
that an apply does not undo a release or rollback made by hand in between:
the last operation wins. When something it watches changes (env file,
settings, runner), the live release is restarted with no dropped request.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

__virtualname__ = "django_release"

STATE_FILE = "highstate-source.json"


def __virtual__() -> str | tuple[bool, str]:
    """Needs the salt-django execution modules (synced from ``_modules/``)."""
    if "django_release.release" not in __salt__ or "django_store.build" not in __salt__:  # noqa: F821
        return False, "django_release state: execution modules django_release and django_store are not synced (saltutil.sync_modules)"
    return __virtualname__


def _ret(name: str) -> dict[str, Any]:
    return {"name": name, "result": True, "changes": {}, "comment": ""}


def _state_path(name: str) -> str:
    return os.path.join(__salt__["django_manage.project_root"](name), "shared", STATE_FILE)  # noqa: F821


def _last_released(name: str) -> dict[str, Any]:
    """What the last apply that released ``name`` released: source digest and app server."""
    try:
        with open(_state_path(name), encoding="utf-8") as handle:
            return json.load(handle)
    except (FileNotFoundError, ValueError):
        return {}


def _remember(name: str, released: dict[str, str]) -> None:
    path = _state_path(name)
    __utils__["saltdjango_files.replace"](path, json.dumps(released), mode=0o644)  # noqa: F821


def deployed(
    name: str,
    source: str,
    migrate: bool = True,
    fail_level: str = "WARNING",
    repo: str | None = None,
    ref: str | None = None,
    release: str | None = None,
    cluster: bool = False,
) -> dict[str, Any]:
    """Release ``source`` for project ``name`` when it changed; keep the live release running.

    name
        The project (``projects:<name>`` in pillar).
    source
        ``salt://`` or local directory holding the project (``manage.py`` and
        ``requirements.txt`` at its top).
    migrate
        Apply pending migrations (after a backup) before the switch.
    repo, ref, release
        Instead of ``source``: a git repository at ``ref``, built as release
        id ``release`` (what a cluster serves, recorded by its rollouts).
    cluster
        An app server of a cluster: only the rollout runner switches (drain,
        backup, one migration), so a highstate puts a release live only where
        none is (a new server) and otherwise keeps the live one running.
    """
    ret = _ret(name)
    mods = __salt__  # noqa: F821
    live = mods["django_store.current"](name)
    if cluster and live:
        return _keep_live(name, live, "in a cluster, orch.deploy switches releases")
    wanted = {"repo": repo, "ref": ref} if repo else {"source": source}
    label = f"{repo}@{ref}" if repo else source
    try:
        digest = mods["django_store.resolve"](name, **wanted)["digest"]
    except RuntimeError as exc:
        return {**ret, "result": False, "comment": f"source {label}: {exc}", "skip_watch": True}
    server = mods["saltdjango.project"](name)["app_server"]
    # Another app server is another virtualenv: a release, not a restart.
    released = {"digest": digest, "app_server": f"{server['package']}=={server['version']}" if server["package"] else server["kind"]}
    if live and _last_released(name) == released:
        return _keep_live(name, live, f"{label} is unchanged since it was last released")
    if __opts__["test"]:  # noqa: F821
        existing = mods["django_store.find"](name, digest)
        target = existing or release or f"a new release of {label}"
        return {**ret, "result": None, "changes": {"release": {"old": live, "new": target}}, "comment": f"{target} would be released"}
    outcome = mods["django_release.release"](name, **wanted, migrate=migrate, fail_level=fail_level, rid=release)
    if not outcome["ok"]:
        # Salt would run mod_watch (a restart) on a result without changes
        # and report its result instead of this failure.
        return {**ret, "result": False, "comment": outcome["comment"], "skip_watch": True}
    _remember(name, released)
    return {**ret, "changes": outcome["changes"], "comment": outcome["comment"]}


def _keep_live(name: str, live: str, why: str) -> dict[str, Any]:
    """The live release stays: running, or started again if it is not."""
    if __salt__["django_release.is_live"](name, live):  # noqa: F821
        return {**_ret(name), "comment": f"release {live} is live; {why}"}
    if __opts__["test"]:  # noqa: F821
        return {
            **_ret(name),
            "result": None,
            "changes": {"started": live},
            "comment": f"release {live} is not running and would be started",
        }
    return _restart(name)


def _restart(name: str) -> dict[str, Any]:
    outcome = __salt__["django_release.restart"](name)  # noqa: F821
    if not outcome["ok"]:
        return {**_ret(name), "result": False, "comment": outcome["comment"]}
    return {**_ret(name), "changes": outcome["changes"], "comment": outcome["comment"]}


def mod_watch(name: str, **_kwargs: Any) -> dict[str, Any]:
    """Restart the live release without dropping a request (its config changed)."""
    live = __salt__["django_store.current"](name)  # noqa: F821
    if live is None:
        return {**_ret(name), "comment": "no live release to restart"}
    if __opts__["test"]:  # noqa: F821
        return {**_ret(name), "result": None, "changes": {"restarted": live}, "comment": f"release {live} would be restarted"}
    return _restart(name)


def socket_adopted(name: str) -> dict[str, Any]:
    """Keep serving, across an upgrade of salt-django, the slot an older one serves from.

    Nginx reaches the serving slot through ``shared/run/http.sock`` (or
    ``uwsgi.sock``), a link to its socket; a server set up before has its
    older ``gunicorn.sock`` link or upstream file instead (``app_slots.adopt``).
    """
    ret = _ret(name)
    slot = __salt__["app_slots.adopt"](name, test=bool(__opts__["test"]))  # noqa: F821
    if slot is None:
        return {**ret, "comment": "the socket link exists, or no slot served before"}
    if __opts__["test"]:  # noqa: F821
        return {**ret, "result": None, "changes": {"linked": slot}, "comment": f"slot {slot} would be linked"}
    return {**ret, "changes": {"linked": slot}, "comment": f"slot {slot} is linked"}


def programs_loaded(name: str, conf: str) -> dict[str, Any]:
    """Load project ``name``'s program definitions (``conf``) into supervisord,
    and drop those it no longer defines, touching no other group
    (``app_slots.load_programs``). Meant for ``onchanges`` of ``conf``."""
    ret = _ret(name)
    if __opts__["test"]:  # noqa: F821
        groups = __salt__["app_slots.program_groups"](name, conf)  # noqa: F821
        return {**ret, "result": None, "changes": {"updated": groups}, "comment": f"supervisord would update {', '.join(groups)}"}
    try:
        groups = __salt__["app_slots.load_programs"](name, conf)  # noqa: F821
    except RuntimeError as exc:
        return {**ret, "result": False, "comment": str(exc)}
    return {**ret, "changes": {"updated": groups}, "comment": f"supervisord updated {', '.join(groups) or 'nothing'}"}


def healthy(name: str, host: str | None = None, attempts: int = 20, interval: float = 0.5) -> dict[str, Any]:
    """Succeed once the URL ``name`` answers 200 with status ok; never reports changes.

    host
        Host header to send, e.g. the project's domain.
    """
    ret = _ret(name)
    if __opts__["test"]:  # noqa: F821
        return {**ret, "comment": f"{name} would be checked"}
    result: dict[str, Any] = {}
    for _ in range(attempts):
        result = __salt__["django_manage.health"](name, host=host)  # noqa: F821
        if result["ok"]:
            return {**ret, "comment": f"{name} is healthy"}
        time.sleep(interval)
    detail = result.get("body") or result.get("error")
    return {**ret, "result": False, "comment": f"{name} is not healthy (status {result.get('status')}): {detail}"}
