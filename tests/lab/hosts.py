"""Throwaway Debian test hosts for salt-django's integration tests.

A lab host is a systemd-nspawn container that behaves like a small server:

* its root is an overlayfs: a shared, read-only Debian base image, bookworm
  (12) or trixie (13) (built once by ``build-base.sh``, cached, see
  :func:`ensure_base`) plus a
  private upper dir, so every host starts clean and writes stay private;
* with ``boot=True`` systemd is PID 1 inside, so package installs start their
  services and Salt's ``service`` states drive real systemd units; with
  ``boot=False`` a do-nothing init runs instead, modelling a container/CI
  host without systemd (``/run/systemd/system`` is absent);
* its network is either loopback only or a namespace on a private bridge
  (:class:`Network`) without a default route: nothing reaches the internet,
  packages come from the image's local apt repo and wheelhouse.

Commands run inside with :meth:`Host.run` (``nsenter`` into the container's
namespaces), files are reached from outside with :meth:`Host.path`.

Every resource (mount, cgroup, network namespace, link, process) carries the
name prefix ``sdl`` plus a per-session id, and each session holds a lock file,
so :func:`cleanup_stale` can remove what a crashed session left behind without
touching live sessions. Needs root, systemd-container, iproute2, util-linux,
and for a base build debootstrap, dpkg-dev and zstd.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import ipaddress
import itertools
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Self

LAB_DIR = Path(__file__).resolve().parent
REPO_ROOT = LAB_DIR.parent.parent
BUILD_SCRIPT = LAB_DIR / "build-base.sh"
#: Files whose content defines the base image: any change means a rebuild.
BASE_INPUTS = (
    BUILD_SCRIPT,
    LAB_DIR / "packages.txt",
    REPO_ROOT / "requirements" / "salt.txt",
    REPO_ROOT / "example" / "requirements.txt",
    LAB_DIR / "wheelhouse.txt",
    LAB_DIR / "wheelhouse-newest.txt",
)
#: The Debian releases the lab builds images of; the first is the default.
SUITES = ("bookworm", "trixie")
DEFAULT_CACHE = Path("/var/cache/salt-django-lab")
CACHE_ENV = "SALT_DJANGO_LAB_CACHE"

#: Name prefix of every lab resource on the machine (links are max 15 chars).
PREFIX = "sdl"
_SID_RE = re.compile(rf"^{PREFIX}([0-9a-f]{{4}})")
RUN_DIR = Path("/run/salt-django-lab")
CGROUP_FS = Path("/sys/fs/cgroup")
NSPAWN_PROPAGATE = Path("/run/systemd/nspawn/propagate")

#: Environment of commands run inside a host (merged with ``run(env=...)``).
HOST_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "PIP_NO_INDEX": "1",
    "PIP_FIND_LINKS": "/opt/wheelhouse",
}
#: Left out by :meth:`Host.copy_in`: VCS data, local venvs and caches.
COPY_IGNORE = (".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache")

_HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")


class LabError(RuntimeError):
    """The lab could not do what was asked (build, boot, network, teardown)."""


class CommandError(LabError):
    """A command inside a host failed or timed out; carries its full result."""

    def __init__(self, host: str, cmd: str | Sequence[str], returncode: int | None, stdout: str, stderr: str, note: str = "") -> None:
        self.host, self.cmd, self.returncode = host, cmd, returncode
        self.stdout, self.stderr = stdout, stderr
        what = note or f"exit code {returncode}"
        super().__init__(
            f"[{host}] command failed ({what}): {cmd!r}\n--- stdout (tail) ---\n{_tail(stdout)}\n--- stderr (tail) ---\n{_tail(stderr)}"
        )


def _log(msg: str) -> None:
    """Progress and timings go to stderr (shown by ``pytest -s``)."""
    print(f"[lab] {msg}", file=sys.stderr, flush=True)


def _tail(text: str | None, lines: int = 40) -> str:
    return "\n".join((text or "").splitlines()[-lines:])


def _sh(*cmd: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command on the machine (not in a host); raise LabError with its output."""
    proc = subprocess.run(
        [str(c) for c in cmd], text=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False
    )
    if check and proc.returncode:
        raise LabError(f"{' '.join(map(str, cmd))} -> {proc.returncode}\n{_tail(proc.stdout)}")
    return proc


