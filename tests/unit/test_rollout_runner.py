"""The pure parts of ``_runners/rollout.py``: batches, sources, state failures,
where a rollback goes, which passwords a master generates."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.unit.conftest import load

rollout = load("_runners/rollout.py")


def test_batches_keep_order_and_size() -> None:
    assert rollout._batches(["app1", "app2", "app3"], 2) == [["app1", "app2"], ["app3"]]
    assert rollout._batches(["app1", "app2"], 0) == [["app1"], ["app2"]]


def test_source_of_a_git_ref_needs_the_repo() -> None:
    assert rollout._source_of("v2", {"repo": "git://h/demo.git"}, "demo") == {"repo": "git://h/demo.git", "ref": "v2"}
    with pytest.raises(rollout.RolloutError, match="projects:demo:repo is not set"):
        rollout._source_of("v2", {}, "demo")


def test_source_of_a_release_id_or_nothing() -> None:
    assert rollout._source_of("20261127T120000Z-1a2b3c4", {}, "demo") == {"release": "20261127T120000Z-1a2b3c4"}
    assert rollout._source_of(None, {"source": "salt://x"}, "demo") == {"source": "salt://x"}
    assert rollout._source_of(None, rollout._project({"projects": {"demo": {}}}, None)[1], "demo") == {"source": "salt://projects/demo"}


def test_rollback_goes_to_the_release_before_a_good_rollout() -> None:
    v1, v2 = {"id": "v1"}, {"id": "v2"}
    assert rollout._rollback_target({"current": v2, "previous": v1, "attempt": {"id": "v2", "ok": True}}) == v1


def test_rollback_after_a_failed_rollout_restores_what_served() -> None:
    v1, v2 = {"id": "v1"}, {"id": "v2"}
    assert rollout._rollback_target({"current": v2, "previous": v1, "attempt": {"id": "v3", "ok": False}}) == v2
    assert rollout._rollback_target({}) is None


def test_the_release_a_converge_put_live_is_adopted_once() -> None:
    source = {"source": "salt://projects/demo"}
    entry = rollout._adopted({}, {"app1": "r1", "app2": "r1"}, source)
    assert entry and entry["id"] == "r1" and entry["servers"] == {"app1": "r1", "app2": "r1"} and entry["source"] == source
    assert rollout._adopted({"current": entry}, {"app1": "r2"}, source) is None, "a master's own record wins"
    assert rollout._adopted({}, {"app1": "t1-aaaaaaa", "app2": "t1-bbbbbbb"}, source) is None, "different sources: nothing to adopt"
    apart = rollout._adopted({}, {"app1": "t1-aaaaaaa", "app2": "t2-aaaaaaa"}, source)
    assert apart and apart["id"] == "t1-aaaaaaa" and apart["servers"]["app2"] == "t2-aaaaaaa", "one source built a second apart"
    assert rollout._adopted({}, {"app1": None}, source) is None, "nothing live yet"


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
    assert rollout._release_pillar(records) == {"projects": {"demo": {"release": pinned}}}
    assert rollout._release_pillar({}) == {}


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


@pytest.fixture
def master_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The master's pillar roots: the operator's (local.sls) and the state dir's."""
    operator = tmp_path / "etc"
    operator.mkdir()
    monkeypatch.setattr(rollout, "_state_dir", lambda: str(tmp_path))
    monkeypatch.setattr(rollout, "__opts__", {"pillar_roots": {"base": [str(operator), str(tmp_path / "pillar")]}}, raising=False)
    return operator


def test_the_master_generates_passwords_only_for_projects_no_app_server_runs(tmp_path: Path, master_roots: Path) -> None:
    # the master's own pillar has no secrets (it holds no role): local.sls is read from its file
    (master_roots / "local.sls").write_text("projects: {other: {secrets: {DB_PASSWORD: operator-chose-this-one}}}\n")
    projects = {"new": {"domains": ["new.example.org"]}, "old": {"domains": ["old.example.org"]}, "other": {"domains": ["o.example.org"]}}
    cluster = _FakeCluster(projects, alive={"app1", "app2"}, env_files={("app2", "/etc/old/env")})
    outcome = rollout._generate_secrets(cluster)
    added = [f"projects:new:secrets:{k}" for k in ("DB_PASSWORD", "REDIS_PASSWORD", "BACKUP_KEY")]
    # the key of the off-host backup copies is new to every project: old gets one too
    assert outcome["added"] == [
        *added,
        "projects:old:secrets:BACKUP_KEY",
        *(f"projects:other:secrets:{k}" for k in ("REDIS_PASSWORD", "BACKUP_KEY")),
    ]
    generated = tmp_path / "pillar" / "generated.sls"
    assert oct(generated.stat().st_mode & 0o777) == "0o600"
    written = yaml.safe_load(generated.read_text())["projects"]
    assert set(written["old"]["secrets"]) == {"BACKUP_KEY"}, "old runs on app2 already: its passwords are not ours to invent"


