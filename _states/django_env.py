"""The env file of a Django project: settings and secrets for the app's processes.

Secrets are looked up in pillar by key name inside this state, so that their
values never pass through a rendered SLS, the state's arguments, its
``changes`` or its comment: ``changes`` lists the names of the variables
that were added, changed or removed, never a value.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from typing import Any

__virtualname__ = "django_env"


def __virtual__() -> str | tuple[bool, str]:
    """Needs the saltdjango execution module (synced from ``_modules/``)."""
    if "saltdjango.secret_key_problems" not in __salt__:  # noqa: F821
        return False, "django_env state: execution module saltdjango is not synced (saltutil.sync_modules)"
    return __virtualname__


def _wanted_values(
    project: str, env: dict[str, Any], secrets: dict[str, str], generate: list[str], old: dict[str, str]
) -> tuple[dict[str, str], list[str], list[str]]:
    """The env to write, the variables to be generated, and errors naming pillar keys."""
    mods = __salt__  # noqa: F821
    pillar_secrets = mods["pillar.get"](f"projects:{project}:secrets", {}) or {}
    values = {key: "" if value is None else str(value) for key, value in env.items()}
    generated, errors = [], []
    for var, key in secrets.items():
        value = pillar_secrets.get(key)
        pillar_key = f"projects:{project}:secrets:{key}"
        if value in (None, ""):
            if var not in generate:
                errors.append(f"{pillar_key} is missing")
            elif old.get(var) and not mods["saltdjango.secret_key_problems"](old[var]):
                values[var] = old[var]
            else:
                values[var] = mods["saltdjango.generate_secret"]()
                generated.append(var)
            continue
        if key == "SECRET_KEY":
            errors.extend(f"{pillar_key} {p}" for p in mods["saltdjango.secret_key_problems"](value))
        values[var] = str(value)
    if not errors:
        values.update(mods["saltdjango.service_urls"](values))
    return values, generated, errors


def managed(
    name: str,
    project: str,
    env: dict[str, Any] | None = None,
    secrets: dict[str, str] | None = None,
    generate: list[str] | None = None,
    user: str = "root",
    group: str = "root",
    mode: str = "0640",
) -> dict[str, Any]:
    """Write the env file ``name`` for ``project``.

    env
        Variables that are not secret, as a mapping.
    secrets
        Mapping of variable name to a key under ``projects:<project>:secrets``.
        ``DATABASE_URL``, ``REDIS_URL`` and ``CACHE_URL`` are derived from the
        discrete ``DATABASE_*`` and ``REDIS_*`` variables and count as secrets.
    generate
        Variables that may be missing in pillar: a strong value is generated
        once and kept in the file (reruns reuse it).
    """
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    old = __utils__["saltdjango_env.read"](name)  # noqa: F821
    values, generated, errors = _wanted_values(project, env or {}, secrets or {}, generate or [], old)
    if errors:
        return {**ret, "result": False, "comment": "; ".join(errors)}
    try:
        uid, gid = pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
    except KeyError as exc:
        if not __opts__["test"]:  # noqa: F821
            return {**ret, "result": False, "comment": f"owner of {name} does not exist: {exc}"}
        uid = gid = -1
    want_mode = int(str(mode), 8)
    changes: dict[str, Any] = __utils__["saltdjango_env.diff"](old, values)  # noqa: F821
    if generated:
        changes["generated"] = generated
    if os.path.exists(name):
        info = os.stat(name)
        if stat.S_IMODE(info.st_mode) != want_mode:
            changes["mode"] = {"old": oct(stat.S_IMODE(info.st_mode))[2:].zfill(4), "new": str(mode)}
        if (info.st_uid, info.st_gid) != (uid, gid):
            changes["owner"] = f"{user}:{group}"
    if not changes:
        return {**ret, "comment": f"{name} is up to date"}
    if __opts__["test"]:  # noqa: F821
        return {**ret, "result": None, "changes": changes, "comment": f"{name} would be updated"}
    __utils__["saltdjango_files.replace"](name, __utils__["saltdjango_env.render"](values), mode=want_mode, owner=(uid, gid))  # noqa: F821
    return {**ret, "changes": changes, "comment": f"{name} updated"}
