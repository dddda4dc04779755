"""Cluster rollouts, run on the salt-master: deploy, rollback, join.

``salt-run state.orchestrate orch.deploy pillar='{"release": "v2"}'`` hands
off to :func:`deploy`, ``orch.rollback`` to :func:`rollback`; the reactor
calls :func:`join` (a minion started) and :func:`requested` (a signed
deploy request, made by :func:`request`). They live in
Python, not in orchestrate SLS, because a rollout must hold one lock for
its whole run, stop at the first failure and say which server failed and
why: an orchestrate SLS cannot release a lock whatever happens.

A rollout, server by server (pillar ``rollout:batch`` servers at a time)::

    validate -> db -> cache -> build on every app server (not switched)
    -> back up the database -> migrate once -> per batch: drain in HAProxy,
    wait for its sessions to end, switch, health-check the server directly,
    set it ready -> refresh HAProxy's configuration -> smoke test via the LB

Servers not yet switched keep serving the old release. What the cluster
serves is recorded on the master in ``<state dir>/releases.json`` (master
option ``salt_django_state_dir``, default ``<cachedir>/salt-django``), which
``rollback`` reads, and as pillar in ``<state dir>/pillar/releases.sls``
(``projects:<p>:release``): a highstate keeps that release, and a new app
server builds it, instead of the pillar's ``source``.
"""

from __future__ import annotations

import datetime
import fcntl
import getpass
import hashlib
import hmac
import importlib.util
import json
import logging
import os
import pathlib
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import yaml

__virtualname__ = "rollout"
log = logging.getLogger(__name__)

#: HAProxy backend of a project (salt/haproxy/files/haproxy.cfg.jinja).
BACKEND = "{project}_app"
#: The event that asks for a rollout (reactor/deploy.sls), signed by ``request``.
DEPLOY_TAG = "salt-django/deploy"
#: Seconds a signed deploy request stays valid; its nonce is remembered twice as long.
REQUEST_TTL = 300
#: Seconds between two joins of one server: a start event storm (a master restart,
#: or a minion forging them) converges nobody twice.
JOIN_DEBOUNCE = 300
#: Secrets the master generates for every project, running or not (see _modules/django_db.py).
BACKUP_SECRETS = ("BACKUP_KEY",)
_MINION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RolloutError(RuntimeError):
    """A rollout step failed: ``step``, the ``server`` (if one) and the cause."""

    def __init__(self, step: str, cause: str, server: str | None = None) -> None:
        self.step, self.cause, self.server = step, cause, server
        super().__init__(f"{step} on {server}: {cause}" if server else f"{step}: {cause}")


def __virtual__() -> str:
    """Runs on the master; reaches minions with Salt's LocalClient."""
    return __virtualname__


# ------------------------------------------------------------------ pure logic


def _batches(servers: list[str], size: int) -> list[list[str]]:
    """``servers`` in rollout order, ``size`` at a time (at least one)."""
    size = max(int(size or 1), 1)
    return [servers[i : i + size] for i in range(0, len(servers), size)]


def _batch_size(wanted: Any, servers: int) -> int:
    """Servers switched at a time: ``rollout:batch``, but never all of several,
    so that one always stays in rotation and no request meets an empty backend."""
    size = max(int(wanted or 1), 1)
    return min(size, servers - 1) if servers > 1 else size


def _source_of(release: str | None, project: dict[str, Any], name: str) -> dict[str, Any]:
    """What to build: a git ref of ``projects:<p>:repo``, or the ``source`` of
    the project's merged config (``_project``).

    A release id (``<UTC time>-<digest>``) needs no build: it must be built
    on every app server already.
    """
    if __utils__["saltdjango_releases.is_release_id"](release):  # noqa: F821
        return {"release": release}
    if release:
        repo = project.get("repo")
        if not repo:
            raise RolloutError("plan", f"release {release!r} is a git ref, but projects:{name}:repo is not set")
        return {"repo": repo, "ref": release}
    return {"source": project["source"]}


def _rollback_target(record: dict[str, Any]) -> dict[str, Any] | None:
    """Where ``rollback`` goes: after a failed rollout, the release the cluster
    served before it; after a successful one, the release before that."""
    if record.get("attempt", {}).get("ok") is False and record.get("current"):
        return record["current"]
    return record.get("previous")


def _adopted(record: dict[str, Any], live: dict[str, str | None], source: dict[str, Any]) -> dict[str, Any] | None:
    """The record's ``current`` entry for what the servers serve, when the master
    has none yet (the first converge released the pillar ``source``): every
    answering server serves a build of one same source (the id's suffix).
    None when there is nothing to adopt."""
    ids = set(live.values())
    # Each server built the pillar source itself: one content, ids that may differ in the second.
    if record.get("current") or not ids or None in ids or len({rid.rsplit("-", 1)[-1] for rid in ids}) != 1:
        return None
    return {"id": live[min(live)], "digest": None, "servers": dict(live), "source": source, "at": _now()}


def _signature(key: bytes, request: dict[str, Any]) -> str:
    """HMAC-SHA256 of a deploy request's fields, with the master's key."""
    body = json.dumps({k: request.get(k) for k in ("release", "project", "at", "nonce")}, sort_keys=True, separators=(",", ":"))
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def _request_problem(key: bytes, data: Any, now: float, seen: dict[str, float]) -> str | None:
    """Why the event ``data`` is not a deploy request ``request`` signed (None: it is).

    Any minion can put any data on the master's event bus under any tag
    (``event.fire_master`` with the ``events`` list form carries no ``id``),
    so only a signature with the key in the master's state dir counts. A
    request is good for ``REQUEST_TTL`` seconds and once (``seen``: nonces).
    """
    if not isinstance(data, dict) or not isinstance(data.get("sig"), str):
        return "not signed"
    for field, kinds in (("release", (str, type(None))), ("project", (str, type(None))), ("at", (int, float)), ("nonce", (str,))):
        if not isinstance(data.get(field), kinds) or isinstance(data.get(field), bool):
            return f"field {field} missing or malformed"
    if not hmac.compare_digest(_signature(key, data), data["sig"]):
        return "bad signature"
    if not -60 <= now - data["at"] <= REQUEST_TTL:
        return f"expired: signed {now - data['at']:.0f}s ago"
    if data["nonce"] in seen:
        return "replayed"
    return None


def _join_due(joins: dict[str, float], minion: str, now: float, debounce: float) -> bool:
    """Whether a join of ``minion`` may start now: none started in the last ``debounce`` seconds."""
    return now - joins.get(minion, float("-inf")) >= debounce


# ------------------------------------------------------------------ the master


