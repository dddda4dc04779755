"""Zero-downtime switches between releases on one server: blue/green app server slots.

Each project has two supervisord programs, ``<project>-app-a`` and ``-b``,
each serving the release that ``/srv/<project>/slots/app-<slot>`` links to,
on its own unix socket ``shared/run/app-<slot>.sock`` (or, for a kind that
cannot listen on one, protocol ``http-port``: on the loopback port
``app_server:port``, slot b's the next), with the app server of pillar
``app_server:kind`` (``bin/app-run``). Nginx connects, for every request,
through a link to the serving slot's socket, one link per protocol it
speaks: ``uwsgi.sock`` (uwsgi_pass) while the file ``uwsgi.active``
exists, else ``http.sock`` (proxy_pass); a slot on a port serves while the
file ``app-<slot>.port`` exists, and then before any link. (Nginx's ``-e``
is false for a socket, so a plain file says which link serves.) A switch:

1. points the idle slot at the new release and starts it, with no traffic;
2. checks ``/healthz`` on that slot's socket, in its protocol; a release
   that does not come up healthy is stopped again and nothing else has
   changed;
3. repoints the link of the new slot's protocol at its socket (one atomic
   rename: the next connection Nginx opens reaches the new slot), then
   ``current``. To another protocol, its link is set first, then
   ``uwsgi.active`` created or removed, then a port's file: again one
   atomic step for Nginx (see ``_point``);
4. waits until the old slot's listen queue is empty (connections opened
   before the switch) and its connections have ended, for up to
   ``app_server:drain_timeout`` seconds; websockets still open then are
   closed with 1001 (going away, see ``salt_django_asgi``); then it stops
   the slot: TERM lets each worker finish its request, up to the graceful
   timeout.

Nginx is never reloaded for a switch, not even one to another kind, so its
clients' keep-alive connections never see it; the serving slot is whatever
the links name, never a config file that could disagree with what runs.

Servers set up before these names ran ``<project>-gunicorn-<slot>`` on
``gunicorn-<slot>.sock`` behind a ``gunicorn.sock`` link (and before that,
an upstream file). Such a slot still serves until the next switch, which
moves to the new names and then removes the old programs: upgrading is a
release like any other.
"""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import time
from typing import Any, NamedTuple

__virtualname__ = "app_slots"

SLOTS = ("a", "b")
#: The link Nginx connects through for each protocol, the one it prefers first.
LINKS = {"uwsgi": "uwsgi.sock", "http": "http.sock"}
#: While this file exists, Nginx passes requests to ``uwsgi.sock``.
UWSGI_ACTIVE = "uwsgi.active"
#: While ``app-<slot>.port`` exists, Nginx passes requests to that slot's port (b's first).
PORT_PROTOCOL = "http-port"
#: What servers set up by an older salt-django serve through.
LEGACY_LINK = "gunicorn.sock"
LEGACY_UPSTREAM_DIR = "/etc/nginx/salt-django"
_SOCKET = re.compile(r"^(app|gunicorn)-([ab])\.sock$")


def __virtual__() -> str:
    """Stdlib only; supervisorctl and ss are checked when a switch runs."""
    return __virtualname__


class Slot(NamedTuple):
    """One slot's names: the current ones, or (``legacy``) an older salt-django's."""

    project: str
    slot: str
    legacy: bool = False

    @property
    def program(self) -> str:
        return f"{self.project}-{'gunicorn' if self.legacy else 'app'}-{self.slot}"

    @property
    def socket_name(self) -> str:
        return f"{'gunicorn' if self.legacy else 'app'}-{self.slot}.sock"

    @property
    def link_name(self) -> str:
        return self.slot if self.legacy else f"app-{self.slot}"


def _root(project: str) -> str:
    return __salt__["django_manage.project_root"](project)  # noqa: F821


def _run_dir(project: str) -> str:
    return os.path.join(_root(project), "shared", "run")


def _slot_link(slot: Slot) -> str:
    return os.path.join(_root(slot.project), "slots", slot.link_name)


def _socket_path(slot: Slot) -> str:
    return os.path.join(_run_dir(slot.project), slot.socket_name)


def _address(slot: Slot, protocol: str | None, port: int) -> str:
    """Where the slot listens in ``protocol``: its unix socket, or its loopback port."""
    if protocol == PORT_PROTOCOL:
        return f"127.0.0.1:{port + SLOTS.index(slot.slot)}"
    return _socket_path(slot)


def _port_file(project: str, slot: str) -> str:
    return os.path.join(_run_dir(project), f"app-{slot}.port")


