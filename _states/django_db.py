"""The PostgreSQL role and database of a project; the password is looked up in pillar here.

Salt writes every apply's compiled SLS data to ``highstate.cache.p`` in the
minion's cache directory. Passing the password to ``postgres_user.present``
from an SLS would put it there; this state takes the pillar key instead and
hands the value to ``postgres_user.present`` in memory only.
"""

from __future__ import annotations

from typing import Any

from salt.exceptions import CommandExecutionError

__virtualname__ = "django_db"

MASK = "********"


def __virtual__() -> str | tuple[bool, str]:
    """Wraps Salt's ``postgres_user`` state, which needs the postgres module (psql)."""
    return __virtualname__


def role_present(name: str, project: str, secret: str = "DB_PASSWORD", runas: str = "postgres") -> dict[str, Any]:  # noqa: S107 - a pillar key
    """Make role ``name`` exist, able to log in with ``projects:<project>:secrets:<secret>``.

    The password is stored as SCRAM-SHA-256, which PostgreSQL 14+ expects
    in pg_hba by default.
    """
    key = f"projects:{project}:secrets:{secret}"
    password = __salt__["pillar.get"](key)  # noqa: F821
    if not password:
        return {"name": name, "result": False, "changes": {}, "comment": f"{key} is missing"}
    ret = _builtin("postgres_user.present", name, "role", password=password, encrypted="scram-sha-256", login=True, user=runas)
    return _masked(ret, str(password))


def database_present(name: str, owner: str, runas: str = "postgres") -> dict[str, Any]:
    """Make database ``name`` (UTF-8, from template0) exist, owned by ``owner``.

    See ``_builtin`` for why this wraps Salt's ``postgres_database`` state.
    """
    return _builtin("postgres_database.present", name, "database", owner=owner, encoding="UTF8", template="template0", user=runas)


def database_private(name: str, runas: str = "postgres") -> dict[str, Any]:
    """Revoke what PUBLIC gets on database ``name`` by default (CONNECT, TEMPORARY).

    Only its owner (and superusers) may then connect: another project's role
    cannot, whatever pg_hba.conf says.
    """
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    check = f"SELECT has_database_privilege('public', '{name}', 'CONNECT') OR has_database_privilege('public', '{name}', 'TEMP')"
    opened = _psql(check, runas)
    if opened["retcode"] != 0:
        if __opts__["test"]:  # noqa: F821
            return {**ret, "result": None, "changes": {"revoked": "PUBLIC"}, "comment": f"PUBLIC's access to {name} would be revoked"}
        return {**ret, "result": False, "comment": f"cannot read the privileges of {name}: {opened['stderr'].strip()}"}
    if opened["stdout"].strip() != "t":
        return {**ret, "comment": f"only the owner of {name} may connect"}
    if __opts__["test"]:  # noqa: F821
        return {**ret, "result": None, "changes": {"revoked": "PUBLIC"}, "comment": f"PUBLIC's access to {name} would be revoked"}
    revoked = _psql(f'REVOKE ALL ON DATABASE "{name}" FROM PUBLIC', runas)
    if revoked["retcode"] != 0:
        return {**ret, "result": False, "comment": f"REVOKE on {name} failed: {revoked['stderr'].strip()}"}
    return {**ret, "changes": {"revoked": "PUBLIC"}, "comment": f"PUBLIC may no longer connect to {name}"}


def _psql(sql: str, runas: str) -> dict[str, Any]:
    """psql as ``runas``; before PostgreSQL is installed (``test=True`` on a new server) a failure, not an exception."""
    try:
        return __salt__["cmd.run_all"](["psql", "-XAtq", "-c", sql], runas=runas, python_shell=False)  # noqa: F821
    except CommandExecutionError as exc:
        return {"retcode": 1, "stdout": "", "stderr": str(exc)}


def _builtin(function: str, name: str, what: str, **kwargs: Any) -> dict[str, Any]:
    """Call one of Salt's postgres states, or predict it when it cannot load yet.

    Salt's postgres states load only once PostgreSQL's tools are installed;
    on a new server they are installed by the same run, so ``test=True``
    predicts the creation instead of failing.
    """
    if function not in __states__:  # noqa: F821
        if __opts__["test"]:  # noqa: F821
            return {"name": name, "result": None, "changes": {name: "Present"}, "comment": f"{what} {name} would be created"}
        return {"name": name, "result": False, "changes": {}, "comment": f"{function.split('.')[0]} state unavailable: is psql installed?"}
    return __states__[function](name=name, **kwargs)  # noqa: F821


def _masked(value: Any, secret: str) -> Any:
    """``value`` with every occurrence of ``secret`` replaced, however deep."""
    if isinstance(value, str):
        return value.replace(secret, MASK)
    if isinstance(value, dict):
        return {_masked(k, secret): _masked(v, secret) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_masked(v, secret) for v in value)
    return value
