"""A program under supervisord, driven through ``supervisorctl``.

Salt 3008 removed the ``supervisord`` state; this is the part of it that we
need. ``running`` makes supervisord load the program's configuration and
start it; a ``watch`` (``mod_watch``) restarts it, after re-reading its
configuration so that a changed command line takes effect.
"""

from __future__ import annotations

import time
from typing import Any

#: States after which waiting longer cannot make a program RUNNING.
_SETTLED = frozenset({"RUNNING", "FATAL", "EXITED", "STOPPED", "BACKOFF"})

__virtualname__ = "supervisor_program"


def __virtual__() -> str:
    """Always loadable: supervisor is often installed by the same run that uses
    this state, so the check for supervisorctl happens when a state runs."""
    return __virtualname__


def _ctl(*args: str) -> dict[str, Any]:
    return __salt__["cmd.run_all"](["supervisorctl", *args], python_shell=False, ignore_retcode=True)  # noqa: F821


def _status(name: str) -> str | None:
    """RUNNING, STOPPED, ... or None when supervisord does not know the program."""
    out = _ctl("status", name)["stdout"].strip()
    if "no such process" in out or not out:
        return None
    fields = out.split()
    return fields[1] if len(fields) > 1 else None


def _wait_running(name: str, timeout: float = 60) -> str | None:
    """Wait while the program is STARTING (supervisord's ``startsecs``); return its state."""
    deadline = time.monotonic() + timeout
    state = _status(name)
    while state not in _SETTLED and time.monotonic() < deadline:
        time.sleep(0.25)
        state = _status(name)
    return state


def _config_pending(name: str) -> bool:
    """True when supervisord has not loaded the latest config of the program."""
    out = _ctl("reread")["stdout"]
    return any(line.split(":")[0].strip() == name for line in out.splitlines())


def running(name: str) -> dict[str, Any]:
    """Make sure program ``name`` is loaded with its current config and RUNNING."""
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    if not __salt__["cmd.which"]("supervisorctl"):  # noqa: F821
        if __opts__["test"]:  # noqa: F821
            return {**ret, "result": None, "changes": {name: "started"}, "comment": f"{name} would be started"}
        return {**ret, "result": False, "comment": "supervisorctl is not installed (package supervisor)"}
    state = _status(name)
    pending = _config_pending(name)
    if state == "RUNNING" and not pending:
        ret["comment"] = f"{name} is running"
        return ret
    if __opts__["test"]:  # noqa: F821
        action = "reloaded with its new config" if pending and state else "started"
        return {**ret, "result": None, "changes": {name: action}, "comment": f"{name} would be {action}"}
    result = _ctl("update", name) if pending or state is None else _ctl("start", name)
    state = _wait_running(name)
    if state != "RUNNING":
        return {**ret, "result": False, "comment": f"{name} is {state or 'unknown'} after start: {result['stdout'].strip()}"}
    return {**ret, "changes": {name: "started"}, "comment": f"{name} started"}


def mod_watch(name: str, **_kwargs: Any) -> dict[str, Any]:
    """Restart the program because something it watches changed."""
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    if __opts__["test"]:  # noqa: F821
        return {**ret, "result": None, "changes": {name: "restarted"}, "comment": f"{name} would be restarted"}
    result = _ctl("restart", name)
    if _wait_running(name) != "RUNNING":
        return {**ret, "result": False, "comment": f"{name} did not come back after restart: {result['stdout'].strip()}"}
    return {**ret, "changes": {name: "restarted"}, "comment": f"{name} restarted"}
