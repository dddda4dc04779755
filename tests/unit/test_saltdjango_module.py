"""Pillar validation and env-file rules of ``_modules/saltdjango.py``."""

from __future__ import annotations

import pytest

from tests.unit.conftest import load

saltdjango = load("_modules/saltdjango.py")

STRONG_KEY = "k" * 10 + "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH"
GOOD_PASSWORD = "x8Jq2LmN4pRt6VwY"


def project(**overrides: object) -> dict:
    base = {"domains": ["demo.example.org"], "secrets": {"DB_PASSWORD": GOOD_PASSWORD, "REDIS_PASSWORD": GOOD_PASSWORD}}
    base.update(overrides)
    return base


@pytest.fixture
def configure_loader_modules() -> dict:
    return {saltdjango: {"__pillar__": {}, "__grains__": {"num_cpus": 4}}}


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
    assert errors == ["salt_django:roles: unknown role(s) databse; known: app, cache, db, lb, web, worker"]


def test_no_project_is_an_error() -> None:
    assert saltdjango.validate({}) == ["projects: must define at least one project"]


def test_settings_opt_out_needs_a_module() -> None:
    errors = saltdjango.validate({"projects": {"demo": project(settings={"wrapper": False})}})
    assert errors == ["projects:demo:settings:module: must name the project's production settings when settings:wrapper is false"]


def test_env_file_round_trips_awkward_values() -> None:
    values = {"A": 'it\'s $HOME `x` "q"', "B": "", "C": "plain", "D": "a b\tc"}
    assert saltdjango.parse_env(saltdjango.render_env(values)) == values


def test_env_file_refuses_bad_names() -> None:
    with pytest.raises(ValueError, match="not a valid variable name"):
        saltdjango.render_env({"BAD NAME": "x"})


def test_env_diff_names_keys_only() -> None:
    diff = saltdjango.env_diff({"A": "secret-old", "B": "same", "C": "gone"}, {"A": "secret-new", "B": "same", "D": "new"})
    assert diff == {"added": ["D"], "changed": ["A"], "removed": ["C"]}
    assert "secret" not in repr(diff)


def test_project_config_fills_defaults_and_drops_secrets() -> None:
    defaults = {
        "settings": {"wrapper": True, "base": None, "module": None},
        "database": {"name": None, "user": None},
        "gunicorn": {"workers": None},
    }
    cfg = saltdjango.projects(defaults)
    assert cfg == {}
    cfg = saltdjango.project_config("shop", project(), defaults, cpus=2)
    assert cfg["user"] == "shop" and cfg["wsgi"] == "shop.wsgi:application"
    assert cfg["settings"] == {"wrapper": True, "base": "shop.settings", "module": "salt_django_settings"}
    assert cfg["database"] == {"name": "shop", "user": "shop"}
    assert cfg["gunicorn"]["workers"] == 5
    assert "secrets" not in cfg


def test_project_config_opt_out_uses_the_named_module() -> None:
    defaults = {"settings": {"wrapper": True, "base": None, "module": None}, "database": {}, "gunicorn": {}}
    cfg = saltdjango.project_config("shop", project(settings={"wrapper": False, "module": "shop.settings.prod"}), defaults)
    assert cfg["settings"]["module"] == "shop.settings.prod"
