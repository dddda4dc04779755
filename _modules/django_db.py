"""Backups of a project's PostgreSQL database: pg_dump before migrations, restore on demand.

Backups are custom-format ``pg_dump`` files in
``/var/backups/salt-django/<project>/`` (directory 0700, files 0600, root):
they hold every row, so nobody but root may read them. A dump is written
under a temporary name, read back with ``pg_restore --list`` and only then
renamed to ``<time>-<reason>.dump``: a dump whose job died half-way is never
listed as a backup. A restore takes only a file of that directory, backs up
what it replaces first, stops the project's app meanwhile, and replaces the
database's content in one transaction as the project's own role (never as
the superuser: a dump is data, not code to run with every right), and only
with ``confirm=True``.

In a cluster, each backup is also copied off the db server, to the master
(Salt's ``cp.push``, never through the job cache), encrypted first with
AES-256-GCM under the project's ``BACKUP_KEY`` (a secret only the db server
and the master hold) and bound to its file name: the master, or whoever
reads its disk, holds ciphertext only. ``fetch_copy`` brings a copy back
for a restore (the rollout runner's ``restore copy=...``).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import shutil
import subprocess
import time
import urllib.request
from typing import Any

__virtualname__ = "django_db"

BACKUP_ROOT = "/var/backups/salt-django"
PARTIAL = ".partial"
#: Off-host copies: under the master's cache, minions/<db>/files/<COPIES>/<project>/<backup>.sdbk
COPIES = "salt-django-backups"
COPY_SUFFIX = ".sdbk"
_COPY_MAGIC = b"salt-django backup copy 1\n"
_IV_BYTES, _TAG_BYTES, _CHUNK = 12, 16, 1 << 20
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
#: What ``backup`` names a file: <UTC time>-<reason>.dump
BACKUP_NAME = re.compile(r"^\d{8}T\d{12}Z-[A-Za-z0-9_.-]{1,60}\.dump$")


def __virtual__() -> str:
    """Always loadable; pg_dump and pg_restore are needed only when a backup or restore runs."""
    return __virtualname__


def _database(project: str) -> str:
    return __salt__["saltdjango.project"](project)["database"]["name"]  # noqa: F821


def _backup_dir(project: str) -> str:
    """Where the project's backups live."""
    return os.path.join(BACKUP_ROOT, project)


def list_backups(project: str) -> list[dict[str, Any]]:
    """Backups, oldest first, with size and age.

    CLI Example:

    .. code-block:: bash

        salt-call django_db.list_backups demo
    """
    directory = _backup_dir(project)
    if not os.path.isdir(directory):
        return []
    files = sorted(f for f in os.listdir(directory) if f.endswith(".dump"))
    now = time.time()
    return [
        {
            "file": os.path.join(directory, f),
            "bytes": os.path.getsize(os.path.join(directory, f)),
            "age_days": round((now - os.path.getmtime(os.path.join(directory, f))) / 86400, 2),
        }
        for f in files
    ]


def backup(project: str, reason: str = "manual", offsite: bool | None = None) -> dict[str, Any]:
    """``pg_dump -Fc`` of the project's database into a new root-only file; prunes old ones.

    ``offsite``: copy it to the master (``copy_offsite``); None: in a cluster,
    when the project has a ``BACKUP_KEY``, reporting a failed copy in the
    result; True: always, a failed copy failing the call (scheduled backups).

    CLI Example:

    .. code-block:: bash

        salt-call django_db.backup demo
    """
    started = time.monotonic()
    directory = _backup_dir(project)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = os.path.join(directory, f"{stamp}-{_SAFE.sub('-', reason)[:60]}.dump")
    partial = os.path.join(directory, f".{os.path.basename(path)}{PARTIAL}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            proc = subprocess.run(
                ["runuser", "-u", "postgres", "--", "pg_dump", "-Fc", "-d", _database(project)],
                stdout=handle,
                stderr=subprocess.PIPE,
                check=False,
            )
            handle.flush()
            os.fsync(handle.fileno())
        if proc.returncode != 0:
            raise RuntimeError(f"pg_dump of {_database(project)} failed: {proc.stderr.decode(errors='replace').strip()}")
        listed = subprocess.run(["pg_restore", "--list", partial], capture_output=True, check=False)
        if listed.returncode != 0:
            raise RuntimeError(f"the dump of {_database(project)} does not read back: {listed.stderr.decode(errors='replace').strip()}")
        os.rename(partial, path)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    pruned = _prune_backups(project)
    __salt__["django_audit.record"](project, "backup", "ok", time.monotonic() - started, file=path)  # noqa: F821
    result: dict[str, Any] = {"file": path, "bytes": os.path.getsize(path), "pruned": pruned}
    if offsite or (offsite is None and __salt__["saltdjango.topology"]() and _backup_key(project)):  # noqa: F821
        result["offsite"] = _copy_offsite(project, path)
        if offsite and not result["offsite"]["ok"]:
            __context__["retcode"] = 1  # noqa: F821
    return result


