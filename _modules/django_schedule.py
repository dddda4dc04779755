"""Periodic jobs: each project's pillar ``schedule:``, as systemd timers where
PID 1 is systemd and as cron entries otherwise (containers, CI hosts).

A job is a management command run as the app user against the live release
(the project's ``bin/manage``)::

    schedule:
      clearsessions: {manage: clearsessions, when: "@daily"}

``when`` is a cron expression (five fields, or @hourly, @daily, @weekly,
@monthly, @yearly). Each field is expanded into the exact values it names and
both backends get those lists, so a timer and a cron entry fire at the same
minutes. Cron runs a job when *either* day field matches and systemd only when
both do, so an expression that restricts both is refused rather than read
differently by the two.

In a cluster each job runs on exactly one server: the first app server of the
topology by minion id (the master's pillar, not anything a minion says). The
database server also runs each project's scheduled backup (``backups:
schedule``, :func:`backup_jobs`).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from typing import Any

from salt.exceptions import CommandExecutionError

UNIT_PREFIX = "salt-django-job-"
SYSTEMD_DIR = "/etc/systemd/system"
CRON_DIR = "/etc/cron.d"
#: One shell script per job: the command line, quoted for sh once, so that
#: neither systemd's nor cron's own escaping rules (%, $) ever apply to it.
SCRIPT_DIR = "/usr/local/lib/salt-django/jobs"
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")
_MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
#: name, lowest, highest, names for values (cron's three-letter names)
_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
    ("day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)
_SYSTEMD_DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")


def __virtual__() -> str:
    return "django_schedule"


def _value(text: str, low: int, names: tuple[str, ...]) -> int:
    lowered = text.lower()
    if lowered in names:
        return names.index(lowered) + (1 if low == 1 else 0)
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a number")
    return int(text)


def _field(text: str, what: str, low: int, high: int, names: tuple[str, ...]) -> list[int] | None:
    """The values one cron field names, sorted; None for every value (``*``)."""
    if text == "*":
        return None
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise ValueError(f"{what}: step {step_text!r} must be a positive number")
        if body == "*":
            first, last = low, high
        elif "-" in body:
            first, last = (_value(v, low, names) for v in body.split("-", 1))
        else:
            first = _value(body, low, names)
            last = high if step else first
        if not low <= first <= last <= high:
            raise ValueError(f"{what}: {part!r} is outside {low}-{high}")
        values.update(range(first, last + 1, step or 1))
    if what == "day of week" and 7 in values:  # cron's second Sunday
        values = (values - {7}) | {0}
    return sorted(values)


def _parse_when(when: Any) -> list[list[int] | None]:
    """The five fields of a cron expression (or @daily, ...) as value lists.

    >>> _parse_when("*/20 6-7 * * mon-fri")[:2]
    [[0, 20, 40], [6, 7]]
    """
    if not isinstance(when, str) or not when.strip():
        raise ValueError("when: must be a cron expression such as '*/5 * * * *' or @daily")
    text = _MACROS.get(when.strip().lower(), when.strip())
    if text.startswith("@"):
        raise ValueError(f"when: {when!r} is not one of {', '.join(_MACROS)}")
    parts = text.split()
    if len(parts) != 5:
        raise ValueError(f"when: {when!r} must have five fields (minute hour day-of-month month day-of-week)")
    try:
        fields = [_field(part, *spec) for part, spec in zip(parts, _FIELDS, strict=True)]
    except ValueError as exc:
        raise ValueError(f"when: {when!r}: {exc}") from None
    if fields[2] is not None and fields[4] is not None:
        raise ValueError(
            f"when: {when!r} restricts both the day of month and the day of week, which cron reads as"
            " 'either' and systemd as 'both': restrict one of them"
        )
    return fields


def _listed(values: list[int] | None, width: int = 2) -> str:
    return "*" if values is None else ",".join(str(v).zfill(width) for v in values)


def _on_calendar(when: str) -> str:
    """systemd's OnCalendar= for ``when``: ``*/15 * * * *`` gives ``*-*-* *:00,15,30,45:00``."""
    minute, hour, day, month, weekday = _parse_when(when)
    days = "" if weekday is None else ",".join(_SYSTEMD_DAYS[v] for v in weekday) + " "
    return f"{days}*-{_listed(month)}-{_listed(day)} {_listed(hour)}:{_listed(minute)}:00"


def _cron_fields(when: str) -> str:
    """The five cron fields for ``when``, each as the explicit list :func:`on_calendar` uses."""
    return " ".join(_listed(values, 1) for values in _parse_when(when))


def job_problems(key: str, schedule: Any) -> list[str]:
    """Errors in one project's pillar ``schedule`` (``key`` is ``projects:<name>``).

    CLI Example:

    .. code-block:: bash

        salt-call django_schedule.job_problems projects:demo '{tick: {manage: clearsessions, when: "@daily"}}'
    """
    if schedule in (None, {}):
        return []
    if not isinstance(schedule, dict):
        return [f"{key}:schedule: must be a mapping of job name to {{manage: ..., when: ...}}"]
    errors = []
    for name, spec in schedule.items():
        where = f"{key}:schedule:{name}"
        if not _NAME.match(str(name)):
            errors.append(f"{where}: a job name is lowercase letters, digits and '-'")
            continue
        if not isinstance(spec, dict) or set(spec) != {"manage", "when"}:
            errors.append(f"{where}: must be a mapping with exactly manage (a management command line) and when")
            continue
        try:
            if not shlex.split(str(spec["manage"])):
                errors.append(f"{where}:manage: is empty")
        except ValueError as exc:
            errors.append(f"{where}:manage: cannot be split into arguments: {exc}")
        try:
            _parse_when(spec["when"])
        except ValueError as exc:
            errors.append(f"{where}:{exc}")
    return errors


