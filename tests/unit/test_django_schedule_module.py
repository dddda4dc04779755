"""``_modules/django_schedule.py``: one when-syntax, read the same by systemd and cron."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from tests.unit.conftest import FILESERVER, load

django_schedule = load("_modules/django_schedule.py")
saltdjango = load("_modules/saltdjango.py")


@pytest.mark.parametrize(
    ("when", "calendar", "cron"),
    [
        ("* * * * *", "*-*-* *:*:00", "* * * * *"),
        ("*/15 * * * *", "*-*-* *:00,15,30,45:00", "0,15,30,45 * * * *"),
        ("@daily", "*-*-* 00:00:00", "0 0 * * *"),
        ("30 2 * * mon-fri", "Mon,Tue,Wed,Thu,Fri *-*-* 02:30:00", "30 2 * * 1,2,3,4,5"),
        ("0 4 1 jan,jul *", "*-01,07-01 04:00:00", "0 4 1 1,7 *"),
        ("5 1-10/3 * * 7", "Sun *-*-* 01,04,07,10:05:00", "5 1,4,7,10 * * 0"),
    ],
)
def test_systemd_and_cron_get_the_same_times(when: str, calendar: str, cron: str) -> None:
    assert django_schedule._on_calendar(when) == calendar
    assert django_schedule._cron_fields(when) == cron


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ("* * * *", "five fields"),
        ("60 * * * *", "minute: '60' is outside 0-59"),
        ("*/0 * * * *", "step '0' must be a positive number"),
        ("0 0 1 * mon", "restricts both the day of month and the day of week"),
        ("@often", "is not one of @hourly"),
        ("0 x * * *", "'x' is not a number"),
        (5, "must be a cron expression"),
    ],
)
def test_bad_when_is_refused_with_the_reason(when: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        django_schedule._parse_when(when)


def test_problems_name_the_pillar_key() -> None:
    schedule = {
        "ok": {"manage": "clearsessions", "when": "@daily"},
        "Bad_Name": {"manage": "x", "when": "@daily"},
        "nowhen": {"manage": "clearsessions"},
        "badwhen": {"manage": "clearsessions", "when": "61 * * * *"},
        "quote": {"manage": "shell -c 'unclosed", "when": "@daily"},
    }
    errors = django_schedule.job_problems("projects:demo", schedule)
    assert errors == [
        "projects:demo:schedule:Bad_Name: a job name is lowercase letters, digits and '-'",
        "projects:demo:schedule:nowhen: must be a mapping with exactly manage (a management command line) and when",
        "projects:demo:schedule:badwhen:when: '61 * * * *': minute: '61' is outside 0-59",
        "projects:demo:schedule:quote:manage: cannot be split into arguments: No closing quotation",
    ]
    assert django_schedule.job_problems("projects:demo", None) == []
    assert django_schedule.job_problems("projects:demo", ["clearsessions"]) == [
        "projects:demo:schedule: must be a mapping of job name to {manage: ..., when: ...}"
    ]


def test_in_a_cluster_only_the_first_app_server_runs_the_jobs() -> None:
    topology = {"db": ["db"], "app2": ["app"], "app1": ["app", "web"], "lb": ["lb"]}
    assert [m for m in topology if django_schedule._runs_here(m, topology)] == ["app1"]
    assert django_schedule._runs_here("single", {})
    assert not django_schedule._runs_here("db", {"db": ["db"]})


def test_a_job_runs_the_live_release_through_bin_manage_quoted_for_sh() -> None:
    projects = {
        "demo": {
            "root": "/srv/demo",
            "log_dir": "/var/log/demo",
            "schedule": {"tick": {"manage": "shell -c 'print(1)'", "when": "* * * * *"}},
        }
    }
    (job,) = django_schedule._project_jobs(projects)
    assert job["unit"] == "salt-django-job-demo-tick"
    assert job["command"] == "/srv/demo/bin/manage shell -c 'print(1)'"
    assert job["script"] == "/usr/local/lib/salt-django/jobs/salt-django-job-demo-tick"
    assert job["log"] == "/var/log/demo/schedule-tick.log"


def test_stale_finds_only_our_jobs_not_wanted(tmp_path: Path) -> None:
    systemd, cron, scripts = (tmp_path / d for d in ("systemd", "cron", "jobs"))
    for directory, names in (
        (systemd, ["salt-django-job-demo-old.timer", "salt-django-job-demo-old.service", "salt-django-job-demo-tick.timer", "ssh.service"]),
        (cron, ["salt-django-job-demo-gone", "salt-django-job-demo-tick", "e2scrub_all"]),
        (scripts, ["salt-django-job-demo-old"]),
    ):
        directory.mkdir()
        for name in names:
            (directory / name).touch()
    found = django_schedule.stale(["salt-django-job-demo-tick"], (str(systemd), str(cron), str(scripts)))
    assert found == {
        "salt-django-job-demo-old": {
            "id": "demo-old",
            "paths": [
                str(systemd / "salt-django-job-demo-old.service"),
                str(systemd / "salt-django-job-demo-old.timer"),
                str(scripts / "salt-django-job-demo-old"),
            ],
            "timer": True,
        },
        "salt-django-job-demo-gone": {"id": "demo-gone", "paths": [str(cron / "salt-django-job-demo-gone")], "timer": False},
    }


def test_pillar_validation_names_a_bad_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(saltdjango, "__salt__", {**FILESERVER, "django_schedule.job_problems": django_schedule.job_problems}, raising=False)
    project = {"domains": ["example.org"], "secrets": {"DB_PASSWORD": "a" * 20, "REDIS_PASSWORD": "b" * 20}}
    project["schedule"] = {"tick": {"manage": "clearsessions", "when": "@often"}}
    errors = saltdjango.validate({"projects": {"site": project}}, minion="single")
    assert len(errors) == 1 and errors[0].startswith("projects:site:schedule:tick:when: '@often' is not one of @hourly, @daily"), errors


def test_pillar_validation_names_a_bad_backup_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        saltdjango, "__salt__", {**FILESERVER, "django_schedule.backup_problems": django_schedule.backup_problems}, raising=False
    )
    project = {"domains": ["example.org"], "secrets": {"DB_PASSWORD": "a" * 20, "REDIS_PASSWORD": "b" * 20}}
    project["backups"] = {"schedule": "61 * * * *"}
    errors = saltdjango.validate({"projects": {"site": project}}, minion="single")
    assert len(errors) == 1 and errors[0].startswith("projects:site:backups:schedule:"), errors
    project["backups"] = {"schedule": None}
    assert saltdjango.validate({"projects": {"site": project}}, minion="single") == []


def test_the_backup_job_calls_salt_with_this_minions_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(django_schedule, "__opts__", {"conf_file": "/etc/salt-django/minion", "file_client": "local"}, raising=False)
    [job] = django_schedule._backup_jobs(
        {"site": {"backups": {"schedule": "@daily"}}, "quiet": {"backups": {"schedule": None}}}, cluster=False
    )
    argv = shlex.split(job["command"])
    assert argv[0].endswith("salt-call") and argv[1:4] == ["-c", "/etc/salt-django", "--local"], argv
    assert argv[-4:] == ["django_db.backup", "site", "reason=scheduled", "offsite=False"], argv
    assert job["unit"] == "salt-django-job-site-backup" and job["cron"] == "0 0 * * *"
    monkeypatch.setattr(django_schedule, "__opts__", {"conf_file": "/etc/salt/minion"}, raising=False)
    [job] = django_schedule._backup_jobs({"site": {"backups": {"schedule": "@daily"}}}, cluster=True)
    assert "--local" not in job["command"] and job["command"].endswith("offsite=True")
