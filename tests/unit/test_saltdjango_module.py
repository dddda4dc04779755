"""Pillar validation and env-file rules of ``_modules/saltdjango.py``."""

from __future__ import annotations

from unittest.mock import patch

import pytest
import yaml

from tests.unit.conftest import FILESERVER, ROOT, Utils, load

saltdjango = load("_modules/saltdjango.py")

STRONG_KEY = "k" * 10 + "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH"
GOOD_PASSWORD = "x8Jq2LmN4pRt6VwY"


def project(**overrides: object) -> dict:
    base = {"domains": ["demo.example.org"], "secrets": {"DB_PASSWORD": GOOD_PASSWORD, "REDIS_PASSWORD": GOOD_PASSWORD}}
    base.update(overrides)
    return base


@pytest.fixture
def configure_loader_modules() -> dict:
    salt = dict(FILESERVER)
    return {
        saltdjango: {
            "__pillar__": {},
            "__grains__": {"num_cpus": 4},
            "__salt__": salt,
            "__opts__": {"id": "app1"},
            "__utils__": Utils(),
            "__context__": {},
        }
    }


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("short", "needs at least 50"),
        ("a" * 60, "fewer than 5 unique"),
        ("django-insecure-" + STRONG_KEY, "django-insecure-"),
        ("", "is empty"),
        (None, "is empty"),
    ],
)
def test_weak_secret_keys_are_named(value: object, fragment: str) -> None:
    assert any(fragment in problem for problem in saltdjango.secret_key_problems(value))


def test_strong_secret_key_passes() -> None:
    assert saltdjango.secret_key_problems(STRONG_KEY) == []
    assert saltdjango.secret_key_problems(saltdjango.generate_secret()) == []


def test_missing_db_password_names_the_pillar_key() -> None:
    errors = saltdjango.validate({"projects": {"demo": project(secrets={"REDIS_PASSWORD": GOOD_PASSWORD})}})
    assert errors == ["projects:demo:secrets:DB_PASSWORD is missing"]


def test_weak_secret_key_in_pillar_names_the_key() -> None:
    secrets = {"DB_PASSWORD": GOOD_PASSWORD, "REDIS_PASSWORD": GOOD_PASSWORD, "SECRET_KEY": "changeme"}
    errors = saltdjango.validate({"projects": {"demo": project(secrets=secrets)}})
    assert len(errors) == 1 and errors[0].startswith("projects:demo:secrets:SECRET_KEY has 8 characters")


def test_secret_key_may_be_absent_on_a_single_server() -> None:
    assert saltdjango.validate({"projects": {"demo": project()}}) == []


@pytest.mark.parametrize(
    ("domains", "fragment"),
    [
        ([], "projects:demo:domains: must list at least one domain"),
        (None, "projects:demo:domains: must list at least one domain"),
        (["https://demo.example.org"], "projects:demo:domains:0: 'https://demo.example.org' is not a valid host name"),
        (["Demo.example.org"], "must be lower case"),
        ([""], "projects:demo:domains:0: '' is empty"),
    ],
)
def test_bad_domains_are_refused(domains: object, fragment: str) -> None:
    errors = saltdjango.validate({"projects": {"demo": project(domains=domains)}})
    assert any(fragment in e for e in errors), errors


def test_unknown_role_is_named() -> None:
    errors = saltdjango.validate({"salt_django": {"roles": ["app", "databse"]}, "projects": {"demo": project()}})
    assert errors == ["salt_django:roles: unknown role(s) databse; known: app, cache, db, lb, storage, web, worker"]


def test_no_project_is_an_error() -> None:
    assert saltdjango.validate({}) == ["projects: must define at least one project"]


def test_settings_opt_out_needs_a_module() -> None:
    errors = saltdjango.validate({"projects": {"demo": project(settings={"wrapper": False})}})
    assert errors == ["projects:demo:settings:module: must name the project's production settings when settings:wrapper is false"]


@pytest.mark.parametrize(
    ("static", "fragment"),
    [
        ({"keep": {"releases": -1, "days": 7}}, "projects:demo:static:keep:releases: must be a number, 0 or more"),
        ({"keep": {"releases": 3, "days": "a week"}}, "projects:demo:static:keep:days: must be a number, 0 or more"),
        ({"keep": {"releases": True}}, "projects:demo:static:keep:releases: must be a number, 0 or more"),
        ({"keep": [3, 7]}, "projects:demo:static:keep: must be a mapping with releases and days"),
    ],
)
def test_a_bad_static_retention_window_names_its_key(static: object, fragment: str) -> None:
    assert fragment in saltdjango.validate({"projects": {"demo": project(static=static)}})


