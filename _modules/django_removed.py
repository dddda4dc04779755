"""Projects that left pillar but whose programs or Nginx site are still here.

A project removed from pillar must stop being served: its supervisord
programs and its Nginx site go (salt/app, salt/nginx), its scheduled jobs
too (salt/schedule), while its data (``/srv/<project>``, its database, its
backups) stays. Only files salt-django wrote count: each starts with its
"Managed by salt-django" line, so nothing an operator wrote by hand is
touched.
"""

from __future__ import annotations

import os
import re

__virtualname__ = "django_removed"

#: The first line of every config file salt-django writes (Nginx: #, supervisord: ;).
MARKS = ("# Managed by salt-django: ", "; Managed by salt-django: ")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


def __virtual__() -> str:
    """Stdlib only: available everywhere."""
    return __virtualname__


def _ours(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.readline().startswith(MARKS)
    except OSError:
        return False


def leftovers(wanted: list[str], directory: str) -> dict[str, str]:
    """``<project>.conf`` files that salt-django wrote in ``directory`` for
    projects not in ``wanted``: project -> path.

    CLI Example:

    .. code-block:: bash

        salt-call django_removed.leftovers '[demo]' /etc/nginx/sites-available
    """
    found = {}
    for entry in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        name, path = entry.removesuffix(".conf"), os.path.join(directory, entry)
        if entry.endswith(".conf") and _NAME.match(name) and name not in wanted and _ours(path):
            found[name] = path
    return found


def removed(directory: str) -> dict[str, str]:
    """``leftovers`` in ``directory`` of the projects this minion's pillar no longer names.

    CLI Example:

    .. code-block:: bash

        salt-call django_removed.removed /etc/supervisor/conf.d
    """
    projects = __pillar__.get("projects") or {}  # noqa: F821
    return leftovers(sorted(projects) if isinstance(projects, dict) else [], directory)
