"""`make cluster` / `make cluster-down`: the Vagrant cluster for people
without a hypervisor. The servers of pillar/topology.yaml as lab hosts on a
bridge of this machine and a salt-master configured from conf/, as the
cluster tests make them (tests/cluster/helpers.py: ``cluster_args``,
``apply_all``, ``orchestrate``), converged and deployed as the README's
cluster section says.

``up`` starts a keeper process that owns the cluster (the lab's session
lock: while it lives, no other lab session takes the cluster for a crashed
one's leftovers) and returns once the site answers through the load
balancer, printing its address. ``down`` asks the keeper to remove
everything and waits for it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.cluster.helpers import DOMAIN, TOPOLOGY, apply_all, cluster_args, failed, orchestrate
from tests.cluster.traffic import get
from tests.lab.cluster import Cluster
from tests.lab.hosts import REPO_ROOT, cleanup_stale, missing_requirements

#: Short: the master's unix sockets live below it (< 108 bytes).
HOME = Path(os.environ.get("SALT_DJANGO_CLUSTER", "/var/tmp/salt-django-cluster"))
STATE = HOME / "cluster.json"
LOG = HOME / "cluster.log"
UP_TIMEOUT = 2400


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _keeper_alive(state: dict) -> bool:
    try:
        os.kill(state["pid"], 0)
    except (ProcessLookupError, KeyError):
        return False
    return True


def _state() -> dict:
    try:
        return json.loads(STATE.read_text())
    except (OSError, ValueError):
        return {}


def _address(state: dict) -> str:
    return (
        f"the site: https://{DOMAIN}/ on the load balancer {state['lb']} (from this machine:\n"
        f"  curl -k --resolve {DOMAIN}:443:{state['lb']} https://{DOMAIN}/ )\n"
        f"the master: salt -c {state['conf_dir']} '*' test.ping, with {sys.executable.rsplit('/', 1)[0]}/ on PATH\n"
        "remove it: make cluster-down"
    )


def keep() -> None:
    """The keeper: bring the cluster up, deploy, report, then hold it until SIGTERM."""
    # A flag, not an exception: the cluster is always taken down whole, by
    # down() below, between two steps. (Not a blocked signal either: the
    # salt-master and every other child would inherit the mask.)
    stop: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: stop.append(number))

    def step(message: str) -> None:
        if stop:
            raise RuntimeError(f"stopped by signal {stop[0]}")
        _say(message)

    started = time.monotonic()
    cleanup_stale()
    # A fresh cluster: the disks and secrets of an earlier one, if any, go.
    operator = HOME / "operator"
    for old in (operator, HOME / "lab"):
        shutil.rmtree(old, ignore_errors=True)
    args = cluster_args(operator)
    # The whole topology, as `vagrant up` starts it (the cluster tests keep app3 for a join).
    args["hosts"] = list(TOPOLOGY)
    local = operator / "etc" / "pillar" / "local.sls"
    local.write_text(yaml.safe_dump({"projects": {"demo": {"secrets": {"SECRET_KEY": secrets.token_urlsafe(50)}}}}))
    local.chmod(0o600)
    cluster = Cluster(HOME / "lab", **args)
    try:
        step(f"starting a salt-master and {len(args['hosts'])} hosts: {', '.join(args['hosts'])}")
        cluster.up()
        step(f"cluster up in {cluster.timings['up']:.0f}s; salt-run rollout.init_secrets")
        cluster.run_runner("rollout.init_secrets", check=True)
        step("salt '*' state.apply (converges every server; several minutes)")
        ret, seconds = apply_all(cluster, list(cluster.hosts))
        if failed(ret) or set(ret) != set(cluster.hosts):
            raise RuntimeError(f"state.apply failed: {json.dumps(failed(ret), indent=1)[:4000]}")
        step(f"converged in {seconds:.0f}s; salt-run state.orchestrate orch.deploy")
        deployed, seconds = orchestrate(cluster, "orch.deploy")
        if deployed["result"] is not True:
            raise RuntimeError(f"orch.deploy failed: {json.dumps(deployed, indent=1)[:4000]}")
        lb = cluster.hosts["lb"].ip
        answer = get(lb, DOMAIN)
        if answer.status != 200:
            raise RuntimeError(f"the load balancer does not serve {DOMAIN}: {answer}")
        state = {"pid": os.getpid(), "status": "ready", "lb": lb, "conf_dir": str(cluster.conf_dir)}
        state["seconds"] = round(time.monotonic() - started)
        STATE.write_text(json.dumps(state))
        _say(f"deployed in {seconds:.0f}s; {DOMAIN} answers 200 through {lb} ({state['seconds']}s in all)")
        while not stop:
            time.sleep(1)
        _say("removing the cluster")
    except (RuntimeError, OSError) as exc:  # LabError is a RuntimeError
        STATE.write_text(json.dumps({"pid": os.getpid(), "status": "failed", "error": str(exc)}))
        _say(f"FAILED: {exc}")
    finally:
        cluster.down()
        _say("cluster removed")
        if _state().get("status") == "ready":
            STATE.unlink()


def up() -> int:
    state = _state()
    if state.get("status") == "ready" and _keeper_alive(state):
        print(f"the cluster is up already\n{_address(state)}")
        return 0
    missing = missing_requirements()
    if missing:
        print(f"make cluster needs {', '.join(missing)}", file=sys.stderr)
        return 1
    HOME.mkdir(parents=True, exist_ok=True)
    STATE.unlink(missing_ok=True)
    with open(LOG, "w") as log:
        keeper = subprocess.Popen(
            [sys.executable, "-m", "tests.lab.local_cluster", "keep"],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    shown = 0
    deadline = time.monotonic() + UP_TIMEOUT
    while True:
        lines = LOG.read_text(errors="replace").splitlines()
        for line in lines[shown:]:
            if line.startswith("["):
                print(line, flush=True)
        shown = len(lines)
        state = _state()
        if state.get("status") == "ready":
            print(_address(state))
            return 0
        if state.get("status") == "failed" or keeper.poll() is not None or time.monotonic() > deadline:
            keeper.terminate()
            keeper.wait(300)
            print(f"make cluster failed: {state.get('error', 'see the log')}\nlog: {LOG}", file=sys.stderr)
            return 1
        time.sleep(2)


def down() -> int:
    state = _state()
    if state and _keeper_alive(state):
        os.kill(state["pid"], signal.SIGTERM)
        deadline = time.monotonic() + 300
        while _keeper_alive(state) and time.monotonic() < deadline:
            time.sleep(0.5)
        if _keeper_alive(state):
            print(f"the cluster's keeper (pid {state['pid']}) did not stop in 300s; see {LOG}", file=sys.stderr)
            return 1
    # a keeper killed hard leaves its hosts: its session lock is free now
    cleanup_stale()
    STATE.unlink(missing_ok=True)
    print("no cluster left")
    return 0


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) == 2 else ""
    if command == "keep":
        keep()
    elif command in ("up", "down"):
        sys.exit(up() if command == "up" else down())
    else:
        sys.exit("usage: python -m tests.lab.local_cluster up|down")
