"""The code that minions' modules and the rollout runner share (``_utils/``)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from tests.unit.conftest import Utils

utils = Utils()


def test_failed_states_names_the_state_ids() -> None:
    ret = {
        "file_|-nginx-site-managed_|-/etc/x_|-managed": {"result": True, "comment": "ok"},
        "cmd_|-nginx-config-tested_|-nginx -t_|-run": {"result": False, "comment": "syntax error"},
        "cmd_|-x_|-y_|-run": {"result": None, "comment": "would run", "__id__": "app-demo-migrated"},
    }
    assert utils["saltdjango_releases.failed_states"](ret) == {"nginx-config-tested": "syntax error", "app-demo-migrated": "would run"}
    assert utils["saltdjango_releases.failed_states"]("No Top file") == {"(no state data)": "No Top file"}


@pytest.mark.parametrize("value", ["20261129T040000Z-1a2b3c4"])
def test_a_release_id_is_recognised(value: str) -> None:
    assert utils["saltdjango_releases.is_release_id"](value)


@pytest.mark.parametrize("value", [None, "main", "20261129T040000Z-1A2B3C4", "../20261129T040000Z-1a2b3c4", "20261129T040000Z-1a2b3c4\n"])
def test_anything_else_is_no_release_id(value: object) -> None:
    assert not utils["saltdjango_releases.is_release_id"](value)


def test_a_file_is_replaced_whole_with_its_mode_and_no_leftover(tmp_path: Path) -> None:
    path = tmp_path / "pillar.sls"
    path.write_text("old")
    path.chmod(0o644)
    utils["saltdjango_files.replace"](str(path), "new: 1\n")
    assert path.read_text() == "new: 1\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["pillar.sls"]


def test_a_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "env"
    path.write_text("KEEP=1\n")
    with pytest.raises(UnicodeEncodeError):
        utils["saltdjango_files.replace"](str(path), "NEW=\udc80\n")
    assert path.read_text() == "KEEP=1\n"
    assert os.listdir(tmp_path) == ["env"]


def test_a_held_lock_is_refused_naming_its_holder_then_free_again(tmp_path: Path) -> None:
    lock = str(tmp_path / "deploy.lock")
    held = utils["saltdjango_files.held"]
    with held(lock, "release by alice", refuse=RuntimeError):
        with pytest.raises(RuntimeError, match=r"^release by alice \(pid \d+\) since 20\d\d-"):
            with held(lock, "rollback by bob", refuse=RuntimeError):
                pass
    with held(lock, "rollback by bob", refuse=RuntimeError):
        assert "rollback by bob" in Path(lock).read_text()
    assert Path(lock).read_text() == ""


def test_a_patient_caller_gets_the_lock_when_it_is_released(tmp_path: Path) -> None:
    lock = str(tmp_path / "rollout.lock")
    held = utils["saltdjango_files.held"]
    taken, release = threading.Event(), threading.Event()

    def holder() -> None:
        with held(lock, "rollout.join of app3", refuse=RuntimeError):
            taken.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    taken.wait(5)
    threading.Timer(0.3, release.set).start()
    seen = []
    with held(lock, "orch.deploy", refuse=RuntimeError, patience=lambda other: seen.append(other) or 5.0):
        assert "orch.deploy" in Path(lock).read_text()
    thread.join()
    assert seen and seen[0].startswith("rollout.join of app3")


def test_env_file_round_trips_awkward_values() -> None:
    values = {"A": 'it\'s $HOME `x` "q"', "B": "", "C": "plain", "D": "a b\tc"}
    assert utils["saltdjango_env.parse"](utils["saltdjango_env.render"](values)) == values


def test_env_file_refuses_bad_names() -> None:
    with pytest.raises(ValueError, match="not a valid variable name"):
        utils["saltdjango_env.render"]({"BAD NAME": "x"})


def test_env_diff_names_keys_only() -> None:
    diff = utils["saltdjango_env.diff"]({"A": "secret-old", "B": "same", "C": "gone"}, {"A": "secret-new", "B": "same", "D": "new"})
    assert diff == {"added": ["D"], "changed": ["A"], "removed": ["C"]}
    assert "secret" not in repr(diff)


def test_a_second_deploy_operation_is_refused_naming_the_holder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(utils.module("saltdjango_files"), "LOCK_DIR", str(tmp_path / "run"))
    lock = utils["saltdjango_files.deploy_lock"]
    with lock("demo", "release", ValueError):
        with pytest.raises(ValueError, match=r"another deploy operation of demo is running: release by \S+ \(pid \d+\) since "):
            with lock("demo", "rollback", ValueError):
                pass
        with lock("other", "release", ValueError):
            pass
    with lock("demo", "rollback", ValueError):
        pass
    path = tmp_path / "run" / "demo.deploy.lock"
    assert path.read_text() == "" and oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "run").stat().st_mode & 0o777) == "0o700"


class FakeClient:
    """The two things of a LocalClient that ``collect`` uses: the event stream and the job cache."""

    def __init__(self, events: list[dict], cache: dict) -> None:
        self.opts = {"master_job_cache": "local_cache"}
        self.events, self.cache = events, cache
        self.returners = {"local_cache.get_jid": lambda jid: self.cache}

    def get_cli_event_returns(self, jid: str, minions: list[str], interval: float, tgt: object, tgt_type: str, **kw: object) -> object:
        yield from self.events


def test_a_return_the_events_lost_is_read_from_the_job_cache() -> None:
    pub = {"jid": "20261129040000000000", "minions": ["app1", "app2", "db"]}
    events = [{"app1": {"ret": True, "retcode": 0}}, {"app2": {"failed": True}}, None]
    cache = {"app2": {"return": {"x": 1}, "retcode": 1}, "other": {"return": "not targeted"}}
    got = utils["saltdjango_jobs.collect"](FakeClient(events, cache), pub, ["app1", "app2", "db"], "list", 30)
    assert got == {"app1": {"ret": True, "retcode": 0}, "app2": {"ret": {"x": 1}, "retcode": 1}}
