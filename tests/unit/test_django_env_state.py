"""``django_env.managed``: secrets by key name, generated once, never in changes."""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

import pytest

from tests.unit.conftest import Utils, load

saltdjango = load("_modules/saltdjango.py")
django_env = load("_states/django_env.py")

DB_PASSWORD = "db-password-0123456789"
REDIS_PASSWORD = "redis-password-0123456789"
ME = pwd.getpwuid(os.getuid()).pw_name
MY_GROUP = grp.getgrgid(os.getgid()).gr_name


@pytest.fixture
def pillar() -> dict:
    return {"projects": {"demo": {"secrets": {"DB_PASSWORD": DB_PASSWORD, "REDIS_PASSWORD": REDIS_PASSWORD}}}}


@pytest.fixture
def opts() -> dict:
    return {"test": False}


@pytest.fixture
def configure_loader_modules(pillar: dict, opts: dict) -> dict:
    def pillar_get(key: str, default: object = None) -> object:
        node: object = pillar
        for part in key.split(":"):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    salt = {name: getattr(saltdjango, name) for name in ("generate_secret", "secret_key_problems", "service_urls")}
    salt["pillar.get"] = pillar_get
    salt = {(k if "." in k else f"saltdjango.{k}"): v for k, v in salt.items()}
    return {django_env: {"__salt__": salt, "__opts__": opts, "__utils__": Utils()}}


def apply(path: Path, **kwargs: object) -> dict:
    return django_env.managed(
        str(path),
        project="demo",
        env={"DJANGO_ALLOWED_HOSTS": "demo.example.org"},
        secrets={"DJANGO_SECRET_KEY": "SECRET_KEY", "DATABASE_PASSWORD": "DB_PASSWORD", "REDIS_PASSWORD": "REDIS_PASSWORD"},
        generate=["DJANGO_SECRET_KEY"],
        user=ME,
        group=MY_GROUP,
        mode="0640",
        **kwargs,
    )


def test_first_apply_writes_and_generates_the_secret_key(tmp_path: Path) -> None:
    env = tmp_path / "env"
    ret = apply(env)
    assert ret["result"] is True
    assert ret["changes"]["added"] == ["DATABASE_PASSWORD", "DJANGO_ALLOWED_HOSTS", "DJANGO_SECRET_KEY", "REDIS_PASSWORD"]
    assert ret["changes"]["generated"] == ["DJANGO_SECRET_KEY"]
    values = Utils()["saltdjango_env.read"](str(env))
    assert values["DATABASE_PASSWORD"] == DB_PASSWORD
    assert saltdjango.secret_key_problems(values["DJANGO_SECRET_KEY"]) == []
    assert stat.S_IMODE(env.stat().st_mode) == 0o640
    for secret in (DB_PASSWORD, REDIS_PASSWORD, values["DJANGO_SECRET_KEY"]):
        assert secret not in repr(ret)


def test_second_apply_keeps_the_generated_key_and_changes_nothing(tmp_path: Path) -> None:
    env = tmp_path / "env"
    apply(env)
    key = Utils()["saltdjango_env.read"](str(env))["DJANGO_SECRET_KEY"]
    ret = apply(env)
    assert ret["result"] is True and ret["changes"] == {}
    assert Utils()["saltdjango_env.read"](str(env))["DJANGO_SECRET_KEY"] == key


def test_changed_password_is_reported_by_name(tmp_path: Path, pillar: dict) -> None:
    env = tmp_path / "env"
    apply(env)
    pillar["projects"]["demo"]["secrets"]["DB_PASSWORD"] = "another-password-987654"
    ret = apply(env)
    assert ret["changes"] == {"changed": ["DATABASE_PASSWORD"]}
    assert "another-password" not in repr(ret)


def test_test_mode_predicts_and_writes_nothing(tmp_path: Path, opts: dict) -> None:
    opts["test"] = True
    env = tmp_path / "env"
    ret = apply(env)
    assert ret["result"] is None and "added" in ret["changes"]
    assert not env.exists()


def test_missing_secret_fails_naming_the_key_and_keeps_the_file(tmp_path: Path, pillar: dict) -> None:
    env = tmp_path / "env"
    apply(env)
    before = env.read_text()
    del pillar["projects"]["demo"]["secrets"]["REDIS_PASSWORD"]
    ret = apply(env)
    assert ret["result"] is False
    assert ret["comment"] == "projects:demo:secrets:REDIS_PASSWORD is missing"
    assert env.read_text() == before


def test_weak_pillar_secret_key_is_refused(tmp_path: Path, pillar: dict) -> None:
    pillar["projects"]["demo"]["secrets"]["SECRET_KEY"] = "django-insecure-abc"
    ret = apply(tmp_path / "env")
    assert ret["result"] is False
    assert "projects:demo:secrets:SECRET_KEY" in ret["comment"]
    assert "django-insecure-abc" not in ret["comment"]
    assert not (tmp_path / "env").exists()


def test_wrong_mode_is_repaired(tmp_path: Path) -> None:
    env = tmp_path / "env"
    apply(env)
    env.chmod(0o644)
    ret = apply(env)
    assert ret["changes"] == {"mode": {"old": "0644", "new": "0640"}}
    assert stat.S_IMODE(env.stat().st_mode) == 0o640