def _backup_key(project: str) -> bytes | None:
    """The AES-256 key of the project's off-host copies, from its ``BACKUP_KEY`` (random, generated by the master)."""
    value = __salt__["pillar.get"](f"projects:{project}:secrets:BACKUP_KEY", "")  # noqa: F821
    return hashlib.sha256(str(value).encode()).digest() if value else None


def _encrypt_file(key: bytes, source: str, target: str, name: str) -> None:
    """``source`` into ``target`` (mode 0600): magic, IV, AES-256-GCM ciphertext
    with ``name`` as associated data, tag. Streamed: a dump need not fit in memory."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    iv = os.urandom(_IV_BYTES)
    encryptor = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor()
    encryptor.authenticate_additional_data(_COPY_MAGIC + name.encode())
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(source, "rb") as plain, os.fdopen(fd, "wb") as sealed:
        sealed.write(_COPY_MAGIC + iv)
        while chunk := plain.read(_CHUNK):
            sealed.write(encryptor.update(chunk))
        sealed.write(encryptor.finalize() + encryptor.tag)


def _decrypt_file(key: bytes, source: str, target: str, name: str) -> None:
    """The reverse of ``encrypt_file``; ValueError, and no ``target``, when the
    key, the name or any byte does not match."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    size = os.path.getsize(source)
    head = len(_COPY_MAGIC) + _IV_BYTES
    with open(source, "rb") as sealed:
        if size < head + _TAG_BYTES or sealed.read(len(_COPY_MAGIC)) != _COPY_MAGIC:
            raise ValueError(f"{source} is not a salt-django backup copy")
        iv = sealed.read(_IV_BYTES)
        sealed.seek(size - _TAG_BYTES)
        tag = sealed.read(_TAG_BYTES)
        sealed.seek(head)
        decryptor = Cipher(algorithms.AES(key), modes.GCM(iv, tag)).decryptor()
        decryptor.authenticate_additional_data(_COPY_MAGIC + name.encode())
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as plain:
                left = size - head - _TAG_BYTES
                while left > 0:
                    chunk = sealed.read(min(_CHUNK, left))
                    left -= len(chunk)
                    plain.write(decryptor.update(chunk))
                plain.write(decryptor.finalize())
        except InvalidTag:
            os.unlink(target)
            raise ValueError(
                f"{source} does not decrypt as {name} with this project's BACKUP_KEY (wrong key, renamed or altered)"
            ) from None


def _copy_offsite(project: str, file: str) -> dict[str, Any]:
    """Encrypt backup ``file`` and push it to the master (``cp.push``: the
    master's ``file_recv``, not the job cache), to
    ``minions/<this id>/files/salt-django-backups/<project>/<file>.sdbk``
    under its cache. Returns ``{"ok", "copy", "comment"}``.
    """
    try:
        path = _backup_file(project, file)
    except ValueError as exc:
        return {"ok": False, "copy": None, "comment": str(exc)}
    key = _backup_key(project)
    if key is None:
        return {"ok": False, "copy": None, "comment": f"projects:{project}:secrets:BACKUP_KEY is not set: no off-host copy"}
    name = os.path.basename(path)
    staging = os.path.join(_backup_dir(project), "offsite")
    os.makedirs(staging, mode=0o700, exist_ok=True)
    sealed = os.path.join(staging, name + COPY_SUFFIX)
    try:
        _encrypt_file(key, path, sealed, name)
        pushed = __salt__["cp.push"](sealed, upload_path=f"{COPIES}/{project}/{name}{COPY_SUFFIX}")  # noqa: F821
    finally:
        if os.path.exists(sealed):
            os.unlink(sealed)
    if not pushed:
        return {"ok": False, "copy": None, "comment": "the master refused the copy (its file_recv, file_recv_max_size)"}
    return {"ok": True, "copy": name + COPY_SUFFIX, "comment": f"{name} copied to the master, encrypted"}


