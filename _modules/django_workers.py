"""A project's queue workers (Celery or RQ) on this server: which release they
run, and switching them to another one without losing a job.

supervisord runs ``<project>-worker`` (and ``<project>-beat`` on the one
server that runs the periodic tasks) on the release that
``/srv/<project>/slots/worker`` links to. A switch:

1. stops them with TERM, a warm shutdown: they take no new job, and
   supervisord waits up to ``max_task_seconds`` for the running ones; a job
   still running then is killed, and, acknowledged only once it has run,
   goes back to its queue (Celery: after its visibility timeout);
2. repoints the link at the new release;
3. starts them again; a worker that does not stay up (it cannot import the
   project's jobs) is put back on the release it ran, and the switch fails.

Jobs enqueued meanwhile wait in Redis. Workers switch before the app
servers do (``django_release``, the rollout runner): a job enqueued by the
new release never reaches a worker of the old one, which would not know
its task; a job of the old release runs on the new one.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

__virtualname__ = "django_workers"


def __virtual__() -> str:
    """Stdlib only; supervisorctl is checked when a switch runs."""
    return __virtualname__


def _ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["supervisorctl", *args], capture_output=True, text=True, check=False)


def programs(project: str) -> list[str]:
    """The supervisord programs of ``project``'s workers on this server (empty: it runs none).

    CLI Example:

    .. code-block:: bash

        salt-call django_workers.programs demo
    """
    runs = __salt__["saltdjango.project"](project).get("runs") or {}  # noqa: F821
    return [f"{project}-worker:*"] * bool(runs.get("workers")) + [f"{project}-beat"] * bool(runs.get("beat"))


def _link(project: str) -> str:
    return os.path.join(__salt__["saltdjango.paths"](project)["root"], "slots", "worker")  # noqa: F821


def linked_release(project: str) -> str | None:
    """The release the workers of ``project`` run here (None: not linked yet).

    CLI Example:

    .. code-block:: bash

        salt-call django_workers.linked_release demo
    """
    link = _link(project)
    return os.path.basename(os.readlink(link)) if os.path.islink(link) else None


def _states(names: list[str]) -> dict[str, str]:
    """supervisord's state of each process of ``names`` (groups expanded)."""
    found = {}
    for line in _ctl("status", *names).stdout.splitlines():
        parts = line.split()
        if len(parts) > 1:
            found[parts[0]] = parts[1]
    return found


def is_running(project: str, release: str) -> bool:
    """True when this server runs no workers of ``project``, or runs every one on ``release``.

    CLI Example:

    .. code-block:: bash

        salt-call django_workers.is_running demo 20261129T040000Z-1a2b3c4
    """
    names = programs(project)
    if not names:
        return True
    states = _states(names)
    return linked_release(project) == release and bool(states) and set(states.values()) == {"RUNNING"}


def _set_link(project: str, release: str) -> None:
    link = _link(project)
    os.makedirs(os.path.dirname(link), mode=0o755, exist_ok=True)
    __utils__["saltdjango_files.relink"](link, os.path.join("..", "releases", release))  # noqa: F821


def _start(project: str, names: list[str]) -> str | None:
    """Start ``names``; None when every process is up, else why not."""
    started = _ctl("start", *names)
    states = _states(names)
    if states and set(states.values()) == {"RUNNING"}:
        return None
    detail = (started.stdout + started.stderr).strip().replace("\n", "; ")
    return f"{detail or states}; the end of its log: {__salt__['saltdjango.log_tail'](project, 'worker.log', 6)}"  # noqa: F821


def stop(project: str) -> list[str]:
    """Stop ``project``'s workers here, their running jobs finished first (a
    restore of the database must not race them). Returns what was stopped.

    CLI Example:

    .. code-block:: bash

        salt worker1 django_workers.stop demo
    """
    names = programs(project)
    if names:
        _ctl("stop", *names)
    return names


def start(project: str) -> dict[str, Any]:
    """Start ``project``'s workers here again (after ``stop``): ``{"ok", "comment"}``.

    CLI Example:

    .. code-block:: bash

        salt worker1 django_workers.start demo
    """
    names = programs(project)
    failed = _start(project, names) if names and linked_release(project) else None
    return {"ok": failed is None, "comment": failed or f"{', '.join(names) or 'no worker'} running"}


def switch(project: str, release: str, restart: bool = False) -> dict[str, Any]:
    """Run ``project``'s workers on ``release``: warm stop, relink, start; a no-op
    where this server runs none, or runs them on ``release`` already.

    Raises RuntimeError, the workers back on the release they ran, when
    they do not start on ``release``. ``restart``: stop and start them even
    on ``release`` (their environment changed). Returns ``{"old", "new", "changed"}``.

    CLI Example:

    .. code-block:: bash

        salt worker1 django_workers.switch demo 20261129T040000Z-1a2b3c4
    """
    names = programs(project)
    old = linked_release(project)
    if not names or (is_running(project, release) and not restart):
        return {"old": old, "new": old if not names else release, "changed": False}
    if not os.path.isdir(os.path.join(__salt__["saltdjango.paths"](project)["root"], "releases", release)):  # noqa: F821
        raise RuntimeError(f"release {release} of {project} is not built on this server")
    # Blocks until the running jobs finished (or max_task_seconds passed).
    _ctl("stop", *names)
    _set_link(project, release)
    failed = _start(project, names)
    if failed:
        _ctl("stop", *names)
        if old:
            _set_link(project, old)
            _start(project, names)
        raise RuntimeError(f"the workers of {project} did not start on release {release}: {failed}")
    return {"old": old, "new": release, "changed": True}


def status(project: str) -> dict[str, Any]:
    """The release the workers run here, and each process's state.

    CLI Example:

    .. code-block:: bash

        salt-call django_workers.status demo
    """
    names = programs(project)
    return {"release": linked_release(project), "processes": _states(names) if names else {}}
