"""``_modules/haproxy_runtime.py`` against a stand-in for HAProxy's admin socket.

The stand-in speaks the runtime API's non-interactive protocol (one command
line in, the answer out, connection closed); the real HAProxy is exercised
by the cluster tests.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.unit.conftest import load

haproxy_runtime = load("_modules/haproxy_runtime.py")

HEADER = (
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,check_status\n"
)


def stat(rows: list[tuple[str, str, int, str]]) -> str:
    lines = [f"{px},{sv},0,0,{scur},0,,0,0,0,0,0,,0,0,0,0,{status},1,1,0,L7OK" for px, sv, scur, status in rows]
    return HEADER + "\n".join(lines) + "\n\n"


class FakeHAProxy:
    """A unix socket server answering each command with ``handler(command)``."""

    def __init__(self, path: Path, handler: Callable[[str], str]) -> None:
        self.path, self.handler, self.commands = str(path), handler, []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                data = b""
                while not data.endswith(b"\n"):
                    data += conn.recv(1024)
                command = data.decode().strip()
                self.commands.append(command)
                conn.sendall(self.handler(command).encode())

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Callable[[Callable[[str], str]], FakeHAProxy]]:
    servers: list[FakeHAProxy] = []

    def start(handler: Callable[[str], str]) -> FakeHAProxy:
        servers.append(FakeHAProxy(tmp_path / f"admin{len(servers)}.sock", handler))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_servers_of_a_backend_with_state_and_sessions(fake: Callable) -> None:
    answer = stat([("web", "FRONTEND", 3, "OPEN"), ("app", "app1", 2, "UP"), ("app", "app2", 0, "DRAIN"), ("app", "BACKEND", 2, "UP")])
    proxy = fake(lambda command: answer)
    result = haproxy_runtime.servers("app", socket_path=proxy.path)
    assert result == {
        "app1": {"status": "UP", "sessions": 2, "weight": 1, "check": "L7OK"},
        "app2": {"status": "DRAIN", "sessions": 0, "weight": 1, "check": "L7OK"},
    }
    assert proxy.commands == ["show stat"]


def test_unknown_backend_is_an_error(fake: Callable) -> None:
    proxy = fake(lambda command: stat([("app", "app1", 0, "UP")]))
    with pytest.raises(haproxy_runtime.HAProxyError, match="no backend 'api'"):
        haproxy_runtime.servers("api", socket_path=proxy.path)


def test_set_state_sends_the_command_and_reports_refusals(fake: Callable) -> None:
    proxy = fake(lambda command: "" if "app1" in command else "No such server.\n")
    assert haproxy_runtime.set_state("app", "app1", "drain", socket_path=proxy.path)["state"] == "drain"
    assert proxy.commands == ["set server app/app1 state drain"]
    with pytest.raises(haproxy_runtime.HAProxyError, match="No such server"):
        haproxy_runtime.set_state("app", "app9", "ready", socket_path=proxy.path)


@pytest.mark.parametrize(
    ("backend", "server", "state"), [("app", "app1 state ready", "drain"), ("app;x", "a", "drain"), ("app", "app1", "up")]
)
def test_bad_names_and_states_never_reach_haproxy(fake: Callable, backend: str, server: str, state: str) -> None:
    proxy = fake(lambda command: "")
    with pytest.raises(haproxy_runtime.HAProxyError):
        haproxy_runtime.set_state(backend, server, state, socket_path=proxy.path)
    assert proxy.commands == []


def test_wait_drained_polls_until_no_session_is_left(fake: Callable) -> None:
    counts = iter([3, 1, 0])
    proxy = fake(lambda command: stat([("app", "app1", next(counts), "DRAIN")]))
    result = haproxy_runtime.wait_drained("app", "app1", timeout=5, interval=0.01, socket_path=proxy.path)
    assert result["drained"] is True and result["sessions"] == 0
    assert len(proxy.commands) == 3


def test_wait_drained_gives_up_at_the_timeout(fake: Callable) -> None:
    proxy = fake(lambda command: stat([("app", "app1", 4, "DRAIN")]))
    result = haproxy_runtime.wait_drained("app", "app1", timeout=0.1, interval=0.02, socket_path=proxy.path)
    assert result == {"drained": False, "sessions": 4, "seconds": result["seconds"]} and result["seconds"] >= 0.1


def test_unreachable_socket_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(haproxy_runtime.HAProxyError, match=r"admin\.sock"):
        haproxy_runtime._command("show stat", socket_path=str(tmp_path / "admin.sock"))


def test_wait_up_returns_once_every_server_is_up(fake: Callable) -> None:
    answers = iter(
        [stat([("app", "app1", 0, "UP"), ("app", "app2", 0, "DOWN")]), stat([("app", "app1", 0, "UP"), ("app", "app2", 0, "UP 1/2")])]
    )
    proxy = fake(lambda command: next(answers))
    result = haproxy_runtime.wait_up("app", ["app1", "app2"], timeout=5, interval=0.01, socket_path=proxy.path)
    assert result["down"] == [] and len(proxy.commands) == 2


def test_wait_up_names_servers_still_down_or_missing(fake: Callable) -> None:
    proxy = fake(lambda command: stat([("app", "app1", 0, "MAINT"), ("app", "app2", 0, "UP")]))
    result = haproxy_runtime.wait_up("app", ["app1", "app2", "app3"], timeout=0.05, interval=0.01, socket_path=proxy.path)
    assert result["down"] == ["app1", "app3"]