# ----------------------------------------------------------------- prerequisites
def missing_requirements() -> list[str]:
    """What keeps the lab from running here (empty list: good to go).

    Tests call this to skip cleanly on machines without root or nspawn.
    """
    missing = [] if os.geteuid() == 0 else ["root"]
    for tool in ("systemd-nspawn", "nsenter", "ip", "mount", "umount"):
        if not shutil.which(tool):
            missing.append(tool)
    if not (CGROUP_FS / "unified").is_dir() and not (CGROUP_FS / "cgroup.controllers").exists():
        missing.append("cgroup2 (unified hierarchy)")
    return missing


# ------------------------------------------------------------------- base image
def base_key(suite: str = SUITES[0]) -> str:
    """Cache key of a suite's base image: a hash over everything that defines it."""
    if suite not in SUITES:
        raise LabError(f"unknown Debian suite {suite!r}: the lab builds {', '.join(SUITES)}")
    digest = hashlib.sha256(suite.encode() + b"\0")
    for path in BASE_INPUTS:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _lowerdirs_in_use() -> str:
    """Mount options of all overlay mounts: to spot a rootfs still used as lowerdir."""
    return "\n".join(line.split(" - ", 1)[1] for line in _mountinfo() if " - overlay " in line)


def _prune_cache(root: Path) -> None:
    """Remove images of no current key, unless a (possibly foreign) host still uses them."""
    in_use = _lowerdirs_in_use()
    current = [base_key(suite) for suite in SUITES]
    for entry in root.iterdir():
        name = entry.name
        if not name.startswith(("rootfs-", ".tmp-")) or any(key in name for key in current):
            continue
        stem = name.removesuffix(".tar.zst").removesuffix(".part").removesuffix(".build.log")
        if str(root / stem) in in_use:
            _log(f"keeping {entry}: still mounted as an overlay lower layer")
            continue
        _log(f"removing stale base image {entry}")
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def ensure_base(cache_root: Path | None = None, suite: str = SUITES[0]) -> Path:
    """Return the directory of a ready base rootfs of ``suite``, building it on a cache miss.

    The cache dir is ``cache_root``, else ``$SALT_DJANGO_LAB_CACHE``, else
    /var/cache/salt-django-lab. The image is keyed by :func:`base_key`: a
    change of build-base.sh, packages.txt or the pinned requirements gives a
    new image. A miss unpacks the zstd tarball kept next to the rootfs (a
    few seconds) or runs build-base.sh (minutes). A file lock makes
    concurrent sessions build once. Images of other keys are removed, so
    the cache holds one image per suite.
    """
    root = Path(cache_root or os.environ.get(CACHE_ENV) or DEFAULT_CACHE)
    root.mkdir(parents=True, exist_ok=True)
    key = base_key(suite)
    base, tarball = root / f"rootfs-{key}", root / f"rootfs-{key}.tar.zst"
    started = time.monotonic()
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (base / ".complete").exists():
            tmp = root / f".tmp-{key}"
            _remove_tree(tmp)
            if base.exists():  # incomplete leftover of an interrupted unpack
                _remove_tree(base)
            how = "unpacked" if tarball.exists() else "built"
            if tarball.exists():
                _log(f"unpacking base image {tarball.name}")
                tmp.mkdir()
                _sh("tar", "-C", tmp, "--numeric-owner", "--xattrs", "--acls", "-I", "zstd -d -T0", "-xf", tarball)
            else:
                _build(tmp, root / "dl", tarball, suite)
            (tmp / ".complete").touch()
            tmp.rename(base)
            _log(f"base image {key} {how} in {time.monotonic() - started:.1f}s")
        _prune_cache(root)
    return base