def program(project: str, slot: str) -> str:
    """The supervisord program name of a slot.

    CLI Example:

    .. code-block:: bash

        salt-call app_slots.program demo a
    """
    return Slot(project, slot).program


def _linked_slot(project: str, link: str) -> Slot | None:
    try:
        found = _SOCKET.match(os.path.basename(os.readlink(os.path.join(_run_dir(project), link))))
    except OSError:
        return None
    return Slot(project, found.group(2), found.group(1) == "gunicorn") if found else None


def _serving(project: str) -> tuple[Slot, str] | None:
    """The slot Nginx sends traffic to and the protocol it speaks to it, as the links say."""
    for slot in reversed(SLOTS):
        if os.path.exists(_port_file(project, slot)):
            return Slot(project, slot), PORT_PROTOCOL
    uwsgi = os.path.exists(os.path.join(_run_dir(project), UWSGI_ACTIVE))
    for protocol, link in ((("uwsgi", LINKS["uwsgi"]),) if uwsgi else ()) + (("http", LINKS["http"]), ("http", LEGACY_LINK)):
        slot = _linked_slot(project, link)
        if slot:
            return slot, protocol
    return None


def _legacy_upstream_file(project: str) -> str:
    """Where salt-django before the socket link named the serving slot (read once, by ``adopt``)."""
    return os.path.join(LEGACY_UPSTREAM_DIR, f"{project}-upstream.conf")