def _state_dir() -> str:
    path = __opts__.get("salt_django_state_dir") or os.path.join(__opts__["cachedir"], "salt-django")  # noqa: F821
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _records() -> dict[str, Any]:
    try:
        with open(os.path.join(_state_dir(), "releases.json"), encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return {}


def _release_pillar(records: dict[str, Any]) -> dict[str, Any]:
    """Pillar ``projects:<p>:release`` of every project whose current release is a git commit."""
    projects = {}
    for name, record in sorted(records.items()):
        current = record.get("current") or {}
        source = current.get("source") or {}
        if source.get("repo") and current.get("digest"):
            projects[name] = {"release": {"id": current["id"], "repo": source["repo"], "ref": current["digest"]}}
    return {"projects": projects} if projects else {}


def _write(path: str, text: str) -> None:
    """Replace ``path`` at once, readable by root only (its pillar holds secrets)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    __utils__["saltdjango_files.replace"](path, text)  # noqa: F821


def _save(records: dict[str, Any]) -> None:
    _write(os.path.join(_state_dir(), "releases.json"), json.dumps(records, indent=1, sort_keys=True))
    # JSON is YAML: the pillar renderer reads it as it is.
    _write(os.path.join(_state_dir(), "pillar", "releases.sls"), json.dumps(_release_pillar(records), indent=1, sort_keys=True))


@contextmanager
def _state_file(name: str) -> Iterator[dict[str, Any]]:
    """``<state dir>/<name>.json``, read and written back under its own lock
    (the reactor runs runners in threads: one flock per open file)."""
    path = os.path.join(_state_dir(), f"{name}.json")
    with open(path + ".lock", "a+", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (FileNotFoundError, ValueError):
            data = {}
        yield data
        _write(path, json.dumps(data, sort_keys=True))


def _deploy_key() -> bytes:
    """The master's key for deploy requests (``<state dir>/deploy.key``, 0600), made once."""
    path = os.path.join(_state_dir(), "deploy.key")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path, "rb") as handle:
            key = handle.read()
        if len(key) != 32:
            raise RolloutError("request", f"{path} is not a 32-byte key: remove it, a new one is made") from None
        return key
    with os.fdopen(fd, "wb") as handle:
        key = secrets.token_bytes(32)
        handle.write(key)
    return key


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


JOIN = "rollout.join"


@contextmanager
def _lock(what: str, wait: float = 0, wait_for_joins: float = 0) -> Iterator[None]:
    """One rollout (deploy, rollback) or join at a time on this master; the
    file names the holder. Waits up to ``wait`` seconds for any holder, up to
    ``wait_for_joins`` for joins (a new server converging), then refuses."""
    with __utils__["saltdjango_files.held"](  # noqa: F821
        os.path.join(_state_dir(), "rollout.lock"),
        f"{what} by {os.environ.get('SUDO_USER') or getpass.getuser()}",
        refuse=lambda holder: RolloutError("rollout refused", f"another rollout is running: {holder}"),
        patience=lambda holder: max(wait, wait_for_joins if holder.startswith(JOIN) else 0),
    ):
        yield


def _pillar() -> dict[str, Any]:
    """The deployment description as the master compiles it (topology, projects, rollout)."""
    import salt.pillar

    return salt.pillar.get_pillar(__opts__, {}, __opts__["id"], saltenv="base").compile_pillar()  # noqa: F821


