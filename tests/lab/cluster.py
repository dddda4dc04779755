"""A multi-host Salt lab: a salt-master on this machine plus minion hosts.

Builds on :mod:`tests.lab.hosts`:

* the **minion layer** (:func:`ensure_minion_layer`) is a read-only overlay
  layer over the base image holding Salt installed the way
  ``scripts/bootstrap.sh`` does it (``/usr/bin/python3 -m venv
  /opt/salt-django/venv``, ``pip install -r requirements/salt.txt`` offline
  from the image's wheelhouse) and an enabled ``salt-minion.service``. It is
  built once in a throwaway ``boot=False`` host and cached next to the base
  image as ``minion-<key>/`` (the key hashes the base key, the requirements
  and the recipe below);
* a :class:`Cluster` is one :class:`~tests.lab.hosts.Network` (bridge), a
  ``salt-master`` of the test venv running on the machine, bound to the
  bridge's gateway address only, and booted hosts (systemd inside) whose
  minions use pre-generated, pre-accepted keys. ``up()`` returns once every
  minion's ``salt/minion/<id>/start`` event reached the master.

The master runs in its own cgroup named like every lab resource
(``sdl<session>...``), so :func:`~tests.lab.hosts.cleanup_stale` also kills
the master of a crashed session. See tests/lab/README.md ("Salt cluster").
"""

from __future__ import annotations

import copy
import fcntl
import fnmatch
import functools
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self

from . import hosts as _hosts
from .hosts import (
    CACHE_ENV,
    DEFAULT_CACHE,
    PREFIX,
    REPO_ROOT,
    Host,
    LabError,
    Network,
    _cgroup_roots,
    _in_cgroups,
    _kill_cgroup,
    _log,
    _lowerdirs_in_use,
    _remove_cgroup,
    _remove_tree,
    _sh,
    _tail,
    base_key,
    ensure_base,
    session_id,
)

SALT_REQUIREMENTS = REPO_ROOT / "requirements" / "salt.txt"


@functools.cache
def _jobs() -> Any:
    """``_utils/saltdjango_jobs.py``: how the rollout runner reads job returns (loaded once)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("salt_django_lab_jobs", REPO_ROOT / "_utils" / "saltdjango_jobs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: Where Salt lives on every minion host (as scripts/bootstrap.sh puts it).
SALT_VENV = "/opt/salt-django/venv"
#: The test venv's Salt scripts (salt-master, salt-run) run the master side.
SALT_BIN = Path(sys.executable).parent

# ------------------------------------------------------------- minion layer
#: The minion layer's recipe: its text is part of the layer's cache key.
MINION_UNIT = f"""\
[Unit]
Description=The Salt Minion (salt-django venv)
Documentation=man:salt-minion(1)
After=network.target

[Service]
Type=notify
NotifyAccess=all
ExecStart={SALT_VENV}/bin/salt-minion
KillMode=mixed
TimeoutStopSec=5
Restart=on-failure
RestartSec=2
LimitNOFILE=8192

[Install]
WantedBy=multi-user.target
"""
MINION_LAYER_SCRIPT = f"""\
set -euo pipefail
# as scripts/bootstrap.sh does first: the image, like Debian's cloud images, has no python3-venv
apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv >/dev/null
/usr/bin/python3 -m venv {SALT_VENV}
{SALT_VENV}/bin/pip install -q --disable-pip-version-check --no-cache-dir \\
    --no-index --find-links /opt/wheelhouse -r /root/salt-requirements.txt