def fetch_copy(project: str, copy: str, port: int, token: str) -> dict[str, Any]:
    """Download the off-host copy ``copy`` from the master (the one-time
    listener ``port`` and ``token`` that the rollout runner serves it at),
    decrypt and check it (``pg_restore --list``) into
    ``<backup dir>/<original name minus .dump>-copy.dump``, ready for ``restore``.

    CLI Example:

    .. code-block:: bash

        salt-run rollout.restore copy=<copy name> confirm=True   # calls this on the db server
    """
    name = copy.removesuffix(COPY_SUFFIX)
    if not copy.endswith(COPY_SUFFIX) or not BACKUP_NAME.match(name):
        return {"ok": False, "comment": f"{copy!r} is not the name of a backup copy"}
    if not re.fullmatch(r"[0-9a-f]{32}", str(token)) or not str(port).isdigit() or not 0 < int(port) < 65536:
        return {"ok": False, "comment": "not a listener of the rollout runner"}
    master = __opts__.get("master_ip") or __opts__["master"]  # noqa: F821 - where this minion reaches its master
    url = f"http://{master}:{int(port)}/{token}"
    key = _backup_key(project)
    if key is None:
        return {"ok": False, "comment": f"projects:{project}:secrets:BACKUP_KEY is not set: cannot read a copy"}
    directory = _backup_dir(project)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    sealed = os.path.join(directory, f".{copy}{PARTIAL}")
    target = os.path.join(directory, name.removesuffix(".dump") + "-copy.dump")
    partial = os.path.join(directory, f".{os.path.basename(target)}{PARTIAL}")
    try:
        fd = os.open(sealed, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle, urllib.request.urlopen(url, timeout=60) as answer:
            while chunk := answer.read(_CHUNK):
                handle.write(chunk)
        _decrypt_file(key, sealed, partial, name)
        listed = subprocess.run(["pg_restore", "--list", partial], capture_output=True, check=False)
        if listed.returncode != 0:
            raise ValueError(f"{copy} decrypts but does not read back: {listed.stderr.decode(errors='replace').strip()[-300:]}")
        os.rename(partial, target)
    except (OSError, ValueError) as exc:
        return {"ok": False, "comment": f"copy {copy} not fetched: {exc}"}
    finally:
        for leftover in (sealed, partial):
            if os.path.exists(leftover):
                os.unlink(leftover)
    return {"ok": True, "file": target, "comment": f"{copy} fetched and checked into {target}"}


def _prune_backups(project: str, keep_days: float | None = None) -> list[str]:
    """Delete backups older than ``keep_days`` (``backups:keep_days`` of the project's config); keeps the newest always.

    Also deletes what a dump that died half-way left behind (a temporary
    file more than a day old: no dump runs that long).
    """
    if keep_days is None:
        keep_days = float(__salt__["saltdjango.project"](project)["backups"]["keep_days"])  # noqa: F821
    backups = list_backups(project)
    old = [b["file"] for b in backups[:-1] if b["age_days"] > keep_days]
    directory = _backup_dir(project)
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
        partial = os.path.join(directory, name)
        if name.endswith(PARTIAL) and time.time() - os.path.getmtime(partial) > 86400:
            old.append(partial)
    for path in old:
        os.unlink(path)
    return old


def _backup_file(project: str, file: str) -> str:
    """``file`` (a name, or a path) as a backup of the project's backup directory; ValueError otherwise.

    The real path counts: a symlink or ``..`` that leads out of the
    directory (say, to a dump the app user wrote into its media) is refused.
    """
    directory = os.path.realpath(_backup_dir(project))
    path = os.path.realpath(file if os.path.isabs(file) else os.path.join(directory, file))
    if os.path.dirname(path) != directory or not path.endswith(".dump"):
        raise ValueError(f"{file} is not a backup of {project}: only the .dump files of {directory} are restored")
    if not os.path.isfile(path):
        raise ValueError(f"no backup {path}; see django_db.list_backups {project}")
    return path


def _app_programs(project: str) -> list[str]:
    """The project's running app server programs and its queue workers on this
    server (none on a db-only server): nothing may write while a restore runs."""
    slots = __salt__.get("app_slots.running_programs")  # noqa: F821
    if not slots or not shutil.which("supervisorctl"):
        return []
    running = slots(project)
    workers = __salt__.get("django_workers.programs")  # noqa: F821
    return running + (workers(project) if workers else [])


def _pg_restore(project: str, path: str) -> subprocess.CompletedProcess[bytes]:
    """``pg_restore`` of ``path`` as the project's role over loopback, in one transaction."""
    cfg = __salt__["saltdjango.project"](project)["database"]  # noqa: F821
    role = cfg["user"]
    env = {"PATH": "/usr/bin:/bin", "PGPASSWORD": str(__salt__["pillar.get"](f"projects:{project}:secrets:DB_PASSWORD", ""))}  # noqa: F821
    argv = ["pg_restore", "--clean", "--if-exists", "--single-transaction", "--no-owner", "--no-privileges"]
    argv += ["-h", "127.0.0.1", "-p", str(cfg["port"]), "-U", role, "-d", cfg["name"], path]
    return subprocess.run(argv, env=env, capture_output=True, check=False)


def _failed(outcome: dict[str, Any]) -> dict[str, Any]:
    """``outcome`` of a restore that failed, with salt-call's exit code set."""
    __context__["retcode"] = 1  # noqa: F821
    return outcome


def restore(project: str, file: str, confirm: bool = False) -> dict[str, Any]:
    """Replace the database's content with a backup (all or nothing); needs ``confirm=True``.

    Only a ``.dump`` of the project's backup directory is taken. What the
    database holds is backed up first (``before-restore``); the project's
    Gunicorn programs on this server stop meanwhile and start again after.
    Rows written after the backup are lost. Holds the deploy lock, so no
    release migrates meanwhile.

    CLI Example:

    .. code-block:: bash

        salt-call django_db.restore demo file=/var/backups/salt-django/demo/<name>.dump confirm=True
    """
    started = time.monotonic()
    try:
        path = _backup_file(project, file)
    except ValueError as exc:
        return _failed({"ok": False, "comment": str(exc)})
    if not confirm:
        return _failed({"ok": False, "comment": f"restoring {path} replaces every row of {_database(project)}: pass confirm=True"})
    mods = __salt__  # noqa: F821
    try:
        with __utils__["saltdjango_files.deploy_lock"](project, "restore"):  # noqa: F821
            safety = backup(project, reason="before-restore")["file"]
            stopped = _app_programs(project)
            for program in stopped:
                subprocess.run(["supervisorctl", "stop", program], capture_output=True, check=False)
            try:
                proc = _pg_restore(project, path)
            finally:
                for program in stopped:
                    subprocess.run(["supervisorctl", "start", program], capture_output=True, check=False)
    except RuntimeError as exc:
        return _failed({"ok": False, "comment": str(exc)})
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        error = mods["saltdjango.mask_secrets"](proc.stderr.decode(errors="replace").strip(), project).splitlines()[-1:]
        mods["django_audit.record"](project, "restore", "failed", seconds, file=path, error=error, backup=safety)
        return _failed({"ok": False, "comment": f"pg_restore failed, database unchanged: {error}", "backup": safety})
    mods["django_audit.record"](project, "restore", "ok", seconds, file=path, backup=safety)
    return {"ok": True, "comment": f"restored {path}; what it replaced is in {safety}", "backup": safety}
