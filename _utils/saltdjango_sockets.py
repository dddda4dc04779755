"""A local app server's socket, as Nginx and the switch see it
(``_modules/app_slots.py``): a GET in HTTP or in the uwsgi protocol, the
connections waiting in its listen queue and those it has accepted. A socket
is a unix socket's path, or ``127.0.0.1:<port>`` (an app server that
listens on a loopback port). Stdlib and ``ss`` (iproute2) only; no Salt
calls.
"""

from __future__ import annotations

import http.client
import socket
import struct
import subprocess


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def is_port(path: str) -> bool:
    """True for ``<address>:<port>``, False for a unix socket's path."""
    return not path.startswith("/")


def _http_get(path: str, url: str, host: str, timeout: float) -> tuple[int, bytes]:
    if is_port(path):
        address, _, port = path.rpartition(":")
        conn: http.client.HTTPConnection = http.client.HTTPConnection(address, int(port), timeout=timeout)
    else:
        conn = _UnixHTTPConnection(path, timeout)
    try:
        conn.request("GET", url, headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def uwsgi_packet(variables: dict[str, str]) -> bytes:
    """A uwsgi protocol request (modifier 0: a WSGI request) carrying ``variables``."""

    def field(text: str) -> bytes:
        data = text.encode("latin-1")
        if len(data) > 0xFFFF:
            raise ValueError("uwsgi variables over 64 KiB")
        return struct.pack("<H", len(data)) + data

    body = b"".join(field(k) + field(v) for k, v in variables.items())
    if len(body) > 0xFFFF:
        raise ValueError("uwsgi variables over 64 KiB")
    return struct.pack("<BHB", 0, len(body), 0) + body


def _uwsgi_get(path: str, url: str, host: str, timeout: float) -> tuple[int, bytes]:
    """GET ``url`` from the uwsgi socket ``path`` as Nginx's uwsgi_pass would; uWSGI answers in HTTP."""
    variables = {
        "REQUEST_METHOD": "GET",
        "REQUEST_URI": url,
        "PATH_INFO": url,
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": host,
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": host,
    }
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(uwsgi_packet(variables))
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.read()


def listen_queue(path: str) -> int | None:
    """Connections waiting in the listen queue of the socket ``path`` (None: not listening)."""
    # ss names a unix socket's kind in a first column, a TCP socket's not.
    family, column = ("-t", 1) if is_port(path) else ("-x", 2)
    try:
        out = subprocess.run(["ss", f"{family}lnH", "src", path], capture_output=True, text=True, check=False).stdout.split()
    except OSError:  # no iproute2: the switch then waits only its first pause
        return None
    return int(out[column]) if len(out) > column and out[column].isdigit() else None


def connections(path: str) -> int:
    """Connections the socket ``path`` has accepted and not closed (requests,
    websockets); on a TCP port also those still waiting to be accepted."""
    try:
        family = "-tnH" if is_port(path) else "-xnH"
        out = subprocess.run(["ss", family, "state", "established", "src", path], capture_output=True, text=True, check=False).stdout
    except OSError:
        return 0
    return len(out.splitlines())


def get(protocol: str, path: str, url: str, host: str, timeout: float) -> tuple[int, bytes]:
    """GET ``url`` with Host ``host`` from the socket ``path`` in ``protocol``
    (``http``, ``http-port`` or ``uwsgi``): status and body. Raises OSError or
    http.client.HTTPException when the socket does not answer."""
    return (_uwsgi_get if protocol == "uwsgi" else _http_get)(path, url, host, timeout)
