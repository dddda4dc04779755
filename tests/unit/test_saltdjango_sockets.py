"""``_utils/saltdjango_sockets.py``: what the switch asks a slot's unix socket."""

from __future__ import annotations

import http.server
import socket
import struct
import threading
from pathlib import Path

import pytest

from tests.unit.conftest import Utils

sockets = Utils().module("saltdjango_sockets")


def test_a_uwsgi_packet_carries_its_variables_length_prefixed() -> None:
    packet = sockets.uwsgi_packet({"PATH_INFO": "/healthz", "HTTP_HOST": "x"})
    modifier1, size, modifier2 = struct.unpack("<BHB", packet[:4])
    body = packet[4:]
    assert (modifier1, modifier2, size) == (0, 0, len(body))
    assert body == b"\x09\x00PATH_INFO\x08\x00/healthz\x09\x00HTTP_HOST\x01\x00x"
    with pytest.raises(ValueError, match="64 KiB"):
        sockets.uwsgi_packet({"X": "y" * 70000})


def test_listen_queue_counts_connections_not_yet_accepted(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    assert sockets.listen_queue(path) is None
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen(8)
        assert sockets.listen_queue(path) == 0
        clients = [socket.socket(socket.AF_UNIX) for _ in range(3)]
        for client in clients:
            client.connect(path)
        assert sockets.listen_queue(path) == 3
        server.accept()[0].close()
        assert sockets.listen_queue(path) == 2
        for client in clients:
            client.close()


def test_connections_counts_what_the_socket_accepted_and_get_speaks_http_there(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"{self.path} for {self.headers['Host']}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class Server(http.server.HTTPServer):
        address_family = socket.AF_UNIX

        def server_bind(self) -> None:
            self.socket.bind(self.server_address)

    server = Server(path, Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert sockets.get("http", path, "/healthz", "demo.example.org", 5) == (200, b"/healthz for demo.example.org")
        with socket.socket(socket.AF_UNIX) as idle:
            idle.connect(path)
            assert sockets.connections(path) >= 1
    finally:
        server.shutdown()
        server.server_close()
