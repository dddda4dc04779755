"""Backups of a project's PostgreSQL database: pg_dump before migrations, restore on demand.

Backups are custom-format ``pg_dump`` files in
``/var/backups/salt-django/<project>/`` (directory 0700, files 0600, root):
they hold every row, so nobody but root may read them. A restore replaces
the database's content in one transaction, and only with ``confirm=True``.
"""

from __future__ import annotations

import datetime
import os
import re
import subprocess
import time
from typing import Any

__virtualname__ = "django_db"

BACKUP_ROOT = "/var/backups/salt-django"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def __virtual__() -> str:
    """Always loadable; pg_dump and pg_restore are needed only when a backup or restore runs."""
    return __virtualname__


def _database(project: str) -> str:
    return __salt__["pillar.get"](f"projects:{project}:database:name", None) or project  # noqa: F821


def backup_dir(project: str) -> str:
    """Where the project's backups live."""
    return os.path.join(BACKUP_ROOT, project)


def list_backups(project: str) -> list[dict[str, Any]]:
    """Backups, oldest first, with size and age.

    CLI example::

        salt-call django_db.list_backups demo
    """
    directory = backup_dir(project)
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


def backup(project: str, reason: str = "manual") -> dict[str, Any]:
    """``pg_dump -Fc`` of the project's database into a new root-only file; prunes old ones.

    CLI example::

        salt-call django_db.backup demo
    """
    started = time.monotonic()
    directory = backup_dir(project)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = os.path.join(directory, f"{stamp}-{_SAFE.sub('-', reason)[:60]}.dump")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        proc = subprocess.run(
            ["runuser", "-u", "postgres", "--", "pg_dump", "-Fc", "-d", _database(project)],
            stdout=handle,
            stderr=subprocess.PIPE,
            check=False,
        )
    if proc.returncode != 0:
        os.unlink(path)
        raise RuntimeError(f"pg_dump of {_database(project)} failed: {proc.stderr.decode(errors='replace').strip()}")
    pruned = prune_backups(project)
    __salt__["django_release.record"](project, "backup", "ok", time.monotonic() - started, file=path)  # noqa: F821
    return {"file": path, "bytes": os.path.getsize(path), "pruned": pruned}


def prune_backups(project: str, keep_days: float | None = None) -> list[str]:
    """Delete backups older than ``keep_days`` (pillar ``projects:<p>:backups:keep_days``, 14); keeps the newest always."""
    if keep_days is None:
        keep_days = float(__salt__["pillar.get"](f"projects:{project}:backups:keep_days", 14))  # noqa: F821
    backups = list_backups(project)
    old = [b["file"] for b in backups[:-1] if b["age_days"] > keep_days]
    for path in old:
        os.unlink(path)
    return old


def restore(project: str, file: str, confirm: bool = False) -> dict[str, Any]:
    """Replace the database's content with a backup (all or nothing); needs ``confirm=True``.

    Rows written after the backup are lost. Holds the deploy lock, so no
    release migrates meanwhile.

    CLI example::

        salt-call django_db.restore demo file=/var/backups/salt-django/demo/<name>.dump confirm=True
    """
    started = time.monotonic()
    path = file if os.path.isabs(file) else os.path.join(backup_dir(project), file)
    if not os.path.isfile(path):
        return {"ok": False, "comment": f"no backup {path}; see django_db.list_backups {project}"}
    if not confirm:
        return {"ok": False, "comment": f"restoring {path} replaces every row of {_database(project)}: pass confirm=True"}
    mods = __salt__  # noqa: F821
    try:
        with mods["django_release.deploy_lock"](project, "restore"), open(path, "rb") as handle:
            proc = subprocess.run(
                [
                    "runuser",
                    "-u",
                    "postgres",
                    "--",
                    "pg_restore",
                    "--clean",
                    "--if-exists",
                    "--single-transaction",
                    "-d",
                    _database(project),
                ],
                stdin=handle,
                capture_output=True,
                check=False,
            )
    except RuntimeError as exc:
        return {"ok": False, "comment": str(exc)}
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        error = proc.stderr.decode(errors="replace").strip().splitlines()[-1:]
        mods["django_release.record"](project, "restore", "failed", seconds, file=path, error=error)
        return {"ok": False, "comment": f"pg_restore failed, database unchanged: {error}"}
    mods["django_release.record"](project, "restore", "ok", seconds, file=path)
    return {"ok": True, "comment": f"restored {path}"}
