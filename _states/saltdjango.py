"""The gate in front of every apply: is this deployment description usable?

The SLS that uses ``validated`` marks it ``failhard`` and every minion runs it
first, so a bad pillar (weak or missing secret, unknown role, bad domain)
stops the run before any other state changes the host.
"""

from __future__ import annotations

from typing import Any

__virtualname__ = "saltdjango"


def __virtual__() -> str | tuple[bool, str]:
    """Needs the saltdjango execution module (synced from ``_modules/``)."""
    if "saltdjango.validate" not in __salt__:  # noqa: F821
        return False, "saltdjango state: execution module saltdjango is not synced (saltutil.sync_modules)"
    return __virtualname__


def validated(name: str) -> dict[str, Any]:
    """Fail, listing every problem by pillar key, unless the pillar is usable."""
    errors = __salt__["saltdjango.validate"]()  # noqa: F821
    if errors:
        return {"name": name, "result": False, "changes": {}, "comment": "invalid pillar: " + "; ".join(errors)}
    return {"name": name, "result": True, "changes": {}, "comment": "pillar is valid"}
