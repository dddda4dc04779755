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
    """Fail, listing every problem by pillar key, unless the pillar is usable;
    warn about each key the pillar still uses the older way."""
    errors = __salt__["saltdjango.validate"]()  # noqa: F821
    if errors:
        return {"name": name, "result": False, "changes": {}, "comment": "invalid pillar: " + "; ".join(errors)}
    ret = {"name": name, "result": True, "changes": {}, "comment": "pillar is valid"}
    deprecated = __salt__["saltdjango.deprecations"]()  # noqa: F821
    if deprecated:
        ret.update(comment="pillar is valid; " + "; ".join(deprecated), warnings=deprecated)
    return ret


def peers_trusted(name: str) -> dict[str, Any]:
    """Fail, naming each server whose published address was refused; change nothing.

    The refused servers are already left out of every configuration
    (``saltdjango.addresses``); this state makes that visible in the run's
    result while the other states go on.
    """
    refused = __salt__["saltdjango.refused_addresses"]()  # noqa: F821
    if refused:
        listing = "; ".join(f"{minion} {reason}" for minion, reason in sorted(refused.items()))
        return {"name": name, "result": False, "changes": {}, "comment": f"left out of every configuration: {listing}"}
    return {"name": name, "result": True, "changes": {}, "comment": "every published address is trusted"}
