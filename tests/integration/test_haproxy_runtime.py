"""``_modules/haproxy_runtime.py`` against a real HAProxy (Debian's package) in a test host.

The unit tests use a protocol stand-in; this checks that the module reads
what a real HAProxy 2.6 answers and that state changes really take effect.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.helpers import REPO_IN_HOST, repo_host
from tests.lab.hosts import Host

pytestmark = [pytest.mark.lab]

SOCKET = "/run/haproxy-lab.sock"
CONFIG = f"""\
global
    stats socket {SOCKET} mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend web
    bind 127.0.0.1:8080
    default_backend app
backend app
    option httpchk GET /
    server app1 127.0.0.1:8001 check inter 500ms
    server app2 127.0.0.1:8002 check inter 500ms
"""


def call(host: Host, function: str, *args: object) -> object:
    """Run one function of the module inside the host with the OS Python; its JSON result."""
    script = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('m', '{REPO_IN_HOST}/_modules/haproxy_runtime.py')\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "args = json.loads(sys.argv[1])\n"
        "try:\n"
        f"    print(json.dumps(m.{function}(*args, socket_path='{SOCKET}')))\n"
        "except m.HAProxyError as exc:\n"
        "    print(json.dumps({'error': str(exc)}))\n"
    )
    return json.loads(host.run(["/usr/bin/python3", "-c", script, json.dumps(list(args))]).stdout)


@pytest.fixture(scope="module")
def haproxy(lab_base: Path, lab_workdir: Path) -> Iterator[Host]:
    with repo_host("haproxy", lab_base, lab_workdir, boot=False) as host:
        host.run("DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy >/dev/null")
        for name, port in (("app1", 8001), ("app2", 8002)):
            host.run(f"mkdir -p /srv/{name} && echo {name} > /srv/{name}/index.html")
            serve = f"/usr/bin/python3 -m http.server {port} --bind 127.0.0.1 --directory /srv/{name}"
            host.run(f"setsid -f {serve} </dev/null >/dev/null 2>&1")
        host.run(["sh", "-c", "cat > /etc/haproxy/lab.cfg"], input=CONFIG)
        host.run("haproxy -D -f /etc/haproxy/lab.cfg -p /run/haproxy-lab.pid")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            servers = call(host, "servers", "app")
            if isinstance(servers, dict) and all(s.get("status") == "UP" for s in servers.values()):
                break
            time.sleep(0.5)
        yield host


def test_servers_are_read_with_their_state(haproxy: Host) -> None:
    servers = call(haproxy, "servers", "app")
    assert set(servers) == {"app1", "app2"}
    assert servers["app1"]["status"] == "UP" and servers["app1"]["sessions"] == 0
    assert servers["app1"]["check"].startswith("L7OK")


@pytest.mark.parametrize(("state", "status"), [("drain", "DRAIN"), ("maint", "MAINT"), ("ready", "UP")])
def test_state_changes_take_effect(haproxy: Host, state: str, status: str) -> None:
    assert call(haproxy, "set_state", "app", "app2", state) == {"backend": "app", "server": "app2", "state": state}
    # Leaving maint, a server shows its rising health checks: "UP 1/3".
    assert call(haproxy, "servers", "app")["app2"]["status"].split()[0] == status


def _served_by(host: Host, requests: int = 6) -> list[str]:
    return host.run(f"for i in $(seq {requests}); do curl -sf http://127.0.0.1:8080/; done").stdout.split()


def test_maint_takes_a_server_out_of_rotation(haproxy: Host) -> None:
    assert set(_served_by(haproxy)) == {"app1", "app2"}
    call(haproxy, "set_state", "app", "app1", "maint")
    try:
        assert _served_by(haproxy) == ["app2"] * 6
        assert call(haproxy, "servers", "app")["app1"]["status"] == "MAINT"
    finally:
        call(haproxy, "set_state", "app", "app1", "ready")


def test_an_idle_server_is_drained_at_once(haproxy: Host) -> None:
    call(haproxy, "set_state", "app", "app1", "drain")
    try:
        result = call(haproxy, "wait_drained", "app", "app1", 5)
        assert result["drained"] is True and result["sessions"] == 0
    finally:
        call(haproxy, "set_state", "app", "app1", "ready")


def test_unknown_server_and_backend_are_named(haproxy: Host) -> None:
    assert "app9" in call(haproxy, "set_state", "app", "app9", "drain")["error"]
    assert call(haproxy, "servers", "api") == {"error": "no backend 'api' in HAProxy"}
