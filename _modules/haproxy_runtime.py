"""HAProxy's runtime API over its admin socket, with the standard library only.

Salt 3008 removed ``haproxyconn``; a rolling release needs only this much
of the API: read a backend's servers (state, current sessions), set a
server to ready, drain or maint, and wait until a drained server has no
session left. Each call opens the socket, sends one command and reads the
answer until HAProxy closes the connection (non-interactive mode).
"""

from __future__ import annotations

import csv
import io
import re
import socket
import time
from typing import Any

__virtualname__ = "haproxy_runtime"

#: salt/haproxy/defaults.yaml's admin_socket; pillar ``haproxy:admin_socket`` overrides both.
DEFAULT_SOCKET = "/var/lib/haproxy-admin/admin.sock"
STATES = ("ready", "drain", "maint")
# Names go into a command line: no spaces, newlines or ';' (command separator).
_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")


class HAProxyError(RuntimeError):
    """HAProxy refused a command or could not be reached; the message says which."""


def __virtual__() -> str:
    """Stdlib only; the socket is checked when a function runs."""
    return __virtualname__


def _check_name(kind: str, value: str) -> None:
    if not _NAME.match(value or ""):
        raise HAProxyError(f"invalid {kind} name {value!r}")


def _command(cmd: str, socket_path: str | None = None, timeout: float = 5.0) -> str:
    """Send one runtime-API command and return HAProxy's whole answer."""
    if "\n" in cmd or ";" in cmd:
        raise HAProxyError("one command at a time, without newlines or ';'")
    socket_path = socket_path or (__pillar__.get("haproxy") or {}).get("admin_socket") or DEFAULT_SOCKET  # noqa: F821
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(socket_path)
            sock.sendall(cmd.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError as exc:
        raise HAProxyError(f"HAProxy runtime API at {socket_path}: {exc}") from exc
    return b"".join(chunks).decode(errors="replace")


def _parse_stat(text: str) -> list[dict[str, str]]:
    """Rows of ``show stat`` (CSV whose header line starts with ``# ``)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# "):
        raise HAProxyError(f"unexpected answer to show stat: {text[:200]!r}")
    lines[0] = lines[0][2:]
    return list(csv.DictReader(io.StringIO("\n".join(lines))))


def servers(backend: str, socket_path: str | None = None) -> dict[str, dict[str, Any]]:
    """The servers of ``backend``: status (UP, DOWN, DRAIN, MAINT, ...), sessions, weight.

    CLI Example:

    .. code-block:: bash

        salt-call haproxy_runtime.servers app
    """
    _check_name("backend", backend)
    rows = _parse_stat(_command("show stat", socket_path))
    result = {}
    for row in rows:
        if row.get("pxname") == backend and row.get("svname") not in ("FRONTEND", "BACKEND"):
            result[row["svname"]] = {
                "status": row.get("status", ""),
                "sessions": int(row.get("scur") or 0),
                "weight": int(row.get("weight") or 0),
                "check": row.get("check_status", ""),
            }
    if not result and not any(row.get("pxname") == backend for row in rows):
        raise HAProxyError(f"no backend {backend!r} in HAProxy")
    return result


def _sessions(backend: str, server: str, socket_path: str | None = None) -> int:
    """Current sessions of one server."""
    listing = servers(backend, socket_path)
    if server not in listing:
        raise HAProxyError(f"no server {server!r} in backend {backend!r}")
    return listing[server]["sessions"]


def set_state(backend: str, server: str, state: str, socket_path: str | None = None) -> dict[str, Any]:
    """``set server <backend>/<server> state <ready|drain|maint>``.

    CLI Example:

    .. code-block:: bash

        salt-call haproxy_runtime.set_state app app1 drain
    """
    _check_name("backend", backend)
    _check_name("server", server)
    if state not in STATES:
        raise HAProxyError(f"state must be one of {', '.join(STATES)}, not {state!r}")
    answer = _command(f"set server {backend}/{server} state {state}", socket_path).strip()
    if answer:
        raise HAProxyError(f"set server {backend}/{server} state {state}: {answer}")
    return {"backend": backend, "server": server, "state": state}


def wait_drained(backend: str, server: str, timeout: float = 30, interval: float = 0.25, socket_path: str | None = None) -> dict[str, Any]:
    """Wait until ``server`` has no session left, at most ``timeout`` seconds.

    Returns ``{"drained", "sessions", "seconds"}``; ``drained`` is False when
    sessions remained at the deadline (the caller decides whether to go on).

    CLI Example:

    .. code-block:: bash

        salt-call haproxy_runtime.wait_drained demo_app app1 timeout=60
    """
    started = time.monotonic()
    count = _sessions(backend, server, socket_path)
    while count > 0 and time.monotonic() - started < timeout:
        time.sleep(interval)
        count = _sessions(backend, server, socket_path)
    return {"drained": count == 0, "sessions": count, "seconds": round(time.monotonic() - started, 2)}


def wait_up(backend: str, names: list[str], timeout: float = 15, interval: float = 0.5, socket_path: str | None = None) -> dict[str, Any]:
    """Wait until every server of ``names`` is UP in ``backend`` (health checks
    pass), at most ``timeout`` seconds. Returns ``{"down", "seconds"}``:
    ``down`` lists the servers still not UP (missing ones included).

    CLI Example:

    .. code-block:: bash

        salt-call haproxy_runtime.wait_up demo_app '[app1, app2]'
    """
    started = time.monotonic()
    while True:
        listing = servers(backend, socket_path)
        down = sorted(n for n in names if not str(listing.get(n, {}).get("status", "")).startswith("UP"))
        if not down or time.monotonic() - started >= timeout:
            return {"down": down, "seconds": round(time.monotonic() - started, 2)}
        time.sleep(interval)


def save_state(path: str, socket_path: str | None = None) -> dict[str, Any]:
    """Write ``show servers state`` to ``path`` (mode 0600, replaced at once),
    where the next HAProxy process reads it (``server-state-file``), so that
    a reload keeps servers drained or in maintenance. Returns ``{"saved",
    "servers"}``; ``saved`` is False when HAProxy does not run (nothing to keep).

    CLI Example:

    .. code-block:: bash

        salt-call haproxy_runtime.save_state /var/lib/haproxy-admin/server-state
    """
    try:
        text = _command("show servers state", socket_path)
    except HAProxyError:
        return {"saved": False, "servers": 0}
    lines = text.splitlines()
    if not lines or not lines[0].strip().isdigit():
        raise HAProxyError(f"unexpected answer to show servers state: {text[:200]!r}")
    __utils__["saltdjango_files.replace"](path, text if text.endswith("\n") else text + "\n")  # noqa: F821
    return {"saved": True, "servers": sum(1 for line in lines[1:] if line.strip() and not line.startswith("#"))}