@pytest.mark.parametrize("field", ["name", "user"])
def test_a_database_name_that_is_not_a_plain_identifier_is_refused(field: str) -> None:
    errors = saltdjango.validate({"projects": {"demo": project(database={field: "demo'; DROP TABLE x; --"})}})
    assert len(errors) == 1 and errors[0].startswith(f"projects:demo:database:{field}: "), errors


def test_a_static_retention_window_of_numbers_passes() -> None:
    assert saltdjango.validate({"projects": {"demo": project(static={"keep": {"releases": 0, "days": 0.5}})}}) == []


def test_project_config_fills_defaults_and_drops_secrets() -> None:
    defaults = {
        "settings": {"wrapper": True, "base": None, "module": None},
        "database": {"name": None, "user": None},
        "app_server": {"workers": None},
    }
    cfg = saltdjango.projects(defaults)
    assert cfg == {}
    cfg = saltdjango._project_config("shop", project(), defaults, KINDS, cpus=2)
    assert cfg["user"] == "shop" and cfg["wsgi"] == "shop.wsgi:application"
    assert cfg["settings"] == {"wrapper": True, "base": "shop.settings", "module": "salt_django_settings"}
    assert cfg["database"] == {"name": "shop", "user": "shop"}
    assert cfg["app_server"]["workers"] == 5
    assert "secrets" not in cfg


APP_SERVER_DEFAULTS = {"kind": "gunicorn", "version": None, "workers": None, "timeout": 30, "graceful_timeout": 30}
KINDS = yaml.safe_load((ROOT / "salt" / "app" / "defaults.yaml").read_text())["app_servers"]
GUNICORN = {"version": "27.0.1", "package": "gunicorn", "module": "gunicorn", "protocol": "http", "websockets": False}


def test_the_deprecated_gunicorn_key_is_read_below_app_server_and_named_as_deprecated() -> None:
    legacy = project(gunicorn={"timeout": 45, "workers": 2}, app_server={"workers": 2})
    cfg = saltdjango._project_config("shop", legacy, {"settings": {}, "database": {}, "app_server": APP_SERVER_DEFAULTS}, KINDS, cpus=2)
    port = saltdjango.__utils__["saltdjango_app_server.default_port"]("shop")
    assert cfg["app_server"] == {**APP_SERVER_DEFAULTS, **GUNICORN, "timeout": 45, "workers": 2, "port": port, "debian": []}
    assert "gunicorn" not in cfg, "templates read app_server only"
    assert saltdjango.validate({"projects": {"shop": legacy}}) == []
    assert saltdjango.deprecations({"projects": {"shop": legacy, "blog": project()}}) == [
        "projects:shop:gunicorn is deprecated: move its keys (graceful_timeout, timeout, workers) under projects:shop:app_server"
    ]


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"app_server": {"workers": 0}}, "projects:demo:app_server:workers: must be a whole number from 1 to 256"),
        ({"app_server": {"timeout": "30s"}}, "projects:demo:app_server:timeout: must be a whole number from 1 to 3600"),
        (
            {"app_server": {"threads": 4}},
            "app_server:threads: unknown key; known: drain_timeout, graceful_timeout, kind, max_requests, port, timeout, version, workers",
        ),
        (
            {"app_server": {"kind": "waitress"}},
            "projects:demo:app_server:kind: 'waitress' is not supported; supported: gunicorn, mod_wsgi, uvicorn, uwsgi",
        ),
        ({"app_server": {"kind": "mod_wsgi", "port": 80}}, "projects:demo:app_server:port: must be a whole number from 1024 to 65534"),
        (
            {"app_server": {"kind": "mod_wsgi", "version": "4.9.4"}},
            "projects:demo:app_server:version: kind mod_wsgi comes from Debian (apache2-bin, libapache2-mod-wsgi-py3), not PyPI:"
            " remove the version",
        ),
        ({"gunicorn": {"graceful_timeout": True}}, "projects:demo:gunicorn:graceful_timeout: must be a whole number from 1 to 3600"),
        ({"gunicorn": {"kind": "gunicorn"}}, "projects:demo:gunicorn:kind: unknown key; known: graceful_timeout, timeout, workers"),
        ({"gunicorn": 4}, "projects:demo:gunicorn: must be a mapping (better: move its keys under projects:demo:app_server)"),
        (
            {"gunicorn": {"timeout": 45}, "app_server": {"timeout": 60}},
            "projects:demo:gunicorn:timeout: 45 contradicts projects:demo:app_server:timeout: 60; keep only app_server's",
        ),
    ],
)
def test_bad_app_server_numbers_are_named_and_render_with_the_default(overrides: dict, error: str) -> None:
    [found] = saltdjango.validate({"projects": {"demo": project(**overrides)}})
    assert found.endswith(error) and found.startswith("projects:demo:"), found
    cfg = saltdjango._project_config(
        "demo", project(**overrides), {"settings": {}, "database": {}, "app_server": APP_SERVER_DEFAULTS}, KINDS
    )
    assert all(isinstance(cfg["app_server"][field], int) for field in ("workers", "timeout", "graceful_timeout")), cfg["app_server"]


