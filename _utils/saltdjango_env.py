"""The format of an app's env file (``/etc/<project>/env``): ``KEY='value'``
lines that sh can source and Django's settings read from the environment.

In ``_utils`` rather than an execution module so that no ``salt`` command
can call ``read`` and put the app's secrets in the master's job cache:
only the env state and the modules that run the app's commands read the
file.
"""

from __future__ import annotations

import re
import shlex

_ENV_KEY = re.compile(r"^[A-Z_][A-Z0-9_]*$")


def render(values: dict[str, str]) -> str:
    """Env file text: sorted ``KEY='value'`` lines, safe to source from sh."""
    lines = ["# Managed by salt-django. Do not edit: changes are overwritten."]
    for key in sorted(values):
        if not _ENV_KEY.match(key):
            raise ValueError(f"not a valid variable name: {key}")
        lines.append(f"{key}={shlex.quote(str(values[key]))}")
    return "\n".join(lines) + "\n"


def parse(text: str) -> dict[str, str]:
    """Inverse of ``render``: reads ``KEY=value`` lines, ignores comments."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, raw = line.split("=", 1)
        parts = shlex.split(raw) if raw else [""]
        values[key.strip()] = parts[0] if parts else ""
    return values


def read(path: str) -> dict[str, str]:
    """Values of an env file, or an empty mapping if there is none yet."""
    try:
        with open(path, encoding="utf-8") as handle:
            return parse(handle.read())
    except FileNotFoundError:
        return {}


def diff(old: dict[str, str], new: dict[str, str]) -> dict[str, list[str]]:
    """Key names added, changed and removed between two env mappings; never values."""
    diff = {
        "added": sorted(set(new) - set(old)),
        "changed": sorted(k for k in set(new) & set(old) if new[k] != old[k]),
        "removed": sorted(set(old) - set(new)),
    }
    return {kind: keys for kind, keys in diff.items() if keys}