def _build(out: Path, downloads: Path, tarball: Path, suite: str) -> None:
    """Run build-base.sh for ``suite`` into ``out`` and keep a zstd tarball of the result."""
    env = {**os.environ, "LAB_SUITE": suite}
    _log(f"building {suite} base image (a few minutes; log: {out}.build.log)")
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(BUILD_SCRIPT), str(out), str(downloads)], env=env, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode:
        _remove_tree(out)
        raise LabError(f"build-base.sh failed ({proc.returncode}); log: {out}.build.log")
    _log(f"build-base.sh took {time.monotonic() - t0:.1f}s; writing {tarball.name}")
    part = tarball.with_name(tarball.name + ".part")
    _sh("tar", "-C", out, "--numeric-owner", "--xattrs", "--acls", "-I", "zstd -T0 -3", "-cf", part, ".")
    part.rename(tarball)


def _remove_tree(path: Path) -> None:
    """rmtree that refuses to descend into mounts (e.g. a still-mounted overlay)."""
    if not path.exists():
        return
    mounted = [m for m in _mountpoints() if m == path or path in m.parents]
    if mounted:
        raise LabError(f"refusing to remove {path}: still mounted: {mounted}")
    shutil.rmtree(path)


# ------------------------------------------------------------ session, cleanup
_session: tuple[str, int] | None = None
_counter = itertools.count()