def test_a_kind_brings_its_package_protocol_and_websockets_and_a_pin_of_the_projects_own() -> None:
    defaults = {"settings": {}, "database": {}, "app_server": APP_SERVER_DEFAULTS}
    uvicorn = saltdjango._project_config("shop", project(app_server={"kind": "uvicorn"}), defaults, KINDS)
    assert uvicorn["asgi"] == "shop.asgi:application" and uvicorn["wsgi"] == "shop.wsgi:application"
    assert {k: uvicorn["app_server"][k] for k in ("package", "version", "module", "protocol", "websockets")} == {
        "package": "uvicorn-worker",
        "version": KINDS["uvicorn"]["version"],
        "module": "uvicorn_worker",
        "protocol": "http",
        "websockets": True,
    }
    uwsgi = saltdjango._project_config("shop", project(app_server={"kind": "uwsgi", "version": "2.0.28"}), defaults, KINDS)
    assert uwsgi["app_server"]["protocol"] == "uwsgi" and uwsgi["app_server"]["version"] == "2.0.28"


@pytest.mark.parametrize(
    ("kinds", "error"),
    [
        ({}, "app_servers: must map each kind to its package, version, module and protocol"),
        (
            {"waitress": {"package": "waitress", "version": "3", "module": "waitress", "websockets": False}},
            "app_servers:waitress:protocol: missing",
        ),
        (
            {"x": {"package": "x", "version": "1", "module": "x", "protocol": "fastcgi", "websockets": False}},
            "app_servers:x:protocol: 'fastcgi' is not one of http, http-port, uwsgi",
        ),
    ],
)
def test_a_kind_of_defaults_yaml_that_lacks_a_field_is_named(kinds: dict, error: str) -> None:
    assert saltdjango.__utils__["saltdjango_app_server.kind_problems"](kinds) == [error]
    assert saltdjango.__utils__["saltdjango_app_server.kind_problems"](KINDS) == []


def test_mod_wsgi_comes_from_debian_on_a_port_derived_from_the_name_unless_pillar_sets_one() -> None:
    defaults = {"settings": {}, "database": {}, "app_server": APP_SERVER_DEFAULTS}
    server = saltdjango._project_config("shop", project(app_server={"kind": "mod_wsgi"}), defaults, KINDS)["app_server"]
    assert {k: server[k] for k in ("package", "version", "module", "protocol", "debian")} == {
        "package": None,
        "version": None,
        "module": None,
        "protocol": "http-port",
        "debian": ["apache2-bin", "libapache2-mod-wsgi-py3"],
    }
    assert 20000 <= server["port"] <= 29998 and server["port"] % 2 == 0
    again = saltdjango._project_config("shop", project(app_server={"kind": "mod_wsgi"}), defaults, KINDS)["app_server"]
    assert again["port"] == server["port"], "the same name, the same port: Nginx and Apache agree across applies"
    pinned = saltdjango._project_config("shop", project(app_server={"kind": "mod_wsgi", "port": 8100}), defaults, KINDS)
    assert pinned["app_server"]["port"] == 8100


