"""What `vagrant up` runs in its VMs, in two lab hosts: the master's and the
db server's provisioners, replayed through Vagrant's own Salt provisioner
(tests/lab/vagrant.py) on the lab's bridge instead of the Vagrantfile's
network. No hypervisor here: this is how far the Vagrant cluster is tested
(the converge and orch.deploy that follow are tests/cluster's)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tests.lab import vagrant
from tests.lab.hosts import REPO_ROOT, Host, Network

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(600)]

TOPOLOGY = yaml.safe_load((REPO_ROOT / "pillar" / "topology.yaml").read_text())
PIN = next(line.split("==")[1] for line in (REPO_ROOT / "requirements" / "salt.txt").read_text().splitlines() if line.startswith("salt=="))


@pytest.fixture(scope="module")
def vms(lab_base: Path, lab_workdir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    net = Network()
    # The Vagrantfile's addresses on the lab's bridge: the master .10, db (first in the topology) .11.
    env = vagrant.vagrant_env(tmp_path_factory.mktemp("vagrant"), SALT_DJANGO_NETWORK=f"{net.subnet}.0/24")
    master = Host("master", lab_base, lab_workdir / "vagrant-master", net=net, ip=f"{net.subnet}.10")
    db = Host("db", lab_base, lab_workdir / "vagrant-db", net=net, ip=f"{net.subnet}.11")
    try:
        for host in (master, db):
            host.start()
            host.copy_in(REPO_ROOT, "/srv/salt-django")  # the Vagrantfile's rsync folder
        started = time.monotonic()
        with ThreadPoolExecutor(2) as pool:
            runs = {
                "db": pool.submit(vagrant.provision, "db", vagrant.in_host(db), env),
                "master": pool.submit(vagrant.provision, "master", vagrant.in_host(master), env, ["secrets", "salt"]),
            }
            asked = {name: run.result() for name, run in runs.items()}
        print(f"\n[lab timing] vagrant provision of master + db: {time.monotonic() - started:.1f}s", flush=True)
        yield {"master": master, "db": db, "env": env, "net": net, "asked": asked}
    finally:
        for host in (master, db):
            host.destroy()
        net.destroy()


def _bootstrap_args(asked: list[dict[str, str]]) -> list[list[str]]:
    """The arguments of each run of the bootstrap script Vagrant uploaded."""
    return [r["cmd"].split("/tmp/bootstrap_salt.sh", 1)[1].split() for r in asked if r.get("cmd", "").startswith("/tmp/bootstrap_salt.sh")]


def _ping(master: Host, minion: str, timeout: float = 90) -> object:
    deadline = time.monotonic() + timeout
    while True:
        out = master.run(f"salt --out=json --static -t 10 {minion} test.ping", check=False, timeout=60).stdout
        answered = json.loads(out or "{}").get(minion)
        if answered is True or time.monotonic() > deadline:
            return answered
        time.sleep(2)


def test_the_master_holds_the_minions_keys_and_commands_them_without_an_accept(vms: dict) -> None:
    master, db = vms["master"], vms["db"]
    [args] = _bootstrap_args(vms["asked"]["db"])
    assert args[-2:] == ["stable", PIN] and "-c" in args, args  # installed, with the uploaded keys
    keys = json.loads(master.run("salt-key --out=json -L").stdout)
    assert sorted(keys["minions"]) == sorted(TOPOLOGY["hosts"]) and keys["minions_pre"] == [], keys
    assert _ping(master, "db") is True
    assert master.run("salt-master --version").stdout.split()[:2] == ["salt-master", PIN]
    assert db.run("salt-call --version").stdout.split()[:2] == ["salt-call", PIN]
    for host, unit in ((master, "salt-master"), (db, "salt-minion")):
        assert host.run(f"systemctl is-enabled {unit}; systemctl is-active {unit}").stdout.split() == ["enabled", "active"]


def test_the_master_is_configured_from_conf_as_the_readme_says(vms: dict) -> None:
    master, db, net = vms["master"], vms["db"], vms["net"]
    link = master.run("readlink /etc/salt/master.d/salt-django.conf").stdout.strip()
    assert link == "/srv/salt-django/conf/master.d/salt-django.conf"
    assert master.run("stat -c %a /etc/salt-django/pillar /etc/salt-django/pillar/local.sls").stdout.split() == ["700", "600"]
    local = yaml.safe_load(master.run("cat /etc/salt-django/pillar/local.sls").stdout)
    assert len(local["projects"]["demo"]["secrets"]["SECRET_KEY"]) >= 50
    # conf/master.d's pillar roots and the topology's roles; the servers' network from the master's config
    pillar = json.loads(master.run("salt --out=json --static db pillar.items").stdout)["db"]
    assert pillar["salt_django"]["roles"] == ["db"] and pillar["topology"]["private_network"] == f"{net.subnet}.0/24"
    assert "SECRET_KEY" not in json.dumps(pillar), "db's pillar holds no app secret"
    minion = yaml.safe_load(db.run("cat /etc/salt/minion").stdout)
    assert minion == {"id": "db", "master": master.ip}
    assert db.run("cat /etc/salt/minion.d/salt-django.conf").stdout == (REPO_ROOT / "conf/minion.d/salt-django.conf").read_text()
    # the master refuses an unknown key, as conf/master.d says
    assert "auto_accept: False" in master.run("cat /etc/salt/master.d/salt-django.conf").stdout


def test_vagrant_provision_again_only_configures_and_keeps_the_keys(vms: dict) -> None:
    master, db = vms["master"], vms["db"]
    before = db.run("sha256sum /etc/salt/pki/minion/minion.pem").stdout
    asked = vagrant.provision("db", vagrant.in_host(db), vms["env"])
    [args] = _bootstrap_args(asked)
    assert "-C" in args, args  # Vagrant found Salt: configure only
    assert db.run("sha256sum /etc/salt/pki/minion/minion.pem").stdout == before
    assert _ping(master, "db") is True


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ("stable 3006.9", f"Salt 3006.9 was asked for, requirements/salt.txt pins salt=={PIN}"),
        ("git develop", "install type 'git' is not supported"),
        ("-Z stable", "option -Z of bootstrap-salt.sh is not supported"),
        ("-x python2 stable", "-x python2: Salt runs on the OS's python3"),
    ],
)
def test_the_installer_refuses_what_it_would_not_install(vms: dict, args: str, says: str) -> None:
    refused = vms["db"].run(f"/tmp/bootstrap_salt.sh {args}", check=False)
    assert refused.returncode == 2 and says in refused.stderr, refused
