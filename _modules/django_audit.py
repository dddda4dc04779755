"""The audit log of a project's deploy operations on this server.

One JSON line per release, rollback, restart or restore in
``/var/log/salt-django/<project>/deploys.log``: when, who, what, from, to,
result. Root's (0640, directory 0750): the app user cannot rewrite history.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any

__virtualname__ = "django_audit"

AUDIT_ROOT = "/var/log/salt-django"


def __virtual__() -> str:
    """Stdlib only."""
    return __virtualname__


def _audit_path(project: str) -> str:
    return os.path.join(AUDIT_ROOT, project, "deploys.log")


def record(project: str, operation: str, result: str, seconds: float, **details: Any) -> dict[str, Any]:
    """Append one line to the audit log: when, who, what, from, to, result.

    CLI Example:

    .. code-block:: bash

        salt-call django_audit.record demo restart ok 2.5 to=20261129T040000Z-1a2b3c4
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

        salt-call django_audit.audit demo
    """
    try:
        with open(_audit_path(project), encoding="utf-8") as handle:
            lines = handle.readlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines[-int(limit) :] if line.strip()]