def test_two_projects_on_the_same_ports_are_named_and_other_kinds_take_none() -> None:
    shop, blog = project(app_server={"kind": "mod_wsgi", "port": 8100}), project(app_server={"kind": "mod_wsgi", "port": 8101})
    errors = saltdjango.validate({"projects": {"shop": shop, "blog": blog}})
    assert errors == ["projects:shop:app_server:port: 8100 and 8101 overlap the ports of blog: set a free port (each project takes two)"]
    unix = project(app_server={"kind": "gunicorn", "port": 8100})
    assert saltdjango.validate({"projects": {"shop": project(app_server={"kind": "mod_wsgi", "port": 8100}), "blog": unix}}) == []


def test_a_port_change_while_mod_wsgi_serves_on_the_old_port_is_refused_on_the_server(configure_loader_modules: dict) -> None:
    pillar = {"projects": {"shop": project(app_server={"kind": "mod_wsgi", "port": 24200})}}
    served = {"app_slots.served_port": lambda name: {"slot": "b", "port": 24101}}
    with patch.dict(saltdjango.__pillar__, pillar), patch.dict(saltdjango.__salt__, served):
        assert saltdjango.validate() == [
            "projects:shop:app_server:port: 24200 would cut shop off: it serves on 127.0.0.1:24101 (slot b) until its next"
            " switch. Keep port 24100 in this apply; to move it, serve with another kind first"
        ]
        assert saltdjango.validate(pillar) == [], "only the server itself knows what it serves"
    pillar["projects"]["shop"]["app_server"]["port"] = 24100
    with patch.dict(saltdjango.__pillar__, pillar), patch.dict(saltdjango.__salt__, served):
        assert saltdjango.validate() == []
    pillar["projects"]["shop"]["app_server"] = {"kind": "gunicorn", "port": 24200}
    with patch.dict(saltdjango.__pillar__, pillar), patch.dict(saltdjango.__salt__, served):
        assert saltdjango.validate() != [], "leaving mod_wsgi with another port cuts it off too"


def test_project_config_opt_out_uses_the_named_module() -> None:
    defaults = {"settings": {"wrapper": True, "base": None, "module": None}, "database": {}, "app_server": {}}
    cfg = saltdjango._project_config("shop", project(settings={"wrapper": False, "module": "shop.settings.prod"}), defaults, KINDS)
    assert cfg["settings"]["module"] == "shop.settings.prod"


APP = {"roles": ["app", "web"]}
TOPOLOGY = {"hosts": {"db": {"roles": ["db"]}, "cache": {"roles": ["cache"]}, "app1": APP, "app2": APP}}


def cluster_pillar(**project_overrides: object) -> dict:
    return {"topology": TOPOLOGY, "salt_django": {"roles": ["app", "web"]}, "projects": {"demo": project(**project_overrides)}}


def test_members_by_role_are_sorted_minion_ids() -> None:
    assert saltdjango.members("app", {"topology": TOPOLOGY}) == ["app1", "app2"]
    assert saltdjango.members(["db", "cache"], {"topology": TOPOLOGY}) == ["cache", "db"]
    assert saltdjango.members("lb", {"topology": {}}) == []


def test_several_app_servers_need_one_secret_key() -> None:
    errors = saltdjango.validate(cluster_pillar(), minion="app1")
    assert errors == ["projects:demo:secrets:SECRET_KEY is missing: every app server must sign with the same key"]
    secrets = {"DB_PASSWORD": GOOD_PASSWORD, "REDIS_PASSWORD": GOOD_PASSWORD, "SECRET_KEY": STRONG_KEY}
    assert saltdjango.validate(cluster_pillar(secrets=secrets), minion="app1") == []


def test_unlisted_minion_and_missing_roles_are_named() -> None:
    pillar = {"topology": {"hosts": {"app1": {"roles": ["app", "wizard"]}}}, "projects": {"demo": project()}}
    errors = saltdjango.validate(pillar, minion="app9")
    assert "topology:hosts:app1:roles: unknown role(s) wizard" in errors
    assert "topology:hosts: minion app9 is not listed, so it has no role (pillar/topology.yaml)" in errors
    assert "topology:hosts: no server has the role db" in errors


def _mine(found: dict[str, list[str]]) -> object:
    return lambda tgt, fun, tgt_type: {m: found[m] for m in tgt if m in found}


