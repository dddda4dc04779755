"""The cluster lab works: a salt-master on this machine drives minion hosts
``db``, ``app1``, ``app2`` on a private bridge (tests/lab/cluster.py).

Kept fast on purpose: tiny states from a temporary file_roots, no packages.
Timings are printed (run with -s): cluster up (warm), reboot to minion ready.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.lab.cluster import Cluster

HOSTS = ["db", "app1", "app2"]

STATES = {
    "top.sls": "base:\n  '*':\n    - lab\n",
    "lab.sls": (
        "/etc/lab-id:\n  file.managed:\n    - contents: \"{{ grains['id'] }} {{ pillar['lab']['greeting'] }}\"\n    - mode: '0644'\n"
    ),
    "orch/ping.sls": "ping-all:\n  salt.function:\n    - name: test.ping\n    - tgt: '*'\n",
}
PILLAR = {
    "top.sls": "base:\n  '*':\n    - lab\n",
    "lab.sls": "lab:\n  greeting: hello\n",
}


def timing(what: str, seconds: float) -> None:
    print(f"\n[lab timing] {what}: {seconds:.1f}s", flush=True)


def _write_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def _until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``check`` until true; return seconds waited."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"{what}: not after {timeout:.0f}s")
        time.sleep(0.5)
    return time.monotonic() - t0


@pytest.fixture(scope="module")
def cluster(make_cluster: Callable[..., Cluster], tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    file_roots = _write_tree(tmp_path_factory.mktemp("file_roots"), STATES)
    pillar_roots = _write_tree(tmp_path_factory.mktemp("pillar_roots"), PILLAR)
    cluster = make_cluster(HOSTS, [file_roots], [pillar_roots])
    timing(f"cluster up, warm layer (master + {len(HOSTS)} hosts, minions connected)", cluster.timings["up"])
    return cluster


def _answers(cluster: Cluster, name: str, timeout: float = 3) -> bool:
    """test.ping; a short gather_job_timeout keeps the negative case quick."""
    return cluster.salt(name, "test.ping", timeout=timeout, gather_job_timeout=1).get(name) is True


def test_ping_all(cluster: Cluster) -> None:
    assert cluster.salt("*", "test.ping") == dict.fromkeys(HOSTS, True)


def test_state_apply_on_all(cluster: Cluster) -> None:
    t0 = time.monotonic()
    ret = cluster.salt("*", "state.apply", timeout=120)
    timing("state.apply on 3 minions", time.monotonic() - t0)
    assert set(ret) == set(HOSTS)
    for name, states in ret.items():
        assert isinstance(states, dict), (name, states)
        failed = {sid: s["comment"] for sid, s in states.items() if s["result"] is not True}
        assert not failed, (name, failed)
        assert cluster.hosts[name].path("/etc/lab-id").read_text() == f"{name} hello\n"
    again = cluster.salt("*", "state.apply", timeout=120)
    assert all(not s["changes"] for states in again.values() for s in states.values()), again


def test_own_address_and_names(cluster: Cluster) -> None:
    ipv4 = cluster.salt("*", "grains.get", ["ipv4"])
    for name in HOSTS:
        own = cluster.hosts[name].ip
        assert own in ipv4[name], (name, ipv4[name])
        assert not {h.ip for h in cluster.hosts.values() if h.name != name} & set(ipv4[name])
    resolved = cluster.salt("app1", "cmd.run", ["getent hosts salt db app1"])["app1"].split("\n")
    assert [line.split()[0] for line in resolved] == [cluster.master_ip, cluster.hosts["db"].ip, cluster.hosts["app1"].ip]
    db = cluster.hosts["db"]
    db.run("echo from-db > /srv/lab.txt && systemd-run --unit=lab-http /usr/bin/python3 -m http.server -d /srv 8000")
    try:
        fetch = "curl -sS --retry 20 --retry-connrefused --retry-delay 0 --max-time 5 http://db:8000/lab.txt"
        assert cluster.salt(["app1", "app2"], "cmd.run", [fetch], tgt_type="list") == {"app1": "from-db", "app2": "from-db"}
    finally:
        db.run("systemctl stop lab-http", check=False)


def test_orchestrate_runner(cluster: Cluster) -> None:
    assert sorted(cluster.run_runner("manage.up", check=True)) == sorted(HOSTS)
    ret = cluster.run_runner("state.orchestrate", "orch.ping", check=True)
    assert ret["retcode"] == 0, ret
    [step] = ret["data"]["master"].values()
    assert step["result"] is True and step["changes"]["ret"] == dict.fromkeys(HOSTS, True), step


def test_cut_and_heal(cluster: Cluster) -> None:
    cluster.cut("app2")
    try:
        assert not _answers(cluster, "app2")
        assert cluster.hosts["app1"].run("ping -c1 -W1 app2", check=False).returncode != 0
    finally:
        cluster.heal("app2")
    waited = _until(lambda: _answers(cluster, "app2", timeout=5), 60, "app2 answers after heal")
    timing("minion answers again after heal", waited)
    assert cluster.hosts["app1"].run("ping -c1 -W1 app2", check=False).returncode == 0


def test_freeze_and_thaw(cluster: Cluster) -> None:
    cluster.freeze("app1")
    try:
        assert not _answers(cluster, "app1")
    finally:
        cluster.freeze("app1", on=False)
    _until(lambda: _answers(cluster, "app1", timeout=5), 30, "app1 answers after thaw")


def test_power_cut_and_boot(cluster: Cluster) -> None:
    db = cluster.hosts["db"]
    db.run("echo survived > /var/lib/lab-disk")
    timing("power cut", cluster.power_cut("db"))
    assert not db.running
    assert not _answers(cluster, "db", timeout=2)
    seconds = cluster.boot("db")  # returns once db's salt/minion/db/start event arrived
    timing("reboot to minion ready (start event)", seconds)
    assert cluster.salt("db", "cmd.run", ["cat /var/lib/lab-disk /etc/lab-id"])["db"] == "survived\ndb hello"
    assert db.run("systemctl is-active salt-minion").stdout.strip() == "active"


def test_add_host_joins_without_key_step(cluster: Cluster) -> None:
    t0 = time.monotonic()
    app3 = cluster.add_host("app3")
    timing("add_host app3 to minion ready", time.monotonic() - t0)
    assert cluster.salt("app3", "test.ping") == {"app3": True}
    pending = cluster.conf_dir / "pki" / "master" / "minions_pre"
    assert not pending.exists() or not any(pending.iterdir())
    ret = cluster.salt("app3", "state.apply", timeout=120)["app3"]
    assert all(s["result"] is True for s in ret.values()), ret
    assert app3.path("/etc/lab-id").read_text() == "app3 hello\n"
    # the others learnt its name, it knows theirs
    assert cluster.hosts["db"].run("ping -c1 -W2 app3", check=False).returncode == 0
    assert app3.run("ping -c1 -W2 db", check=False).returncode == 0
