"""The firewall: which ports each role opens, to whom (``_utils/saltdjango_firewall.py``),
and how the table is replaced (``_states/salt_django_firewall.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.unit.conftest import Utils, load

rules = Utils()
firewall_state = load("_states/salt_django_firewall.py")

PORTS = {"http": 80, "https": 443, "web": 8080, "db": 5432, "cache": 6379, "storage": 8333}
PEERS = {"lb": ["10.0.0.9"], "app": ["10.0.0.3", "10.0.0.2"], "worker": ["fd00::5"]}


def openings(roles: list[str], cluster: bool = True, peers: dict | None = None, ssh: list[str] | None = None) -> dict[int, Any]:
    found = rules["saltdjango_firewall.openings"](roles, cluster, PORTS, PEERS if peers is None else peers, [22, 2222], ssh)
    return {rule["port"]: "anyone" if rule["anyone"] else rule["v4"] + rule["v6"] for rule in found}


def test_a_single_server_opens_ssh_and_the_web() -> None:
    assert openings(["db", "cache", "app", "worker", "web"], cluster=False) == {22: "anyone", 2222: "anyone", 80: "anyone", 443: "anyone"}


def test_each_role_opens_its_port_to_the_servers_that_use_it() -> None:
    users = ["10.0.0.2", "10.0.0.3", "fd00::5"]
    assert openings(["lb"]) == {22: "anyone", 2222: "anyone", 80: "anyone", 443: "anyone"}
    assert openings(["app", "web"]) == {22: "anyone", 2222: "anyone", 8080: ["10.0.0.9"]}
    assert openings(["db"]) == {22: "anyone", 2222: "anyone", 5432: users}
    assert openings(["cache", "storage"]) == {22: "anyone", 2222: "anyone", 6379: users, 8333: users}
    assert openings(["worker"]) == {22: "anyone", 2222: "anyone"}


def test_web_servers_face_the_public_without_a_load_balancer_and_nobody_is_admitted_by_default() -> None:
    assert openings(["app", "web"], peers={"app": ["10.0.0.2"]}) == {22: "anyone", 2222: "anyone", 80: "anyone", 443: "anyone"}
    assert openings(["db"], peers={"lb": ["10.0.0.9"]}) == {22: "anyone", 2222: "anyone"}, "no app server published yet: nobody"


def test_ssh_sources_narrow_ssh_only() -> None:
    found = openings(["db"], ssh=["192.0.2.0/24", "2001:db8::1"])
    assert found[22] == found[2222] == ["192.0.2.0/24", "2001:db8::1"]


@pytest.mark.parametrize(
    ("firewall", "fragment"),
    [
        ("on", "firewall: must be a mapping"),
        ({"enabled": "yes"}, "firewall:enabled: must be true or false"),
        ({"ssh_sources": "10.0.0.0/8"}, "firewall:ssh_sources: must be a list"),
        ({"ssh_sources": ["10.0.0.0/8", "office"]}, "firewall:ssh_sources:1: 'office' is not an address or network"),
        ({"ports": [80]}, "firewall:ports: unknown key"),
    ],
)
def test_bad_firewall_pillar_names_the_key(firewall: object, fragment: str) -> None:
    assert any(fragment in problem for problem in rules["saltdjango_firewall.problems"](firewall))


class Nft:
    """``nft`` as cmd.run_all runs it: ``-c`` refuses rulesets containing "broken"."""

    def __init__(self, loaded: bool) -> None:
        self.loaded = loaded
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], **_: object) -> dict[str, Any]:
        self.calls.append(argv[1:])
        if argv[1:3] == ["list", "table"]:
            return {"retcode": 0 if self.loaded else 1, "stdout": "", "stderr": ""}
        if argv[1] == "-c" and "broken" in Path(argv[3]).read_text():
            return {"retcode": 1, "stdout": "", "stderr": "Error: syntax error, unexpected broken"}
        if argv[1] == "-f":
            self.loaded = True
        return {"retcode": 0, "stdout": "", "stderr": ""}


@pytest.fixture
def nft(monkeypatch: pytest.MonkeyPatch) -> Nft:
    fake = Nft(loaded=False)
    monkeypatch.setattr(firewall_state.os.path, "exists", lambda p: p == firewall_state.NFT or Path(p).exists())
    return fake


def apply(nft: Nft, path: Path, ruleset: str, test: bool = False) -> dict[str, Any]:
    salt = {
        "cmd.run_all": nft,
        "cp.get_file_str": lambda source, saltenv: ruleset,
        "file.apply_template_on_contents": lambda contents, template, context, defaults, saltenv: contents,
    }
    firewall_state.__salt__ = salt
    firewall_state.__opts__ = {"test": test}
    return firewall_state.applied(str(path), "salt://firewall/files/salt-django.nft.jinja", "salt_django")


def test_a_ruleset_is_checked_applied_then_written_and_a_second_run_changes_nothing(nft: Nft, tmp_path: Path) -> None:
    path = tmp_path / "salt-django.nft"
    predicted = apply(nft, path, "table inet salt_django {}\n", test=True)
    assert predicted["result"] is None and set(predicted["changes"]) == {"ruleset", "loaded"} and not path.exists()
    done = apply(nft, path, "table inet salt_django {}\n")
    assert done["result"] is True and set(done["changes"]) == set(predicted["changes"])
    assert [call[0] for call in nft.calls if call[0] in ("-c", "-f")] == ["-c", "-f"]
    assert path.read_text() == "table inet salt_django {}\n" and oct(path.stat().st_mode & 0o777) == "0o600"
    assert apply(nft, path, "table inet salt_django {}\n", test=True)["changes"] == {}
    assert apply(nft, path, "table inet salt_django {}\n")["changes"] == {}


def test_a_refused_ruleset_fails_naming_nfts_error_and_leaves_the_live_one(nft: Nft, tmp_path: Path) -> None:
    path = tmp_path / "salt-django.nft"
    apply(nft, path, "table inet salt_django {}\n")
    applied_before = [c for c in nft.calls if c[0] == "-f"]
    refused = apply(nft, path, "table inet salt_django { broken }\n")
    assert refused["result"] is False and "unexpected broken" in refused["comment"] and "previous one stays live" in refused["comment"]
    assert [c for c in nft.calls if c[0] == "-f"] == applied_before, "nothing applied"
    assert path.read_text() == "table inet salt_django {}\n" and list(tmp_path.iterdir()) == [path], "no leftover"


def test_a_table_gone_from_the_kernel_is_loaded_again(nft: Nft, tmp_path: Path) -> None:
    path = tmp_path / "salt-django.nft"
    apply(nft, path, "table inet salt_django {}\n")
    nft.loaded = False
    again = apply(nft, path, "table inet salt_django {}\n")
    assert again["result"] is True and again["changes"]["loaded"] == {"old": False, "new": True}


saltdjango = load("_modules/saltdjango.py")


@pytest.mark.parametrize(
    ("host", "fragment"),
    [
        ({"unattended_upgrades": "yes"}, "host:unattended_upgrades: must be true or false"),
        ({"ssh_hardening": 1}, "host:ssh_hardening: must be true or false"),
        ({"ntp_servers": "pool.ntp.org"}, "host:ntp_servers: must be a list"),
        ({"ntp_servers": ["ntp.example.org", "bad server"]}, "host:ntp_servers: must be a list of host names or addresses"),
    ],
)
def test_bad_host_pillar_names_the_key(host: object, fragment: str) -> None:
    assert any(fragment in problem for problem in saltdjango._host_problems(host))
    assert saltdjango._host_problems({"ntp_servers": ["192.0.2.1", "ntp.example.org"], "ssh_hardening": True}) == []
