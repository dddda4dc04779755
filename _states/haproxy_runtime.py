"""States over HAProxy's runtime API (``_modules/haproxy_runtime.py``)."""

from __future__ import annotations

from typing import Any

__virtualname__ = "haproxy_runtime"


def __virtual__() -> str:
    """Needs only the execution module of the same name (stdlib only)."""
    return __virtualname__


def state_saved(name: str) -> dict[str, Any]:
    """Write the servers' runtime states (drain, maint, health) to ``name``, the
    ``server-state-file`` the next HAProxy process reads. Meant as a
    ``prereq`` of the config file: it runs only when a reload is coming."""
    ret: dict[str, Any] = {"name": name, "result": True, "changes": {}, "comment": ""}
    if __opts__["test"]:  # noqa: F821
        return {**ret, "result": None, "changes": {"saved": name}, "comment": f"server states would be written to {name}"}
    try:
        outcome = __salt__["haproxy_runtime.save_state"](name)  # noqa: F821
    except Exception as exc:  # noqa: BLE001 - HAProxyError or OSError: say which
        return {**ret, "result": False, "comment": f"server states not written to {name}: {exc}"}
    if not outcome["saved"]:
        return {**ret, "comment": "HAProxy does not run: no server state to keep"}
    return {**ret, "changes": {"saved": name}, "comment": f"states of {outcome['servers']} servers written to {name}"}