def adopt(project: str, test: bool = False) -> str | None:
    """Link ``http.sock`` to the slot an older salt-django serves from (its
    ``gunicorn.sock`` link or its upstream file), so that Nginx's new
    configuration reaches the slot that runs.

    Returns the slot linked (or that would be, with ``test``), None when
    there is nothing to adopt: a current link exists, or no slot served.

    CLI Example:

    .. code-block:: bash

        salt-call app_slots.adopt demo
    """
    run = _run_dir(project)
    if any(os.path.lexists(os.path.join(run, link)) for link in LINKS.values()):
        return None
    slot = _linked_slot(project, LEGACY_LINK)
    if slot is None:
        try:
            with open(_legacy_upstream_file(project), encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            return None
        slot = next((s for s in (Slot(project, x, True) for x in SLOTS) if _socket_path(s) in text), None)
    if slot and not test:
        _set_link(os.path.join(run, LINKS["http"]), slot.socket_name)
    return slot.slot if slot else None


def _every_slot(project: str) -> list[Slot]:
    """Both slots under both namings (an upgrade has one of each)."""
    return [Slot(project, s, legacy) for s in SLOTS for legacy in (False, True)]


def _linked_release(slot: Slot) -> str | None:
    link = _slot_link(slot)
    return os.path.basename(os.readlink(link)) if os.path.islink(link) else None


def slot_release(project: str, slot: str) -> str | None:
    """The release a slot is linked to, or None when the slot is disabled.

    CLI Example:

    .. code-block:: bash

        salt-call app_slots.slot_release demo b
    """
    return _linked_release(Slot(project, slot))


def slot_releases(project: str) -> list[str]:
    """Every release a slot (of either naming) is linked to: none of them may be removed.

    CLI Example:

    .. code-block:: bash

        salt-call app_slots.slot_releases demo
    """
    return sorted({release for release in map(_linked_release, _every_slot(project)) if release})


def _ctl(*args: str) -> subprocess.CompletedProcess[str]:
    """supervisorctl; before supervisor is installed (a first apply with test=True) it answers nothing."""
    try:
        return subprocess.run(["supervisorctl", *args], capture_output=True, text=True, check=False)
    except OSError as exc:
        return subprocess.CompletedProcess(["supervisorctl", *args], 127, "", str(exc))


def _program_state(name: str) -> str | None:
    out = _ctl("status", name).stdout.split()
    return out[1] if len(out) > 1 and "no such process" not in " ".join(out) else None


def program_state(project: str, slot: str) -> str | None:
    """supervisord's state of a slot's program (RUNNING, EXITED, ...), None if unknown.

    CLI Example:

    .. code-block:: bash

        salt-call app_slots.program_state demo a
    """
    return _program_state(program(project, slot))


def running_programs(project: str) -> list[str]:
    """The slot programs (of either naming) supervisord runs now.

    CLI Example:

    .. code-block:: bash

        salt-call app_slots.running_programs demo
    """
    return [slot.program for slot in _every_slot(project) if _program_state(slot.program) == "RUNNING"]


#: The programs salt-django defines for a project (supervisor-program.conf.jinja), by suffix.
PROGRAMS = ("app-a", "app-b", "worker", "beat")


def program_groups(project: str, conf: str) -> list[str]:
    """The supervisord groups an update of ``project`` must name: those its
    ``conf`` defines, and those of its programs that supervisord still runs
    but ``conf`` no longer defines. Never an older salt-django's slot, which
    serves until the switch retires it, unless ``conf`` is gone (the project
    left pillar: nothing will switch it).

    CLI Example:

    .. code-block:: bash

        salt-call app_slots.program_groups demo /etc/supervisor/conf.d/demo.conf
    """
    suffixes = PROGRAMS
    try:
        with open(conf, encoding="utf-8") as handle:
            defined = re.findall(r"^\[program:([^\]]+)\]", handle.read(), re.M)
    except FileNotFoundError:
        defined, suffixes = [], (*PROGRAMS, *(f"gunicorn-{slot}" for slot in SLOTS))
    loaded = {line.split()[0].split(":")[0] for line in _ctl("status").stdout.splitlines() if line.strip()}
    gone = sorted(name for name in (f"{project}-{suffix}" for suffix in suffixes) if name in loaded and name not in defined)
    return [*defined, *gone]


def load_programs(project: str, conf: str) -> list[str]:
    """``supervisorctl update`` of ``project``'s groups only (``program_groups``): returns them.

    CLI Example:

    .. code-block:: bash

        salt-call app_slots.load_programs demo /etc/supervisor/conf.d/demo.conf
    """
    groups = program_groups(project, conf)
    if groups:
        result = _ctl("update", *groups)
        if result.returncode != 0:
            raise RuntimeError(f"supervisorctl update {' '.join(groups)}: {(result.stdout + result.stderr).strip()}")
    return groups


def _slot_health(slot: Slot, protocol: str, port: int, host: str, timeout: float = 5) -> dict[str, Any]:
    """GET /healthz on the slot's own socket, in the protocol Nginx will speak to it."""
    try:
        status, body = __utils__["saltdjango_sockets.get"](protocol, _address(slot, protocol, port), "/healthz", host, timeout)  # noqa: F821
    except (OSError, http.client.HTTPException) as exc:
        return {"ok": False, "status": None, "error": str(exc)}
    return __salt__["django_manage.health_answer"](status, body)  # noqa: F821


def _wait_healthy(slot: Slot, protocol: str, port: int, release: str, host: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    result: dict[str, Any] = {"ok": False, "error": "not checked"}
    while time.monotonic() < deadline:
        state = _program_state(slot.program)
        if state in ("FATAL", "EXITED", "BACKOFF", "STOPPED"):
            return {"ok": False, "error": f"{slot.program} is {state}; the end of its log: {_log_tail(slot.project)}"}
        result = _slot_health(slot, protocol, port, host)
        if result["ok"] and result["body"].get("release") == release:
            return result
        time.sleep(0.3)
    return {**result, "ok": False}


#: An access-log line (Gunicorn's default format, uWSGI's): the serving slot's requests drown what a failing slot said.
_ACCESS_LINE = re.compile(r'^(\S* - \S+ \[[^]]+\] "|\[pid: \d+\|app: )')


def _log_tail(project: str) -> str:
    """The end of the slots' log but access-log lines, secrets masked."""
    return __salt__["saltdjango.log_tail"](project, "app.log", skip=_ACCESS_LINE.pattern)  # noqa: F821


def _set_link(path: str, target: str) -> None:
    __utils__["saltdjango_files.relink"](path, target)  # noqa: F821


def _drain(address: str, timeout: float) -> None:
    """Wait until every connection opened to a slot's ``address`` before the switch was accepted.

    An app server closes its listener on TERM: a connection still queued
    then would be reset, and Nginx would answer 502.
    """
    queued = __utils__["saltdjango_sockets.listen_queue"]  # noqa: F821
    deadline = time.monotonic() + timeout
    time.sleep(0.2)
    while (queued(address) or 0) > 0 and time.monotonic() < deadline:
        time.sleep(0.1)


def _point(project: str, slot: Slot, protocol: str, old: Slot | None, port: int = 0) -> None:
    """Send Nginx's next connections to ``slot`` (see the module's step 3).

    Nginx prefers slot b's port file, then slot a's, then ``uwsgi.active``,
    then ``http.sock``: the new slot's own link or file is set first, then
    what Nginx prefers to it is removed, the less preferred first, so that
    only the last step changes where requests go. A file Nginx prefers less
    than the new slot's then goes too (it no longer matters). A port's file
    holds the port (``port`` is slot a's), which ``served_port`` reads.

    Switching off an older salt-django's slot (an upgrade), Nginx may still
    have that salt-django's configuration (an apply reloads it before the
    switch, ``make release`` does not): its ``gunicorn.sock`` link follows
    the switch. At the next switch the link goes.
    """
    run = _run_dir(project)
    active = os.path.join(run, UWSGI_ACTIVE)
    ports = [_port_file(project, s) for s in SLOTS]
    if protocol == PORT_PROTOCOL:
        listening = _address(slot, protocol, port).rpartition(":")[2]
        __utils__["saltdjango_files.replace"](_port_file(project, slot.slot), f"{listening}\n", mode=0o644)  # noqa: F821
        _remove(*(path for path in ports if path != _port_file(project, slot.slot)), active)
    else:
        _set_link(os.path.join(run, LINKS[protocol]), slot.socket_name)
        if protocol == "uwsgi" and not os.path.exists(active):
            __utils__["saltdjango_files.replace"](active, "", mode=0o644)  # noqa: F821
        if protocol == "http":
            _remove(active)
        _remove(*ports)
    legacy = os.path.join(run, LEGACY_LINK)
    if old and old.legacy and os.path.lexists(legacy):
        _set_link(legacy, slot.socket_name)
    else:
        _remove(legacy)


def served_port(project: str) -> dict[str, Any] | None:
    """The slot that serves on a loopback port and that port (``{"slot", "port"}``), or None.

    CLI Example:

    .. code-block:: bash

        salt-call app_slots.served_port demo
    """
    serving = _serving(project)
    if not serving or serving[1] != PORT_PROTOCOL:
        return None
    with open(_port_file(project, serving[0].slot), encoding="utf-8") as handle:
        text = handle.read().strip()
    return {"slot": serving[0].slot, "port": int(text)} if text.isdigit() else None


def _drain_file(slot: Slot) -> str:
    """Once this file exists, the slot's websockets close with 1001 (salt_django_asgi)."""
    return os.path.join(_run_dir(slot.project), f"app-{slot.slot}.drain")


def _websockets_file(slot: Slot) -> str:
    """Exists while the slot runs a kind that serves websockets (which a switch drains)."""
    return os.path.join(_run_dir(slot.project), f"app-{slot.slot}.websockets")


def _remove(*paths: str) -> None:
    for path in paths:
        if os.path.lexists(path):
            os.unlink(path)


def _close_connections(slot: Slot, path: str, drain_timeout: float) -> None:
    """Let the connections ``slot`` still holds on ``path`` end by themselves
    for up to ``drain_timeout`` seconds, then tell its websockets to go away
    (1001), and give them 5 s to close before the slot is stopped."""
    connections = __utils__["saltdjango_sockets.connections"]  # noqa: F821
    deadline = time.monotonic() + drain_timeout
    while connections(path) and time.monotonic() < deadline:
        time.sleep(0.5)
    if not connections(path):
        return
    __utils__["saltdjango_files.replace"](_drain_file(slot), "", mode=0o644)  # noqa: F821
    deadline = time.monotonic() + 5
    while connections(path) and time.monotonic() < deadline:
        time.sleep(0.2)


def activate(project: str, release: str, host: str, timeout: float = 60) -> dict[str, Any]:
    """Serve ``release`` from the idle slot, then retire the serving one.

    ``host`` is the Host header for the health check (a project domain).
    Raises RuntimeError, with the live release still serving, when the new
    one does not become healthy.

    CLI Example:

    .. code-block:: bash

        salt-call app_slots.activate demo 20261129T040000Z-1a2b3c4 demo.example.org
    """
    root = _root(project)
    server = __salt__["saltdjango.project"](project)["app_server"]  # noqa: F821
    protocol = server["protocol"]
    serving = _serving(project)
    old, old_protocol = serving if serving else (None, None)
    if old and old.legacy and protocol != "http" and os.path.lexists(os.path.join(_run_dir(project), LEGACY_LINK)):
        raise RuntimeError(
            f"{project} is served under an older salt-django's names: apply once with app_server:kind gunicorn"
            f" (that moves it to the new names), then change the kind to {server['kind']}"
        )
    venv = os.path.join(root, "releases", release, "venv")
    if server["module"] and not __salt__["django_build.importable"](venv, [server["module"]]):  # noqa: F821
        raise RuntimeError(
            f"release {release} has no {server['package']} in its virtualenv (it was built for another app server):"
            f" release it again to serve it with {server['kind']}"
        )
    problem = _runtime_problem(server, venv)
    if problem:
        raise RuntimeError(f"release {release} cannot be served with {server['kind']}: {problem}")
    new = Slot(project, "b" if old and old.slot == "a" else "a")
    os.makedirs(os.path.join(root, "slots"), mode=0o755, exist_ok=True)
    _set_link(_slot_link(new), os.path.join("..", "releases", release))
    _remove(_drain_file(new), _websockets_file(new))
    if server["websockets"]:
        __utils__["saltdjango_files.replace"](_websockets_file(new), "", mode=0o644)  # noqa: F821
    started = _ctl("restart", new.program)
    health = _wait_healthy(new, protocol, server["port"], release, host, timeout)
    if not health["ok"]:
        _retire(new)
        detail = health.get("error") or health.get("body") or started.stdout.strip()
        if "end of its log" not in str(detail):
            detail = f"{detail}; the end of its log: {_log_tail(project)}"
        raise RuntimeError(f"release {release} did not become healthy in slot {new.slot}: {detail}")
    _point(project, new, protocol, old, server["port"])
    _set_link(os.path.join(root, "current"), os.path.join("releases", release))
    if old:
        address = _address(old, old_protocol, server["port"])
        _drain(address, timeout)
        if os.path.exists(_websockets_file(old)):
            _close_connections(old, address, float(server["drain_timeout"]))
        _retire(old)
        if old_protocol != protocol and old_protocol in LINKS:
            _remove(os.path.join(_run_dir(project), LINKS[old_protocol]))
    return {"slot": {"old": old.slot if old else None, "new": new.slot}, "release": release, "kind": server["kind"]}


#: Debian's mod_wsgi, linked to the one Python it embeds.
MOD_WSGI = "/usr/lib/apache2/modules/mod_wsgi.so"


def _python_version(venv: str) -> str | None:
    """The Python (major.minor) a virtualenv was made with, from its pyvenv.cfg."""
    try:
        with open(os.path.join(venv, "pyvenv.cfg"), encoding="utf-8") as handle:
            found = re.search(r"^version(?:_info)?\s*=\s*(\d+\.\d+)", handle.read(), re.M)
    except OSError:
        return None
    return found.group(1) if found else None


def _runtime_problem(server: dict[str, Any], venv: str) -> str | None:
    """Why the kind cannot run the virtualenv ``venv``, or None: Debian's
    mod_wsgi embeds the OS Python, and a release built with another cannot
    be its Python home."""
    if server["kind"] != "mod_wsgi":
        return None
    try:
        with open(MOD_WSGI, "rb") as handle:
            found = re.search(rb"libpython(\d+\.\d+)", handle.read())
    except OSError as exc:
        return f"{MOD_WSGI}: {exc.strerror} (is libapache2-mod-wsgi-py3 installed?)"
    embedded, built = found.group(1).decode() if found else None, _python_version(venv)
    if embedded and built != embedded:
        return (
            f"its virtualenv is Python {built or 'unknown'} and Debian's mod_wsgi runs Python {embedded}:"
            " build releases with the OS Python (salt_django:python) or choose another app_server:kind"
        )
    return None


def _retire(slot: Slot) -> None:
    """Disable a slot: no link, program stopped (gracefully: TERM). An older
    salt-django's program is then removed from supervisord, with its runner."""
    _remove(_slot_link(slot))
    _ctl("stop", slot.program)
    _remove(_drain_file(slot), _websockets_file(slot))
    if slot.legacy:
        _ctl("update", *(Slot(slot.project, s, True).program for s in SLOTS))
        _remove(os.path.join(_root(slot.project), "bin", "gunicorn-run"))


def is_serving(project: str, release: str) -> bool:
    """True when the linked slot runs ``release`` and its program is RUNNING.

    CLI Example:

    .. code-block:: bash

        salt-call app_slots.is_serving demo 20261129T040000Z-1a2b3c4
    """
    serving = _serving(project)
    if not serving:
        return False
    slot = serving[0]
    return _linked_release(slot) == release and _program_state(slot.program) == "RUNNING"


def status(project: str) -> dict[str, Any]:
    """Which slot serves, in which protocol, and what each slot runs.

    CLI Example:

    .. code-block:: bash

        salt-call app_slots.status demo
    """
    serving = _serving(project)
    return {
        "serving": serving[0].slot if serving else None,
        "protocol": serving[1] if serving else None,
        "slots": {slot: {"release": slot_release(project, slot), "state": program_state(project, slot)} for slot in SLOTS},
    }
