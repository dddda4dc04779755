"""HTTPS requests through the cluster's load balancer, from this machine (on the bridge).

:class:`Traffic` sends requests without pause from a few threads (a new
connection each, as separate browsers would) until stopped, and counts what
came back: every answer that is not a 200 page, and every connection error,
is a failed request. Bounded: it stops by itself after ``limit`` seconds.

A request belongs to the count that was running when it was *sent*: after
:meth:`reset`, an answer to a request sent before it (say, one in flight on a
server whose network was cut) is kept apart in ``earlier``, not counted again.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

_RELEASE = re.compile(r'id="release">([^<]+)<')


@dataclass
class Answer:
    status: int | None
    server: str
    body: str
    error: str = ""

    @property
    def release(self) -> str:
        """The release id the demo page says rendered it."""
        found = _RELEASE.search(self.body)
        return found.group(1) if found else ""


def _context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the lab's certificate is self-signed
    return context


def get(address: str, domain: str, path: str = "/", timeout: float = 10) -> Answer:
    """One GET of ``https://<domain><path>`` sent to ``address``:443 (SNI and Host: ``domain``)."""
    context = _context()
    try:
        with socket.create_connection((address, 443), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=domain) as tls:
                conn = http.client.HTTPConnection(domain, timeout=timeout)
                conn.sock = tls
                conn.request("GET", path, headers={"Host": domain, "Connection": "close"})
                response = conn.getresponse()
                body = response.read().decode(errors="replace")
                return Answer(response.status, response.getheader("X-Served-By", ""), body)
    except (OSError, http.client.HTTPException) as exc:
        return Answer(None, "", "", f"{type(exc).__name__}: {exc}")


@dataclass
class Traffic:
    """Requests without pause through ``address`` until :meth:`stop` (or ``limit`` seconds)."""

    address: str
    domain: str
    threads: int = 2
    limit: float = 600
    sent: int = 0
    failures: list[str] = field(default_factory=list)
    servers: Counter[str] = field(default_factory=Counter)
    earlier: list[str] = field(default_factory=list)
    _since: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self._stop.is_set() and time.monotonic() < deadline:
            sent_at = time.monotonic()
            answer = get(self.address, self.domain)
            outcome = answer.error or f"HTTP {answer.status} from {answer.server or '?'}: {answer.body[:200]}"
            outcome = "" if answer.status == 200 else outcome
            with self._lock:
                if sent_at < self._since:
                    self.earlier.append(outcome or f"200 from {answer.server}")
                    continue
                self.sent += 1
                if outcome:
                    self.failures.append(outcome)
                else:
                    self.servers[answer.server] += 1

    def reset(self) -> None:
        """Count afresh the requests sent from now on (e.g. once a server is marked down)."""
        with self._lock:
            self.sent, self.failures, self.servers, self.earlier = 0, [], Counter(), []
            self._since = time.monotonic()

    def start(self) -> Self:
        self._workers = [threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def stop(self) -> Self:
        self._stop.set()
        for worker in self._workers:
            worker.join(30)
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __str__(self) -> str:
        text = f"{self.sent} sent, {len(self.failures)} failed, by server {dict(self.servers)}; first failures: {self.failures[:5]}"
        return text + (f"; answers to requests sent before the count restarted: {self.earlier}" if self.earlier else "")


@dataclass
class SlowRequests:
    """A ``/slow/?seconds=N`` request every ``every`` seconds until :meth:`stop`; each must end with 200."""

    address: str
    domain: str
    seconds: int = 20
    # Sync Gunicorn workers each hold one: at most two run at once.
    every: float = 10
    limit: float = 600
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _one(self) -> None:
        answer = get(self.address, self.domain, f"/slow/?seconds={self.seconds}", timeout=self.seconds + 30)
        self.answers.append(answer)

    def _launch(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self._stop.is_set() and time.monotonic() < deadline:
            thread = threading.Thread(target=self._one, daemon=True)
            thread.start()
            self._threads.append(thread)
            self._stop.wait(self.every)

    def __enter__(self) -> Self:
        self._launcher = threading.Thread(target=self._launch, daemon=True)
        self._launcher.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._launcher.join(10)
        for thread in self._threads:
            thread.join(self.seconds + 40)

    @property
    def failures(self) -> list[str]:
        return [a.error or f"HTTP {a.status}: {a.body[:120]}" for a in self.answers if a.status != 200]

    def __str__(self) -> str:
        releases = Counter(a.body.rsplit("release ", 1)[-1].strip() for a in self.answers if a.status == 200)
        text = f"{len(self.answers)} requests of {self.seconds} s, {len(self.failures)} failed, begun on releases {dict(releases)}"
        return text + (f"; failures: {self.failures[:3]}" if self.failures else "")


VISITOR_SCRIPT = Path(__file__).resolve().parents[1] / "integration" / "visitor.py"


@dataclass
class Visitor:
    """tests/integration/visitor.py on this machine, through the load balancer: a logged-in returning visitor."""

    address: str
    domain: str
    state: Path
    posts: dict[str, Any] = field(default_factory=dict)

    def _argv(self, *args: str) -> list[str]:
        return [sys.executable, str(VISITOR_SCRIPT), "--host", self.domain, "--address", self.address, "--state", str(self.state), *args]

    def run(self, *args: str) -> dict[str, Any]:
        """``login ...`` or ``check``: its JSON answer."""
        return json.loads(subprocess.run(self._argv(*args), capture_output=True, text=True, check=True, timeout=120).stdout)

    @contextmanager
    def posting(self, prefix: str) -> Iterator[Self]:
        """Post the form (token taken at login) without pause meanwhile; the summary lands in ``posts``."""
        stop = self.state.with_suffix(".stop")
        stop.unlink(missing_ok=True)
        proc = subprocess.Popen(self._argv("post", "--stop-file", str(stop), "--prefix", prefix), stdout=subprocess.PIPE, text=True)
        try:
            yield self
        finally:
            stop.touch()
            self.posts = json.loads(proc.communicate(timeout=90)[0] or "{}")
