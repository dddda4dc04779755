"""Which secrets each server's pillar holds: ``pillar/role_secrets.sls`` and
``pillar/topology.sls`` rendered as Salt's py renderer runs them, over
secret files written the way an operator and salt-django write them."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.unit.conftest import ROOT, Utils, load

saltdjango = load("_modules/saltdjango.py")
utils = Utils()

DB, REDIS, KEY = "db-password-0123456789", "redis-password-0123456789", "k" * 10 + "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH"
PEM = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
TOPOLOGY = yaml.safe_load((ROOT / "pillar" / "topology.yaml").read_text())


def _render(sls: str, minion: str, roots: list[Path], role: str = "master", **opts: Any) -> dict[str, Any]:
    """``pillar/<sls>`` as Salt's py renderer runs it for ``minion`` (``opts``: more of the master's config)."""
    path = str(ROOT / "pillar" / sls)
    loader = importlib.machinery.SourceFileLoader("salt_django_test_pillar_" + sls.split(".")[0], path)
    spec = importlib.util.spec_from_file_location(loader.name, path, loader=loader)
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.__opts__ = {"id": minion, "__role": role, "pillar_roots": {"base": [str(ROOT / "pillar"), *map(str, roots)]}, **opts}
    module.saltenv = "base"
    return module.run()


@pytest.fixture
def secret_roots(tmp_path: Path) -> list[Path]:
    etc, var = tmp_path / "etc", tmp_path / "var"
    etc.mkdir()
    var.mkdir()
    local = {
        "projects": {
            "demo": {
                "repo": "git://example/demo",
                "secrets": {"SECRET_KEY": KEY, "SENTRY_DSN": "https://key@sentry.example/1", "DB_PASSWORD": DB, "BACKUP_KEY": "b" * 64},
                "tls": {"certificate": "CERT", "private_key": PEM},
            }
        },
        "rollout": {"drain_timeout": 10},
    }
    (etc / "local.sls").write_text(yaml.safe_dump(local))
    generated = {"DB_PASSWORD": "generated-lost", "REDIS_PASSWORD": REDIS}
    (var / "generated.sls").write_text(yaml.safe_dump({"projects": {"demo": {"secrets": generated}}}))
    return [etc, var]


@pytest.mark.parametrize(
    ("minion", "secrets", "tls"),
    [
        ("app1", {"SECRET_KEY", "SENTRY_DSN", "DB_PASSWORD", "REDIS_PASSWORD"}, False),
        ("db", {"DB_PASSWORD", "BACKUP_KEY"}, False),
        ("cache", {"REDIS_PASSWORD"}, False),
        ("lb", set(), True),
        ("stranger", set(), False),
    ],
)
def test_each_role_gets_only_the_secrets_it_needs(secret_roots: list[Path], minion: str, secrets: set[str], tls: bool) -> None:
    view = _render("role_secrets.sls", minion, secret_roots)
    demo = view["projects"]["demo"]
    assert set(demo.get("secrets", {})) == secrets
    assert ("tls" in demo) is tls
    # what is not a secret passes to every server; local.sls wins over generated.sls
    assert demo["repo"] == "git://example/demo" and view["rollout"] == {"drain_timeout": 10}
    assert demo.get("secrets", {}).get("DB_PASSWORD", DB) == DB


def test_a_single_server_gets_everything_but_its_app_not_the_backup_key(secret_roots: list[Path]) -> None:
    view = _render("role_secrets.sls", "anything", secret_roots, role="minion")
    assert set(view["projects"]["demo"]["secrets"]) == {"SECRET_KEY", "SENTRY_DSN", "DB_PASSWORD", "REDIS_PASSWORD", "BACKUP_KEY"}
    assert view["projects"]["demo"]["tls"]["private_key"] == PEM
    assert set(saltdjango.secret_variables("demo", view)) == {"DJANGO_SECRET_KEY", "DATABASE_PASSWORD", "REDIS_PASSWORD", "SENTRY_DSN"}


def test_topology_pillar_gives_roles_by_minion_id(secret_roots: list[Path]) -> None:
    assert _render("topology.sls", "app1", secret_roots)["salt_django"]["roles"] == TOPOLOGY["hosts"]["app1"]["roles"]
    assert _render("topology.sls", "stranger", secret_roots)["salt_django"]["roles"] == []
    single = _render("topology.sls", "host", secret_roots, role="minion")
    assert single["salt_django"]["roles"] == ["db", "cache", "app", "worker", "web"] and "mine_functions" not in single
    mine = _render("topology.sls", "db", secret_roots)["mine_functions"]["salt_django_address"]
    assert mine == [{"mine_function": "network.ip_addrs"}, {"type": "private"}]


def test_a_master_names_the_private_network_of_servers_behind_one_nat(secret_roots: list[Path]) -> None:
    """The Vagrant cluster's master: every VM also holds the provider's NAT address."""
    seen = _render("topology.sls", "db", secret_roots, salt_django_private_network="192.168.56.0/24")
    assert seen["topology"]["private_network"] == "192.168.56.0/24"
    assert seen["mine_functions"]["salt_django_address"] == [{"mine_function": "network.ip_addrs"}, {"cidr": "192.168.56.0/24"}]


def test_a_secret_file_that_is_not_plain_yaml_is_named(tmp_path: Path) -> None:
    (tmp_path / "local.sls").write_text("{% set x = 1 %}\nprojects: [\n")
    with pytest.raises(ValueError, match=r"local\.sls: not plain YAML"):
        utils["saltdjango_topology.read_secret_files"]([str(tmp_path)])


def test_validation_asks_each_role_only_for_its_secrets() -> None:
    topology = {"hosts": {"db": {"roles": ["db"]}, "cache": {"roles": ["cache"]}, "app1": {"roles": ["app"]}, "app2": {"roles": ["app"]}}}

    def pillar(roles: list[str], secrets: dict[str, str]) -> dict[str, Any]:
        return {"topology": topology, "salt_django": {"roles": roles}, "projects": {"demo": {"domains": ["d.example"], "secrets": secrets}}}

    assert saltdjango.validate(pillar(["db"], {"DB_PASSWORD": DB}), minion="db") == []
    assert saltdjango.validate(pillar(["cache"], {"REDIS_PASSWORD": REDIS}), minion="cache") == []
    errors = saltdjango.validate(pillar(["db"], {}), minion="db")
    assert errors and all("projects:demo:secrets:DB_PASSWORD" in e for e in errors), errors
    app = saltdjango.validate(pillar(["app"], {"DB_PASSWORD": DB}), minion="app1")
    assert any("REDIS_PASSWORD" in e for e in app) and any("SECRET_KEY is missing" in e for e in app), app
