"""Zero-downtime switches between releases on one server: blue/green Gunicorn.

Each project has two supervisord programs, ``<project>-gunicorn-a`` and
``-b``, each serving the release that ``/srv/<project>/slots/<slot>`` links
to, on its own unix socket. Nginx connects, for every request, to
``shared/run/gunicorn.sock``: a symlink to the serving slot's socket. A
switch:

1. points the idle slot at the new release and starts it, with no traffic;
2. checks ``/healthz`` on that slot's socket; a release that does not come
   up healthy is stopped again and nothing else has changed;
3. repoints ``gunicorn.sock`` at the new slot's socket (one atomic rename:
   the next connection Nginx opens reaches the new slot) and ``current``;
4. waits until the old slot's listen queue is empty (connections opened
   before the rename), then stops it: Gunicorn's TERM lets each worker
   finish its request, up to the graceful timeout.

Nginx is never reloaded for a switch, so its clients' keep-alive
connections never see it; the serving slot is whatever the link names,
never a config file that could disagree with what runs. No request is sent
to a process that is starting or stopping, which is what HUP of a single
Gunicorn cannot promise (it keeps the old working directory and dies on
broken code).
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import subprocess
import time
from typing import Any

__virtualname__ = "gunicorn_slots"

SLOTS = ("a", "b")
LEGACY_UPSTREAM_DIR = "/etc/nginx/salt-django"


def __virtual__() -> str:
    """Stdlib only; supervisorctl and nginx are checked when a switch runs."""
    return __virtualname__


def _root(project: str) -> str:
    return __salt__["django_manage.project_root"](project)  # noqa: F821


def program(project: str, slot: str) -> str:
    """The supervisord program name of a slot.

    CLI Example:

    .. code-block:: bash

        salt-call gunicorn_slots.program demo a
    """
    return f"{project}-gunicorn-{slot}"


def _socket_path(project: str, slot: str) -> str:
    """The unix socket a slot's Gunicorn listens on."""
    return os.path.join(_root(project), "shared", "run", f"gunicorn-{slot}.sock")


def _serving_socket(project: str) -> str:
    """The socket path Nginx connects to: a symlink to the serving slot's socket."""
    return os.path.join(_root(project), "shared", "run", "gunicorn.sock")


def _legacy_upstream_file(project: str) -> str:
    """Where salt-django before the socket link named the serving slot (read once, by ``adopt``)."""
    return os.path.join(LEGACY_UPSTREAM_DIR, f"{project}-upstream.conf")


def _serving(project: str) -> str | None:
    """The slot Nginx sends traffic to: the one ``gunicorn.sock`` links to."""
    try:
        target = os.readlink(_serving_socket(project))
    except OSError:
        return None
    return next((slot for slot in SLOTS if os.path.basename(target) == f"gunicorn-{slot}.sock"), None)


def adopt(project: str, test: bool = False) -> str | None:
    """Create the socket link for a slot that an older salt-django's upstream file names.

    Returns the slot linked (or that would be, with ``test``), None when
    there is nothing to adopt: the link exists, or no slot served before.

    CLI Example:

    .. code-block:: bash

        salt-call gunicorn_slots.adopt demo
    """
    if os.path.lexists(_serving_socket(project)):
        return None
    try:
        with open(_legacy_upstream_file(project), encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    slot = next((s for s in SLOTS if _socket_path(project, s) in text), None)
    if slot and not test:
        _set_link(_serving_socket(project), f"gunicorn-{slot}.sock")
    return slot


def slot_release(project: str, slot: str) -> str | None:
    """The release a slot is linked to, or None when the slot is disabled.

    CLI Example:

    .. code-block:: bash

        salt-call gunicorn_slots.slot_release demo b
    """
    link = os.path.join(_root(project), "slots", slot)
    return os.path.basename(os.readlink(link)) if os.path.islink(link) else None


def _ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["supervisorctl", *args], capture_output=True, text=True, check=False)


def program_state(project: str, slot: str) -> str | None:
    """supervisord's state of a slot's program (RUNNING, EXITED, ...), None if unknown.

    CLI Example:

    .. code-block:: bash

        salt-call gunicorn_slots.program_state demo a
    """
    out = _ctl("status", program(project, slot)).stdout.split()
    return out[1] if len(out) > 1 and "no such process" not in " ".join(out) else None


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def _slot_health(project: str, slot: str, host: str, timeout: float = 5) -> dict[str, Any]:
    """GET /healthz on the slot's own socket, as a plain-HTTP load balancer would."""
    conn = _UnixHTTPConnection(_socket_path(project, slot), timeout)
    try:
        conn.request("GET", "/healthz", headers={"Host": host})
        response = conn.getresponse()
        body = response.read()
    except OSError as exc:
        return {"ok": False, "status": None, "error": str(exc)}
    finally:
        conn.close()
    return __salt__["django_manage.health_answer"](response.status, body)  # noqa: F821


