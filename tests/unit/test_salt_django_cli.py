"""``scripts/salt_django.py``: which passwords `make deploy` generates, keeps and drops."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_a_deploy_prints_each_state_as_it_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = tmp_path / "salt-call"
    states = {f"s{i}": {"result": True, "changes": {}, "__run_num__": i} for i in range(3)}
    log = "".join(f"[INFO    ] Completed state [/etc/s{i}] at time 01:02:03.000 (duration_in_ms={i * 1500}.0)\\n" for i in range(3))
    # more JSON than a pipe holds, written after the log, as salt-call does
    payload = json.dumps({"local": {**states, "padding": "x" * 200_000}})
    fake.write_text(f"#!/bin/sh\nprintf '%b' '{log}' >&2\nprintf '[ERROR   ] boom\\\\n' >&2\ncat <<'EOF'\n{payload}\nEOF\n")
    fake.chmod(0o755)
    monkeypatch.setattr(cli, "SALT_CALL", fake)
    result = cli.salt_call_with_progress("/etc/salt-django", "state.apply")
    printed = capsys.readouterr().out.splitlines()
    assert printed == ["  [  1] /etc/s0 (0.0 s)", "  [  2] /etc/s1 (1.5 s)", "  [  3] /etc/s2 (3.0 s)"], printed
    assert json.loads(result.stdout)["local"]["s2"]["__run_num__"] == 2 and result.stderr.startswith("[ERROR")
