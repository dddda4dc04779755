"""Debian's headless Chromium loading the demo page again and again, recording every subresource that failed.

Driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
NUL-terminated JSON, commands on the browser's fd 3, answers and events on
its fd 4), so that neither a driver nor a websocket library is needed. The
cache is off: each load asks the load balancer for the page, its CSS and
its JS again, as many first-time visitors would, so a page rendered on one
release may get its assets from a server on the other.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Self

CHROMIUM = "/usr/bin/chromium"
# Runs before any script of each page: collects the Content-Security-Policy
# violations the page causes (enforced or report-only), as the DOM reports them.
CSP_LISTENER = (
    "window.__cspViolations = [];"
    " document.addEventListener('securitypolicyviolation', e =>"
    " window.__cspViolations.push(e.disposition + ' ' + e.effectiveDirective + ' ' + (e.blockedURI || 'inline')));"
)
# What a page reports once its script ran and its stylesheet applied.
PROBE = (
    "[document.getElementById('release') && document.getElementById('release').textContent,"
    " document.getElementById('script') && document.getElementById('script').textContent,"
    " getComputedStyle(document.querySelector('h1')).color].join('|')"
)


def _above_four(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 5)
    os.close(fd)
    return moved


class BrowserError(RuntimeError):
    """Chromium did not start, or stopped answering."""


@dataclass
class Visit:
    """One page load: the release that rendered it, and each request that failed."""

    release: str = ""
    script: str = ""
    color: str = ""
    requests: int = 0
    failed: list[str] = field(default_factory=list)
    #: Content-Security-Policy violations: the page's own reports, then the console's.
    csp_violations: list[str] = field(default_factory=list)
    #: Requests Chromium aborted because this machine's own interfaces changed
    #: (another lab session's hosts starting or stopping): no answer of the site.
    network_changed: int = 0


class Chromium:
    """One headless Chromium with one page, spoken to over the DevTools pipe."""

    def __init__(self, resolve: dict[str, str], netns_of: int | None = None) -> None:
        """``resolve``: host name -> address. ``netns_of``: a PID whose network
        namespace the browser joins (a test host's PID 1, to reach its loopback)."""
        self._profile = tempfile.TemporaryDirectory(prefix="salt-django-chromium-")
        commands_read, self._commands = os.pipe()
        self._events, events_write = os.pipe()
        # Above 4, so that renumbering them 3 and 4 cannot overwrite one with the other.
        commands_read, events_write = (_above_four(fd) for fd in (commands_read, events_write))
        rules = ",".join(f"MAP {name} {address}" for name, address in resolve.items())
        argv = [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            "--ignore-certificate-errors",  # the lab's certificate is self-signed
            f"--host-resolver-rules={rules}",
            f"--user-data-dir={self._profile.name}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        # The pipe ends become the browser's fds 3 and 4 (a tiny Python in between: sh knows only fds 0-9).
        renumber = "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); os.execv(sys.argv[3], sys.argv[3:])"
        netns = ["nsenter", f"--target={netns_of}", "--net", "--"] if netns_of else []
        self._proc = subprocess.Popen(
            [*netns, sys.executable, "-c", renumber, str(commands_read), str(events_write), *argv],
            pass_fds=(commands_read, events_write),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.close(commands_read)
        os.close(events_write)
        self._next = 0
        self._answers: dict[int, dict[str, Any]] = {}
        self._pending: list[dict[str, Any]] = []  # events not yet looked at
        self._inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for method, params in (
            ("Network.enable", {}),
            ("Page.enable", {}),
            ("Log.enable", {}),
            ("Network.setCacheDisabled", {"cacheDisabled": True}),
            ("Page.addScriptToEvaluateOnNewDocument", {"source": CSP_LISTENER}),
        ):
            self.call(method, params, session=True)

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._events, 65536):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for message in messages:
                self._inbox.put(json.loads(message))
        self._inbox.put({"closed": True})

    def _receive(self, timeout: float) -> dict[str, Any]:
        try:
            message = self._inbox.get(timeout=timeout)
        except queue.Empty:
            raise BrowserError(f"chromium sent nothing for {timeout:.0f} s") from None
        if message.get("closed"):
            raise BrowserError(f"chromium exited (status {self._proc.poll()})")
        return message

    def call(self, method: str, params: dict[str, Any], session: bool = False, timeout: float = 30) -> dict[str, Any]:
        """Send one command and wait for its answer (events meanwhile go to :meth:`events`)."""
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while self._next not in self._answers:
            incoming = self._receive(max(deadline - time.monotonic(), 0.1))
            if "id" in incoming:
                self._answers[incoming["id"]] = incoming
            else:
                self._pending.append(incoming)
        answer = self._answers.pop(self._next)
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    def visit(self, url: str, timeout: float = 20) -> Visit:
        """Load ``url`` and wait for its load event; every request with an error or a 4xx/5xx answer fails."""
        self._pending = []
        self.call("Page.navigate", {"url": url}, session=True)
        urls: dict[str, str] = {}
        visit = Visit()
        deadline = time.monotonic() + timeout
        loaded = False
        while not loaded:
            if not self._pending:
                if time.monotonic() > deadline:
                    visit.failed.append(f"{url}: no load event in {timeout:.0f} s")
                    return visit
                self._pending.append(self._receive(max(deadline - time.monotonic(), 0.1)))
            event = self._pending.pop(0)
            method, params = event.get("method"), event.get("params", {})
            if method == "Network.requestWillBeSent":
                urls[params["requestId"]] = params["request"]["url"]
                visit.requests += 1
            elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
                visit.failed.append(f"{params['response']['url']}: HTTP {params['response']['status']}")
            elif method == "Network.loadingFailed" and params.get("errorText") == "net::ERR_NETWORK_CHANGED":
                visit.network_changed += 1
            elif method == "Network.loadingFailed" and not params.get("canceled"):
                visit.failed.append(f"{urls.get(params['requestId'], '?')}: {params.get('errorText')}")
            elif method == "Log.entryAdded" and "Content Security Policy" in params["entry"].get("text", ""):
                visit.csp_violations.append(f"console: {params['entry']['text'][:200]}")
            elif method == "Page.loadEventFired":
                loaded = True
        probe = self.call("Runtime.evaluate", {"expression": PROBE, "returnByValue": True}, session=True)
        values = str(probe.get("result", {}).get("value", "")).split("|")
        visit.release, visit.script, visit.color = [*values, "", "", ""][:3]
        reported = self.evaluate("JSON.stringify(window.__cspViolations || [])")
        visit.csp_violations[:0] = json.loads(reported or "[]")
        return visit

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (run by the browser, not subject to the page's CSP)."""
        answer = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}, session=True)
        return answer.get("result", {}).get("value")

    def close(self) -> None:
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, 9)
        self._proc.wait(10)
        os.close(self._commands)
        self._profile.cleanup()


@dataclass
class PageLoads:
    """A browser loading ``url`` in a loop from a thread until :meth:`stop` (or ``limit`` seconds)."""

    url: str
    resolve: dict[str, str]
    limit: float = 600
    visits: list[Visit] = field(default_factory=list)
    error: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        browser = None
        try:
            browser = Chromium(self.resolve)
            deadline = time.monotonic() + self.limit
            while not self._stop.is_set() and time.monotonic() < deadline:
                self.visits.append(browser.visit(self.url))
        except (BrowserError, OSError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            if browser:
                browser.close()

    @property
    def failed(self) -> list[str]:
        return [failure for visit in self.visits for failure in visit.failed]

    @property
    def releases(self) -> Counter[str]:
        return Counter(visit.release for visit in self.visits)

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(60)

    def __str__(self) -> str:
        requests = sum(v.requests for v in self.visits)
        text = f"{len(self.visits)} page loads ({requests} requests), {len(self.failed)} failed subresources, "
        text += f"pages by release {dict(self.releases)}; first failures: {self.failed[:5]}"
        changed = sum(v.network_changed for v in self.visits)
        text += f"; {changed} aborted by a change of this machine's interfaces" if changed else ""
        return text + (f"; browser error: {self.error}" if self.error else "")
