"""Uploads through the demo's /upload/ page and downloads of /media/, timed:
from this machine through a TLS front (HAProxy, or a single server's Nginx),
or, copied into a lab host and run there with the stdlib only, straight to
one app server's Nginx on its private port, as the load balancer talks to it
(plain HTTP, ``X-Forwarded-Proto: https``).

    python3 media.py upload <address> <port> <tls 0|1> <domain> <file>
    python3 media.py download <address> <port> <tls 0|1> <domain> <path> <out file>

Each prints one JSON object: what the server answered and the seconds it took.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import ssl
import sys
import time
import uuid
from pathlib import Path
from typing import Any

_TOKEN = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
_COOKIE = re.compile(r"csrftoken=([^;]+)")
CHUNK = 1 << 16


def _connect(address: str, port: int, tls: bool, timeout: float) -> http.client.HTTPConnection:
    if not tls:
        return http.client.HTTPConnection(address, port, timeout=timeout)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the lab's certificates are self-signed
    return http.client.HTTPSConnection(address, port, timeout=timeout, context=context)


def _headers(domain: str, tls: bool) -> dict[str, str]:
    # Behind the load balancer the app server's Nginx learns the scheme from it.
    return {"Host": domain} if tls else {"Host": domain, "X-Forwarded-Proto": "https"}


def upload(address: str, port: int, tls: bool, domain: str, path: Path, timeout: float = 120) -> dict[str, Any]:
    """GET /upload/ (the CSRF cookie and token), then POST ``path`` as the form's
    file; the server's JSON answer plus ``status`` and ``seconds`` (the POST alone)."""
    conn = _connect(address, port, tls, timeout)
    conn.request("GET", "/upload/", headers=_headers(domain, tls))
    form = conn.getresponse()
    page = form.read().decode(errors="replace")
    cookie = _COOKIE.search(form.getheader("Set-Cookie", "") or "")
    token = _TOKEN.search(page)
    if form.status != 200 or not cookie or not token:
        return {"status": form.status, "error": f"no CSRF cookie or token in GET /upload/: {page[:300]}"}
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="csrfmiddlewaretoken"\r\n\r\n{token.group(1)}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    size = len(head) + path.stat().st_size + len(tail)
    headers = {
        **_headers(domain, tls),
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(size),
        "Cookie": f"csrftoken={cookie.group(1)}",
        "Origin": f"https://{domain}",
        "Referer": f"https://{domain}/upload/",
        "Accept": "application/json",
    }
    started = time.monotonic()
    conn.putrequest("POST", "/upload/", skip_host=True)
    for key, value in headers.items():
        conn.putheader(key, value)
    conn.endheaders()
    conn.send(head)
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            conn.send(chunk)
    conn.send(tail)
    answer = conn.getresponse()
    body = answer.read().decode(errors="replace")
    seconds = time.monotonic() - started
    conn.close()
    try:
        stored = json.loads(body)
    except ValueError:
        stored = {"error": body[:500]}
    return {"status": answer.status, "seconds": seconds, **stored}


def download(address: str, port: int, tls: bool, domain: str, path: str, out: Path, timeout: float = 120) -> dict[str, Any]:
    """GET ``path`` into ``out``: ``status``, the response's headers (lower-case
    names), the body's ``sha256`` and size, and ``seconds``."""
    started = time.monotonic()
    conn = _connect(address, port, tls, timeout)
    conn.request("GET", path, headers=_headers(domain, tls))
    answer = conn.getresponse()
    digest, size = hashlib.sha256(), 0
    with out.open("wb") as handle:
        while chunk := answer.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            handle.write(chunk)
    seconds = time.monotonic() - started
    conn.close()
    headers = {key.lower(): value for key, value in answer.getheaders()}
    return {"status": answer.status, "headers": headers, "sha256": digest.hexdigest(), "size": size, "seconds": seconds}


def main(argv: list[str]) -> dict[str, Any]:
    command, address, port, tls, domain, *rest = argv
    if command == "upload":
        return upload(address, int(port), tls == "1", domain, Path(rest[0]))
    return download(address, int(port), tls == "1", domain, rest[0], Path(rest[1]))


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
