"""``scripts/salt_django.py``: which passwords `make deploy` generates, keeps and drops."""

from __future__ import annotations

import logging

import pytest

from tests.unit.conftest import load

cli = load("scripts/salt_django.py")


def test_a_new_project_gets_the_passwords_it_lacks_and_a_deployed_one_none() -> None:
    projects = {
        "new": {"domains": ["new.example.org"], "secrets": {"REDIS_PASSWORD": "set-by-the-operator-xxxxxxxxx"}},
        "live": {"domains": ["live.example.org"]},
    }
    data, added, dropped = cli.plan_secrets(projects, {}, deployed={"live"})
    assert added == ["projects:new:secrets:DB_PASSWORD"] and dropped == []
    assert set(data["projects"]) == {"new"} and len(data["projects"]["new"]["secrets"]["DB_PASSWORD"]) == 40


def test_generated_values_are_never_rewritten() -> None:
    generated = {"projects": {"site": {"secrets": {"DB_PASSWORD": "a" * 40, "REDIS_PASSWORD": "b" * 40}}}}
    projects = {"site": {"domains": ["site.example.org"], **generated["projects"]["site"]}}
    assert cli.plan_secrets(projects, generated, deployed=set()) == (generated, [], [])


def test_a_project_removed_from_pillar_loses_its_generated_entry() -> None:
    generated = {"projects": {"gone": {"secrets": {"DB_PASSWORD": "a" * 40}}, "site": {"secrets": {"DB_PASSWORD": "b" * 40}}}}
    projects = {"gone": generated["projects"]["gone"], "site": {"domains": ["site.example.org"], **generated["projects"]["site"]}}
    data, added, dropped = cli.plan_secrets(projects, generated, deployed={"gone", "site"})
    assert dropped == ["gone"] and added == []
    assert data == {"projects": {"site": {"secrets": {"DB_PASSWORD": "b" * 40}}}}


def test_a_deploy_prints_each_state_as_it_completes(capsys: pytest.CaptureFixture[str]) -> None:
    state_log = logging.getLogger("salt.state")
    with cli.salt_logging("") as progress:
        for i in range(3):
            state_log.info("Completed state [%s] at time %s (duration_in_ms=%s)", f"/etc/s{i}", "01:02:03.000", i * 1500.0)
        state_log.debug("Completed state [/etc/hidden] at time 01:02:03.000 (duration_in_ms=1.0)")
        progress.handle(logging.LogRecord("salt.loader", logging.ERROR, __file__, 1, "boom", None, None))
    state_log.info("Completed state [/etc/after] at time 01:02:03.000 (duration_in_ms=1.0)")
    printed = capsys.readouterr().out.splitlines()
    assert printed == ["  [  1] /etc/s0 (0.0 s)", "  [  2] /etc/s1 (1.5 s)", "  [  3] /etc/s2 (3.0 s)"], printed
    assert progress.errors == ["[ERROR] boom"]


def test_s3_keys_are_generated_for_the_cluster_store_only_and_for_running_projects_too() -> None:
    projects = {
        "own": {"domains": ["own.example.org"], "media": {"backend": "s3"}},
        "external": {"domains": ["ext.example.org"], "media": {"backend": "s3", "endpoint": "https://s3.example.org"}},
        "local": {"domains": ["local.example.org"]},
    }
    data, added, _ = cli.plan_secrets(projects, {}, deployed={"own", "external", "local"})
    assert added == ["projects:own:secrets:S3_ACCESS_KEY", "projects:own:secrets:S3_SECRET_KEY"]
    keys = data["projects"]["own"]["secrets"]
    assert len(keys["S3_ACCESS_KEY"]) == 40 and keys["S3_ACCESS_KEY"] != keys["S3_SECRET_KEY"]
    # once generated (pillar now holds them), never again
    projects["own"]["secrets"] = keys
    assert cli.plan_secrets(projects, data, deployed={"own", "external", "local"})[1] == []