def backup_problems(key: str, backups: Any) -> list[str]:
    """Errors in one project's pillar ``backups:schedule`` (``key`` is ``projects:<name>``).

    CLI Example:

    .. code-block:: bash

        salt-call django_schedule.backup_problems projects:demo '{schedule: "@daily"}'
    """
    when = backups.get("schedule") if isinstance(backups, dict) else None
    if not when:
        return []
    try:
        _parse_when(when)
    except ValueError as exc:
        return [f"{key}:backups:schedule:{exc}"]
    return []


def _runs_here(minion: str, topology: dict[str, list[str]]) -> bool:
    """Whether ``minion`` runs the projects' jobs: on a single server (no
    topology) it does; in a cluster only the first app server by id does."""
    if not topology:
        return True
    apps = sorted(name for name, roles in topology.items() if "app" in roles)
    return bool(apps) and apps[0] == minion


def _project_jobs(projects: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    """One job per entry of each project's ``schedule``, ready for the templates."""
    jobs = []
    for name, project in sorted(projects.items()):
        for job, spec in sorted((project.get("schedule") or {}).items()):
            unit = f"{UNIT_PREFIX}{name}-{job}"
            jobs.append(
                {
                    "id": f"{name}-{job}",
                    "unit": unit,
                    "description": f"salt-django {name}: scheduled job {job}",
                    "command": shlex.join([f"{project['root']}/bin/manage", *shlex.split(str(spec["manage"]))]),
                    "script": f"{SCRIPT_DIR}/{unit}",
                    "on_calendar": _on_calendar(spec["when"]),
                    "cron": _cron_fields(spec["when"]),
                    "log": f"{project['log_dir']}/schedule-{job}.log",
                }
            )
    return jobs


def _salt_call() -> list[str]:
    """How a job runs an execution module of this minion, as ``salt-call``
    with this minion's own configuration (masterless: ``--local``)."""
    beside = os.path.join(os.path.dirname(sys.executable), "salt-call")
    argv = [beside if os.path.exists(beside) else shutil.which("salt-call") or "salt-call"]
    argv += ["-c", os.path.dirname(__opts__["conf_file"])]  # noqa: F821
    if __opts__.get("file_client") == "local":  # noqa: F821
        argv.append("--local")
    return [*argv, "--retcode-passthrough", "--out=quiet"]


def _backup_jobs(projects: dict[str, dict[str, Any]], cluster: bool) -> list[dict[str, str]]:
    """The database server's scheduled backup of each project (pillar
    ``backups:schedule``; null: none). In a cluster each is copied off the
    server, and a failed copy fails the job."""
    jobs = []
    for name, project in sorted(projects.items()):
        when = (project.get("backups") or {}).get("schedule")
        if not when:
            continue
        unit = f"{UNIT_PREFIX}{name}-backup"
        command = [*_salt_call(), "django_db.backup", name, "reason=scheduled", f"offsite={cluster}"]
        jobs.append(
            {
                "id": f"{name}-backup",
                "unit": unit,
                "description": f"salt-django {name}: scheduled backup",
                "command": shlex.join(command),
                "script": f"{SCRIPT_DIR}/{unit}",
                "on_calendar": _on_calendar(when),
                "cron": _cron_fields(when),
                "log": f"/var/log/salt-django-{name}-backup.log",
            }
        )
    return jobs


def backend() -> str:
    """``systemd`` where PID 1 is systemd (sd_booted's test), else ``cron``.

    CLI Example:

    .. code-block:: bash

        salt-call django_schedule.backend
    """
    return "systemd" if os.path.isdir("/run/systemd/system") else "cron"


def jobs() -> list[dict[str, str]]:
    """This server's jobs, from pillar. Raises, naming every bad pillar key,
    whether or not this server runs them, so that no server renders half a
    schedule.

    CLI Example:

    .. code-block:: bash

        salt-call django_schedule.jobs
    """
    projects = __salt__["saltdjango.projects"](__salt__["saltdjango.defaults"]()["project"])  # noqa: F821
    errors = [e for name, project in projects.items() for e in job_problems(f"projects:{name}", project.get("schedule"))]
    errors += [e for name, project in projects.items() for e in backup_problems(f"projects:{name}", project.get("backups"))]
    if errors:
        raise CommandExecutionError("; ".join(errors))
    roles = __pillar__.get("salt_django", {}).get("roles", [])  # noqa: F821
    topology = __salt__["saltdjango.topology"]()  # noqa: F821
    here = "app" in roles and _runs_here(__grains__["id"], topology)  # noqa: F821
    return (_project_jobs(projects) if here else []) + (_backup_jobs(projects, bool(topology)) if "db" in roles else [])


def stale(wanted: list[str], dirs: tuple[str, ...] = (SYSTEMD_DIR, CRON_DIR, SCRIPT_DIR)) -> dict[str, dict[str, Any]]:
    """Jobs of ours on disk that are not in ``wanted`` (unit names): their
    files, and whether a timer of theirs must be stopped first.

    CLI Example:

    .. code-block:: bash

        salt-call django_schedule.stale '[salt-django-job-demo-tick]'
    """
    found: dict[str, dict[str, Any]] = {}
    systemd_dir = dirs[0]
    for directory in dirs:
        if not os.path.isdir(directory):
            continue
        for entry in sorted(os.listdir(directory)):
            unit = entry.rsplit(".", 1)[0] if directory == systemd_dir else entry
            if entry.startswith(UNIT_PREFIX) and unit not in wanted:
                job = found.setdefault(unit, {"id": unit.removeprefix(UNIT_PREFIX), "paths": [], "timer": False})
                job["paths"].append(os.path.join(directory, entry))
                job["timer"] = job["timer"] or entry.endswith(".timer")
    return found
