"""Wait, bounded, until the project's database and cache accept this app server.

Changes nothing, so it reports no change; it only holds back the release
until its backends are up (see ``_modules/django_backends.py``).
"""

from __future__ import annotations

from typing import Any

__virtualname__ = "django_backends"


def __virtual__() -> str | tuple[bool, str]:
    """Needs the django_backends execution module (synced from ``_modules/``)."""
    if "django_backends.wait" not in __salt__:  # noqa: F821
        return False, "django_backends state: execution module django_backends is not synced"
    return __virtualname__


def reachable(name: str, database: dict[str, Any], cache: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
    """PostgreSQL and Redis of project ``name`` accept its credentials within ``timeout`` seconds.

    ``database``: host, port, name, user; ``cache``: host, port.
    """
    ret: dict[str, Any] = {"name": name, "changes": {}}
    if __opts__["test"]:  # noqa: F821
        return {**ret, "result": True, "comment": "would wait until the database and cache accept this server"}
    outcome = __salt__["django_backends.wait"](name, database, cache, timeout=timeout)  # noqa: F821
    if outcome["ok"]:
        return {**ret, "result": True, "comment": f"database and cache reachable ({outcome['seconds']}s)"}
    errors = "; ".join(f"{k}: {v}" for k, v in outcome["errors"].items())
    return {**ret, "result": False, "comment": f"not reachable after {outcome['seconds']}s: {errors}"}