def test_addresses_come_from_the_mine_and_skip_silent_servers() -> None:
    with (
        patch.dict(saltdjango.__pillar__, {"topology": TOPOLOGY}),
        patch.dict(saltdjango.__salt__, {"mine.get": _mine({"app1": ["10.0.0.13"], "app2": []})}),
    ):
        assert saltdjango.addresses("app") == {"app1": "10.0.0.13"}


def test_cluster_projects_use_the_db_and_cache_addresses_unless_pillar_names_a_host() -> None:
    raw = {"demo": {"domains": ["demo.example.org"]}, "other": {"domains": ["o.example.org"], "database": {"host": "db.example"}}}
    defaults = {"database": {"host": "127.0.0.1", "port": 5432}, "cache": {"host": "127.0.0.1"}, "settings": {}, "app_server": {}}
    mine = _mine({"db": ["10.0.0.11"], "cache": ["10.0.0.12"]})
    with patch.dict(saltdjango.__pillar__, {"topology": TOPOLOGY, "projects": raw}), patch.dict(saltdjango.__salt__, {"mine.get": mine}):
        configs = saltdjango.projects(defaults)
    assert configs["demo"]["database"]["host"] == "10.0.0.11" and configs["demo"]["cache"]["host"] == "10.0.0.12"
    assert configs["other"]["database"]["host"] == "db.example"


def test_app_server_without_db_address_in_the_mine_is_refused() -> None:
    secrets = {"DB_PASSWORD": GOOD_PASSWORD, "REDIS_PASSWORD": GOOD_PASSWORD, "SECRET_KEY": STRONG_KEY}
    with (
        patch.dict(saltdjango.__pillar__, cluster_pillar(secrets=secrets)),
        patch.dict(saltdjango.__salt__, {"mine.get": _mine({"cache": ["10.0.0.12"]})}),
    ):
        errors = saltdjango.validate()
    assert errors == [
        "topology:hosts: no db server (db) has published its address in the Salt mine: is its minion up? (salt db mine.update)"
    ]


FORGED = "10.0.0.5/32 scram-sha-256\nhost all all 0.0.0.0/0 trust\n#"


@pytest.mark.parametrize(
    ("value", "network", "reason"),
    [
        ([FORGED], None, "which is not an IP address"),
        ("10.0.0.5", None, None),
        ({"addr": "10.0.0.5"}, None, "which is not an IP address"),
        ([], None, "which is not an IP address"),
        (["8.8.8.8"], None, "not a private (RFC 1918 or ULA) address"),
        (["127.0.0.1"], None, "not a private (RFC 1918 or ULA) address"),
        (["169.254.1.1"], None, "not a private (RFC 1918 or ULA) address"),
        (["10.0.0.5 "], None, "which is not an IP address"),
        (["192.168.1.9"], "10.77.0.0/16", "outside topology:private_network 10.77.0.0/16"),
        (["10.77.3.4"], "10.77.0.0/16", None),
        (["fd00::5"], None, None),
    ],
)
def test_a_published_address_is_trusted_only_when_it_is_one_private_ip(value: object, network: str | None, reason: str | None) -> None:
    accepted, refused = Utils()["saltdjango_topology.trusted_addresses"]({"app1": value, "db": ["10.0.0.2"]}, network)
    if reason is None:
        assert "app1" in accepted and "app1" not in refused
    else:
        assert "app1" not in accepted and reason in refused["app1"], refused


def test_an_address_two_servers_published_is_refused_for_both() -> None:
    accepted, refused = Utils()["saltdjango_topology.trusted_addresses"]({"app1": ["10.0.0.2"], "db": ["10.0.0.2"], "lb": ["10.0.0.9"]})
    assert accepted == {"lb": "10.0.0.9"}
    assert refused == {"app1": "published 10.0.0.2, which db published too", "db": "published 10.0.0.2, which app1 published too"}


def test_a_forged_mine_value_never_reaches_a_config(configure_loader_modules: dict) -> None:
    pillar = {"topology": {"hosts": {"db": {"roles": ["db"]}, "app1": {"roles": ["app"]}, "app2": {"roles": ["app"]}}}}
    mine = {"db": ["10.0.0.2"], "app1": [FORGED], "app2": ["10.0.0.4"]}
    salt = {"mine.get": lambda names, fun, tgt_type: {n: mine[n] for n in names}}
    with patch.dict(saltdjango.__pillar__, pillar), patch.dict(saltdjango.__salt__, salt):
        assert saltdjango.addresses("app") == {"app2": "10.0.0.4"}
        assert list(saltdjango.refused_addresses()) == ["app1"]


