"""Can this app server reach its project's PostgreSQL and Redis, with its credentials?

In a cluster every server converges at once (``salt '*' state.apply``):
the app servers must wait until the db and cache servers accept them
before a release migrates or passes its health check. On a single server
the answer is immediate. Passwords come from pillar by key and are never
returned or logged.
"""

from __future__ import annotations

import socket
import subprocess
import time
from typing import Any

__virtualname__ = "django_backends"


def __virtual__() -> str:
    """Stdlib only; psql (postgresql-client) is needed when the database is checked."""
    return __virtualname__


def _secret(project: str, key: str) -> str:
    return str(__salt__["pillar.get"](f"projects:{project}:secrets:{key}", "") or "")  # noqa: F821


def _postgres(project: str, host: str, port: int, database: str, user: str, timeout: float = 3) -> dict[str, Any]:
    """Log in to ``database`` as ``user`` over TCP and run ``select 1``."""
    dsn = f"host={host} port={port} dbname={database} user={user} connect_timeout={max(int(timeout), 1)}"
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PGPASSWORD": _secret(project, "DB_PASSWORD")}
    try:
        proc = subprocess.run(["psql", dsn, "-Atqc", "select 1"], capture_output=True, text=True, env=env, timeout=timeout + 2, check=False)
    except FileNotFoundError:
        return {"ok": False, "error": "psql is not installed (postgresql-client)"}
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"PostgreSQL at {host}:{port} did not answer in {timeout:.0f}s"}
    if proc.returncode == 0 and proc.stdout.strip() == "1":
        return {"ok": True, "error": ""}
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return {"ok": False, "error": f"PostgreSQL at {host}:{port}: {lines[-1] if lines else f'exit {proc.returncode}'}"}


def _resp(*words: str) -> bytes:
    return f"*{len(words)}\r\n".encode() + b"".join(f"${len(w.encode())}\r\n{w}\r\n".encode() for w in words)


def _redis(project: str, host: str, port: int, timeout: float = 3) -> dict[str, Any]:
    """AUTH as the project's ACL user (its name), then PING (RESP over a plain socket)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_resp("AUTH", project, _secret(project, "REDIS_PASSWORD")) + _resp("PING"))
            answer = b""
            while answer.count(b"\r\n") < 2:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
    except OSError as exc:
        return {"ok": False, "error": f"Redis at {host}:{port}: {exc}"}
    lines = answer.decode(errors="replace").split("\r\n")
    if lines[:2] == ["+OK", "+PONG"]:
        return {"ok": True, "error": ""}
    return {"ok": False, "error": f"Redis at {host}:{port}: {lines[0] or 'closed the connection'}"}


def wait(project: str, database: dict[str, Any], cache: dict[str, Any], timeout: float = 300, interval: float = 2) -> dict[str, Any]:
    """Poll ``postgres`` and ``redis`` until both answer, at most ``timeout`` seconds.

    ``database``: host, port, name, user; ``cache``: host, port (as in the
    project's configuration, ``saltdjango.projects``).

    CLI Example:

    .. code-block:: bash

        salt-call django_backends.wait demo '{host: 10.0.0.2, port: 5432, name: demo, user: demo}' '{host: 10.0.0.3, port: 6379}' timeout=60
    """
    started = time.monotonic()
    while True:
        checks = {
            "postgres": _postgres(project, database["host"], int(database["port"]), database["name"], database["user"]),
            "redis": _redis(project, cache["host"], int(cache["port"])),
        }
        failing = {name: c["error"] for name, c in checks.items() if not c["ok"]}
        seconds = round(time.monotonic() - started, 1)
        if not failing or seconds >= timeout:
            return {"ok": not failing, "seconds": seconds, "errors": failing}
        time.sleep(interval)