def _wait_healthy(project: str, slot: str, release: str, host: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    result: dict[str, Any] = {"ok": False, "error": "not checked"}
    while time.monotonic() < deadline:
        state = program_state(project, slot)
        if state in ("FATAL", "EXITED", "BACKOFF", "STOPPED"):
            return {"ok": False, "error": f"{program(project, slot)} is {state}; the end of its log: {_log_tail(project)}"}
        result = _slot_health(project, slot, host)
        if result["ok"] and result["body"].get("release") == release:
            return result
        time.sleep(0.3)
    return {**result, "ok": False}


#: An access-log line (Gunicorn's default format): the serving slot's requests drown what a failing slot said.
_ACCESS_LINE = re.compile(r'^\S* - \S+ \[[^]]+\] "')


def _log_tail(project: str) -> str:
    """The end of the slots' log but access-log lines, secrets masked."""
    return __salt__["saltdjango.log_tail"](project, "gunicorn.log", skip=_ACCESS_LINE.pattern)  # noqa: F821


def _set_link(path: str, target: str) -> None:
    __utils__["saltdjango_files.relink"](path, target)  # noqa: F821


def _listen_queue(path: str) -> int | None:
    """Connections waiting in the listen queue of the unix socket ``path`` (None: not listening)."""
    try:
        out = subprocess.run(["ss", "-xlnH", "src", path], capture_output=True, text=True, check=False).stdout.split()
    except OSError:  # no iproute2: the switch then waits only its first pause
        return None
    return int(out[2]) if len(out) > 2 and out[2].isdigit() else None


def _drain(project: str, slot: str, timeout: float) -> None:
    """Wait until every connection opened to ``slot`` before the switch was accepted.

    Gunicorn closes its listener on TERM: a connection still queued then
    would be reset, and Nginx would answer 502.
    """
    deadline = time.monotonic() + timeout
    time.sleep(0.2)
    while (_listen_queue(_socket_path(project, slot)) or 0) > 0 and time.monotonic() < deadline:
        time.sleep(0.1)


def activate(project: str, release: str, host: str, timeout: float = 60) -> dict[str, Any]:
    """Serve ``release`` from the idle slot, then retire the serving one.

    ``host`` is the Host header for the health check (a project domain).
    Raises RuntimeError, with the live release still serving, when the new
    one does not become healthy.

    CLI Example:

    .. code-block:: bash

        salt-call gunicorn_slots.activate demo 20261129T040000Z-1a2b3c4 demo.example.org
    """
    root = _root(project)
    old = _serving(project)
    new = "b" if old == "a" else "a"
    os.makedirs(os.path.join(root, "slots"), mode=0o755, exist_ok=True)
    _set_link(os.path.join(root, "slots", new), os.path.join("..", "releases", release))
    started = _ctl("restart", program(project, new))
    health = _wait_healthy(project, new, release, host, timeout)
    if not health["ok"]:
        _retire(project, new)
        detail = health.get("error") or health.get("body") or started.stdout.strip()
        if "end of its log" not in str(detail):
            detail = f"{detail}; the end of its log: {_log_tail(project)}"
        raise RuntimeError(f"release {release} did not become healthy in slot {new}: {detail}")
    _set_link(_serving_socket(project), f"gunicorn-{new}.sock")
    _set_link(os.path.join(root, "current"), os.path.join("releases", release))
    if old:
        _drain(project, old, timeout)
        _retire(project, old)
    return {"slot": {"old": old, "new": new}, "release": release}


def _retire(project: str, slot: str) -> None:
    """Disable a slot: no link, program stopped (gracefully: TERM)."""
    link = os.path.join(_root(project), "slots", slot)
    if os.path.islink(link):
        os.unlink(link)
    _ctl("stop", program(project, slot))


def is_serving(project: str, release: str) -> bool:
    """True when the linked slot runs ``release`` and its program is RUNNING.

    CLI Example:

    .. code-block:: bash

        salt-call gunicorn_slots.is_serving demo 20261129T040000Z-1a2b3c4
    """
    slot = _serving(project)
    return bool(slot) and slot_release(project, slot) == release and program_state(project, slot) == "RUNNING"


def status(project: str) -> dict[str, Any]:
    """Which slot serves, and what each slot runs.

    CLI Example:

    .. code-block:: bash

        salt-call gunicorn_slots.status demo
    """
    return {
        "serving": _serving(project),
        "slots": {slot: {"release": slot_release(project, slot), "state": program_state(project, slot)} for slot in SLOTS},
    }