@pytest.mark.parametrize(
    ("workers", "fragment"),
    [
        ("celery", "workers: must be a mapping"),
        ({"kind": "dramatiq"}, "workers:kind: 'dramatiq' is not supported; supported: celery, rq"),
        ({"kind": "celery"}, "workers:app: must name the project's Celery application"),
        ({"kind": "celery", "app": "demo.celery:app; rm -rf /"}, "workers:app: must name"),
        ({"kind": "rq", "queues": ["default", "high prio"]}, "workers:queues: must list queue names"),
        ({"kind": "rq", "concurrency": 0}, "workers:concurrency: must be a whole number from 1 to 256"),
        ({"kind": "rq", "max_task_seconds": True}, "workers:max_task_seconds: must be a whole number"),
        ({"kind": "celery", "app": "demo", "cron": "demo.cron"}, "workers:cron: is RQ's periodic jobs module"),
        ({"kind": "rq", "concurency": 2}, "workers:concurency: unknown key"),
    ],
)
def test_a_bad_workers_declaration_names_its_key(workers: object, fragment: str) -> None:
    errors = saltdjango.validate({"projects": {"demo": project(workers=workers)}})
    assert any(error.startswith("projects:demo:") and fragment in error for error in errors), errors


def test_workers_need_a_worker_server_in_a_cluster() -> None:
    secrets = {"DB_PASSWORD": GOOD_PASSWORD, "REDIS_PASSWORD": GOOD_PASSWORD, "SECRET_KEY": STRONG_KEY}
    pillar = cluster_pillar(secrets=secrets, workers={"kind": "celery", "app": "demo.celery:app"})
    assert saltdjango.validate(pillar, minion="app1") == [
        "projects:demo:workers: no server has the role worker (topology:hosts), so nothing would run them"
    ]


WORKER_DEFAULTS = {"kind": "celery", "app": None, "queues": [], "concurrency": None, "max_task_seconds": 300, "beat": True, "cron": None}


def _runs(minion: str, roles: list[str], workers: dict | None, hosts: dict | None = None) -> dict:
    defaults = {"database": {}, "cache": {}, "settings": {}, "app_server": {}, "workers": WORKER_DEFAULTS}
    raw = {"demo": {"domains": ["demo.example.org"], **({"workers": workers} if workers else {})}}
    pillar = {"projects": raw, "salt_django": {"roles": roles}, "topology": {"hosts": hosts or {}}}
    mine = {"mine.get": _mine({})}
    with patch.dict(saltdjango.__opts__, {"id": minion}), patch.dict(saltdjango.__pillar__, pillar), patch.dict(saltdjango.__salt__, mine):
        return saltdjango.projects(defaults)["demo"]


def test_beat_runs_on_the_first_worker_server_only_and_rq_queues_default() -> None:
    hosts = {"app1": {"roles": ["app", "web"]}, "worker1": {"roles": ["worker"]}, "worker2": {"roles": ["worker"]}}
    celery = {"kind": "celery", "app": "demo.celery:app"}
    assert _runs("worker1", ["worker"], celery, hosts)["runs"] == {"web": False, "workers": True, "beat": True}
    assert _runs("worker2", ["worker"], celery, hosts)["runs"] == {"web": False, "workers": True, "beat": False}
    assert _runs("app1", ["app", "web"], celery, hosts)["runs"] == {"web": True, "workers": False, "beat": False}
    single = _runs("host", ["db", "cache", "app", "worker", "web"], {"kind": "rq", "app": "high,low"})
    assert single["runs"] == {"web": True, "workers": True, "beat": False}, "RQ's periodic jobs need workers:cron"
    assert single["workers"]["queues"] == ["high", "low"] and single["workers"]["concurrency"] == 4
    assert _runs("host", ["app", "worker"], None)["runs"] == {"web": True, "workers": False, "beat": False}


S3_KEYS = {"S3_ACCESS_KEY": "a" * 20, "S3_SECRET_KEY": "b" * 40}
CLUSTER = {
    "db": {"roles": ["db"]},
    "cache": {"roles": ["cache", "storage"]},
    "app1": {"roles": ["app", "web"]},
    "lb": {"roles": ["lb"]},
}


