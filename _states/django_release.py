"""States for the release of a Django project: build, gate, migrate, switch.

``deployed`` does in one state what must happen in one order and stop at the
first failure: build the release beside the live one, refuse it if
``check --deploy --fail-level WARNING`` reports anything, collect its static
files, apply pending migrations, and only then switch to it without dropping
a request (``gunicorn_slots.activate``: blue/green Gunicorn behind Nginx). A
refused release never becomes live, so the site keeps serving what it served.
When something it watches changes (env file, settings, runner), the live
release is restarted the same zero-downtime way.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

__virtualname__ = "django_release"


def __virtual__() -> str | tuple[bool, str]:
    """Needs the salt-django execution modules (synced from ``_modules/``)."""
    if "django_release.build" not in __salt__:  # noqa: F821
        return False, "django_release state: execution module django_release is not synced (saltutil.sync_modules)"
    return __virtualname__


def _ret(name: str) -> dict[str, Any]:
    return {"name": name, "result": True, "changes": {}, "comment": ""}


def _format_issues(issues: list[dict[str, str]]) -> str:
    return "; ".join(f"{i['id']} ({i['level']}): {i['message']}" for i in issues)


def _serving_ok(name: str, rid: str) -> bool:
    """True when Nginx's slot runs ``rid`` and its program is RUNNING."""
    mods = __salt__  # noqa: F821
    slot = mods["gunicorn_slots.serving"](name)
    return (
        bool(slot)
        and mods["gunicorn_slots.slot_release"](name, slot) == rid
        and mods["gunicorn_slots.program_state"](name, slot) == "RUNNING"
    )


def _activate(name: str, rid: str, host: str) -> tuple[dict[str, Any] | None, str]:
    try:
        return __salt__["gunicorn_slots.activate"](name, rid, host), ""  # noqa: F821
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        return None, str(exc)


def deployed(
    name: str,
    source: str,
    host: str,
    python: str = "/usr/bin/python3",
    pip: dict[str, Any] | None = None,
    migrate: bool = True,
    fail_level: str = "WARNING",
) -> dict[str, Any]:
    """Make the release built from ``source`` the live release of project ``name``.

    name
        The project (``projects:<name>`` in pillar).
    source
        ``salt://`` directory or local directory holding the project (with
        ``manage.py`` and ``requirements.txt`` at its top).
    host
        Host header for health checks: one of the project's domains.
    pip
        Options for a local index or wheelhouse (pillar ``salt_django:pip``).
    migrate
        Apply pending migrations before the switch. A cluster rollout passes
        False on all but one server and migrates once.
    """
    ret = _ret(name)
    mods = __salt__  # noqa: F821
    try:
        rid = mods["django_release.release_id"](source)
    except RuntimeError as exc:
        return {**ret, "result": False, "comment": f"source {source}: {exc}"}
    live = mods["django_release.current"](name)
    built = mods["django_release.is_built"](name, rid)

    if live == rid and not _serving_ok(name, rid):
        if __opts__["test"]:  # noqa: F821
            return {**ret, "result": None, "changes": {"started": rid}, "comment": f"release {rid} is not running and would be started"}
        outcome, error = _activate(name, rid, host)
        if outcome is None:
            return {**ret, "result": False, "comment": error}
        return {**ret, "changes": {"started": outcome}, "comment": f"release {rid} was not running and has been started"}
    if live == rid:
        pending = mods["django_manage.unapplied_migrations"](name) if migrate else {"ok": True, "migrations": []}
        if not pending["ok"]:
            return {**ret, "result": False, "comment": f"release {rid}: showmigrations failed: {pending['error']}"}
        if not pending["migrations"]:
            return {**ret, "comment": f"release {rid} is live and up to date"}
        if __opts__["test"]:  # noqa: F821
            return {
                **ret,
                "result": None,
                "changes": {"migrations": pending["migrations"]},
                "comment": f"release {rid}: migrations would be applied",
            }
        outcome = mods["django_manage.migrate"](name)
        if not outcome["ok"]:
            return {**ret, "result": False, "comment": f"migration {outcome['failed']} failed: {outcome['error']}"}
        return {**ret, "changes": {"migrations": outcome["applied"]}, "comment": f"release {rid}: migrations applied"}

    if __opts__["test"]:  # noqa: F821
        action = "switched to" if built else "built and switched to"
        return {**ret, "result": None, "changes": {"release": {"old": live, "new": rid}}, "comment": f"release {rid} would be {action}"}

    try:
        mods["django_release.build"](name, source, python=python, pip=pip)
    except RuntimeError as exc:
        return {**ret, "result": False, "comment": f"release {rid} not built: {exc}"}
    gate = mods["django_manage.check_deploy"](name, release=rid, fail_level=fail_level)
    if not gate["ok"]:
        return {**ret, "result": False, "comment": f"release {rid} refused by check --deploy: {_format_issues(gate['issues'])}"}
    static = mods["django_manage.collectstatic"](name, release=rid)
    if not static["ok"]:
        return {**ret, "result": False, "comment": f"release {rid}: collectstatic failed: {static['error']}"}
    changes: dict[str, Any] = {}
    if migrate:
        outcome = mods["django_manage.migrate"](name, release=rid)
        if not outcome["ok"]:
            return {
                **ret,
                "result": False,
                "changes": {"migrations": outcome["applied"]} if outcome["applied"] else {},
                "comment": f"release {rid} not switched: migration {outcome['failed']} failed: {outcome['error']}",
            }
        if outcome["applied"]:
            changes["migrations"] = outcome["applied"]
    outcome, error = _activate(name, rid, host)
    if outcome is None:
        return {**ret, "result": False, "changes": changes, "comment": f"release {rid} not switched: {error}"}
    changes["release"] = {"old": live, "new": rid}
    return {**ret, "changes": changes, "comment": f"release {rid} is live in slot {outcome['slot']['new']}"}


def mod_watch(name: str, host: str, **_kwargs: Any) -> dict[str, Any]:
    """Restart the live release without dropping a request (its config changed)."""
    ret = _ret(name)
    live = __salt__["django_release.current"](name)  # noqa: F821
    if live is None:
        return {**ret, "comment": "no live release to restart"}
    if __opts__["test"]:  # noqa: F821
        return {**ret, "result": None, "changes": {"restarted": live}, "comment": f"release {live} would be restarted"}
    outcome, error = _activate(name, live, host)
    if outcome is None:
        return {**ret, "result": False, "comment": f"restart of {live} failed, the old processes keep serving: {error}"}
    return {**ret, "changes": {"restarted": outcome}, "comment": f"release {live} restarted in slot {outcome['slot']['new']}"}


def healthy(name: str, host: str | None = None, attempts: int = 20, interval: float = 0.5) -> dict[str, Any]:
    """Succeed once the URL ``name`` answers 200 with status ok; never reports changes.

    host
        Host header to send, e.g. the project's domain.
    """
    url = name
    ret = _ret(name)
    if __opts__["test"]:  # noqa: F821
        return {**ret, "comment": f"{url} would be checked"}
    result: dict[str, Any] = {}
    for _ in range(attempts):
        result = __salt__["django_manage.health"](url, host=host)  # noqa: F821
        if result["ok"]:
            return {**ret, "comment": f"{url} is healthy"}
        time.sleep(interval)
    detail = result.get("body") or result.get("error")
    return {**ret, "result": False, "comment": f"{url} is not healthy (status {result.get('status')}): {detail}"}
