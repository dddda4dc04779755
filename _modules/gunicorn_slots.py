"""Zero-downtime switches between releases on one server: blue/green Gunicorn.

Each project has two supervisord programs, ``<project>-gunicorn-a`` and
``-b``, each serving the release that ``/srv/<project>/slots/<slot>`` links
to, on its own unix socket. Nginx sends traffic to exactly one of them (the
upstream file ``/etc/nginx/salt-django/<project>-upstream.conf``). A switch:

1. points the idle slot at the new release and starts it, with no traffic;
2. checks ``/healthz`` on that slot's socket; a release that does not come
   up healthy is stopped again and nothing else has changed;
3. rewrites the upstream file, tests and reloads Nginx (graceful: old
   workers finish their requests), and waits for the old workers to exit;
4. repoints ``current`` and stops the old slot (Gunicorn's TERM is graceful).

No request is sent to a process that is starting or stopping, which is
what HUP of a single Gunicorn cannot promise (it keeps the old working
directory and dies on broken code).
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import time
from typing import Any

__virtualname__ = "gunicorn_slots"

SLOTS = ("a", "b")
UPSTREAM_DIR = "/etc/nginx/salt-django"


def __virtual__() -> str:
    """Stdlib only; supervisorctl and nginx are checked when a switch runs."""
    return __virtualname__


def _root(project: str) -> str:
    return __salt__["django_manage.project_root"](project)  # noqa: F821


def program(project: str, slot: str) -> str:
    """The supervisord program name of a slot."""
    return f"{project}-gunicorn-{slot}"


def socket_path(project: str, slot: str) -> str:
    """The unix socket a slot's Gunicorn listens on."""
    return os.path.join(_root(project), "shared", "run", f"gunicorn-{slot}.sock")


def upstream_file(project: str) -> str:
    """The Nginx include that names the serving slot's socket."""
    return os.path.join(UPSTREAM_DIR, f"{project}-upstream.conf")


def render_upstream(project: str, slot: str) -> str:
    """Text of the upstream include for ``slot``."""
    return (
        f"# Managed by salt-django (gunicorn_slots): the serving slot of {project}.\n"
        f"upstream {project}_gunicorn {{\n    server unix:{socket_path(project, slot)} fail_timeout=0;\n}}\n"
    )


def serving(project: str) -> str | None:
    """The slot Nginx sends traffic to, read from the upstream file."""
    try:
        with open(upstream_file(project), encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    for slot in SLOTS:
        if socket_path(project, slot) in text:
            return slot
    return None


def slot_release(project: str, slot: str) -> str | None:
    """The release a slot is linked to, or None when the slot is disabled."""
    link = os.path.join(_root(project), "slots", slot)
    return os.path.basename(os.readlink(link)) if os.path.islink(link) else None


def _ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["supervisorctl", *args], capture_output=True, text=True, check=False)


def program_state(project: str, slot: str) -> str | None:
    """supervisord's state of a slot's program (RUNNING, EXITED, ...), None if unknown."""
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


def slot_health(project: str, slot: str, host: str, timeout: float = 5) -> dict[str, Any]:
    """GET /healthz on the slot's own socket, as a plain-HTTP load balancer would."""
    conn = _UnixHTTPConnection(socket_path(project, slot), timeout)
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
        result = slot_health(project, slot, host)
        if result["ok"] and result["body"].get("release") == release:
            return result
        time.sleep(0.3)
    return {**result, "ok": False}


def _log_tail(project: str, lines: int = 8) -> str:
    """The last lines of the slots' log, secrets masked (this text reaches the job cache)."""
    path = os.path.join("/var/log", project, "gunicorn.log")
    try:
        with open(path, "rb") as handle:
            handle.seek(max(os.fstat(handle.fileno()).st_size - 16384, 0))
            tail = handle.read().decode(errors="replace").strip().splitlines()[-lines:]
    except OSError as exc:
        return f"({path}: {exc.strerror})"
    return __salt__["saltdjango.mask_secrets"](" | ".join(tail), project)  # noqa: F821


def _set_link(path: str, target: str) -> None:
    temp = f"{path}.{os.getpid()}.tmp"
    if os.path.lexists(temp):
        os.unlink(temp)
    os.symlink(target, temp)
    os.replace(temp, path)


def _write_upstream(project: str, slot: str) -> None:
    os.makedirs(UPSTREAM_DIR, mode=0o755, exist_ok=True)
    temp = upstream_file(project) + ".tmp"
    with open(temp, "w", encoding="utf-8") as handle:
        handle.write(render_upstream(project, slot))
    os.replace(temp, upstream_file(project))


def _nginx_running() -> bool:
    try:
        with open("/run/nginx.pid", encoding="utf-8") as handle:
            os.kill(int(handle.read().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


def _old_nginx_workers() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if b"worker process is shutting down" in handle.read():
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


def _switch_nginx(project: str, slot: str, previous: str | None, timeout: float) -> None:
    _write_upstream(project, slot)
    if not _nginx_running():
        return
    test = subprocess.run(["nginx", "-t", "-q"], capture_output=True, text=True, check=False)
    if test.returncode != 0:
        if previous:
            _write_upstream(project, previous)
        raise RuntimeError(f"nginx -t failed: {test.stderr.strip()}")
    subprocess.run(["nginx", "-s", "reload"], capture_output=True, check=True)
    # Old workers may still hold keep-alive connections that would send a
    # request to the old slot: it stops only once they are gone.
    deadline = time.monotonic() + timeout
    time.sleep(0.2)
    while _old_nginx_workers() and time.monotonic() < deadline:
        time.sleep(0.1)


def activate(project: str, release: str, host: str, timeout: float = 60) -> dict[str, Any]:
    """Serve ``release`` from the idle slot, then retire the serving one.

    ``host`` is the Host header for the health check (a project domain).
    Raises RuntimeError, with the live release still serving, when the new
    one does not become healthy.
    """
    root = _root(project)
    old = serving(project)
    new = "b" if old == "a" else "a"
    os.makedirs(os.path.join(root, "slots"), mode=0o755, exist_ok=True)
    _set_link(os.path.join(root, "slots", new), os.path.join("..", "releases", release))
    started = _ctl("restart", program(project, new))
    health = _wait_healthy(project, new, release, host, timeout)
    if not health["ok"]:
        _retire(project, new)
        detail = health.get("error") or health.get("body") or started.stdout.strip()
        raise RuntimeError(f"release {release} did not become healthy in slot {new}: {detail}")
    try:
        _switch_nginx(project, new, old, timeout)
    except (RuntimeError, OSError, subprocess.CalledProcessError):
        _retire(project, new)
        raise
    _set_link(os.path.join(root, "current"), os.path.join("releases", release))
    if old:
        _retire(project, old)
    return {"slot": {"old": old, "new": new}, "release": release}


def _retire(project: str, slot: str) -> None:
    """Disable a slot: no link, program stopped (gracefully: TERM)."""
    link = os.path.join(_root(project), "slots", slot)
    if os.path.islink(link):
        os.unlink(link)
    _ctl("stop", program(project, slot))


def is_serving(project: str, release: str) -> bool:
    """True when Nginx's slot runs ``release`` and its program is RUNNING."""
    slot = serving(project)
    return bool(slot) and slot_release(project, slot) == release and program_state(project, slot) == "RUNNING"


def status(project: str) -> dict[str, Any]:
    """Which slot serves, and what each slot runs."""
    return {
        "serving": serving(project),
        "slots": {slot: {"release": slot_release(project, slot), "state": program_state(project, slot)} for slot in SLOTS},
    }