@pytest.mark.usefixtures("master_roots")
def test_the_master_generates_nothing_while_an_app_server_is_silent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rollout, "_ever_connected", lambda minion: True)
    cluster = _FakeCluster({"new": {"domains": ["new.example.org"]}}, alive={"app1"}, env_files=set())
    with pytest.raises(rollout.RolloutError, match="cannot tell whether new runs there") as raised:
        rollout._generate_secrets(cluster)
    assert raised.value.server == "app2" and not (tmp_path / "pillar").exists()
    monkeypatch.setattr(rollout, "_ever_connected", lambda minion: minion != "app2")
    assert rollout._generate_secrets(cluster)["added"], "a server that never connected (not started yet) runs nothing"


KEY = b"k" * 32


def _signed(**fields: object) -> dict:
    request = {"release": "v2", "project": None, "at": 1000.0, "nonce": "n1", **fields}
    return {**request, "sig": rollout._signature(KEY, request)}


@pytest.mark.parametrize(
    ("data", "now", "seen", "problem"),
    [
        ({"release": "v2"}, 1000.0, {}, "not signed"),
        ({"events": None, "id": "app1", "tag": "salt-django/deploy", "data": {"release": "v2"}}, 1000.0, {}, "not signed"),
        ({**_signed(), "release": "v3"}, 1000.0, {}, "bad signature"),
        ({**_signed(), "sig": rollout._signature(b"x" * 32, _signed())}, 1000.0, {}, "bad signature"),
        (_signed(at="1000"), 1000.0, {}, "field at missing or malformed"),
        (_signed(), 1000.0 + rollout.REQUEST_TTL + 1, {}, "expired"),
        (_signed(), 1000.0, {"n1": 990.0}, "replayed"),
        (_signed(), 1000.0, {}, None),
    ],
)
def test_only_a_fresh_request_signed_with_the_masters_key_starts_a_rollout(data: dict, now: float, seen: dict, problem: str | None) -> None:
    found = rollout._request_problem(KEY, data, now, seen)
    assert (found is None) if problem is None else (found or "").startswith(problem), found


def test_joins_of_one_server_are_debounced() -> None:
    joins = {"app1": 1000.0}
    assert not rollout._join_due(joins, "app1", 1000.0 + rollout.JOIN_DEBOUNCE - 1, rollout.JOIN_DEBOUNCE)
    assert rollout._join_due(joins, "app1", 1000.0 + rollout.JOIN_DEBOUNCE, rollout.JOIN_DEBOUNCE)
    assert rollout._join_due(joins, "app2", 1000.0, rollout.JOIN_DEBOUNCE)


class _SwitchingCluster:
    """App servers that switch (``activate``) and answer health checks, one of them refusing the new release."""

    def __init__(self, serving: dict[str, str], refuses: str) -> None:
        self.serving, self.refuses = serving, refuses
        self.states: dict[str, str] = dict.fromkeys(serving, "ready")
        self.settings = {"batch": 2, "drain_timeout": 1}
        self.lb_port = 8080
        # a third server stays in rotation while the batch of two switches
        self.pillar: dict = {}
        self.steps: list[str] = []
        self.activations: list[list[str]] = []

    def members_up(self, role: str) -> list[str]:
        return ["lb"] if role == "lb" else sorted(self.serving)

    def log(self, step: str, comment: str, **extra: object) -> None:
        self.steps.append(step if step != "batch" else comment)

    def call(self, step: str, tgt: list[str], fun: str, *args: object, **kwargs: object) -> dict:
        if fun == "django_store.current":
            return {server: self.serving[server] for server in tgt}
        if fun == "haproxy_runtime.set_state":
            self.states[str(args[1])] = str(args[2])
            return {"lb": True}
        if fun == "haproxy_runtime.wait_drained":
            return {"lb": {"sessions": 0}}
        if fun == "django_release.activate":
            self.activations.append(list(tgt))
            rid, outcomes = str(args[1]), {}
            for server in tgt:
                if rid == "new" and server == self.refuses:
                    outcomes[server] = {"ok": False, "comment": "did not become healthy"}
                else:
                    self.serving[server] = rid
                    outcomes[server] = {"ok": True, "comment": f"{rid} live"}
            return outcomes
        if fun == "django_manage.health":
            return {tgt[0]: {"ok": True, "body": {"release": "new"}}}
        raise AssertionError(fun)


