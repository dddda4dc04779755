"""`make deploy` on a host whose PID 1 is not systemd (a container, a CI job).

Exactly the README's quick start, its prerequisite line and a copy of the repo:
the bootstrap must notice that systemd is absent, so that Salt drives the
init.d scripts and the services really start, and schedules run from cron.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.helpers import DOMAIN, TICK_JOB, TICK_MINUTES, fetch, make, minutes_of_ticks, psql, repo_host
from tests.lab.hosts import Host

pytestmark = [pytest.mark.lab, pytest.mark.slow]


@pytest.fixture(scope="module")
def container(lab_base: Path, lab_workdir: Path) -> Iterator[Host]:
    local = yaml.safe_dump({"projects": {"demo": {"schedule": {"tick": TICK_JOB}}}})
    with repo_host("nosystemd", lab_base, lab_workdir, boot=False, local_pillar=local) as host:
        host.first_deploy = make(host)  # type: ignore[attr-defined]
        host.deployed_at = time.time()  # type: ignore[attr-defined]
        print(f"\n[no-systemd] first make deploy: {host.first_deploy.states} states in {host.first_deploy.seconds:.1f} s")  # type: ignore[attr-defined]
        yield host


def test_bootstrap_disables_salts_offline_systemd_module(container: Host) -> None:
    assert container.run("test -d /run/systemd/system", check=False).returncode != 0
    conf = container.path("/etc/salt-django/minion.d/50-no-systemd.conf").read_text()
    assert "- systemd_service" in conf
    local = container.run(["stat", "-c", "%a", "/etc/salt-django/pillar/generated.sls"]).stdout.strip()
    assert local == "600", "generated secrets are readable by root only"


def test_page_is_served_through_the_whole_stack(container: Host) -> None:
    note = uuid.uuid4().hex
    page = fetch(container, f"https://{DOMAIN}/?note={note}")
    assert page.status == 200 and "Rendered by Django on" in page.body
    assert psql(container, f"SELECT count(*) FROM visits_visit WHERE note = '{note}'") == "1"
    processes = container.run(["ps", "-eo", "comm"]).stdout.split()
    for daemon in ("postgres", "redis-server", "nginx", "supervisord", "gunicorn"):
        assert daemon in processes, daemon


def test_second_deploy_changes_nothing(container: Host) -> None:
    second = make(container)
    assert (second.changed, second.failed) == (0, 0), second.output[-3000:]
    plan = make(container, "plan")
    assert (plan.changed, plan.failed) == (0, 0), plan.output[-3000:]


def test_schedule_runs_each_minute_from_cron_as_the_app_user(container: Host) -> None:
    assert container.path("/etc/cron.d/salt-django-job-demo-tick").exists()
    assert "cron" in container.run(["ps", "-eo", "comm"]).stdout.split()
    runs = minutes_of_ticks([container], container.deployed_at)[container.name]  # type: ignore[attr-defined]
    app_uid = int(container.run(["id", "-u", "demo"]).stdout)
    log = container.run("tail -n 20 /var/log/demo/schedule-tick.log", check=False).stdout
    assert [uid for _, uid in runs] == [app_uid] * TICK_MINUTES, f"{runs}; the job's log: {log}"