def session_id() -> str:
    """This process's 4-hex-digit lab session id, held alive by a lock file.

    A crashed session's lock is released by the kernel, which is how
    :func:`cleanup_stale` tells leftovers from resources of live sessions.
    """
    global _session
    if _session is None:
        with _sessions_serialized():
            while True:
                sid = secrets.token_hex(2)
                lockfile = RUN_DIR / f"{PREFIX}{sid}.lock"
                if lockfile.exists() or sid in _all_sids():
                    continue
                fd = os.open(lockfile, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held until this process ends
                _session = (sid, fd)
                atexit.register(lockfile.unlink, missing_ok=True)
                break
    return _session[0]


@contextlib.contextmanager
def _sessions_serialized() -> Iterator[None]:
    """Session ids are taken and stale ones cleaned up one at a time on this
    machine: concurrent sessions (pytest-xdist workers) start together, and a
    cleanup must never see a new session's lock file before it is locked."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    with open(RUN_DIR / ".sessions.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _sid_alive(sid: str) -> bool:
    if _session is not None and _session[0] == sid:
        return True
    lockfile = RUN_DIR / f"{PREFIX}{sid}.lock"
    if not lockfile.exists():
        return False
    with open(lockfile) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


def _mountinfo() -> list[str]:
    return Path("/proc/self/mountinfo").read_text().splitlines()


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mountpoints() -> list[Path]:
    return [Path(_unescape(line.split()[4])) for line in _mountinfo()]


def _lab_mounts() -> list[tuple[str, Path]]:
    """(source, mountpoint) of lab overlay mounts; the source names the host."""
    found = []
    for line in _mountinfo():
        fields, _, rest = line.partition(" - ")
        fstype, source = rest.split()[:2]
        if fstype == "overlay" and _SID_RE.match(source):
            found.append((source, Path(_unescape(fields.split()[4]))))
    return found


def _cgroup_roots() -> list[Path]:
    """Hierarchies a host gets a cgroup in: cgroup2 (+ name=systemd when hybrid)."""
    if (CGROUP_FS / "cgroup.controllers").exists():
        return [CGROUP_FS]
    return [p for p in (CGROUP_FS / "unified", CGROUP_FS / "systemd") if p.is_dir()]


def _links() -> list[str]:
    out = _sh("ip", "-o", "link", "show").stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def _netns() -> list[str]:
    return [line.split()[0] for line in _sh("ip", "netns", "list").stdout.splitlines() if line]


def _all_sids() -> set[str]:
    """Session ids that own any lab resource or lock file on this machine."""
    names = [cg.name for root in _cgroup_roots() for cg in root.iterdir() if cg.is_dir()]
    names += [source for source, _ in _lab_mounts()] + _netns() + _links()
    names += [p.name for p in NSPAWN_PROPAGATE.glob(f"{PREFIX}*")]
    names += [p.stem for p in RUN_DIR.glob(f"{PREFIX}*.lock")] if RUN_DIR.is_dir() else []
    return {m.group(1) for name in names if (m := _SID_RE.match(name))}


def _resources_of(sid: str) -> dict[str, list]:
    """Lab resources of one session on this machine, by kind."""

    def mine(name: str) -> bool:
        m = _SID_RE.match(name)
        return bool(m) and m.group(1) == sid

    cgroups = [cg for root in _cgroup_roots() if root.is_dir() for cg in root.iterdir() if cg.is_dir() and mine(cg.name)]
    propagate = [p for p in NSPAWN_PROPAGATE.glob(f"{PREFIX}*") if mine(p.name)]
    found: dict[str, list] = {
        "cgroups": cgroups,
        "mounts": [m for m in _lab_mounts() if mine(m[0])],
        "netns": [n for n in _netns() if mine(n)],
        "links": [n for n in _links() if mine(n)],
        "propagate": propagate,
    }
    return {k: v for k, v in found.items() if v}


def _in_cgroups(procs_files: Sequence[Path]) -> list[str]:
    """Command prefix that moves itself into cgroups, then execs the rest.

    (A shell instead of preexec_fn, which is unsafe with threads.)
    """
    moves = "".join(f"echo $$ > {shlex.quote(str(p))} && " for p in procs_files)
    return ["/bin/sh", "-c", moves + 'exec "$@"', "sh"]


def session_resources() -> dict[str, list]:
    """Lab resources of this session still on the machine (teardown leak check)."""
    return _resources_of(_session[0]) if _session is not None else {}


def _kill_cgroup(cgroup: Path, timeout: float = 10) -> None:
    """SIGKILL every process of a cgroup2 subtree and wait until it is empty."""
    if (cgroup / "cgroup.kill").exists():
        (cgroup / "cgroup.kill").write_text("1")
    deadline = time.monotonic() + timeout
    while "populated 1" in (cgroup / "cgroup.events").read_text():
        if time.monotonic() > deadline:
            raise LabError(f"processes of {cgroup} did not die")
        time.sleep(0.05)


def _remove_cgroup(cgroup: Path, timeout: float = 10) -> None:
    """rmdir a cgroup tree bottom-up (retrying while its last processes exit)."""
    deadline = time.monotonic() + timeout
    bottom_up = [Path(d) for d, _, _ in os.walk(cgroup, topdown=False)]
    for sub in bottom_up:
        while sub.exists():
            try:
                sub.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def cleanup_stale() -> dict[str, list]:
    """Remove what crashed lab sessions left behind; return what was removed.

    Processes (by cgroup), cgroups, overlay mounts, network namespaces, links
    and nspawn's propagate dirs whose session lock is no longer held. Live
    sessions (including this one) are left alone. Call it once per test
    session before starting hosts.
    """
    removed: dict[str, list] = {}
    with _sessions_serialized():
        for sid in sorted(s for s in _all_sids() if not _sid_alive(s)):
            removed.update(_cleanup_session(sid))
    return removed


def _cleanup_session(sid: str) -> dict[str, list]:
    """Remove what the dead session ``sid`` left; return it by session id."""
    res = _resources_of(sid)
    for cg in res.get("cgroups", []):
        if (cg / "cgroup.events").exists():
            _kill_cgroup(cg)
    for cg in res.get("cgroups", []):
        _remove_cgroup(cg)
    for _source, mountpoint in res.get("mounts", []):
        if _sh("umount", mountpoint, check=False).returncode:
            _sh("umount", "-l", mountpoint)
    for ns in res.get("netns", []):
        _sh("ip", "netns", "del", ns)
    for link in _links():  # deleting a netns may already have removed veths
        if _SID_RE.match(link) and link.startswith(f"{PREFIX}{sid}"):
            _sh("ip", "link", "del", link, check=False)
    for path in res.get("propagate", []):
        shutil.rmtree(path, ignore_errors=True)
    (RUN_DIR / f"{PREFIX}{sid}.lock").unlink(missing_ok=True)
    if not res:
        return {}
    removed = {sid: [str(x) for kind in res.values() for x in kind]}
    _log(f"cleaned up stale session {sid}: {removed[sid]}")
    return removed


# ----------------------------------------------------------------------- network
class Network:
    """A private L2 segment: one bridge, one network namespace per host.

    Hosts get addresses in a free 10.77.N.0/24 (the bridge has .1, hosts .11
    upwards) and no default route, so nothing leaves the segment. The machine
    itself is reachable at :attr:`gateway` (e.g. for a salt-master later).
    """

    def __init__(self, subnet: str | None = None) -> None:
        self.name = f"{PREFIX}{session_id()}{next(_counter):x}"
        if len(self.name) + 4 > 15:
            raise LabError(f"too many lab networks/hosts in one session ({self.name})")
        self.bridge = f"{self.name}-br"
        self.members: dict[str, tuple[str, str, str]] = {}  # host -> (netns, veth, ip)
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        with open(RUN_DIR / ".subnet.lock", "w") as lock:  # no two sessions pick one subnet
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.subnet = subnet or self._free_subnet()
            self.gateway = f"{self.subnet}.1"
            _sh("ip", "link", "add", self.bridge, "type", "bridge")
            _sh("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _sh("ip", "link", "set", self.bridge, "up")

    @staticmethod
    def _free_subnet() -> str:
        used = _sh("ip", "-4", "-o", "addr", "show").stdout
        start = os.getpid() % 200 + 20
        for n in itertools.chain(range(start, 255), range(1, start)):
            net = ipaddress.ip_network(f"10.77.{n}.0/24")
            if not any(ipaddress.ip_address(a.split("/")[0]) in net for a in re.findall(r"inet (\S+)", used)):
                return f"10.77.{n}"
        raise LabError("no free 10.77.N.0/24 subnet")

    def add(self, host_name: str, ip: str | None = None) -> str:
        """Create the host's namespace and plug it into the bridge; return its IP."""
        if host_name in self.members:
            return self.members[host_name][2]
        index = len(self.members) + 11
        ip = ip or f"{self.subnet}.{index}"
        netns, veth = f"{self.name}-{host_name}", f"{self.name}-{index}"
        _sh("ip", "netns", "add", netns)
        self.members[host_name] = (netns, veth, ip)
        _sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _sh("ip", "link", "set", veth, "master", self.bridge, "up")
        _sh("ip", "-n", netns, "addr", "add", f"{ip}/24", "dev", "eth0")
        _sh("ip", "-n", netns, "link", "set", "eth0", "up")
        _sh("ip", "-n", netns, "link", "set", "lo", "up")
        return ip

    def netns(self, host_name: str) -> str:
        """Name of the host's network namespace (under /run/netns)."""
        return self.members[host_name][0]

    def hosts_entries(self) -> str:
        """/etc/hosts lines for every member, so hosts resolve each other by name."""
        return "".join(f"{ip}\t{name}\n" for name, (_, _, ip) in self.members.items())

    def _veth(self, host: str | Host) -> str:
        return self.members[host.name if isinstance(host, Host) else host][1]

    def cut(self, host: str | Host) -> None:
        """Unplug the host's cable (its link goes down; packets are dropped)."""
        _sh("ip", "link", "set", self._veth(host), "down")

    def heal(self, host: str | Host) -> None:
        """Plug the cable back in."""
        _sh("ip", "link", "set", self._veth(host), "up")

    def destroy(self) -> None:
        """Delete namespaces, veths and the bridge (idempotent)."""
        for netns, veth, _ in self.members.values():
            _sh("ip", "link", "del", veth, check=False)
            _sh("ip", "netns", "del", netns, check=False)
        self.members.clear()
        _sh("ip", "link", "del", self.bridge, check=False)


# -------------------------------------------------------------------------- host

#: inotify instances this machine's root may hold: every booted host's
#: systemd takes several, and the kernel's default (128) runs out at about
#: 20 hosts ("Failed to allocate manager object"), as a rollout benchmark of
#: 8 app servers boots.
INOTIFY_INSTANCES = 1024


def _inotify_room() -> None:
    """Raise ``fs.inotify.max_user_instances`` to ``INOTIFY_INSTANCES`` if it is lower."""
    path = Path("/proc/sys/fs/inotify/max_user_instances")
    if int(path.read_text()) < INOTIFY_INSTANCES:
        path.write_text(str(INOTIFY_INSTANCES))


class Host:
    """One lab host: an overlay root on ``base`` under ``workdir``, run by nspawn.

    ``boot=True`` boots systemd (a server); ``boot=False`` runs a bare init
    (a container/CI job without systemd). ``net`` plugs the host into a
    :class:`Network` (address ``ip`` or the next free one); without it the
    host has loopback only. The upper dir persists across stop()/start(), as
    a disk does across a reboot; destroy() removes it. ``lower`` stacks extra
    read-only layers over ``base`` (first = topmost), e.g. the cluster's
    minion layer (tests/lab/cluster.py).
    """

    BOOT_TIMEOUT = 120.0

    def __init__(
        self,
        name: str,
        base: Path,
        workdir: Path,
        boot: bool = True,
        net: Network | None = None,
        ip: str | None = None,
        lower: Sequence[Path] = (),
    ) -> None:
        if not _HOSTNAME_RE.match(name):
            raise ValueError(f"bad host name {name!r} (lowercase letters, digits, '-')")
        self.name, self.base, self.workdir = name, Path(base), Path(workdir)
        self.lower = [Path(p) for p in lower]
        self.boot, self.net = boot, net
        self.machine = f"{PREFIX}{session_id()}{next(_counter):x}-{name}"
        self.ip = net.add(name, ip) if net else None
        self.merged = self.workdir / "merged"
        self.console_log = self.workdir / "console.log"
        self.start_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid1: int | None = None

    def __repr__(self) -> str:
        return f"Host({self.name!r}, boot={self.boot}, ip={self.ip!r}, running={self.running})"

    # -- lifecycle ---------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while the container's nspawn process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def _cgroups(self) -> list[Path]:
        return [root / self.machine for root in _cgroup_roots()]

    def _mount(self) -> None:
        for sub in ("upper", "work", "merged"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        if not os.path.ismount(self.merged):
            lowerdir = ":".join(str(p) for p in [*self.lower, self.base])
            _sh(
                "mount",
                "-t",
                "overlay",
                self.machine,
                "-o",
                f"lowerdir={lowerdir},upperdir={self.workdir / 'upper'},workdir={self.workdir / 'work'}",
                self.merged,
            )

    def _first_boot_setup(self) -> None:
        """Identity files, written once: a reboot keeps what the states changed."""
        marker = self.workdir / ".identity"
        if marker.exists():
            return
        self.path("/etc/hostname").write_text(f"{self.name}\n")
        peers = self.net.hosts_entries() if self.net else ""
        self.path("/etc/hosts").write_text(
            f"127.0.0.1\tlocalhost\n127.0.1.1\t{self.name}\n::1\t\tlocalhost ip6-localhost ip6-loopback\n{peers}"
        )
        marker.touch()

    def start(self, timeout: float | None = None) -> Host:
        """Mount the root, start the container, wait until it is ready; return self.

        Ready means ``systemctl is-system-running`` says running or degraded
        (boot=True), or commands can be run (boot=False). On failure the
        host is torn down again and LabError carries the console log tail.
        """
        if self.running:
            return self
        t0 = time.monotonic()
        try:
            if self.boot:
                _inotify_room()
            self._mount()
            self._first_boot_setup()
            self._spawn()
            self._wait_ready(timeout or self.BOOT_TIMEOUT)
        except BaseException:
            self.stop(hard=True)
            raise
        self.start_seconds = time.monotonic() - t0
        _log(f"host {self.name} ({'booted' if self.boot else 'no systemd'}) up in {self.start_seconds:.1f}s")
        return self

    def _spawn(self) -> None:
        cgroups = self._cgroups()
        for cg in cgroups:
            cg.mkdir(exist_ok=True)

        # nspawn --keep-unit uses the cgroup it starts in and creates its
        # payload/supervisor children there: one cgroup per host.
        cmd = [
            *_in_cgroups([cg / "cgroup.procs" for cg in cgroups]),
            "systemd-nspawn",
            "--quiet",
            "-D",
            str(self.merged),
            f"--machine={self.machine}",
            f"--hostname={self.name}",
            "--register=no",
            "--keep-unit",
            "--resolv-conf=off",
            "--timezone=off",
            "--link-journal=no",
            "--console=read-only",
        ]
        if self.net:
            # The namespace is the host's own, as a server's network is: its
            # services (salt-minion applying a firewall) may configure it.
            cmd += [f"--network-namespace-path=/run/netns/{self.net.netns(self.name)}", "--capability=CAP_NET_ADMIN"]
        else:
            cmd.append("--private-network")
        # boot=False: nspawn's stub init as PID 1 reaps orphans (daemons that
        # init.d scripts fork), "sleep infinity" just keeps the host alive.
        cmd += ["--boot"] if self.boot else ["--as-pid2", "/bin/sleep", "infinity"]
        with open(self.console_log, "ab") as console:
            console.write(f"\n===== {time.strftime('%F %T')} start {self.machine}\n".encode())
            console.flush()
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT, start_new_session=True)
        self._pid1 = None

    def _find_pid1(self) -> int | None:
        """The container's PID 1 as seen from the machine, once it runs in its root.

        It is the child of the nspawn process whose innermost PID is 1; it is
        usable for nsenter only after it has switched into the container's
        root (before that, "/" would be the machine's).
        """
        if self._pid1 is not None:
            return self._pid1
        assert self._proc is not None
        root = os.stat(self.merged)
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                text = status.read_text()
                if f"\nPPid:\t{self._proc.pid}\n" not in text:
                    continue
                nspid = re.search(r"^NSpid:\s+(.*)$", text, re.MULTILINE)
                if not nspid or nspid.group(1).split()[-1] != "1":
                    continue
                pid = int(status.parent.name)
                proot = os.stat(f"/proc/{pid}/root")
            except (OSError, ValueError):
                continue
            if (proot.st_dev, proot.st_ino) == (root.st_dev, root.st_ino):
                self._pid1 = pid
                return pid
        return None

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = "no PID 1 yet"
        while time.monotonic() < deadline:
            if not self.running:
                raise LabError(f"host {self.name}: nspawn exited ({state})\n{self.console_tail()}")
            if self._find_pid1() is not None:
                if not self.boot:
                    probe = self.run(["true"], check=False, timeout=30)
                    if probe.returncode == 0:
                        return
                    state = f"exec failed: {probe.stderr.strip()}"
                else:
                    probe = self.run(["systemctl", "is-system-running"], check=False, timeout=30)
                    state = probe.stdout.strip() or probe.stderr.strip()
                    if state in ("running", "degraded"):
                        if state == "degraded":
                            failed = self.run(["systemctl", "--failed", "--no-legend"], check=False).stdout.strip()
                            _log(f"host {self.name} degraded; failed units:\n{failed}")
                        return
            time.sleep(0.1)
        raise LabError(f"host {self.name} not ready after {timeout:.0f}s (last state: {state})\n{self.console_tail()}")

    def console_tail(self, lines: int = 40) -> str:
        """Last lines of the container's console (nspawn + systemd boot messages)."""
        try:
            raw = self.console_log.read_bytes().decode(errors="replace")
        except OSError:
            return "(no console log)"
        text = re.sub(r"\x1b\[[0-9;]*m|\r", "", raw)  # colours, CRs of the pty
        text = re.sub(r"\n{2,}", "\n", text)
        return f"--- console {self.console_log} (tail) ---\n{_tail(text, lines)}"

    def stop(self, hard: bool = False, timeout: float = 60) -> None:
        """Power the host off, then free its cgroups and root mount (idempotent).

        hard=False: a clean shutdown (nspawn turns SIGTERM into a poweroff
        request to systemd; without systemd the payload is killed). hard=True:
        a power cut, every process of the host is SIGKILLed via cgroup.kill.
        A graceful stop that hangs falls back to the power cut.
        """
        payload = [cg / "payload" for cg in self._cgroups()]
        try:
            if self._proc is not None and self._proc.poll() is None:
                if hard and (payload[0] / "cgroup.kill").exists():
                    (payload[0] / "cgroup.kill").write_text("1")
                else:
                    self._proc.send_signal(signal.SIGTERM)
                try:
                    self._proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    _log(f"host {self.name}: no clean shutdown in {timeout:.0f}s, power cut")
                    if (payload[0] / "cgroup.kill").exists():
                        (payload[0] / "cgroup.kill").write_text("1")
                    try:
                        self._proc.wait(15)
                    except subprocess.TimeoutExpired:
                        self._proc.kill()  # the nspawn process, by PID
                        self._proc.wait(15)
        finally:
            self._pid1 = None
            self._release()

    def _release(self) -> None:
        """Kill stragglers, remove cgroups, nspawn's propagate dir, unmount the root."""
        cgroups = [cg for cg in self._cgroups() if cg.exists()]
        if cgroups and (cgroups[0] / "cgroup.events").exists():
            _kill_cgroup(cgroups[0])
        for cg in cgroups:
            _remove_cgroup(cg)
        if self._proc is not None and self._proc.poll() is None:
            self._proc.wait(15)
        shutil.rmtree(NSPAWN_PROPAGATE / self.machine, ignore_errors=True)
        if os.path.ismount(self.merged):
            deadline = time.monotonic() + 10
            while _sh("umount", self.merged, check=False).returncode:
                if time.monotonic() > deadline:
                    _sh("umount", "-l", self.merged)
                    break
                time.sleep(0.1)

    def destroy(self) -> None:
        """Stop (power cut) if needed and delete the host's disk (its workdir)."""
        self.stop(hard=True)
        _remove_tree(self.workdir)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # -- inside the host ---------------------------------------------------------
    def run(
        self,
        cmd: str | Sequence[str],
        check: bool = True,
        timeout: float = 600,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the host, as root, in a clean environment.

        A string runs through ``/bin/bash -lc``; a sequence is executed as is.
        The process joins all of the host's namespaces and its cgroup (so a
        power cut kills it too); the environment is :data:`HOST_ENV` plus
        ``env``. With check=True a non-zero exit or a timeout raises
        CommandError with the command, exit code and output tails.
        """
        pid1 = self._find_pid1() if self.running else None
        if pid1 is None:
            raise LabError(f"host {self.name} is not running")
        argv = ["/bin/bash", "-lc", cmd] if isinstance(cmd, str) else [str(c) for c in cmd]
        payload = [cg / "payload" / "cgroup.procs" for cg in self._cgroups()]
        nsenter = [
            *_in_cgroups(payload),
            "nsenter",
            f"--target={pid1}",
            "--mount",
            "--uts",
            "--ipc",
            "--net",
            "--pid",
            "--cgroup",
            "--root",
            "--wd",
            "--",
        ]
        proc = subprocess.Popen(
            nsenter + argv,
            env={**HOST_ENV, **(env or {})},
            text=True,
            errors="replace",
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # nsenter and what it forked, by group
            stdout, stderr = proc.communicate()
            if check:
                raise CommandError(self.name, cmd, None, stdout, stderr, f"timed out after {timeout:.0f}s") from None
            return subprocess.CompletedProcess(argv, -signal.SIGKILL, stdout, stderr)
        result = subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)
        if check and proc.returncode:
            raise CommandError(self.name, cmd, proc.returncode, stdout, stderr)
        return result

    def network_pid(self) -> int:
        """A PID in the host's network namespace (its PID 1), for ``nsenter --net`` from this machine."""
        pid1 = self._find_pid1() if self.running else None
        if pid1 is None:
            raise LabError(f"host {self.name} is not running")
        return pid1

    def spawn_in_network(self, argv: Sequence[str]) -> subprocess.Popen[str]:
        """Start a program of THIS machine (e.g. wrk, which the images lack) in the host's network only.

        It sees the host's loopback (its Nginx on 127.0.0.1) and this
        machine's files; the caller waits for it (bounded) and reads its output.
        """
        return subprocess.Popen(
            ["nsenter", f"--target={self.network_pid()}", "--net", "--", *argv],
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def path(self, p: str) -> Path:
        """Where the host's file ``p`` is seen from outside: its disk (merged overlay root).

        Works while the host is stopped too. Mounts made inside the host are
        not visible here: /run, /tmp, /dev/shm, /proc, /sys are the
        container's own (tmpfs) mounts; use run() for those.
        """
        return self.merged / p.lstrip("/")

    def copy_in(self, src: Path, dest: str) -> None:
        """Copy the directory tree ``src`` to ``dest`` in the host (root-owned).

        Skips VCS data, virtualenvs and caches (:data:`COPY_IGNORE`); used to
        put a checkout of this repo at /root/salt-django.
        """
        shutil.copytree(src, self.path(dest), symlinks=True, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*COPY_IGNORE))
