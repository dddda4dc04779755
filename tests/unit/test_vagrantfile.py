"""The Vagrantfile as Vagrant (Debian's vagrant package) reads it: its
machines are pillar/topology.yaml's plus a master, and its provisioning is
what the README's cluster section says. `vagrant up` itself needs a
hypervisor and is not run here; tests/integration/test_vagrant_provisioning.py
replays the provisioning in lab hosts."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.lab import vagrant
from tests.unit.conftest import ROOT

TOPOLOGY = yaml.safe_load((ROOT / "pillar" / "topology.yaml").read_text())
SERVERS = list(TOPOLOGY["hosts"])
PIN = next(line.split("==")[1] for line in (ROOT / "requirements" / "salt.txt").read_text().splitlines() if line.startswith("salt=="))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if not shutil.which("vagrant"):
        pytest.fail("the Vagrantfile tests need Debian's vagrant package (make test installs it)")
    return vagrant.vagrant_env(tmp_path_factory.mktemp("vagrant"))


@pytest.fixture(scope="module")
def machines(env: dict[str, str]) -> dict[str, Any]:
    return vagrant.machines(env)


def test_vagrant_validates_the_vagrantfile(env: dict[str, str]) -> None:
    done = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Vagrantfile validated successfully." in done.stdout, done.stdout + done.stderr


def test_the_machines_are_the_topology_and_a_master_last(machines: dict[str, Any]) -> None:
    assert list(machines) == [*SERVERS, "master"]
    addresses = [ipaddress.ip_address(m["ip"]) for m in machines.values()]
    assert len(set(addresses)) == len(addresses) and all(a in ipaddress.ip_network("192.168.56.0/24") for a in addresses)
    assert all(m["hostname"] == name for name, m in machines.items())


def test_the_vagrantfile_follows_the_topology_file_it_reads(env: dict[str, str], tmp_path: Path) -> None:
    """Another topology beside the same Vagrantfile: other machines."""
    for rel in ("Vagrantfile", "requirements/salt.txt", "scripts/bootstrap.sh"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    other = {"hosts": {"db": {"roles": ["db"]}, "web1": {"roles": ["app", "web"]}}, "private_network": None}
    (tmp_path / "pillar").mkdir()
    (tmp_path / "pillar" / "topology.yaml").write_text(yaml.safe_dump(other))
    seen = vagrant.machines(env, root=tmp_path)
    assert list(seen) == ["db", "web1", "master"]
    [deploy] = [p for p in seen["master"]["provisioners"] if p["name"] == "salt"]
    assert deploy["seed_master"] == ["db", "web1"]


def test_every_machine_installs_the_pinned_salt_with_the_repository_installer(machines: dict[str, Any]) -> None:
    for name, machine in machines.items():
        [install] = [p for p in machine["provisioners"] if p["name"] == "salt"]
        assert (install["bootstrap_script"], install["install_type"], install["version"]) == ("scripts/bootstrap.sh", "stable", PIN), name
    master = machines["master"]["ip"]
    for name in SERVERS:
        [install] = machines[name]["provisioners"]
        assert install["minion_key"] and json.loads(install["minion_json_config"]) == {"id": name, "master": master}


def _commands(machine: str, env: dict[str, str]) -> list[str]:
    """The guest commands of ``machine``'s provisioning, an upload as ``upload <file> <to>``
    (a shell provisioner's script as ``upload script: <its text>``)."""
    recorder, scripts = vagrant.Recorder(), []

    def answer(request: dict[str, str]) -> tuple[bool, str]:
        if request["op"] == "upload" and request["dst"] == "/tmp/vagrant-shell":
            scripts.append(Path(request["src"]).read_text())
        return recorder(request)

    shown, commands = iter(scripts), []
    for request in vagrant.provision(machine, answer, env):
        if request["op"] != "upload":
            commands.append(request["cmd"])
        elif request["dst"] == "/tmp/vagrant-shell":
            commands.append(f"upload script: {next(shown)}")
        else:
            commands.append(f"upload {Path(request['src']).name} {request['dst']}")
    return commands


def test_a_server_gets_its_keys_and_the_pinned_salt(env: dict[str, str], machines: dict[str, Any]) -> None:
    commands = _commands("db", env)
    assert commands[:3] == ["upload db.pem /tmp/minion.pem", "chmod u+w /tmp/minion.pem", "upload db.pub /tmp/minion.pub"]
    config = json.dumps({"id": "db", "master": machines["master"]["ip"]}, separators=(",", ":"))
    assert commands[-1].split() == ["/tmp/bootstrap_salt.sh", "-j", f"'{config}'", "-F", "-c", "/tmp", "stable", PIN]


def test_the_master_seeds_every_key_converges_then_deploys(env: dict[str, str]) -> None:
    """The README's order: the operator's secrets, the master from conf/ with
    every minion's key accepted, rollout.init_secrets once every minion is up,
    state.apply, orch.deploy, then the reactor."""
    commands = _commands("master", env)
    seeded = [c.split()[1].removesuffix(".pub") for c in commands if c.startswith("upload") and "/tmp/minion-seed-keys/" in c]
    assert seeded == SERVERS
    steps = []
    for command in commands:
        if command.startswith("upload script:"):
            for marker, step in (("local.sls", "secrets"), ("rollout.init_secrets", "init_secrets"), ("reactor", "reactor")):
                if marker in command:
                    steps.append(step)
        elif command.startswith("chmod +x '/tmp/vagrant-shell' && /tmp/vagrant-shell") and command.split()[5:]:
            steps.append(f"  for {' '.join(command.split()[5:])}")
        elif command.startswith("/tmp/bootstrap_salt.sh"):
            steps.append(" ".join(command.split()[-9:]))
        elif command.startswith(("salt ", "salt-run ")):
            steps.append(command.strip())
    assert steps == [
        "secrets",
        f"-F -c /tmp -k /tmp/minion-seed-keys -M -N stable {PIN}",
        "init_secrets",
        f"  for {' '.join(SERVERS)}",
        "salt '*' saltutil.sync_all",
        "salt '*' state.highstate --verbose --log-level=warning --no-color",
        "salt '*' saltutil.sync_all",
        "salt-run -l info state.orchestrate orch.deploy",
        "reactor",
    ]
