"""Files that salt-django writes on minions and on the master: replaced
whole, and held by one operation at a time.

Shared by the execution modules, the states and the rollout runner
(``__utils__["saltdjango_files.<function>"]``), so that every writer of
a file that a reader may open at any moment uses the same rename, and
every lock names its holder the same way.
"""

from __future__ import annotations

import datetime
import fcntl
import getpass
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: Root's directory (0700) of the per-project deploy locks: the app user
#: cannot take one there to block deploys.
LOCK_DIR = "/run/salt-django"


def replace(path: str, data: str | bytes, mode: int = 0o600, owner: tuple[int, int] | None = None) -> None:
    """Replace ``path`` with ``data`` at once: a reader sees the old file or
    the new one, never a part. The temporary file is unique (two writers
    never share one), gets ``mode`` and ``owner`` before any byte, and is
    synced before the rename."""
    fd, temp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=f".{os.path.basename(path)}.")
    try:
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, *owner)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        if os.path.lexists(temp):
            os.unlink(temp)
        raise


def relink(path: str, target: str) -> None:
    """Point the symlink ``path`` at ``target`` at once (a rename): a reader
    follows the old target or the new one, never none."""
    temp = f"{path}.{os.getpid()}.tmp"
    if os.path.lexists(temp):
        os.unlink(temp)
    os.symlink(target, temp)
    os.replace(temp, path)


@contextmanager
def held(
    path: str,
    holder: str,
    refuse: Callable[[str], Exception],
    patience: Callable[[str], float] = lambda _other: 0.0,
) -> Iterator[None]:
    """Hold the fcntl lock of ``path`` (made 0600) while the block runs.

    The lock dies with its process, so a crash never leaves it taken. The
    file names the holder (``holder``, with the pid) for the message that
    refuses a second operation, with its pid and since when. A taken lock is waited for as long as
    ``patience(<what the file names>)`` seconds, then refused: the
    exception ``refuse(<what the file names>)`` is raised.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "r+", encoding="utf-8") as handle:
        started = time.monotonic()
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                handle.seek(0)
                other = handle.read().strip() or "unknown"
                if time.monotonic() - started >= patience(other):
                    raise refuse(other) from None
                time.sleep(0.5)
        handle.seek(0)
        handle.truncate()
        since = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        handle.write(f"{holder} (pid {os.getpid()}) since {since}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()


def actor() -> str:
    """Who runs this operation: the user behind sudo, else this process's user."""
    return os.environ.get("SUDO_USER") or os.environ.get("USER") or getpass.getuser()


@contextmanager
def deploy_lock(project: str, operation: str, error: type[Exception] = RuntimeError) -> Iterator[None]:
    """One release, rollback or restore at a time per project on this host:
    a second one raises ``error`` naming the operation that holds the lock."""
    os.makedirs(LOCK_DIR, mode=0o700, exist_ok=True)
    with held(
        os.path.join(LOCK_DIR, f"{project}.deploy.lock"),
        f"{operation} by {actor()}",
        refuse=lambda holder: error(f"another deploy operation of {project} is running: {holder}"),
    ):
        yield
