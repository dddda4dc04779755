"""``_modules/django_backends.py``: the Redis check against a stand-in that
speaks RESP (the PostgreSQL check is exercised by the lab tests)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from tests.unit.conftest import load

backends = load("_modules/django_backends.py")
PASSWORD = "x8Jq2LmN4pRt6VwY"


@pytest.fixture
def configure_loader_modules() -> dict:
    return {backends: {"__salt__": {"pillar.get": lambda key, default=None: PASSWORD if key.endswith("REDIS_PASSWORD") else default}}}


@pytest.fixture
def redis() -> Iterator[tuple[int, list[bytes]]]:
    """A one-connection-at-a-time Redis stand-in: AUTH demo <PASSWORD> then PING."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    seen: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                data = conn.recv(4096)
                seen.append(data)
                ok = f"${len('demo')}\r\ndemo\r\n${len(PASSWORD)}\r\n{PASSWORD}\r\n".encode() in data
                conn.sendall(
                    b"+OK\r\n+PONG\r\n" if ok else b"-WRONGPASS invalid username-password pair\r\n-NOAUTH Authentication required.\r\n"
                )

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1], seen
    server.close()


def test_redis_accepts_the_project_user(redis: tuple[int, list[bytes]]) -> None:
    port, seen = redis
    assert backends._redis("demo", "127.0.0.1", port) == {"ok": True, "error": ""}
    assert seen[0].startswith(b"*3\r\n$4\r\nAUTH\r\n")


def test_redis_refusal_is_named_without_the_password(redis: tuple[int, list[bytes]]) -> None:
    port, _ = redis
    result = backends._redis("other", "127.0.0.1", port)
    assert result == {"ok": False, "error": f"Redis at 127.0.0.1:{port}: -WRONGPASS invalid username-password pair"}
    assert PASSWORD not in result["error"]


def test_redis_unreachable_is_named() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = backends._redis("demo", "127.0.0.1", port, timeout=1)
    assert not result["ok"] and result["error"].startswith(f"Redis at 127.0.0.1:{port}:")
