"""The master configuration salt-django ships (conf/master.d/), read the way
Salt reads it: who may command the cluster."""

from __future__ import annotations

import salt.utils.minions
import yaml

from tests.unit.conftest import ROOT

MASTER = yaml.safe_load((ROOT / "conf" / "master.d" / "salt-django.conf").read_text())
API = yaml.safe_load((ROOT / "conf" / "master.d" / "salt-django-api.conf.example").read_text())


def test_keys_need_an_operator_and_only_root_commands() -> None:
    assert MASTER["auto_accept"] is False
    assert MASTER["publisher_acl"] == {}
    # no minion reaches another minion's functions or the master's runners (rollout.deploy)
    assert MASTER["peer"] == {} and MASTER["peer_run"] == {}


def test_the_db_server_may_push_its_backup_copies() -> None:
    assert MASTER["file_recv"] is True and MASTER["file_recv_max_size"] >= 1024


def test_ci_may_request_a_rollout_and_nothing_else() -> None:
    [(backend, users)] = API["external_auth"].items()
    assert backend == "pam" and list(users) == ["ci"]
    checker = salt.utils.minions.CkMinions({"cachedir": "/nonexistent", "minion_data_cache": False})
    auth_list = users["ci"]
    assert checker.runner_check(auth_list, "rollout.request", {"kwarg": {"release": "v2"}}) is True
    for other in ("rollout.deploy", "rollout.rollback", "state.orchestrate", "jobs.list_jobs", "rollout.requested"):
        assert checker.runner_check(auth_list, other, {}) is not True, other
    assert checker.wheel_check(auth_list, "key.accept", {}) is not True
