"""The pure parts of ``_runners/rollout.py``: batches, sources, state failures,
where a rollback goes, which passwords a master generates."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.conftest import load

rollout = load("_runners/rollout.py")


def test_batches_keep_order_and_size() -> None:
    assert rollout.batches(["app1", "app2", "app3"], 2) == [["app1", "app2"], ["app3"]]
    assert rollout.batches(["app1", "app2"], 0) == [["app1"], ["app2"]]


def test_source_of_a_git_ref_needs_the_repo() -> None:
    assert rollout.source_of("v2", {"repo": "git://h/demo.git"}, "demo") == {"repo": "git://h/demo.git", "ref": "v2"}
    with pytest.raises(rollout.RolloutError, match="projects:demo:repo is not set"):
        rollout.source_of("v2", {}, "demo")


def test_source_of_a_release_id_or_nothing() -> None:
    assert rollout.source_of("20261127T120000Z-1a2b3c4", {}, "demo") == {"release": "20261127T120000Z-1a2b3c4"}
    assert rollout.source_of(None, {"source": "salt://x"}, "demo") == {"source": "salt://x"}
    assert rollout.source_of(None, {}, "demo") == {"source": "salt://projects/demo"}


def test_failed_states_names_the_state_ids() -> None:
    ret = {
        "file_|-nginx-site-managed_|-/etc/x_|-managed": {"result": True, "comment": "ok"},
        "cmd_|-nginx-config-tested_|-nginx -t_|-run": {"result": False, "comment": "syntax error"},
    }
    assert rollout.failed_states(ret) == {"nginx-config-tested": "syntax error"}
    assert rollout.failed_states("No Top file") == {"(no state data)": "No Top file"}


def test_rollback_goes_to_the_release_before_a_good_rollout() -> None:
    v1, v2 = {"id": "v1"}, {"id": "v2"}
    assert rollout.rollback_target({"current": v2, "previous": v1, "attempt": {"id": "v2", "ok": True}}) == v1


def test_rollback_after_a_failed_rollout_restores_what_served() -> None:
    v1, v2 = {"id": "v1"}, {"id": "v2"}
    assert rollout.rollback_target({"current": v2, "previous": v1, "attempt": {"id": "v3", "ok": False}}) == v2
    assert rollout.rollback_target({}) is None


def test_the_release_a_converge_put_live_is_adopted_once() -> None:
    source = {"source": "salt://projects/demo"}
    entry = rollout.adopted({}, {"app1": "r1", "app2": "r1"}, source)
    assert entry and entry["id"] == "r1" and entry["servers"] == {"app1": "r1", "app2": "r1"} and entry["source"] == source
    assert rollout.adopted({"current": entry}, {"app1": "r2"}, source) is None, "a master's own record wins"
    assert rollout.adopted({}, {"app1": "t1-aaaaaaa", "app2": "t1-bbbbbbb"}, source) is None, "different sources: nothing to adopt"
    apart = rollout.adopted({}, {"app1": "t1-aaaaaaa", "app2": "t2-aaaaaaa"}, source)
    assert apart and apart["id"] == "t1-aaaaaaa" and apart["servers"]["app2"] == "t2-aaaaaaa", "one source built a second apart"
    assert rollout.adopted({}, {"app1": None}, source) is None, "nothing live yet"


def test_error_names_step_server_and_cause() -> None:
    exc = rollout.RolloutError("switch", "release X did not become healthy", "app1")
    assert str(exc) == "switch on app1: release X did not become healthy"
    assert str(rollout.RolloutError("rollout refused", "another rollout is running: x")) == "rollout refused: another rollout is running: x"


def test_release_pillar_pins_the_commit_of_git_releases_only() -> None:
    records = {
        "demo": {"current": {"id": "r2", "digest": "c0ffee" * 6, "source": {"repo": "git://h/demo.git", "ref": "v2"}}},
        "blog": {"current": {"id": "r1", "digest": None, "source": {"source": "salt://projects/blog"}}},
    }
    pinned = {"id": "r2", "repo": "git://h/demo.git", "ref": "c0ffee" * 6}
    assert rollout.release_pillar(records) == {"projects": {"demo": {"release": pinned}}}
    assert rollout.release_pillar({}) == {}


class _FakeCluster:
    """What ``_generate_secrets`` asks of a cluster: pillar, roles, who answered, file checks."""

    def __init__(self, projects: dict, alive: set[str], env_files: set[tuple[str, str]]) -> None:
        self.pillar = {"projects": projects}
        self.alive = alive
        self.env_files = env_files
        self.steps: list[str] = []

    def members(self, role: str) -> list[str]:
        return ["app1", "app2"] if role == "app" else []

    def call(self, step: str, tgt: list[str], fun: str, path: str) -> dict[str, bool]:
        return {minion: (minion, path) in self.env_files for minion in tgt}

    def log(self, step: str, comment: str) -> None:
        self.steps.append(comment)


def test_the_master_generates_passwords_only_for_projects_no_app_server_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rollout, "_state_dir", lambda: str(tmp_path))
    projects = {"new": {"domains": ["new.example.org"]}, "old": {"domains": ["old.example.org"]}}
    cluster = _FakeCluster(projects, alive={"app1", "app2"}, env_files={("app2", "/etc/old/env")})
    outcome = rollout._generate_secrets(cluster)
    assert outcome["added"] == ["projects:new:secrets:DB_PASSWORD", "projects:new:secrets:REDIS_PASSWORD"]
    generated = tmp_path / "pillar" / "generated.sls"
    assert oct(generated.stat().st_mode & 0o777) == "0o600"
    assert "old" not in generated.read_text(), "old runs on app2 already: its password is not for us to invent"


def test_the_master_generates_nothing_while_an_app_server_is_silent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rollout, "_state_dir", lambda: str(tmp_path))
    monkeypatch.setattr(rollout, "_ever_connected", lambda minion: True)
    cluster = _FakeCluster({"new": {"domains": ["new.example.org"]}}, alive={"app1"}, env_files=set())
    with pytest.raises(rollout.RolloutError, match="cannot tell whether new runs there") as raised:
        rollout._generate_secrets(cluster)
    assert raised.value.server == "app2" and not (tmp_path / "pillar").exists()
    monkeypatch.setattr(rollout, "_ever_connected", lambda minion: minion != "app2")
    assert rollout._generate_secrets(cluster)["added"], "a server that never connected (not started yet) runs nothing"
