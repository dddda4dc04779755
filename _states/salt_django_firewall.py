"""A server's nftables table, replaced whole and only when it is right.

Salt's own ``nftables`` states add or remove one rule at a time: a run that
fails half-way leaves half a firewall, and the order of rules drifts. Here
the table is one file, checked by ``nft -c`` first and then applied by
``nft -f`` as one kernel transaction: the host has either the previous
ruleset or the new one, never a mix and never none. The file on disk is
replaced only once the kernel took it, so it always says what is live.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Any

__virtualname__ = "salt_django_firewall"

NFT = "/usr/sbin/nft"


def __virtual__() -> str:
    """Always loadable: salt/firewall installs nft in the same run that first
    uses this module, so each function checks for it when it runs."""
    return __virtualname__


def _ret(name: str, result: bool | None, comment: str, changes: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "result": result, "changes": changes or {}, "comment": comment}


def _nft(*args: str) -> dict[str, Any]:
    return __salt__["cmd.run_all"]([NFT, *args], python_shell=False, ignore_retcode=True)  # noqa: F821


def _read(path: str) -> str | None:
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as held:
        return held.read()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def applied(name: str, source: str, table: str, context: dict[str, Any] | None = None, saltenv: str = "base") -> dict[str, Any]:
    """The ruleset rendered from ``source`` (a Jinja template) is in the kernel
    (table ``inet <table>`` present) and in the file ``name``.

    Changes nothing unless the file differs from the rendering or the table is
    missing (a reboot where nothing loaded it, an operator's flush). A ruleset
    that ``nft -c`` refuses fails the state, naming nft's error, and the
    previous one stays live.
    """
    if not os.path.exists(NFT):
        if __opts__["test"]:  # noqa: F821
            loading = {"loaded": {"old": False, "new": True}}
            return _ret(name, None, f"table inet {table} would be loaded once nftables is installed", loading)
        return _ret(name, False, f"{NFT} is missing (Debian's nftables package)")
    template = __salt__["cp.get_file_str"](source, saltenv=saltenv)  # noqa: F821
    if template is False or template is None:
        return _ret(name, False, f"{source} not found on the fileserver")
    wanted = __salt__["file.apply_template_on_contents"](template, "jinja", context or {}, {}, saltenv)  # noqa: F821
    current = _read(name)
    loaded = _nft("list", "table", "inet", table)["retcode"] == 0
    if current == wanted and loaded:
        return _ret(name, True, f"table inet {table} is loaded and matches {name}")
    changes = {"ruleset": {"old": _digest(current) if current is not None else None, "new": _digest(wanted)}}
    if not loaded:
        changes["loaded"] = {"old": False, "new": True}
    if __opts__["test"]:  # noqa: F821
        return _ret(name, None, f"table inet {table} would be loaded from {name}", changes)
    os.makedirs(os.path.dirname(name), exist_ok=True)
    fd, candidate = tempfile.mkstemp(prefix=".salt-django-", suffix=".nft", dir=os.path.dirname(name))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(wanted)
        os.chmod(candidate, 0o600)
        for check in (("-c", "-f", candidate), ("-f", candidate)):
            run = _nft(*check)
            if run["retcode"] != 0:
                what = "refused by nft -c" if check[0] == "-c" else "not applied by nft -f"
                error = (run.get("stderr") or run.get("stdout") or "").strip()[-1500:]
                return _ret(name, False, f"ruleset {what}; the previous one stays live: {error}")
        os.replace(candidate, name)
    finally:
        if os.path.exists(candidate):
            os.unlink(candidate)
    return _ret(name, True, f"table inet {table} loaded from {name}", changes)


def absent(name: str, table: str) -> dict[str, Any]:
    """Neither table ``inet <table>`` in the kernel nor the file ``name``: the host's firewall is its operator's again."""
    loaded = os.path.exists(NFT) and _nft("list", "table", "inet", table)["retcode"] == 0
    present = os.path.exists(name)
    if not loaded and not present:
        return _ret(name, True, f"no table inet {table} and no {name}")
    changes = {"removed": [*([f"table inet {table}"] if loaded else []), *([name] if present else [])]}
    if __opts__["test"]:  # noqa: F821
        return _ret(name, None, "would remove " + ", ".join(changes["removed"]), changes)
    if loaded:
        run = _nft("delete", "table", "inet", table)
        if run["retcode"] != 0:
            return _ret(name, False, f"nft delete table inet {table} failed: {(run.get('stderr') or '').strip()}")
    if present:
        os.unlink(name)
    return _ret(name, True, "removed " + ", ".join(changes["removed"]), changes)