def media_project(media: object, keys: dict | None = None) -> dict:
    return project(
        media=media, secrets={"DB_PASSWORD": GOOD_PASSWORD, "REDIS_PASSWORD": GOOD_PASSWORD, "SECRET_KEY": STRONG_KEY, **(keys or {})}
    )


def media_cluster(media: object, keys: dict | None = None, hosts: dict | None = None, roles: list[str] | None = None) -> dict:
    return {
        "topology": {"hosts": hosts or CLUSTER},
        "salt_django": {"roles": roles or ["app", "web"]},
        "projects": {"demo": media_project(media, keys)},
    }


@pytest.mark.parametrize(
    ("media", "fragment"),
    [
        ({"backend": "ftp"}, "projects:demo:media:backend: 'ftp' is not supported; supported: local, s3"),
        ("s3", "projects:demo:media: must be a mapping"),
        ({"backend": "s3", "endpoint": "http://s3.example.org"}, "projects:demo:media:endpoint: 'http://s3.example.org' must be https://"),
        (
            {"backend": "s3", "endpoint": "https://s3.example.org/bucket"},
            "projects:demo:media:endpoint: 'https://s3.example.org/bucket' must be",
        ),
        ({"backend": "s3", "endpoint": "https://key:secret@s3.example.org"}, "must be scheme://host[:port] only"),
        ({"backend": "s3", "endpoint": "https://s3.example.org:port"}, "is not a URL"),
        ({"backend": "s3", "bucket": "Demo_Media"}, "projects:demo:media:bucket: 'Demo_Media' must match"),
        ({"backend": "s3", "region": "US East"}, "projects:demo:media:region: 'US East' is not a region name"),
        ({"backend": "local", "max_upload_mb": 0}, "projects:demo:media:max_upload_mb: must be a whole number of MB"),
    ],
)
def test_bad_media_names_the_pillar_key(media: object, fragment: str) -> None:
    errors = saltdjango.validate(media_cluster(media, S3_KEYS))
    assert any(fragment in e for e in errors), errors


def test_media_on_the_cluster_store_needs_a_storage_server_and_keys() -> None:
    assert saltdjango.validate(media_cluster({"backend": "s3"}, S3_KEYS)) == []
    no_storage = {**CLUSTER, "cache": {"roles": ["cache"]}}
    errors = saltdjango.validate(media_cluster({"backend": "s3"}, S3_KEYS, hosts=no_storage))
    assert errors == ["projects:demo:media: backend s3 without an endpoint needs a server with the role storage (pillar/topology.yaml)"]
    # An external endpoint needs no storage server.
    assert saltdjango.validate(media_cluster({"backend": "s3", "endpoint": "https://s3.example.org"}, S3_KEYS, hosts=no_storage)) == []
    errors = saltdjango.validate(media_cluster({"backend": "s3"}))
    assert errors == ["projects:demo:secrets:S3_ACCESS_KEY is missing", "projects:demo:secrets:S3_SECRET_KEY is missing"]
    # The lb gets no S3 key and needs none; the storage server needs them.
    assert saltdjango.validate(media_cluster({"backend": "s3"}, roles=["lb"])) == []
    assert len(saltdjango.validate(media_cluster({"backend": "s3"}, roles=["cache", "storage"]))) == 2


def test_a_single_server_has_no_storage_role() -> None:
    errors = saltdjango.validate({"projects": {"demo": media_project({"backend": "s3"}, S3_KEYS)}})
    assert errors == [
        "projects:demo:media:endpoint: required on a single server: the storage role (salt-django's own object store) is for a cluster"
    ]
    external = {"backend": "s3", "endpoint": "https://s3.example.org", "bucket": "my-uploads"}
    assert saltdjango.validate({"projects": {"demo": media_project(external, S3_KEYS)}}) == []
    assert saltdjango.validate({"projects": {"demo": media_project({"backend": "local"})}}) == []


def test_media_config_is_derived_for_nginx_and_the_env() -> None:
    defaults = yaml.safe_load((ROOT / "salt" / "app" / "defaults.yaml").read_text())["project"]
    pillar = {"projects": {"my_site": {"domains": ["a.example.org"], "media": {"backend": "s3", "endpoint": "https://s3.example.org"}}}}
    media = saltdjango.projects(defaults, pillar)["my_site"]["media"]
    assert media["bucket"] == "my-site-media" and media["internal"] is False
    assert (media["scheme"], media["netloc"], media["upstream"], media["hostname"]) == (
        "https",
        "s3.example.org",
        "s3.example.org:443",
        "s3.example.org",
    )
    local = saltdjango.projects(defaults, {"projects": {"demo": {"domains": ["a.example.org"]}}})["demo"]["media"]
    assert local["backend"] == "local" and local["netloc"] == ""