def test_a_failed_batch_goes_back_to_the_old_release_and_into_rotation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rollout, "_mine_addresses", lambda cluster: ({"app1": "10.0.0.1", "app2": "10.0.0.2"}, {}))
    cluster = _SwitchingCluster({"app1": "old", "app2": "old", "app3": "old"}, refuses="app2")
    with pytest.raises(rollout.RolloutError) as raised:
        rollout._roll(cluster, "demo", {"domains": ["d.example"]}, dict.fromkeys(["app1", "app2", "app3"], "new"), "switch")
    assert raised.value.server == "app2"
    assert cluster.serving == dict.fromkeys(["app1", "app2", "app3"], "old")
    assert cluster.states == dict.fromkeys(["app1", "app2", "app3"], "ready")
    assert "restore app1" in cluster.steps
    assert cluster.steps[0] == "switch 1/2: app1, app2" and "switch 2/2: app3" not in cluster.steps, cluster.steps
    # the batch switched at once (one job), then app1 went back alone
    assert cluster.activations == [["app1", "app2"], ["app1"]], cluster.activations


def test_a_batch_switches_at_once_and_the_rollout_takes_one_step_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rollout, "_mine_addresses", lambda cluster: ({}, {}))
    servers = [f"app{n}" for n in range(1, 9)]
    cluster = _SwitchingCluster(dict.fromkeys(servers, "old"), refuses="")
    cluster.settings["batch"] = 2
    rollout._roll(cluster, "demo", {"domains": ["d.example"]}, dict.fromkeys(servers, "new"), "switch")
    assert cluster.serving == dict.fromkeys(servers, "new")
    assert cluster.activations == [servers[0:2], servers[2:4], servers[4:6], servers[6:8]]
    assert cluster.states == dict.fromkeys(servers, "ready")


def test_a_batch_never_takes_every_server_out_of_rotation() -> None:
    assert [rollout._batch_size(b, n) for b, n in ((2, 2), (2, 3), (5, 3), (1, 1), (3, 1), (0, 4))] == [1, 2, 2, 1, 3, 1]


def test_the_copies_on_the_master_are_the_names_django_db_gives_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rollout, "__opts__", {"cachedir": str(tmp_path)}, raising=False)
    pushed = tmp_path / "minions" / "db" / "files" / "salt-django-backups" / "demo"
    pushed.mkdir(parents=True)
    for name in ("20261129T005201113576Z-scheduled.dump.sdbk", "20261129T005201113576Z-scheduled.dump", "../x.dump.sdbk", "notes.txt"):
        (pushed / name.replace("../", "")).write_bytes(b"sealed")
    assert [c["copy"] for c in rollout._copies("demo", "db")] == ["20261129T005201113576Z-scheduled.dump.sdbk"]
    assert rollout._copies("demo", "cache") == []


def test_a_join_looks_for_the_mark_salt_common_writes() -> None:
    assert rollout._converged_mark() == "/var/lib/salt-django/converged"


def test_workers_switch_all_at_once_and_only_their_workers_where_they_also_serve() -> None:
    cluster = _SwitchingCluster({"worker1": "old", "worker2": "old", "app1": "old"}, refuses="")
    cluster.roles = {"worker1": ["worker"], "worker2": ["worker"], "app1": ["app", "web", "worker"]}  # type: ignore[attr-defined]
    calls: list[tuple[str, list[str]]] = []
    original = cluster.call

    def call(step: str, tgt: list[str], fun: str, *args: object, **kwargs: object) -> dict:
        if tgt:
            calls.append((fun, list(tgt)))
        if fun == "django_workers.switch":
            return {server: {"old": "old", "new": args[1], "changed": True} for server in tgt}
        return original(step, tgt, fun, *args, **kwargs) if tgt else {}

    cluster.call = call  # type: ignore[method-assign]
    rollout._switch_workers(cluster, "demo", {"worker1": "new", "worker2": "new", "app1": "new"}, "switch")
    # worker-only servers take the whole release (current, prune); app1 only its workers, its slots wait for its batch
    assert calls == [("django_release.activate", ["worker1", "worker2"]), ("django_workers.switch", ["app1"])], calls
    assert cluster.serving == {"worker1": "new", "worker2": "new", "app1": "old"}
    assert cluster.steps == ["switch workers"]


def test_a_worker_that_refuses_the_release_stops_the_rollout_naming_it() -> None:
    cluster = _SwitchingCluster({"worker1": "old"}, refuses="worker1")
    cluster.roles = {"worker1": ["worker"]}  # type: ignore[attr-defined]
    with pytest.raises(rollout.RolloutError) as raised:
        rollout._switch_workers(cluster, "demo", {"worker1": "new"}, "switch")
    assert raised.value.server == "worker1" and "did not become healthy" in str(raised.value)
