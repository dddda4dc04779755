"""What a release is called and what a state run's return says, read the
same way by the minions' modules and the rollout runner."""

from __future__ import annotations

import re
from typing import Any

#: ``<UTC build time>-<first 7 hex digits of the source's digest (commit or content hash)>``.
RELEASE_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{7}")


def is_release_id(value: Any) -> bool:
    """Whether ``value`` has the form of a release id (and so is no path or git ref)."""
    return isinstance(value, str) and RELEASE_ID.fullmatch(value) is not None


def state_id(key: str, state: Any = None) -> str:
    """The ID a user wrote for a state, from its key in a ``state.apply``
    return (``<module>_|-<id>_|-<name>_|-<function>``)."""
    if isinstance(state, dict) and state.get("__id__"):
        return str(state["__id__"])
    return key.split("_|-")[1] if "_|-" in key else key


def failed_states(ret: Any) -> dict[str, str]:
    """State IDs that did not succeed in a ``state.apply`` return, with the
    end of their comments; a return that is no state data is one failure."""
    if not isinstance(ret, dict):
        return {"(no state data)": str(ret)[-500:]}
    failed = {}
    for key, state in ret.items():
        if not isinstance(state, dict) or state.get("result") is not True:
            comment = state.get("comment", state) if isinstance(state, dict) else state
            failed[state_id(key, state)] = str(comment)[-500:]
    return failed