def test_storage_buckets_are_the_projects_on_the_cluster_store() -> None:
    pillar = {
        "projects": {
            "one": {"media": {"backend": "s3"}},
            "two": {"media": {"backend": "s3", "bucket": "two-uploads"}},
            "ext": {"media": {"backend": "s3", "endpoint": "https://s3.example.org"}},
            "loc": {},
        }
    }
    assert saltdjango.storage_buckets(pillar) == {"one": "one-media", "two": "two-uploads"}


APP_DEFAULTS = yaml.safe_load((ROOT / "salt" / "app" / "defaults.yaml").read_text())["project"]


def _edge(pillar_project: dict) -> dict:
    return saltdjango._project_config("demo", project(**pillar_project), APP_DEFAULTS, KINDS, cpus=1)


def test_the_edge_sends_one_policy_that_suits_server_rendered_pages() -> None:
    headers = dict(_edge({})["edge_headers"])
    assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert headers["Content-Security-Policy"].startswith("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:")
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin" and "camera=()" in headers["Permissions-Policy"]
    media = dict(_edge({})["edge_media_headers"])
    assert media["Content-Security-Policy"] == headers["Content-Security-Policy"] + "; sandbox"


def test_pillar_merges_directives_drops_null_ones_and_switches_to_report_only() -> None:
    csp = {"report_only": True, "policy": {"img-src": ["'self'", "https://img.example.org"], "object-src": False}}
    cfg = _edge({"csp": csp, "hsts_preload": False, "permissions_policy": ""})
    headers = dict(cfg["edge_headers"])
    assert "Content-Security-Policy" not in headers and "Permissions-Policy" not in headers
    policy = headers["Content-Security-Policy-Report-Only"]
    assert "img-src 'self' https://img.example.org" in policy and "object-src" not in policy and "script-src 'self'" in policy
    assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert dict(cfg["edge_media_headers"])["Content-Security-Policy"] == "sandbox", "uploads stay sandboxed, enforced"
    assert "Content-Security-Policy" not in dict(_edge({"csp": {"enabled": False}})["edge_headers"])


@pytest.mark.parametrize(
    ("edge", "fragment"),
    [
        ({"csp": {"policy": {"script-src": ["'self'; evil"]}}}, "projects:demo:csp:policy:script-src: must be a list of sources"),
        ({"csp": {"policy": {"script-src": "'self'"}}}, "projects:demo:csp:policy:script-src: must be a list"),
        ({"csp": {"policy": {"Script Src": []}}}, "projects:demo:csp:policy:Script Src: not a CSP directive name"),
        ({"csp": {"report_only": "yes"}}, "projects:demo:csp:report_only: must be true or false"),
        ({"csp": {"mode": "on"}}, "projects:demo:csp:mode: unknown key"),
        ({"hsts_preload": "no"}, "projects:demo:hsts_preload: must be true or false"),
        ({"hsts_seconds": "a year"}, "projects:demo:hsts_seconds: must be a whole number"),
        ({"permissions_policy": 'camera=()"; x'}, "projects:demo:permissions_policy: must read like"),
        ({"login_rate_limit": {"per_minute": 0}}, "projects:demo:login_rate_limit:per_minute: must be a whole number from 1"),
        ({"login_rate_limit": {"paths": ["admin/login/"]}}, "projects:demo:login_rate_limit:paths:0: 'admin/login/' is not a URL path"),
        ({"login_rate_limit": {"paths": ["/login/?next=/"]}}, "is not a URL path"),
        ({"login_rate_limit": {"paths": ["/a b/"]}}, "is not a URL path"),
    ],
)
def test_bad_edge_settings_name_the_pillar_key(edge: dict, fragment: str) -> None:
    errors = saltdjango.validate({"projects": {"demo": project(**edge)}})
    assert any(fragment in error for error in errors), errors
    assert _edge(edge)["edge_headers"] == [], "nothing is rendered from a bad value"