# what scripts/bootstrap.sh records, so that it does not reinstall
sha256sum /root/salt-requirements.txt | cut -c1-64 > {SALT_VENV}/.requirements.sha256
rm -f /root/salt-requirements.txt
ln -sf {SALT_VENV}/bin/salt-call /usr/local/bin/salt-call
install -d -m 0755 /etc/salt /etc/salt/minion.d
install -d -m 0700 /etc/salt/pki /etc/salt/pki/minion
systemctl enable salt-minion.service
{SALT_VENV}/bin/salt-minion --version
"""
#: Files the build host itself wrote that must not end up in the layer.
_LAYER_SCRUB = ("etc/hostname", "etc/hosts", "root/.cache", "var/log/journal", "var/cache/ldconfig/aux-cache")


def minion_layer_key() -> str:
    """Cache key of the minion layer: base image key + requirements + recipe."""
    digest = hashlib.sha256()
    for part in (base_key().encode(), SALT_REQUIREMENTS.read_bytes(), MINION_UNIT.encode(), MINION_LAYER_SCRIPT.encode()):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def ensure_minion_layer(base: Path | None = None, cache_root: Path | None = None) -> Path:
    """Return the directory of the ready minion layer, building it on a cache miss.

    The layer is an overlay upper dir over ``base`` (default: :func:`ensure_base`):
    mount hosts with ``Host(..., lower=[layer])``. It lives in the lab cache as
    ``minion-<key>/`` (renamed into place only when complete); layers of other
    keys are removed unless still mounted. A file lock makes concurrent
    sessions build once. A cold build takes about a minute (pip install).
    """
    root = Path(cache_root or os.environ.get(CACHE_ENV) or DEFAULT_CACHE)
    base = Path(base) if base else ensure_base(root)
    key = minion_layer_key()
    layer = root / f"minion-{key}"
    # Not the base image's .lock: ensure_base() takes that one (flock is per
    # open file, a second open in this process would deadlock).
    with open(root / ".minion.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not layer.is_dir():
            t0 = time.monotonic()
            _build_minion_layer(base, root / f"minion-{key}.tmp", layer)
            _log(f"minion layer {key} built in {time.monotonic() - t0:.1f}s")
        in_use = _lowerdirs_in_use()
        for entry in root.glob("minion-*"):
            if key in entry.name:
                continue
            if str(entry) in in_use:
                _log(f"keeping {entry}: still mounted as an overlay lower layer")
                continue
            _log(f"removing stale minion layer {entry}")
            _remove_tree(entry)
    return layer


def _build_minion_layer(base: Path, tmp: Path, layer: Path) -> None:
    _remove_tree(tmp)
    builder = Host("minion-layer", base, tmp, boot=False)
    _log(f"building minion layer in {tmp} (venv + pip install offline)")
    try:
        builder.start()
        builder.path("/root/salt-requirements.txt").write_bytes(SALT_REQUIREMENTS.read_bytes())
        builder.path("/etc/systemd/system/salt-minion.service").write_text(MINION_UNIT)
        builder.run(MINION_LAYER_SCRIPT, timeout=900)
    finally:
        builder.stop(hard=True)
    upper = tmp / "upper"
    for rel in _LAYER_SCRUB:
        target = upper / rel
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
    if not (upper / SALT_VENV.lstrip("/") / "bin" / "salt-minion").exists():
        raise LabError(f"minion layer build left no salt-minion in {upper}")
    upper.rename(layer)
    _remove_tree(tmp)


# ------------------------------------------------------------------- events
class Events:
    """A subscription to the master's event bus (opened at creation).

    Every event received is kept in :attr:`seen`; :meth:`wait` hands out
    matching events in order, each once, so open the subscription *before*
    triggering what fires the event.
    """

    def __init__(self, master_conf: Path) -> None:
        import salt.config
        import salt.utils.event

        opts = salt.config.client_config(str(master_conf))
        self._bus = salt.utils.event.get_event("master", sock_dir=opts["sock_dir"], opts=opts, listen=True)
        deadline = time.monotonic() + 10
        while not self._bus.cpub:
            if time.monotonic() > deadline:
                self._bus.destroy()
                raise LabError(f"cannot subscribe to the master's event bus in {opts['sock_dir']}")
            time.sleep(0.2)
            self._bus.connect_pub(timeout=2)
        self.seen: list[dict[str, Any]] = []
        self._pending: list[dict[str, Any]] = []
        self.closed = False

    def _read(self, wait: float) -> bool:
        event = self._bus.get_event(wait=max(wait, 0.01), full=True)
        if event is None:
            return False
        self.seen.append(event)
        self._pending.append(event)
        return True

    def wait(self, tag: str = "*", timeout: float = 30) -> dict[str, Any] | None:
        """Next not yet returned event whose tag matches the glob ``tag``:
        ``{"tag": ..., "data": ...}``, or None after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self._pending:
                if fnmatch.fnmatchcase(event["tag"], tag):
                    self._pending.remove(event)
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._read(min(remaining, 1.0))

    def wait_started(self, ids: Iterable[str], timeout: float = 120) -> dict[str, float]:
        """Wait for ``salt/minion/<id>/start`` of every id; return seconds until each."""
        t0 = time.monotonic()
        want, got = set(ids), {}
        while want:
            event = self.wait("salt/minion/*/start", timeout=t0 + timeout - time.monotonic())
            if event is None:
                raise LabError(f"no start event from minion(s) {sorted(want)} within {timeout:.0f}s")
            minion = event["tag"].split("/")[2]
            if minion in want:
                want.discard(minion)
                got[minion] = time.monotonic() - t0
        return got

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._bus.destroy()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` merged into a copy of ``base``: dicts recursively, anything else replaced."""
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# ------------------------------------------------------------------ cluster
class Cluster:
    """A salt-master on the machine and minion hosts on one private bridge.

    ``hosts``: names, or names mapped to a fixed address (None: the next
    free one). ``file_roots`` / ``pillar_roots`` become the master's
    ``base`` environment. ``master_opts`` is deep-merged into the generated
    master config last (dicts merge, other values replace), e.g. to add a
    reactor::

        Cluster(..., master_opts={"reactor": [{"salt/minion/*/start": ["/abs/reactor/start.sls"]}]})

    ``minion_files`` (path -> text) are written on every host before its
    first boot, e.g. the project's minion config under /etc/salt/minion.d/.

    ``up()`` starts it all and waits for every minion's start event;
    ``down()`` removes everything, also after a failure (idempotent).
    Hosts are :class:`~tests.lab.hosts.Host` objects in :attr:`hosts`
    (``cluster.hosts["db"].run(...)``, ``.path(...)``, ``.ip``).
    """

    MINION_TIMEOUT = 120.0
    MASTER_TIMEOUT = 60.0
    #: Lab tuning of every minion (/etc/salt/minion.d/10-lab.conf, with id and master):
    #: quick (re)connects after a cut or a reboot.
    MINION_OPTS: Mapping[str, Any] = {
        "acceptance_wait_time": 1,
        "acceptance_wait_time_max": 5,
        "random_reauth_delay": 0,
        "recon_default": 200,
        "recon_max": 2000,
        "recon_randomize": False,
        "master_tries": -1,
    }

    def __init__(
        self,
        workdir: Path,
        hosts: Mapping[str, str | None] | Sequence[str],
        file_roots: Sequence[Path],
        pillar_roots: Sequence[Path],
        master_opts: Mapping[str, Any] | None = None,
        *,
        minion_files: Mapping[str, str] | None = None,
        base: Path | None = None,
        layer: Path | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.wanted: dict[str, str | None] = dict(hosts) if isinstance(hosts, Mapping) else dict.fromkeys(hosts)
        self.file_roots = [Path(p).resolve() for p in file_roots]
        self.pillar_roots = [Path(p).resolve() for p in pillar_roots]
        self.master_opts = dict(master_opts or {})
        self.minion_files = dict(minion_files or {})
        self.base, self.layer = base, layer
        self.net: Network | None = None
        self.hosts: dict[str, Host] = {}
        self.master_dir = self.workdir / "master"
        self.conf_dir = self.master_dir / "etc" / "salt"
        self.master_conf = self.conf_dir / "master"
        self.master_log = self.master_dir / "master.log"
        self.keys_dir = self.workdir / "keys"
        self.timings: dict[str, float] = {}
        self._master: subprocess.Popen[bytes] | None = None
        self._master_cgroups: list[Path] = []
        self._client: Any = None
        self._listeners: list[Events] = []
        self.last_runner: subprocess.CompletedProcess[str] | None = None

    def __repr__(self) -> str:
        return f"Cluster(master={self.master_ip!r}, hosts={list(self.hosts)})"

    @property
    def master_ip(self) -> str | None:
        """The master's address: the bridge's gateway (None before up())."""
        return self.net.gateway if self.net else None

    # -- lifecycle ---------------------------------------------------------------
    def up(self) -> Self:
        """Network, master, hosts; return once every minion's start event arrived."""
        t0 = time.monotonic()
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.base = self.base or ensure_base()
            self.layer = self.layer or ensure_minion_layer(self.base)
            t1 = time.monotonic()
            self.net = Network()
            self._start_master()
            self.timings["master"] = time.monotonic() - t1
            for name, ip in self.wanted.items():
                self._new_host(name, ip)
            t2 = time.monotonic()
            with self.events() as events:
                with ThreadPoolExecutor(max_workers=len(self.hosts) or 1) as pool:
                    list(pool.map(self._start_host, self.hosts.values()))
                self.timings["hosts booted"] = time.monotonic() - t2
                self._wait_minions(events, list(self.hosts))
            self.timings["minions ready"] = time.monotonic() - t2
        except BaseException:
            self.down()
            raise
        self.timings["up"] = time.monotonic() - t0
        _log("cluster up in {:.1f}s ({})".format(self.timings["up"], ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items())))
        return self

    def down(self) -> None:
        """Tear everything down (hosts, master, network, mounts, cgroups), even
        after failures; raise LabError at the end if any step failed."""
        errors: list[str] = []

        def attempt(what: str, fn: Any, *args: Any) -> None:
            try:
                fn(*args)
            except Exception as exc:  # noqa: BLE001 - carry on, report at the end
                errors.append(f"{what}: {exc}")

        for events in self._listeners:
            attempt("close event listener", events.close)
        self._listeners.clear()
        if self._client is not None:
            attempt("close LocalClient", self._client.destroy)
            self._client = None
        for host in self.hosts.values():  # power cut all at once: fast teardown
            attempt(f"thaw {host.name}", self._thaw_quietly, host)
            if host.running:
                attempt(f"power cut {host.name}", self._cgroup_file(host, "payload/cgroup.kill").write_text, "1")
        for host in list(self.hosts.values()):
            attempt(f"destroy {host.name}", host.destroy)
        self.hosts.clear()
        attempt("stop salt-master", self._stop_master)
        if self.net is not None:
            attempt("destroy network", self.net.destroy)
            self.net = None
        if errors:
            raise LabError("cluster teardown failed:\n" + "\n".join(errors))

    def __enter__(self) -> Self:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- master ------------------------------------------------------------------
    def master_config(self) -> dict[str, Any]:
        """The generated master config (``master_opts`` merged in last)."""
        assert self.net is not None
        config: dict[str, Any] = {
            "id": "master",
            "root_dir": str(self.master_dir),
            "user": "root",
            "interface": self.net.gateway,
            "ipv6": False,
            "log_file": str(self.master_log),
            "log_level_logfile": "info",
            "file_roots": {"base": [str(p) for p in self.file_roots]},
            "pillar_roots": {"base": [str(p) for p in self.pillar_roots]},
            "features": {"x509_v2": True},
            "worker_threads": 4,
            "timeout": 15,
            "gather_job_timeout": 5,
            "open_mode": False,
            "auto_accept": False,
        }
        return _deep_merge(config, self.master_opts)

    def _start_master(self) -> None:
        import yaml

        assert self.net is not None
        (self.conf_dir / "pki" / "master" / "minions").mkdir(parents=True, exist_ok=True)
        config = self.master_config()
        sock = Path(config.get("sock_dir") or self.master_dir / "var" / "run" / "salt" / "master")
        if len(str(sock / "master_event_pub.ipc")) > 100:
            raise LabError(f"workdir {self.workdir} is too deep: unix socket paths under {sock} exceed 108 bytes")
        self.master_conf.write_text(yaml.safe_dump(config, default_flow_style=False, sort_keys=False))
        machine = f"{PREFIX}{session_id()}{next(_hosts._counter):x}-master"
        self._master_cgroups = [root / machine for root in _cgroup_roots()]
        for cg in self._master_cgroups:
            cg.mkdir(exist_ok=True)
        cmd = [
            *_in_cgroups([cg / "cgroup.procs" for cg in self._master_cgroups]),
            str(SALT_BIN / "salt-master"),
            "-c",
            str(self.conf_dir),
            "-l",
            "warning",
        ]
        with open(self.master_dir / "console.log", "ab") as console:
            self._master = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT, start_new_session=True)
        want = {f"{self.net.gateway}:{config.get('publish_port', 4505)}", f"{self.net.gateway}:{config.get('ret_port', 4506)}"}
        deadline = time.monotonic() + self.MASTER_TIMEOUT
        while True:
            if self._master.poll() is not None:
                raise LabError(f"salt-master exited ({self._master.returncode})\n{self.master_log_tail()}")
            listening = {line.split()[3] for line in _sh("ss", "-Hltn").stdout.splitlines() if len(line.split()) > 3}
            if want <= listening and (sock / "master_event_pub.ipc").exists():
                break
            if time.monotonic() > deadline:
                raise LabError(f"salt-master not listening on {sorted(want)} after {self.MASTER_TIMEOUT:.0f}s\n{self.master_log_tail()}")
            time.sleep(0.1)
        _log(f"salt-master up on {self.net.gateway} (pid {self._master.pid})")

    def _stop_master(self) -> None:
        proc, self._master = self._master, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # the master and its workers: its own process group
                proc.wait(10)
            except subprocess.TimeoutExpired:
                _log("salt-master did not stop in 10s: killing it")
        cgroups = [cg for cg in self._master_cgroups if cg.exists()]
        if cgroups and (cgroups[0] / "cgroup.events").exists():
            _kill_cgroup(cgroups[0])  # stragglers that left the process group
        if proc is not None and proc.poll() is None:
            proc.wait(10)
        for cg in cgroups:
            _remove_cgroup(cg)
        self._master_cgroups = []

    def restart_master(self, master_opts: Mapping[str, Any] | None = None, timeout: float = 60) -> float:
        """Stop the master, deep-merge ``master_opts`` into its config, start it
        again (e.g. to add a reactor, as an operator would); return once every
        running minion answers a ping again. Returns seconds."""
        t0 = time.monotonic()
        if master_opts:
            self.master_opts = _deep_merge(self.master_opts, master_opts)
        for events in self._listeners:
            events.close()
        self._listeners.clear()
        if self._client is not None:
            self._client.destroy()
            self._client = None
        self._stop_master()
        self._start_master()
        want = sorted(name for name, host in self.hosts.items() if host.running)
        deadline = time.monotonic() + timeout
        while True:
            answered = self.salt(want, "test.ping", tgt_type="list", timeout=5, gather_job_timeout=2)
            if all(answered.get(name) is True for name in want):
                return time.monotonic() - t0
            if time.monotonic() > deadline:
                missing = [n for n in want if answered.get(n) is not True]
                raise LabError(f"minions {missing} did not reconnect within {timeout:.0f}s\n{self.diagnose(missing)}")
            time.sleep(0.5)

    def master_log_tail(self, lines: int = 40) -> str:
        """Last lines of the master's log file and console."""
        out = []
        for path in (self.master_log, self.master_dir / "console.log"):
            try:
                out.append(f"--- {path} (tail) ---\n{_tail(path.read_text(errors='replace'), lines)}")
            except OSError:
                out.append(f"--- {path}: missing ---")
        return "\n".join(out)

    # -- hosts -------------------------------------------------------------------
    def _new_host(self, name: str, ip: str | None = None) -> Host:
        import salt.crypt

        assert self.net is not None and self.layer is not None and self.base is not None
        if name in self.hosts:
            raise LabError(f"host {name} already in the cluster")
        self.keys_dir.mkdir(parents=True, exist_ok=True)
        if not (self.keys_dir / f"{name}.pem").exists():
            salt.crypt.gen_keys(str(self.keys_dir), name, 2048)
        # pre-accepted: the master finds the key among its accepted ones
        shutil.copy(self.keys_dir / f"{name}.pub", self.conf_dir / "pki" / "master" / "minions" / name)
        host = Host(name, self.base, self.workdir / "hosts" / name, boot=True, net=self.net, ip=ip, lower=[self.layer])
        self.hosts[name] = host
        return host

    def _etc_hosts(self) -> str:
        assert self.net is not None
        return (
            "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"
            f"{self.net.gateway}\tsalt master\n{self.net.hosts_entries()}"
        )

    def _prepare(self, host: Host) -> None:
        """Mount the host's root and write its identity before it boots.

        First boot: minion config and keys; every boot: /etc/hosts with all
        cluster members (its own name maps to its bridge address, ``salt`` to
        the master).
        """
        host._mount()
        host._first_boot_setup()
        host.path("/etc/hosts").write_text(self._etc_hosts())
        marker = host.workdir / ".minion-setup"
        if marker.exists():
            return
        opts = {"id": host.name, "master": self.master_ip, **self.MINION_OPTS}
        host.path("/etc/salt/minion.d/10-lab.conf").write_text(
            "# salt-django lab (tests/lab/cluster.py)\n" + "".join(f"{k}: {json.dumps(v)}\n" for k, v in opts.items())
        )
        for path, text in self.minion_files.items():
            host.path(path).parent.mkdir(parents=True, exist_ok=True)
            host.path(path).write_text(text)
        pki = host.path("/etc/salt/pki/minion")
        for ext, mode in (("pem", 0o400), ("pub", 0o644)):
            shutil.copy(self.keys_dir / f"{host.name}.{ext}", pki / f"minion.{ext}")
            os.chmod(pki / f"minion.{ext}", mode)
        marker.touch()

    def _start_host(self, host: Host) -> None:
        self._prepare(host)
        host.start()

    def _wait_minions(self, events: Events, names: list[str], timeout: float | None = None) -> dict[str, float]:
        try:
            return events.wait_started(names, timeout or self.MINION_TIMEOUT)
        except LabError as exc:
            missing = [n for n in names if not any(e["tag"] == f"salt/minion/{n}/start" for e in events.seen)]
            raise LabError(f"{exc}\n{self.diagnose(missing)}") from None

    def diagnose(self, names: Iterable[str]) -> str:
        """Minion status, minion log and master log tails (for failure messages)."""
        out = []
        for name in names:
            host = self.hosts.get(name)
            if host is None or not host.running:
                out.append(f"--- {name}: not running ---")
                continue
            probe = host.run("systemctl status --no-pager -n 0 salt-minion; tail -n 30 /var/log/salt/minion", check=False, timeout=30)
            out.append(f"--- {name}: salt-minion ---\n{probe.stdout}{probe.stderr}")
        out.append(self.master_log_tail())
        return "\n".join(out)

    def _refresh_etc_hosts(self) -> None:
        for host in self.hosts.values():
            if os.path.ismount(host.merged):
                host.path("/etc/hosts").write_text(self._etc_hosts())

    def add_host(self, name: str, ip: str | None = None, timeout: float | None = None) -> Host:
        """Start one more minion host (key pre-accepted); return once its start
        event arrived. Every running host learns its name (/etc/hosts)."""
        host = self._new_host(name, ip)
        self._refresh_etc_hosts()
        with self.events() as events:
            t0 = time.monotonic()
            self._start_host(host)
            self._wait_minions(events, [name], timeout)
        self.timings[f"add {name}"] = time.monotonic() - t0
        return host

    def _host(self, name: str) -> Host:
        try:
            return self.hosts[name]
        except KeyError:
            raise LabError(f"no host {name!r} in the cluster ({sorted(self.hosts)})") from None

    def _cgroup_file(self, host: Host, rel: str) -> Path:
        return _cgroup_roots()[0] / host.machine / rel

    def cut(self, name: str) -> None:
        """Unplug the host's network cable (its packets are dropped)."""
        assert self.net is not None
        self.net.cut(self._host(name))

    def heal(self, name: str) -> None:
        """Plug the host's cable back in."""
        assert self.net is not None
        self.net.heal(self._host(name))

    def freeze(self, name: str, on: bool = True) -> None:
        """Freeze (a hung host: nothing inside runs, not even ``run()``) or thaw it."""
        host = self._host(name)
        freeze, events = self._cgroup_file(host, "payload/cgroup.freeze"), self._cgroup_file(host, "payload/cgroup.events")
        if not freeze.exists():
            raise LabError(f"no cgroup freezer for {name} ({freeze})")
        freeze.write_text("1" if on else "0")
        deadline = time.monotonic() + 10
        while f"frozen {int(on)}" not in events.read_text():
            if time.monotonic() > deadline:
                raise LabError(f"host {name} not {'frozen' if on else 'thawed'} after 10s")
            time.sleep(0.05)

    def _thaw_quietly(self, host: Host) -> None:
        freeze = self._cgroup_file(host, "payload/cgroup.freeze")
        if freeze.exists() and freeze.read_text().strip() == "1":
            freeze.write_text("0")

    def power_cut(self, name: str) -> float:
        """Kill every process of the host at once (its disk stays); return seconds."""
        host = self._host(name)
        t0 = time.monotonic()
        self._thaw_quietly(host)
        host.stop(hard=True)
        return time.monotonic() - t0

    def shutdown(self, name: str) -> float:
        """Clean poweroff of the host; return seconds."""
        t0 = time.monotonic()
        self._host(name).stop()
        return time.monotonic() - t0

    def boot(self, name: str, timeout: float | None = None) -> float:
        """Start a stopped host (its disk as it was) and wait for its minion's
        start event; return seconds from boot to minion ready."""
        host = self._host(name)
        if host.running:
            raise LabError(f"host {name} is running")
        with self.events() as events:
            t0 = time.monotonic()
            self._start_host(host)
            self._wait_minions(events, [name], timeout)
        return time.monotonic() - t0

    # -- talking to the master ---------------------------------------------------
    @property
    def client(self) -> Any:
        """A ``salt.client.LocalClient`` of the master (created on first use)."""
        if self._client is None:
            import salt.client

            self._client = salt.client.LocalClient(c_path=str(self.master_conf))
        return self._client

    def salt(
        self, tgt: str | list[str], fun: str, arg: Sequence[Any] = (), timeout: float = 60, *, check: bool = False, **kw: Any
    ) -> dict[str, Any]:
        """``salt <tgt> <fun> <arg...>``: {minion id: return}, False for a targeted
        minion that did not answer (as ``LocalClient.cmd``). ``kw``: what
        ``LocalClient.cmd`` takes (``tgt_type="list"``, ``kwarg={...}``,
        ``full_return=True``...).

        ``check=True``: raise LabError naming the function and every targeted
        minion that did not answer (a hung or stopped minion costs at most
        ``min(timeout, 30)`` + ``gather_job_timeout`` seconds), and those
        minions' processes as seen from outside."""
        full = kw.pop("full_return", False)
        tgt_type = kw.pop("tgt_type", "glob")
        started = time.monotonic()
        pub = self.client.run_job(tgt, fun, list(arg), tgt_type=tgt_type, timeout=timeout, listen=True, **kw)
        if not pub:
            return {}
        # The runner's reading of returns (events, then the job cache for a
        # lost one), asking every 30 s at most whether the job still runs.
        collected = _jobs().collect(self.client, pub, tgt, tgt_type, min(timeout, 30), **kw)
        ret = {minion: {**data, "jid": pub["jid"]} if full else data.get("ret", {}) for minion, data in collected.items()}
        silent = sorted(set(pub["minions"]) - set(ret))
        if check and silent:
            gather = kw.get("gather_job_timeout", self.client.opts["gather_job_timeout"])
            raise LabError(
                f"salt {tgt} {fun}: no answer from {', '.join(silent)} after {time.monotonic() - started:.1f}s"
                f" (timeout {timeout:g}s, gather_job_timeout {gather:g}s, job {pub['jid']})\n"
                + "\n".join(self.minion_processes(name) for name in silent)
            )
        return {**dict.fromkeys(pub["minions"], False), **ret}

    def minion_processes(self, name: str) -> str:
        """The host's salt-minion processes and their states (``T`` = stopped),
        read from outside through its cgroup: works on a frozen or hung host,
        where ``run()`` would hang too."""
        host = self.hosts.get(name)
        if host is None or not host.running:
            return f"{name}: host not running"
        service = self._cgroup_file(host, "payload/system.slice/salt-minion.service")
        try:
            frozen = "frozen 1" in self._cgroup_file(host, "payload/cgroup.events").read_text()
            pids = (service / "cgroup.procs").read_text().split()
        except OSError:
            return f"{name}: no salt-minion.service cgroup ({service}): the minion does not run"
        lines = [f"{name}: salt-minion.service processes{' (host frozen)' if frozen else ''}:"]
        for pid in pids:
            try:
                status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
            except OSError:
                continue
            lines.append(f"  pid {pid} (this machine's pid): {status.get('Name', '?')} state {status.get('State', '?')}")
        return "\n".join(lines)

    def run_runner(self, fun: str, *args: Any, timeout: float = 600, check: bool = False, **kwargs: Any) -> Any:
        """``salt-run <fun> <args> key=value...`` against the master; return its
        JSON output parsed (e.g. for ``state.orchestrate``: ``{"data": {...},
        "outputter": "highstate", "retcode": ...}``).

        Runs ``salt-run -c <conf dir> --out=json`` as a subprocess (a clean
        process, as an operator would). Values are passed as JSON, which Salt
        reads as YAML: ``run_runner("state.orchestrate", "orch.deploy",
        pillar={"release": "r1"})``. check=True raises on a non-zero exit.
        """
        argv = [str(SALT_BIN / "salt-run"), "-c", str(self.conf_dir), "--out=json", "--out-indent=-1", "-l", "error", fun]
        argv += [a if isinstance(a, str) else json.dumps(a) for a in args]
        argv += [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in kwargs.items()]
        proc = subprocess.run(argv, text=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout, check=False)
        self.last_runner = proc
        if check and proc.returncode:
            raise LabError(f"salt-run {fun} -> {proc.returncode}\n{_tail(proc.stdout)}\n{_tail(proc.stderr)}")
        try:
            return json.loads(proc.stdout)
        except ValueError:
            raise LabError(f"salt-run {fun}: no JSON output (exit {proc.returncode})\n{_tail(proc.stdout)}\n{_tail(proc.stderr)}") from None

    def events(self) -> Events:
        """Subscribe to the master's event bus (a context manager; closed by down() too)."""
        events = Events(self.master_conf)
        self._listeners = [e for e in self._listeners if not e.closed] + [events]
        return events
