"""The state tree renders for each kind of server, without root and without
applying anything (tests/unit/render_states.py), and what it renders is what
tests/unit/rendered/ says: a Jinja mistake shows here in seconds, not in the
nspawn tests. After a deliberate change to the states, refresh the expected
files with ``SALT_DJANGO_RENDERED=update make unit`` and review their diff."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.unit.conftest import ROOT

EXPECTED = Path(__file__).parent / "rendered"
KEY = "k" * 10 + "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH"
SECRETS = {
    "projects": {
        "demo": {
            "secrets": {
                "SECRET_KEY": KEY,
                "DB_PASSWORD": "renderDbPassword0123",
                "REDIS_PASSWORD": "renderRedisPassword0123",
                "S3_ACCESS_KEY": "renderS3AccessKey0123",
                "S3_SECRET_KEY": "renderS3SecretKey0123",
            }
        }
    }
}
HOSTS = {
    "db": {"roles": ["db"]},
    "cache": {"roles": ["cache", "storage"]},
    "app1": {"roles": ["app", "web"]},
    "app2": {"roles": ["app", "web"]},
    "lb": {"roles": ["lb"]},
}
SINGLE = "common,firewall,host,postgres,redis,supervisor,app,schedule,nginx,tls"
#: Whatever this machine's PID 1, schedules render as cron jobs.
CRON = {"schedule": {"backend": "cron"}}
ACME = {"directory": "https://acme.example.org/directory", "email": "ops@example.org"}
#: name -> (SLS, pillar on top of the repository's: a cluster's topology and roles)
SERVERS = {
    "single": (SINGLE, {"salt_django": CRON}),
    **{
        f"cluster-{role}": (mods, {"topology": {"hosts": HOSTS, "private_network": None}, "salt_django": {"roles": roles, **CRON}})
        for role, mods, roles in (
            ("db", "common,firewall,host,postgres,schedule", ["db"]),
            ("app", "common,firewall,host,supervisor,app,schedule,nginx", ["app", "web"]),
            ("lb", "common,firewall,host,haproxy", ["lb"]),
        )
    },
    # Uploads on the cluster's storage server: its SeaweedFS, and the app servers' side of it.
    **{
        f"cluster-{role}-s3": (
            mods,
            {
                "topology": {"hosts": HOSTS, "private_network": None},
                "salt_django": {"roles": roles, **CRON},
                "projects": {"demo": {"media": media}},
            },
        )
        for role, mods, roles, media in (
            ("storage", "common,firewall,host,redis,storage", ["cache", "storage"], {"backend": "s3"}),
            ("app", "common,supervisor,app,schedule,nginx", ["app", "web"], {"backend": "s3"}),
            (
                "app-external",
                "common,supervisor,app,schedule,nginx",
                ["app", "web"],
                {"backend": "s3", "endpoint": "https://s3.example.org"},
            ),
        )
    },
    # Certificates from an ACME CA: Nginx answers the challenge on one server, HAProxy routes it to certbot on the lb.
    "single-acme": (SINGLE, {"salt_django": CRON, "projects": {"demo": {"tls": {"acme": ACME}}}}),
    "cluster-lb-acme": (
        "common,firewall,host,haproxy",
        {
            "topology": {"hosts": HOSTS, "private_network": None},
            "salt_django": {"roles": ["lb"], **CRON},
            "projects": {"demo": {"tls": {"acme": ACME}}},
        },
    ),
}


def _config(tmp: Path, tree: Path) -> Path:
    """A masterless minion config whose every path is under ``tmp``: no root needed."""
    (tmp / "secrets").mkdir(parents=True, exist_ok=True)
    (tmp / "secrets" / "local.sls").write_text(yaml.safe_dump(SECRETS))
    config = {
        "id": "render",
        "file_client": "local",
        "features": {"x509_v2": True},
        "file_roots": {"base": [str(tree)]},
        "pillar_roots": {"base": [str(ROOT / "pillar"), str(tmp / "secrets")]},
        **{key: str(tmp / key) for key in ("cachedir", "pki_dir", "sock_dir")},
        "log_file": str(tmp / "minion.log"),
    }
    path = tmp / "minion"
    path.write_text(yaml.safe_dump(config))
    return path


def render(tmp: Path, mods: str, pillar: dict | None = None, tree: Path = ROOT / "salt") -> dict:
    argv = [sys.executable, str(Path(__file__).parent / "render_states.py"), str(_config(tmp, tree)), mods]
    proc = subprocess.run([*argv, *([json.dumps(pillar)] if pillar else [])], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_each_kind_of_server_renders_what_is_expected(tmp_path: Path, server: str) -> None:
    mods, pillar = SERVERS[server]
    found = render(tmp_path, mods, pillar)
    assert not found["errors"], found["errors"]
    expected = EXPECTED / f"{server}.json"
    if os.environ.get("SALT_DJANGO_RENDERED") == "update":
        expected.parent.mkdir(exist_ok=True)
        expected.write_text(json.dumps({k: found[k] for k in ("states", "templates")}, indent=1, sort_keys=True) + "\n")
    assert {k: found[k] for k in ("states", "templates")} == json.loads(expected.read_text())


def test_a_jinja_mistake_is_caught_in_an_sls_and_in_a_template(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "salt", tree, symlinks=False)
    template = tree / "nginx" / "files" / "site.conf.jinja"
    template.write_text(template.read_text().replace("{{ project.name }}_app {", "{{ project.name }_app {", 1))
    found = render(tmp_path / "one", SINGLE, tree=tree)
    assert [e for e in found["errors"] if "salt://nginx/files/site.conf.jinja" in e], found["errors"]
    sls = tree / "redis" / "init.sls"
    sls.write_text("{%- for name in %}\n" + sls.read_text())
    found = render(tmp_path / "two", SINGLE, tree=tree)
    assert any("redis" in str(e) for e in found["errors"]), found["errors"]