class _Cluster:
    """Calls to minions, each step logged in ``steps`` (the runner's return)."""

    def __init__(self, pillar: dict[str, Any]) -> None:
        import salt.client

        self.pillar = pillar
        self.client = salt.client.get_local_client(__opts__["conf_file"])  # noqa: F821
        self.settings = {**_defaults("salt/orch/defaults.yaml")["rollout"], **(pillar.get("rollout") or {})}
        # Where HAProxy (and so the runner's health probes) reaches each app server's Nginx.
        self.lb_port = {**_defaults("salt/nginx/defaults.yaml")["nginx"], **(pillar.get("nginx") or {})}["lb_port"]
        self.steps: list[dict[str, Any]] = []
        hosts = (pillar.get("topology") or {}).get("hosts") or {}
        self.roles = {name: list((spec or {}).get("roles") or []) for name, spec in hosts.items()}
        self.alive: set[str] = set()
        # The job id Salt gives a runner when it starts it (none in unit tests), read once:
        # the reactor runs runners in threads of one loader, whose globals the last job sets.
        self.jid = globals().get("__jid__")

    def members(self, role: str) -> list[str]:
        return sorted(name for name, held in self.roles.items() if role in held)

    def log(self, step: str, comment: str, **extra: Any) -> None:
        """Record a step in the return, and show it now: a ``salt/run/<jid>/progress``
        event of this runner's job (``salt-run state.event`` shows it as it happens)."""
        self.steps.append({"step": step, "comment": comment, **extra})
        if self.jid:
            import salt.utils.event

            # On the master's bus directly: the job's own event channel (__jid_event__)
            # would also print each event into salt-run's output.
            with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=False) as bus:  # noqa: F821
                bus.fire_event({"message": f"{step}: {comment}", "step": step, **extra}, f"salt/run/{self.jid}/progress")

    def call(self, step: str, tgt: list[str], fun: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """``fun(*args, **kwargs)`` on every minion of ``tgt``; raise RolloutError
        naming a minion that did not answer or whose function failed."""
        if not tgt:
            return {}
        ret = self._returns(tgt, fun, list(args), kwargs)
        for minion in tgt:
            if minion not in ret:
                raise RolloutError(step, f"no answer to {fun}", minion)
            if not isinstance(ret[minion], dict) or ret[minion].get("retcode", 0) not in (0, None):
                out = ret[minion].get("ret") if isinstance(ret[minion], dict) else ret[minion]
                if fun.startswith("state."):
                    failed = __utils__["saltdjango_releases.failed_states"](out)  # noqa: F821
                    out = "; ".join(f"{sid}: {c}" for sid, c in failed.items())
                raise RolloutError(step, f"{fun}: {str(out)[-800:]}", minion)
        return {minion: ret[minion]["ret"] for minion in tgt}

    def _returns(self, tgt: list[str], fun: str, args: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Each minion's full return (``ret``, ``retcode``) of one job; a lost
        return is read from the job cache (``saltdjango_jobs.collect``)."""
        pub = self.client.run_job(tgt, fun, args, tgt_type="list", kwarg=kwargs, timeout=self.settings["timeout"], listen=True)
        if not pub:
            return {}
        return __utils__["saltdjango_jobs.collect"](self.client, pub, tgt, "list", min(float(self.settings["timeout"]), 30.0))  # noqa: F821

    def ping(self) -> list[str]:
        """Ping every server of the topology once (a silent one costs the
        ping's timeout); ``members_up`` answers from this."""
        names = sorted(self.roles)
        ret = self.client.cmd(names, "test.ping", tgt_type="list", timeout=10) if names else {}
        self.alive = {n for n in names if ret.get(n) is True}
        return sorted(self.alive)

    def members_up(self, role: str) -> list[str]:
        """The servers holding ``role`` that answered the last ping."""
        return [name for name in self.members(role) if name in self.alive]

    def up(self, role: str) -> list[str]:
        """``members_up``, where none answering stops the operation, naming the servers."""
        found = self.members_up(role)
        if not found:
            raise RolloutError("plan", f"no {role} server answers test.ping", ", ".join(self.members(role)) or None)
        return found

    def converge(self, step: str, tgt: list[str], sls: str | None = None) -> None:
        """Highstate (or one SLS) on ``tgt``; queued behind a state run already going there."""
        if sls:
            self.call(step, tgt, "state.sls", sls, queue=True)
        else:
            self.call(step, tgt, "state.apply", queue=True)
        self.log(step, f"{'state.sls ' + sls if sls else 'highstate'} on {', '.join(tgt) or 'nobody'}")


def _project(pillar: dict[str, Any], project: str | None) -> tuple[str, dict[str, Any]]:
    projects = pillar.get("projects") or {}
    if not project:
        if len(projects) != 1:
            raise RolloutError("plan", f"several projects ({', '.join(sorted(projects))}): pass project=<name>")
        project = next(iter(projects))
    if project not in projects:
        raise RolloutError("plan", f"no project {project!r} in pillar projects")
    # The config every minion module reads (defaults.yaml + pillar), by the same code.
    defaults = _defaults("salt/app/defaults.yaml")
    config = _repo_module("_modules/saltdjango.py")._project_config(
        project, projects[project], defaults["project"], defaults["app_servers"]
    )
    return project, config


def _finish(cluster: _Cluster | None, ok: bool, comment: str, **extra: Any) -> dict[str, Any]:
    """The runner's result. A failure fails the orchestration (``__context__``)
    and salt-run's exit code (which it reads from ``retcode`` in the return)."""
    if not ok:
        __context__["retcode"] = 1  # noqa: F821
    return {"result": ok, "retcode": 0 if ok else 1, "comment": comment, **extra, "steps": cluster.steps if cluster else []}


def _failure(cluster: _Cluster | None, exc: RolloutError, **extra: Any) -> dict[str, Any]:
    return _finish(cluster, False, str(exc), step=exc.step, server=exc.server, **extra)


def _health(cluster: _Cluster, lbs: list[str], server: str, address: str, domain: str, rid: str) -> None:
    """The server's own Nginx, probed from a load balancer as HAProxy probes it."""
    probe = lbs[:1] or [server]
    url = f"http://{address if lbs else '127.0.0.1'}:{cluster.lb_port}/healthz"
    answer = cluster.call("health", probe, "django_manage.health", url=url, host=domain)[probe[0]]
    if not answer.get("ok") or answer.get("body", {}).get("release") != rid:
        raise RolloutError("health", f"{url} answered {answer.get('status')} {answer.get('body') or answer.get('error')}", server)


def _roll(cluster: _Cluster, project: str, conf: dict[str, Any], targets: dict[str, str], operation: str) -> None:
    """Switch each app server to its release id in ``targets``, batch by batch,
    out of HAProxy's rotation meanwhile. The servers of a batch drain, switch
    and come back together, so that a rollout takes as many steps as it has
    batches, however many servers a batch holds. A failure puts its batch
    back as it was (``_restore_batch``): earlier batches keep the new release."""
    lbs = cluster.members_up("lb")
    backend = BACKEND.format(project=project)
    addresses = _mine_addresses(cluster)[0]
    planned = _batches(sorted(targets), _batch_size(cluster.settings["batch"], len(targets)))
    for number, batch in enumerate(planned, 1):
        cluster.log("batch", f"{operation} {number}/{len(planned)}: {', '.join(batch)}", batch=number, servers=batch)
        before = cluster.call("plan", batch, "django_store.current", project)
        drained: list[str] = []
        switched: list[str] = []
        try:
            for server in batch:
                drained.append(server)
                cluster.call("drain", lbs, "haproxy_runtime.set_state", backend, server, "drain")
            # They drain at once: the second wait ends with (or soon after) the first.
            for server in batch:
                waited = cluster.call(
                    "drain", lbs, "haproxy_runtime.wait_drained", backend, server, timeout=cluster.settings["drain_timeout"]
                )
                cluster.log(f"drain {server}", f"sessions left: {max((d['sessions'] for d in waited.values()), default=0)}")
            outcomes = _activate(cluster, project, batch, targets, operation, switched)
            for server in batch:
                _health(cluster, lbs, server, addresses.get(server, ""), conf["domains"][0], targets[server])
                cluster.call("ready", lbs, "haproxy_runtime.set_state", backend, server, "ready")
                drained.remove(server)
                cluster.log(f"{operation} {server}", outcomes[server]["comment"])
        except RolloutError:
            _restore_batch(cluster, project, lbs, backend, before, switched, drained)
            raise


def _switch_workers(cluster: _Cluster, project: str, targets: dict[str, str], operation: str) -> None:
    """Switch the queue workers of every worker server to its release in
    ``targets``, all at once, before any app server switches: a job that a
    new release enqueues must never reach a worker of the old one, which
    would not know its task. Each worker lets its running jobs finish first
    (``django_workers``). A server that also serves requests switches only
    its workers here; its slots switch with its batch."""
    for rid in sorted(set(targets.values())):
        group = [server for server in sorted(targets) if targets[server] == rid]
        only = [server for server in group if "app" not in cluster.roles.get(server, [])]
        outcomes = cluster.call(f"{operation} workers", only, "django_release.activate", project, rid, hooks=False)
        failed = [server for server in only if not outcomes[server]["ok"]]
        if failed:
            raise RolloutError(f"{operation} workers", outcomes[failed[0]]["comment"], failed[0])
        cluster.call(f"{operation} workers", [server for server in group if server not in only], "django_workers.switch", project, rid)
        cluster.log(f"{operation} workers", f"{', '.join(group)} run {rid}")


def _activate(
    cluster: _Cluster, project: str, batch: list[str], targets: dict[str, str], operation: str, switched: list[str]
) -> dict[str, Any]:
    """``django_release.activate`` on every server of ``batch`` at once (one
    job per target release); ``switched`` gets the servers that switched.
    Raises RolloutError naming a server that did not."""
    outcomes: dict[str, Any] = {}
    try:
        for rid in sorted({targets[server] for server in batch}):
            group = [server for server in batch if targets[server] == rid]
            outcomes.update(cluster.call(operation, group, "django_release.activate", project, rid, hooks=operation == "switch"))
    except RolloutError:
        # Which servers switched is unknown: each goes back (a no-op where it did not).
        switched.extend(server for server in batch if server not in switched)
        raise
    switched.extend(server for server in batch if outcomes[server]["ok"])
    failed = [server for server in batch if not outcomes[server]["ok"]]
    if failed:
        for server in (s for s in batch if s not in failed):
            cluster.log(f"{operation} {server}", f"{outcomes[server]['comment']}, then goes back with its batch")
        # Blue/green: a server that failed still serves its old release.
        raise RolloutError(operation, outcomes[failed[0]]["comment"], failed[0])
    return outcomes


def _restore_batch(
    cluster: _Cluster, project: str, lbs: list[str], backend: str, before: dict[str, str | None], switched: list[str], drained: list[str]
) -> None:
    """After a failure in a batch: each of its servers that switched goes back
    to the release it served before (blue/green, so without a drain), and
    each one back into rotation.
    One that cannot go back (no release before, or the switch back fails)
    stays in maintenance, named in the log. Never raises: every server gets
    its turn."""
    for server in dict.fromkeys([*switched, *drained]):
        state = "ready"
        if server in switched:
            if not before.get(server):
                state = "maint"
            else:
                try:
                    back = cluster.call("restore", [server], "django_release.activate", project, before[server], hooks=False)[server]
                    state = "ready" if back["ok"] else "maint"
                except RolloutError:
                    state = "maint"
                cluster.log(
                    f"restore {server}", f"back to {before[server]}" if state == "ready" else f"could not go back to {before[server]}"
                )
        try:
            cluster.call("ready" if state == "ready" else "maint", lbs, "haproxy_runtime.set_state", backend, server, state)
        except RolloutError as exc:
            cluster.log(f"restore {server}", f"HAProxy state {state} not set: {exc}")
        if state == "maint":
            cluster.log(f"restore {server}", "left in maintenance: it serves a release that failed; run orch.rollback")


def _smoke(cluster: _Cluster, project: str, conf: dict[str, Any], expect: dict[str, str]) -> None:
    """Through each load balancer: every app server is up in HAProxy (health
    checks pass, within ``rollout:smoke_timeout``) and the site answers."""
    lbs = cluster.members_up("lb")
    domain = conf["domains"][0]
    timeout = float(cluster.settings["smoke_timeout"])
    for lb in lbs:
        backend = BACKEND.format(project=project)
        waited = cluster.call("smoke test", [lb], "haproxy_runtime.wait_up", backend, sorted(expect), timeout=timeout)[lb]
        if waited["down"]:
            raise RolloutError("smoke test", f"HAProxy does not route to {', '.join(waited['down'])} after {timeout:.0f}s", lb)
        answer = cluster.call("smoke test", [lb], "django_manage.health", "https://127.0.0.1/healthz", domain, verify=False)[lb]
        if not answer.get("ok"):
            detail = answer.get("body") or answer.get("error")
            raise RolloutError("smoke test", f"https://{domain}/healthz: {answer.get('status')} {detail}", lb)
    cluster.log("smoke test", f"site healthy through {', '.join(lbs) or 'no load balancer'}")


# ------------------------------------------------------------------ entry points


def deploy(release: str | None = None, project: str | None = None, allow_partial: bool | None = None) -> dict[str, Any]:
    """Roll a release out to every app server, batch by batch, no request dropped.

    ``release``: a git ref of ``projects:<p>:repo``, a release id already
    built everywhere, or nothing for the pillar's ``source``. An app server
    that connected before and does not answer now stops it before anything
    is built, unless ``allow_partial`` (default: pillar ``rollout:allow_partial``).

    CLI Example:

    .. code-block:: bash

        salt-run state.orchestrate orch.deploy pillar='{"release": "v2"}'
    """
    cluster: _Cluster | None = None
    name = project
    try:
        cluster = _Cluster(_pillar())
        with _lock(f"orch.deploy of {release or 'the pillar source'}", wait_for_joins=cluster.settings["join_wait"]):
            name, conf = _project(cluster.pillar, project)
            source = _source_of(release, conf, name)
            everyone = cluster.ping()
            apps = cluster.up("app")
            workers = cluster.members_up("worker")
            skipped = sorted(set(cluster.members("app") + cluster.members("worker")) - set(apps + workers))
            # One that never connected (not started yet) builds the cluster's release when it joins.
            behind = [server for server in skipped if _ever_connected(server)]
            if behind and not (cluster.settings["allow_partial"] if allow_partial is None else allow_partial):
                raise RolloutError(
                    "plan",
                    "does not answer: nothing is built or migrated while an app or worker server would be left behind"
                    " (allow_partial=True, or pillar rollout:allow_partial, to go on without it)",
                    behind[0],
                )
            for role in ("db", "cache"):
                missing = sorted(set(cluster.members(role)) - set(everyone))
                if missing:
                    raise RolloutError("plan", f"{role} server not answering", missing[0])
            if _generate_secrets(cluster)["added"]:
                cluster.call("pillar", everyone, "saltutil.refresh_pillar", wait=True)
            cluster.call("sync", everyone, "saltutil.sync_all")
            cluster.call("mine", everyone, "mine.update")
            for minion, errors in cluster.call("validate", everyone, "saltdjango.validate").items():
                if errors:
                    raise RolloutError("validate", "; ".join(errors), minion)
            refused = _mine_addresses(cluster)[1]
            if refused:
                untrusted = min(refused)
                raise RolloutError("trust", f"{refused[untrusted]}: it is left out of every configuration and of this rollout", untrusted)
            cluster.log("validate", f"pillar valid on {', '.join(everyone)}; not answering, skipped: {', '.join(skipped) or 'none'}")
            cluster.converge("db", cluster.members("db"))
            cluster.converge("cache", cluster.members("cache"))
            _adopt_live(cluster, name, list(dict.fromkeys(apps + workers)))
            built, digest = _prepare(cluster, name, source, list(dict.fromkeys(apps + workers)))
            targets = {server: built[server] for server in apps}
            first = apps[0]
            pending = cluster.call("migrations", [first], "django_manage.unapplied_migrations", name, release=targets[first])[first]
            if not pending["ok"]:
                raise RolloutError("migrations", pending["error"], first)
            if pending["migrations"]:
                db = cluster.members("db")[:1]
                backup = cluster.call("backup", db, "django_db.backup", name, reason=f"before-{targets[first]}")[db[0]]
                cluster.log("backup", f"{backup['file']} on {db[0]}")
                migrated = cluster.call("migrate", [first], "django_manage.migrate", name, release=targets[first])[first]
                if not migrated["ok"]:
                    raise RolloutError("migrate", f"migration {migrated['failed']} failed: {migrated['error']}", first)
                cluster.log("migrate", f"applied {', '.join(migrated['applied'])} from {first}")
            _once_hooks(cluster, name, "before_switch", first, targets[first])
            try:
                _switch_workers(cluster, name, {server: built[server] for server in workers}, "switch")
                _roll(cluster, name, conf, targets, "switch")
                cluster.converge("refresh load balancer", cluster.members_up("lb"), "haproxy")
                _smoke(cluster, name, conf, targets)
            except RolloutError:
                # Some servers may serve the new release: a rollback goes back to the one before.
                _remember(name, built, source, digest, ok=False)
                raise
            _remember(name, built, source, digest, ok=True)
            _once_hooks(cluster, name, "after_switch", first, targets[first])
    except RolloutError as exc:
        return _failure(cluster, exc, project=name, release=release)
    rid = targets[first]
    comment = f"release {rid} of {name} serves on {', '.join(apps)}"
    return _finish(cluster, True, comment, project=name, release=rid, servers=targets, skipped=skipped)


_PROJECT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _repo_path(relpath: str) -> str:
    """A file of this repository: the runner runs from a copy of it."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), relpath)


def _defaults(relpath: str) -> dict[str, Any]:
    """A ``defaults.yaml`` of the state tree: the one place each default is defined."""
    with open(_repo_path(relpath), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _repo_module(relpath: str) -> Any:
    """A module of this repository, loaded by path, so that the master runs the
    same code as the minions and ``make deploy``."""
    path = _repo_path(relpath)
    spec = importlib.util.spec_from_file_location("salt_django_" + relpath.replace("/", "_").removesuffix(".py"), path)
    if spec is None or spec.loader is None or not os.path.exists(path):
        raise RolloutError("plan", f"cannot load {path}: the runner must run from a copy of the repository")
    module = importlib.util.module_from_spec(spec)
    # What the Salt loader would give it: a module's rules in _utils/.
    module.__utils__ = __utils__  # noqa: F821
    spec.loader.exec_module(module)
    return module


def _cli() -> Any:
    """scripts/salt_django.py: the one place that decides which passwords a
    project gets (``plan_secrets``), on one server and on a master."""
    return _repo_module("scripts/salt_django.py")


def _adopt_live(cluster: _Cluster, project: str, servers: list[str]) -> None:
    """Record the release a converge put live on ``servers`` (app and worker)
    before the first rollout, so that ``orch.rollback`` after that rollout goes back to it."""
    records = _records()
    record = records.setdefault(project, {})
    if record.get("current"):
        return
    live = cluster.call("live", servers, "django_store.current", project)
    source = {"source": (cluster.pillar.get("projects") or {}).get(project, {}).get("source")}
    entry = _adopted(record, live, source)
    if entry:
        record["current"] = entry
        _save(records)
        cluster.log("live", f"release {entry['id']} (put live by a converge) recorded: a rollback can return to it")


def _mine_addresses(cluster: _Cluster) -> tuple[dict[str, str], dict[str, str]]:
    """The servers' private addresses from the master's mine, split as the
    minions split them before writing a config: ``(trusted, refused)``
    (``saltdjango_topology.trusted_addresses``)."""
    names = sorted(cluster.roles)
    published = __salt__["mine.get"](",".join(names), "salt_django_address", tgt_type="list") if names else {}  # noqa: F821
    network = (cluster.pillar.get("topology") or {}).get("private_network")
    return __utils__["saltdjango_topology.trusted_addresses"](published or {}, network)  # noqa: F821


def _ever_connected(minion: str) -> bool:
    """Whether ``minion`` ever reached this master (the master's minion data cache holds its grains)."""
    import salt.cache

    return bool(salt.cache.factory(__opts__).fetch(f"minions/{minion}", "data"))  # noqa: F821


def _generate_secrets(cluster: _Cluster) -> dict[str, Any]:
    """Passwords for the projects no app server runs yet, into ``<state dir>/pillar/generated.sls``.

    Needs ``cluster.ping()`` first: a project that lacks a password is asked
    about on every app server. One that does not answer stops it, unless it
    never connected (not started yet): never generate when unsure whether the
    project already has a password there.
    """
    cli = _cli()
    raw = cluster.pillar.get("projects") or {}
    projects = {n: dict(p) for n, p in raw.items() if isinstance(p, dict) and _PROJECT_NAME.match(str(n))} if isinstance(raw, dict) else {}
    # The master holds no role: its pillar has no secrets (pillar/role_secrets.sls); the files have them.
    try:
        stored = __utils__["saltdjango_topology.read_secret_files"](__opts__["pillar_roots"].get("base", []))  # noqa: F821
    except ValueError as exc:
        raise RolloutError("secrets", str(exc)) from None
    for name, project in projects.items():
        kept = ((stored.get("projects") or {}).get(name) or {}).get("secrets")
        project["secrets"] = dict(kept) if isinstance(kept, dict) else {}
    lacking = sorted(n for n, p in projects.items() if set(cli.REQUIRED_SECRETS) - set(p.get("secrets") or {}))
    deployed = {name for name, record in _records().items() if record.get("current")}
    apps = cluster.members("app")
    for name in [n for n in lacking if n not in deployed]:
        # A server of the topology that never connected (its minion not
        # started yet) cannot run the project; one that did and is silent now might.
        silent = sorted(s for s in set(apps) - cluster.alive if _ever_connected(s))
        if silent:
            raise RolloutError("secrets", f"cannot tell whether {name} runs there (not answering): no password generated", silent[0])
        answering = sorted(set(apps) & cluster.alive)
        if any(cluster.call("secrets", answering, "file.file_exists", f"/etc/{name}/env").values()):
            deployed.add(name)
    path = os.path.join(_state_dir(), "pillar", "generated.sls")
    # The key of the off-host backup copies: new to every project, so generated for running ones too.
    added, dropped = cli.update_generated(pathlib.Path(path), projects, deployed, "rollout.init_secrets", always=BACKUP_SECRETS)
    cluster.log("secrets", f"generated {', '.join(added) or 'nothing'}; dropped {', '.join(dropped) or 'nothing'}")
    return {"added": added, "dropped": dropped, "file": path}


def init_secrets() -> dict[str, Any]:
    """Generate the database and Redis passwords that pillar lacks, as `make
    deploy` does on one server, for projects that no app server runs yet (no
    record of a rollout, no ``/etc/<p>/env`` on any app server), into
    ``<state dir>/pillar/generated.sls`` (mode 0600). A value the operator
    wrote wins and is never rewritten; an app server that connected before
    and does not answer now stops it. Run it before the first ``salt '*'
    state.apply``; ``deploy`` runs it too.

    CLI Example:

    .. code-block:: bash

        salt-run rollout.init_secrets
    """
    cluster: _Cluster | None = None
    try:
        cluster = _Cluster(_pillar())
        cluster.ping()
        outcome = _generate_secrets(cluster)
    except RolloutError as exc:
        return _failure(cluster, exc)
    generated = ", ".join(outcome["added"]) or "nothing"
    return _finish(cluster, True, f"generated {generated} in {outcome['file']}", **outcome)


def _once_hooks(cluster: _Cluster, project: str, stage: str, server: str, rid: str) -> None:
    """The hooks of ``stage`` that a cluster runs once per rollout (like migrations), on ``server``."""
    outcome = cluster.call(stage, [server], "django_release.run_hooks", project, stage, rid, scope="once")[server]
    if not outcome["ok"]:
        raise RolloutError(stage, outcome["comment"], server)
    if outcome["ran"]:
        cluster.log(stage, outcome["comment"])


def _prepare(cluster: _Cluster, project: str, source: dict[str, Any], servers: list[str]) -> tuple[dict[str, str], str | None]:
    """Build and gate the release on every app and worker server: ({server: release id},
    the source's digest). New builds get the id the first server chose."""
    if "release" in source:
        built = cluster.call("build", servers, "django_store.is_built", project, source["release"])
        missing = [server for server, ok in built.items() if not ok]
        if missing:
            raise RolloutError("build", f"release {source['release']} is not built there", missing[0])
        return dict.fromkeys(servers, source["release"]), None
    first, rest = servers[0], servers[1:]
    made = cluster.call("build", [first], "django_release.prepare", project, **source)[first]
    if not made["ok"]:
        raise RolloutError("build", made["comment"], first)
    results = {first: made}
    results.update(cluster.call("build", rest, "django_release.prepare", project, release=made["id"], **source))
    for server in servers:
        if not results[server]["ok"]:
            raise RolloutError("build", results[server]["comment"], server)
    cluster.log("build", f"release {made['id']} built and checked on {', '.join(servers)}")
    return {server: results[server]["id"] for server in servers}, made["digest"]


def _remember(project: str, servers: dict[str, str], source: dict[str, Any], digest: str | None, ok: bool) -> None:
    records = _records()
    record = records.setdefault(project, {})
    rid = servers[sorted(servers)[0]]
    # Redeployed by id: it keeps the source it was built from.
    known = [e for e in (record.get("current"), record.get("previous")) if e and e["id"] == rid and "release" in source]
    if known:
        source, digest = known[0]["source"], known[0].get("digest")
    entry = {"id": rid, "digest": digest, "servers": servers, "source": source, "at": _now()}
    record["attempt"] = {**entry, "ok": ok}
    if ok and record.get("current", {}).get("id") != entry["id"]:
        record["previous"], record["current"] = record.get("current"), entry
    _save(records)


def rollback(project: str | None = None) -> dict[str, Any]:
    """Every app server back to the release before the last rollout (after a
    failed rollout: back to the release the cluster served before it).

    CLI Example:

    .. code-block:: bash

        salt-run state.orchestrate orch.rollback
    """
    cluster: _Cluster | None = None
    name = project
    try:
        cluster = _Cluster(_pillar())
        with _lock("orch.rollback", wait_for_joins=cluster.settings["join_wait"]):
            name, conf = _project(cluster.pillar, project)
            record = _records().get(name, {})
            target = _rollback_target(record)
            if not target:
                raise RolloutError("plan", f"no earlier release of {name} recorded on this master")
            cluster.ping()
            apps = cluster.members_up("app")
            targets = {server: target["servers"].get(server, target["id"]) for server in apps}
            # Each server goes back to its own build (a converge's builds differ in their second).
            workers = {server: target["servers"].get(server, target["id"]) for server in cluster.members_up("worker")}
            _switch_workers(cluster, name, workers, "rollback")
            _roll(cluster, name, conf, targets, "rollback")
            _smoke(cluster, name, conf, targets)
            record["attempt"] = {**target, "ok": True, "at": _now()}
            if record.get("current", {}).get("id") != target["id"]:
                record["previous"], record["current"] = record.get("current"), target
            records = _records()
            records[name] = record
            _save(records)
    except RolloutError as exc:
        return _failure(cluster, exc, project=name)
    return _finish(cluster, True, f"release {target['id']} of {name} serves on {', '.join(apps)}", project=name, release=target["id"])


def plan(release: str | None = None, project: str | None = None) -> dict[str, Any]:
    """What ``orch.deploy`` of ``release`` would do, server by server, without
    changing what serves: the release is built and checked on the first app
    server (as the rollout's first step would, and reused by it), which tells
    the pending migrations; no migration, backup, switch or HAProxy change
    happens. Returns ``steps`` in the order the rollout would take them.

    CLI Example:

    .. code-block:: bash

        salt-run rollout.plan release=v2
    """
    cluster: _Cluster | None = None
    name = project
    try:
        cluster = _Cluster(_pillar())
        with _lock(f"rollout.plan of {release or 'the pillar source'}", wait_for_joins=cluster.settings["join_wait"]):
            name, conf = _project(cluster.pillar, project)
            source = _source_of(release, conf, name)
            cluster.ping()
            apps = cluster.up("app")
            first = apps[0]
            if "release" in source:
                rid = source["release"]
            else:
                made = cluster.call("build", [first], "django_release.prepare", name, **source)[first]
                if not made["ok"]:
                    raise RolloutError("build", made["comment"], first)
                rid = made["id"]
            pending = cluster.call("migrations", [first], "django_manage.unapplied_migrations", name, release=rid)[first]
            if not pending["ok"]:
                raise RolloutError("migrations", pending["error"], first)
            live = cluster.call("live", apps, "django_store.current", name)
            workers = cluster.members_up("worker")
    except RolloutError as exc:
        return _failure(cluster, exc, project=name, release=release)
    skipped = sorted(set(cluster.members("app") + cluster.members("worker")) - set(apps + workers))
    steps = [{"step": "build", "servers": list(dict.fromkeys(apps + workers)), "release": rid}]
    if pending["migrations"]:
        steps += [
            {"step": "backup", "servers": cluster.members("db")[:1]},
            {"step": "migrate", "servers": [first], "migrations": pending["migrations"]},
        ]
    if workers:
        steps.append({"step": "switch workers", "servers": workers})
    for number, batch in enumerate(_batches(apps, _batch_size(cluster.settings["batch"], len(apps))), 1):
        steps.append({"step": "switch", "batch": number, "servers": batch, "from": {s: live[s] for s in batch}})
    steps += [
        {"step": "refresh load balancer", "servers": cluster.members_up("lb")},
        {"step": "smoke test", "servers": cluster.members_up("lb")},
    ]
    comment = f"{len(steps)} steps to put release {rid} of {name} live on {', '.join(apps)}"
    return _finish(cluster, True, comment, project=name, release=rid, plan=steps, skipped=skipped)


def status(project: str | None = None) -> dict[str, Any]:
    """What the cluster serves: per app server the live release and each slot
    (release, program state), per load balancer each server's HAProxy state,
    and what the master recorded.

    CLI Example:

    .. code-block:: bash

        salt-run rollout.status
    """
    cluster: _Cluster | None = None
    name = project
    try:
        cluster = _Cluster(_pillar())
        name, _ = _project(cluster.pillar, project)
        cluster.ping()
        apps, lbs = cluster.members_up("app"), cluster.members_up("lb")
        slots = cluster.call("status", apps, "app_slots.status", name)
        live = cluster.call("status", apps, "django_store.current", name)
        balanced = cluster.call("status", lbs, "haproxy_runtime.servers", BACKEND.format(project=name))
    except RolloutError as exc:
        return _failure(cluster, exc, project=name)
    servers = {server: {"live": live[server], **slots[server]} for server in apps}
    silent = sorted(set(cluster.roles) - cluster.alive)
    record = _records().get(name, {})
    comment = f"{name}: {len(set(live.values()))} release(s) live on {len(apps)} app server(s)"
    return _finish(cluster, True, comment, project=name, servers=servers, haproxy=balanced, recorded=record, silent=silent)


def _copies(project: str, db: str) -> list[dict[str, Any]]:
    """The off-host copies of ``project``'s backups that ``db`` pushed (cp.push,
    kept under the master's cache), oldest first; named as django_db names them."""
    django_db = _repo_module("_modules/django_db.py")
    directory = os.path.join(__opts__["cachedir"], "minions", db, "files", django_db.COPIES, project)  # noqa: F821
    if not os.path.isdir(directory):
        return []
    now = time.time()
    suffix = django_db.COPY_SUFFIX
    found = sorted(n for n in os.listdir(directory) if n.endswith(suffix) and django_db.BACKUP_NAME.match(n.removesuffix(suffix)))
    return [
        {
            "copy": name,
            "path": os.path.join(directory, name),
            "bytes": os.path.getsize(os.path.join(directory, name)),
            "age_days": round((now - os.path.getmtime(os.path.join(directory, name))) / 86400, 2),
        }
        for name in found
    ]


def backups(project: str | None = None) -> dict[str, Any]:
    """The off-host copies of a project's backups on this master (encrypted;
    the db server pushes one after each backup): what ``restore copy=...`` takes.

    CLI Example:

    .. code-block:: bash

        salt-run rollout.backups
    """
    try:
        pillar = _pillar()
        name, _ = _project(pillar, project)
    except RolloutError as exc:
        return _failure(None, exc)
    hosts = (pillar.get("topology") or {}).get("hosts") or {}
    dbs = sorted(h for h, spec in hosts.items() if "db" in ((spec or {}).get("roles") or []))
    copies = [{**copy, "db": db} for db in dbs for copy in _copies(name, db)]
    return _finish(None, True, f"{len(copies)} off-host copies of {name}'s backups", project=name, copies=copies)


@contextmanager
def _served_once(path: str) -> Iterator[tuple[int, str]]:
    """``path`` at one unguessable URL path of a short-lived HTTP listener on
    the master (``interface``, a free port), for the db server to fetch:
    ``(port, token)``. The file is ciphertext; the listener lives for the
    block only."""
    token = secrets.token_hex(16)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != f"/{token}":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(os.path.getsize(path)))
            self.end_headers()
            with open(path, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    self.wfile.write(chunk)

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer((__opts__.get("interface") or "0.0.0.0", 0), Handler)  # noqa: F821, S104
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], token
    finally:
        server.shutdown()
        server.server_close()


def restore(file: str | None = None, copy: str | None = None, project: str | None = None, confirm: bool = False) -> dict[str, Any]:
    """Replace a project's database with a backup on the db server (``file``,
    a name from ``salt <db> django_db.list_backups``) or with an off-host
    copy from this master (``copy``, a name from ``rollout.backups``), the
    cluster held still: under the rollout lock (no rollout, rollback or join
    meanwhile) and every app server in maintenance in HAProxy, its sessions
    ended, for the duration (the site answers 503). The db server backs up
    what it replaces first. Needs ``confirm=True``: rows written since the
    backup are lost.

    CLI Example:

    .. code-block:: bash

        salt-run rollout.restore copy=<name> confirm=True
    """
    cluster: _Cluster | None = None
    name = project
    try:
        cluster = _Cluster(_pillar())
        with _lock(f"rollout.restore of {file or copy}", wait_for_joins=cluster.settings["join_wait"]):
            name, _ = _project(cluster.pillar, project)
            if bool(file) == bool(copy):
                raise RolloutError("plan", "name one backup: file=<backup on the db server> or copy=<off-host copy>")
            cluster.ping()
            db = cluster.up("db")[:1]
            if copy:
                found = [c for c in _copies(name, db[0]) if c["copy"] == copy]
                if not found:
                    raise RolloutError("plan", f"no off-host copy {copy!r} of {name} from {db[0]}: see salt-run rollout.backups")
            if not confirm:
                raise RolloutError("plan", f"restoring replaces every row of {name}'s database: pass confirm=True")
            # The db server reads the database password and the copy's key from its pillar, as the master has it now.
            cluster.call("pillar", db, "saltutil.refresh_pillar", wait=True)
            if copy:
                with _served_once(found[0]["path"]) as (port, token):
                    fetched = cluster.call("fetch", db, "django_db.fetch_copy", name, copy=copy, port=port, token=token)[db[0]]
                if not fetched["ok"]:
                    raise RolloutError("fetch", fetched["comment"], db[0])
                file = fetched["file"]
                cluster.log("fetch", fetched["comment"])
            outcome = _restore_held(cluster, name, db[0], str(file))
    except RolloutError as exc:
        return _failure(cluster, exc, project=name)
    return _finish(cluster, True, outcome["comment"], project=name, file=file, backup=outcome.get("backup"))


def _restore_held(cluster: _Cluster, project: str, db: str, file: str) -> dict[str, Any]:
    """``django_db.restore`` on ``db`` with every app server out of HAProxy's
    rotation (maint, sessions ended) until it is done, whatever happens."""
    lbs, apps, workers = cluster.members_up("lb"), cluster.members_up("app"), cluster.members_up("worker")
    backend = BACKEND.format(project=project)
    held: list[str] = []
    try:
        for server in apps:
            held.append(server)
            cluster.call("maintenance", lbs, "haproxy_runtime.set_state", backend, server, "maint")
        for server in apps:
            cluster.call("maintenance", lbs, "haproxy_runtime.wait_drained", backend, server, timeout=cluster.settings["drain_timeout"])
        cluster.log("maintenance", f"{', '.join(apps) or 'no app server'} out of rotation")
        # Queue workers write too: their running jobs finish, then they stop until the restore is done.
        cluster.call("maintenance", workers, "django_workers.stop", project)
        outcome = cluster.call("restore", [db], "django_db.restore", project, file=file, confirm=True)[db]
    finally:
        for server in workers:
            try:
                started = cluster.call("ready", [server], "django_workers.start", project)[server]
            except RolloutError as exc:
                started = {"ok": False, "comment": str(exc)}
            if not started["ok"]:
                cluster.log("ready", f"the workers on {server} did not start again: {started['comment']}")
        for server in held:
            try:
                cluster.call("ready", lbs, "haproxy_runtime.set_state", backend, server, "ready")
            except RolloutError as exc:
                cluster.log("ready", f"{server} not put back into rotation: {exc}")
    if not outcome["ok"]:
        raise RolloutError("restore", outcome["comment"], db)
    cluster.log("restore", outcome["comment"])
    return outcome


def request(release: str | None = None, project: str | None = None) -> dict[str, Any]:
    """Ask for a rollout without waiting for it: a ``salt-django/deploy``
    event, signed with the master's key, which the reactor
    (reactor/deploy.sls) hands to :func:`requested`. For CI through salt-api,
    allow this one runner (README: running the master).

    CLI Example:

    .. code-block:: bash

        salt-run rollout.request release=v2
    """
    now = time.time()
    payload = {"release": release, "project": project, "at": now, "nonce": secrets.token_hex(16)}
    payload["sig"] = _signature(_deploy_key(), payload)
    import salt.utils.event

    with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=False) as bus:  # noqa: F821
        bus.fire_event(payload, DEPLOY_TAG)
    what = f"{project or 'the project'} at {release or 'the pillar source'}"
    return {"result": True, "comment": f"rollout of {what} requested", "nonce": payload["nonce"]}


def requested(request: Any = None) -> dict[str, Any]:
    """Run the rollout a ``salt-django/deploy`` event asks for, if :func:`request`
    signed it; refuse anything else (any minion can fire that event). Every
    verdict goes to ``<state dir>/requests.log``. Called by the reactor.

    CLI Example:

    .. code-block:: bash

        salt-run rollout.requested '{release: v2, time: 1795000000, nonce: <hex>, signature: <hex>}'  # reactor/deploy.sls
    """
    now = time.time()
    with _state_file("requests") as seen:
        for nonce, at in list(seen.items()):
            if now - at > 2 * REQUEST_TTL:
                del seen[nonce]
        try:
            problem = _request_problem(_deploy_key(), request, now, seen)
        except RolloutError as exc:
            problem = str(exc)
        if problem is None:
            seen[request["nonce"]] = now
    verdict = f"refused: {problem}" if problem else f"accepted: release {request['release']} of {request['project'] or 'the project'}"
    with open(os.path.join(_state_dir(), "requests.log"), "a", encoding="utf-8") as handle:
        handle.write(f"{_now()} deploy request {verdict}\n")
    if problem:
        log.warning("salt-django: deploy request %s", verdict)
        return _finish(None, False, f"deploy request {verdict}")
    return deploy(request["release"], request["project"])


def _join_claim(minion: str, debounce: float) -> bool:
    """Take the join of ``minion`` unless one started less than ``debounce`` seconds ago."""
    now = time.time()
    with _state_file("joins") as joins:
        if not _join_due(joins, minion, now, debounce):
            return False
        joins[minion] = now
    return True


def _join_release(minion: str) -> None:
    """Let the next start event of ``minion`` join it (this one could not)."""
    with _state_file("joins") as joins:
        joins.pop(minion, None)


def _converged_mark() -> str:
    """The file every highstate writes (salt/common, ``common:converged_mark``)."""
    with open(_repo_path("salt/common/defaults.yaml"), encoding="utf-8") as handle:
        return str(yaml.safe_load(handle)["common"]["converged_mark"])


def _join_reason(cluster: _Cluster, minion: str, roles: list[str]) -> str | None:
    """Why ``minion`` needs converging: it never was, or, an app server, it
    serves another release than the cluster's. None: it needs nothing."""
    if not cluster.call("join", [minion], "file.file_exists", _converged_mark())[minion]:
        return "never converged"
    if "app" not in roles:
        return None
    for project, record in sorted(_records().items()):
        current = record.get("current") or {}
        if not current.get("id") or project not in (cluster.pillar.get("projects") or {}):
            continue
        expected = (current.get("servers") or {}).get(minion, current["id"])
        live = cluster.call("join", [minion], "django_store.current", project)[minion]
        if live != expected:
            return f"serves {live} of {project}, the cluster {expected}"
    return None


def join(minion: str) -> dict[str, Any]:
    """A server started: converge it if it needs it; HAProxy routes to an app
    server once it is healthy.

    The reactor calls this on every ``salt/minion/<id>/start`` event, which
    any minion can forge for any other, and which every minion sends when
    the master restarts. So a join converges only a server that never
    converged (no ``common:converged_mark``), or an app server that serves another
    release than the one the cluster serves; and it starts at most once per
    ``JOIN_DEBOUNCE`` seconds per server. Its highstate builds
    the release the cluster serves (pillar ``projects:<p>:release``), not
    the pillar's ``source``. Waits for a running rollout or join
    (``rollout:join_wait`` seconds, 600). Does nothing for a minion the
    topology does not list.

    CLI Example:

    .. code-block:: bash

        salt-run rollout.join minion=app3
    """
    if not isinstance(minion, str) or not _MINION_ID.match(minion):
        return _finish(None, False, f"join refused: {str(minion)[:80]!r} is not a minion id")
    if not _join_claim(minion, JOIN_DEBOUNCE):
        return _finish(None, True, f"a join of {minion} started less than {JOIN_DEBOUNCE}s ago: nothing to do")
    cluster: _Cluster | None = None
    try:
        cluster = _Cluster(_pillar())
        roles = cluster.roles.get(minion)
        if roles is None:
            _join_release(minion)
            return _finish(cluster, True, f"{minion} is not in topology:hosts: nothing to do")
        with _lock(f"{JOIN} of {minion}", wait=cluster.settings["join_wait"]):
            cluster.ping()
            if minion not in cluster.alive:
                _join_release(minion)
                return _finish(cluster, True, f"{minion} does not answer: nothing to do")
            reason = _join_reason(cluster, minion, roles)
            if reason is None:
                return _finish(cluster, True, f"{minion} is converged: nothing to do")
            cluster.log("join", f"{minion}: {reason}")
            cluster.call("sync", [minion], "saltutil.sync_all")
            cluster.call("mine", [minion], "mine.update")
            if {"app", "worker"} & set(roles):
                # The database, the cache and the object store admit servers by
                # address: their firewalls, pg_hba and the object store's Nginx.
                cluster.converge("db", cluster.members_up("db"), "postgres,firewall")
                cluster.converge("cache", cluster.members_up("cache"), "firewall")
                cluster.converge("storage", cluster.members_up("storage"), "storage,firewall")
            cluster.converge("highstate", [minion])
            if "web" in roles:
                cluster.converge("refresh load balancer", cluster.members_up("lb"), "haproxy")
    except RolloutError as exc:
        return _failure(cluster, exc)
    return _finish(cluster, True, f"{minion} converged and joined ({', '.join(roles)}): {reason}")
