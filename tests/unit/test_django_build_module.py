"""``_modules/django_build.py``: what a project's virtualenv is made of, and what salt-django adds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.unit.conftest import load

django_build = load("_modules/django_build.py")
saltdjango = load("_modules/saltdjango.py")


def project(tmp_path: Path, files: dict[str, str]) -> Path:
    for relpath, text in files.items():
        path = tmp_path / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def key(release: Path, requirements: str | None = None, additions: str = "gunicorn==27.0.1") -> str:
    deps = django_build.plan(str(release), requirements)
    return django_build.venv_key("/usr/bin/python3 3.11.2", deps, "uv 0.13.9", additions, [])


def test_nested_requirements_and_constraints_are_all_read(tmp_path: Path) -> None:
    release = project(
        tmp_path,
        {
            "requirements.txt": "-r requirements/production.txt\n",
            "requirements/production.txt": "--requirement base.txt\n-c constraints.txt\nDjango\n",
            "requirements/base.txt": "-r production.txt\nredis\n",  # a cycle is read once
            "requirements/constraints.txt": "Django==5.2.19\n",
        },
    )
    files = django_build._requirement_files(str(release), "requirements.txt")
    assert sorted(files) == ["requirements.txt", "requirements/base.txt", "requirements/constraints.txt", "requirements/production.txt"]


def test_a_change_in_any_reached_file_or_addition_changes_the_key(tmp_path: Path) -> None:
    release = project(tmp_path, {"requirements.txt": "-r requirements/production.txt\n", "requirements/production.txt": "Django\n"})
    first = key(release)
    assert key(release) == first, "the same inputs give the same key"
    (release / "requirements" / "production.txt").write_text("Django\ndistro==1.9.0\n")
    second = key(release)
    assert second != first
    assert key(release, additions="gunicorn==27.0.2") != second
    (release / "README.md").write_text("code, not dependencies")
    assert key(release) == second


def test_a_change_in_a_vendored_package_changes_the_key_its_build_leftovers_do_not(tmp_path: Path) -> None:
    release = project(
        tmp_path,
        {
            "requirements.txt": "-r requirements/production.txt\n",
            "requirements/production.txt": "Django\n./vendor/probe\n-e ./vendor/lib[extra]\nfile:./wheels/x-1-py3-none-any.whl\n",
            "vendor/probe/setup.py": "setup()\n",
            "vendor/lib/pyproject.toml": "[project]\n",
            "wheels/x-1-py3-none-any.whl": "zip",
        },
    )
    files = django_build._requirement_files(str(release), "requirements.txt")
    assert {"vendor/probe/", "vendor/lib/", "wheels/x-1-py3-none-any.whl"} <= set(files)
    first = key(release)
    for leftover in ("vendor/probe/build/lib/probe.py", "vendor/probe/probe.egg-info/PKG-INFO", "vendor/probe/__pycache__/x.pyc"):
        project(release, {leftover: "built"})
    assert key(release) == first, "what building it left behind is not the package"
    (release / "vendor" / "probe" / "setup.py").write_text("setup(name='probe')\n")
    assert key(release) != first


def test_a_missing_local_requirement_is_named(tmp_path: Path) -> None:
    release = project(tmp_path, {"requirements.txt": "./vendor/gone\n"})
    with pytest.raises(django_build.BuildError, match=re.escape("local requirement ./vendor/gone is not in the release")):
        django_build._requirement_files(str(release), "requirements.txt")


def test_an_include_outside_the_project_is_refused(tmp_path: Path) -> None:
    release = project(tmp_path / "p", {"requirements.txt": "-r ../../etc/passwd\n"})
    with pytest.raises(django_build.BuildError, match="outside the project"):
        django_build._requirement_files(str(release), "requirements.txt")


@pytest.mark.parametrize(
    ("files", "requirements", "kind", "entry"),
    [
        ({"pyproject.toml": "", "uv.lock": "", "requirements.txt": ""}, None, "uv-lock", "uv.lock"),
        ({"requirements.txt": "Django\n", "pyproject.toml": ""}, None, "requirements", "requirements.txt"),
        ({"pyproject.toml": "[project]\n"}, None, "pyproject", "pyproject.toml"),
        ({"manage.py": ""}, None, "none", None),
        ({"requirements.txt": "", "requirements/production.txt": "Django\n"}, "requirements/production.txt", "requirements", None),
    ],
    ids=["uv-lock", "requirements", "pyproject", "none", "pillar-path"],
)
def test_the_dependency_declaration_is_found(tmp_path: Path, files: dict, requirements: str | None, kind: str, entry: str | None) -> None:
    deps = django_build.plan(str(project(tmp_path, files)), requirements)
    assert deps["kind"] == kind
    assert deps["entry"] == (entry or requirements)


def test_a_missing_pillar_requirements_file_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(django_build.BuildError, match="pillar projects:<p>:requirements"):
        django_build.plan(str(project(tmp_path, {"requirements.txt": ""})), "requirements/prod.txt")


def test_requires_python_names_both_versions(tmp_path: Path) -> None:
    import sys

    release = project(tmp_path, {"pyproject.toml": '[project]\nname = "x"\nrequires-python = ">=3.99"\n'})
    problem = django_build._requires_python_problem(str(release), sys.executable, django_build.python_version(sys.executable))
    assert problem and ">=3.99" in problem and ".".join(map(str, sys.version_info[:3])) in problem


def test_additions_follow_the_settings_wrapper() -> None:
    cfg = {
        "app_server": {"kind": "gunicorn", "package": "gunicorn", "module": "gunicorn", "version": "27.0.1"},
        "drivers": {"database": "psycopg2-binary==2.9.13", "cache": "redis==6.4.0"},
    }
    with_wrapper = django_build.additions({**cfg, "settings": {"wrapper": True}})
    assert [req for _, req in with_wrapper] == ["gunicorn==27.0.1", "psycopg2-binary==2.9.13", "redis==6.4.0"]
    assert [req for _, req in django_build.additions({**cfg, "settings": {"wrapper": False}})] == ["gunicorn==27.0.1"]
    uwsgi = {**cfg, "app_server": {"kind": "uwsgi", "package": "pyuwsgi", "module": "pyuwsgi", "version": "2.0.30"}}
    assert django_build.additions({**uwsgi, "settings": {"wrapper": False}}) == [(["pyuwsgi"], "pyuwsgi==2.0.30")]


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("compilemessages", {"manage": ["compilemessages"], "each": False, "label": "compilemessages"}),
        ({"manage": "loaddata x.json", "each": True}, {"manage": ["loaddata", "x.json"], "each": True, "label": "loaddata x.json"}),
        ({"run": "bin/warm --fast"}, {"run": ["bin/warm", "--fast"], "each": False, "label": "bin/warm --fast"}),
    ],
)
def test_hooks_are_parsed(item: object, expected: dict) -> None:
    assert saltdjango.hook_command(item) == expected


@pytest.mark.parametrize("item", [{"run": "/bin/sh -c x"}, {"run": "../x"}, {"manage": "a", "run": "b"}, {}, 3, {"manage": "'unclosed"}])
def test_bad_hooks_are_refused(item: object) -> None:
    with pytest.raises(ValueError):
        saltdjango.hook_command(item)


def test_validation_names_bad_hooks_requirements_and_secret_names() -> None:
    project_pillar = {
        "domains": ["example.org"],
        "secrets": {"DB_PASSWORD": "a" * 20, "REDIS_PASSWORD": "b" * 20, "bad-name": "x", "DATABASE_URL": "postgres://"},
        "hooks": {"build": [{"run": "/usr/bin/id"}], "later": []},
        "requirements": "../outside.txt",
        "app_server": {"kind": "waitress"},
        "health": {"path": "health/"},
    }
    errors = "\n".join(saltdjango._validate_project("site", project_pillar))
    for expected in (
        "projects:site:secrets:bad-name: not a valid variable name",
        "projects:site:secrets:DATABASE_URL: salt-django sets this variable itself",
        "projects:site:hooks:build:0: run: /usr/bin/id must be a command inside the release",
        "projects:site:hooks:later: unknown stage",
        "projects:site:requirements: must be a path inside the project",
        "projects:site:app_server:kind: 'waitress' is not supported; supported: gunicorn, mod_wsgi, uvicorn, uwsgi",
        "projects:site:health:path: must be a URL path of the project, e.g. /health/",
    ):
        assert expected in errors


def test_service_urls_quote_credentials() -> None:
    values = {
        "DATABASE_HOST": "10.0.0.5",
        "DATABASE_PORT": "5432",
        "DATABASE_NAME": "site",
        "DATABASE_USER": "site",
        "DATABASE_PASSWORD": "p@ss:w/rd",
        "REDIS_HOST": "10.0.0.6",
        "REDIS_USER": "site",
        "REDIS_PASSWORD": "r",
    }
    urls = saltdjango.service_urls(values)
    assert urls["DATABASE_URL"] == "postgres://site:p%40ss%3Aw%2Frd@10.0.0.5:5432/site"
    assert urls["REDIS_URL"] == urls["CACHE_URL"] == "redis://site:r@10.0.0.6:6379/0"


def test_mask_hides_plain_and_url_quoted_secrets() -> None:
    text = "failed: password p@ss:w/rd rejected for postgres://u:p%40ss%3Aw%2Frd@h/db"
    assert "p@ss" not in saltdjango._mask(text, ["p@ss:w/rd"]) and "p%40ss" not in saltdjango._mask(text, ["p@ss:w/rd"])


def test_media_on_s3_adds_django_storages_and_boto3_with_the_wrapper_only() -> None:
    cfg = {
        "app_server": {"kind": "gunicorn", "package": "gunicorn", "module": "gunicorn", "version": "27.0.1"},
        "drivers": {
            "database": "psycopg2-binary==2.9.13",
            "cache": "redis==6.4.0",
            "storage": "django-storages[s3]==1.14.6",
            "s3": "boto3==1.44.8",
        },
        "settings": {"wrapper": True},
    }
    local = [req for _, req in django_build.additions({**cfg, "media": {"backend": "local"}})]
    assert local == ["gunicorn==27.0.1", "psycopg2-binary==2.9.13", "redis==6.4.0"], "a local project's virtualenv key stays"
    s3 = django_build.additions({**cfg, "media": {"backend": "s3"}})
    assert s3[-2:] == [(["storages"], "django-storages[s3]==1.14.6"), (["boto3"], "boto3==1.44.8")]
    unwrapped = django_build.additions({**cfg, "media": {"backend": "s3"}, "settings": {"wrapper": False}})
    assert [req for _, req in unwrapped] == ["gunicorn==27.0.1"]
