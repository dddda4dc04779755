"""No call can hang on a frozen minion: with app1's salt-minion stopped
(SIGSTOP: its TCP connection stays up, nothing answers), a lab call and a
rollout runner call that need it fail within their bounds, naming the call
and the minion; after SIGCONT the cluster answers again.

A dedicated master + one host: the runner needs only its topology and a
project in the master's pillar, nothing deployed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import yaml

from tests.lab.cluster import Cluster
from tests.lab.hosts import REPO_ROOT, LabError

MINION = "app1"
PILLAR = {"topology": {"hosts": {MINION: {"roles": ["app"]}}}, "projects": {"demo": {}}}
#: The lab call's own bounds: it waits this long for the return, then asks
#: the minion for the job (find_job) and waits that long for the answer.
CALL_TIMEOUT, GATHER = 5, 2
#: The runner's ping (_runners/rollout.py: _Cluster.ping) and the lab master's gather_job_timeout.
RUNNER_PING, MASTER_GATHER = 10, 5
#: Process start-up (salt-run loads its modules on 2 cores) and scheduling.
MARGIN = 20

# Cluster up (a cold image + minion layer build included) and the test itself
# take a few minutes; the suite's 20 minutes would be a long wait for a hang.
pytestmark = pytest.mark.timeout(900)


def timing(what: str, seconds: float) -> None:
    print(f"\n[lab timing] {what}: {seconds:.1f}s", flush=True)


@pytest.fixture(scope="module")
def cluster(make_cluster: Callable[..., Cluster], tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    pillar = tmp_path_factory.mktemp("pillar")
    (pillar / "top.sls").write_text("base:\n  '*':\n    - lab\n")
    (pillar / "lab.sls").write_text(yaml.safe_dump(PILLAR))
    state_dir = tmp_path_factory.mktemp("state")
    return make_cluster(
        [MINION],
        [tmp_path_factory.mktemp("file_roots")],
        [pillar],
        {
            "runner_dirs": [str(REPO_ROOT / "_runners")],
            "utils_dirs": [str(REPO_ROOT / "_utils")],
            "salt_django_state_dir": str(state_dir),
        },
    )


def minion_pids(cluster: Cluster) -> list[str]:
    """PIDs (in the host) of salt-minion.service: its main process and its children."""
    host = cluster.hosts[MINION]
    main = host.run("systemctl show -p MainPID --value salt-minion.service").stdout.strip()
    assert main not in ("", "0"), "salt-minion.service is not running"
    children = host.run(["ps", "-o", "pid=", "--ppid", main], check=False).stdout.split()
    return [main, *children]


@pytest.fixture
def frozen(cluster: Cluster) -> Iterator[list[str]]:
    """app1's salt-minion stopped with SIGSTOP (by PID, inside the host); SIGCONT afterwards, whatever happened."""
    pids = minion_pids(cluster)
    cluster.hosts[MINION].run(["kill", "-STOP", *pids])
    try:
        yield pids
    finally:
        cluster.hosts[MINION].run(["kill", "-CONT", *pids])


def test_calls_to_a_frozen_minion_fail_in_bounded_time_naming_call_and_minion(cluster: Cluster, frozen: list[str]) -> None:
    print(cluster.minion_processes(MINION))

    started = time.monotonic()
    with pytest.raises(LabError) as failed:
        cluster.salt([MINION], "test.ping", tgt_type="list", timeout=CALL_TIMEOUT, gather_job_timeout=GATHER, check=True)
    took = time.monotonic() - started
    timing("lab call to the frozen minion fails", took)
    print(failed.value)
    assert "test.ping" in str(failed.value) and MINION in str(failed.value)
    assert "state T (stopped)" in str(failed.value), "the error shows the minion's processes stopped"
    assert took < CALL_TIMEOUT + GATHER + MARGIN

    started = time.monotonic()
    plan = cluster.run_runner("rollout.plan", timeout=120)
    took = time.monotonic() - started
    timing("salt-run rollout.plan with the frozen minion fails", took)
    print(plan)
    assert plan["result"] is False and plan["server"] == MINION, plan
    assert cluster.last_runner.returncode == 1, "salt-run fails, for scripts and CI"
    assert plan["comment"] == f"plan on {MINION}: no app server answers test.ping", plan
    assert took < RUNNER_PING + MASTER_GATHER + MARGIN

    started = time.monotonic()
    status = cluster.run_runner("rollout.status", timeout=120)
    took = time.monotonic() - started
    timing("salt-run rollout.status with the frozen minion reports it", took)
    # A status report goes on without the silent server, and names it.
    assert status["result"] is True and status["silent"] == [MINION], status
    assert took < RUNNER_PING + MASTER_GATHER + MARGIN


def test_after_sigcont_the_minion_answers_again(cluster: Cluster) -> None:
    """Runs after the frozen test (its fixture sent SIGCONT): nothing of it is left."""
    deadline = time.monotonic() + 60
    while True:
        try:
            assert cluster.salt([MINION], "test.ping", tgt_type="list", timeout=5, gather_job_timeout=2, check=True) == {MINION: True}
            break
        except LabError:
            if time.monotonic() > deadline:
                raise
    status = cluster.run_runner("rollout.status", timeout=120)
    # The runner's ping reaches app1 again: it is no longer silent, and the
    # status asks it for its slots (which fail: nothing is deployed there).
    assert status.get("silent") != [MINION], status
    assert MINION in status["comment"] and "no answer" not in status["comment"], status
