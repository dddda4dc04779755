"""Projects nobody wrote for salt-django deploy unchanged, by pillar only.

One booted test host serves, beside the demo, three projects generated
here or kept under tests/projects/, none of which has Gunicorn, a
``/healthz``, or a line about salt-django:

- ``mysite``: ``django-admin startproject`` + ``startapp notes`` (a model, a
  view at ``/`` that reads it, a static file, a translation, a fixture), its
  own settings (DEBUG on, SQLite), ``requirements.txt`` that is only
  ``-r requirements/production.txt``, a local sdist; build and after_switch
  hooks, an extra secret, a per-minute schedule (a systemd timer here);
- ``uvsite``: ``pyproject.toml`` + ``uv.lock`` (tests/projects/uvsite);
- ``envsite``: ``settings: {wrapper: false}``, its settings read
  ``DATABASE_URL`` (dj-database-url) and ``REDIS_URL``; a health endpoint
  of its own (``health: {path: /health/}``).
"""

from __future__ import annotations

import hashlib
import json
import shlex
import textwrap
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.helpers import (
    REPO_IN_HOST,
    TICK_JOB,
    TICK_MINUTES,
    env_value,
    fetch,
    make,
    minutes_of_ticks,
    psql,
    repo_host,
    run_make,
)
from tests.lab.hosts import Host

pytestmark = [pytest.mark.lab, pytest.mark.slow]

SRC = "/srv/src"
API_TOKEN = "notesApiToken-" + "x7Kq2Lm9Vw4Rt8Yp3Zn6"
BUILD_UID_FILE = "/var/tmp/uidprobe-build-uid"

NOTES_FILES = {
    "notes/models.py": """\
        from django.db import models


        class Note(models.Model):
            text = models.CharField(max_length=200)
        """,
    "notes/views.py": """\
        from django.http import HttpResponse
        from django.templatetags.static import static
        from django.utils.translation import gettext

        from .models import Note


        def index(request):
            texts = ", ".join(n.text for n in Note.objects.order_by("pk"))
            return HttpResponse(f"<link rel=stylesheet href='{static('notes/site.css')}'><p>{gettext('Notes')}: {texts}</p>")
        """,
    "notes/static/notes/site.css": "body { color: #123456; }\n",
    "notes/fixtures/initial_notes.json": json.dumps([{"model": "notes.note", "pk": 1, "fields": {"text": "loaded by a hook"}}]),
    "notes/locale/fr/LC_MESSAGES/django.po": """\
        msgid ""
        msgstr ""
        "Content-Type: text/plain; charset=UTF-8\\n"

        msgid "Notes"
        msgstr "Notes (fr)"
        """,
    "requirements.txt": "-r requirements/production.txt\n",
    "requirements/production.txt": "Django==5.2.19\n./vendor/uidprobe\n",
    # A local sdist: its setup.py runs at build time and says as whom.
    "vendor/uidprobe/setup.py": f"""\
        import os

        from setuptools import setup

        with open({BUILD_UID_FILE!r}, "w") as handle:
            handle.write(str(os.getuid()))
        setup(name="uidprobe", version="1.0", py_modules=["uidprobe"])
        """,
    "vendor/uidprobe/uidprobe.py": "VALUE = 1\n",
}

ENVSITE_SETTINGS = """\
    import os
    from pathlib import Path

    import dj_database_url

    BASE_DIR = Path(__file__).resolve().parent.parent
    SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
    DEBUG = False
    ALLOWED_HOSTS = os.environ["DJANGO_ALLOWED_HOSTS"].split(",")
    INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django.contrib.staticfiles"]
    MIDDLEWARE = [
        "django.middleware.security.SecurityMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
    ]
    ROOT_URLCONF = "envsite.urls"
    WSGI_APPLICATION = "envsite.wsgi.application"
    DATABASES = {"default": dj_database_url.config(conn_max_age=60)}
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": os.environ["REDIS_URL"], "KEY_PREFIX": "envsite"}
    }
    STATIC_URL = "static/"
    STATIC_ROOT = BASE_DIR / "static"
    USE_TZ = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SECURE_HSTS_SECONDS = 31536000
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    X_FRAME_OPTIONS = "DENY"
    """

ENVSITE_URLS = """\
    import os

    from django.core.cache import cache
    from django.db import connection
    from django.http import HttpResponse
    from django.urls import path


    def index(request):
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user")
            user = cursor.fetchone()[0]
        cache.add("hits", 0)
        return HttpResponse(f"db user {user}, hits {cache.incr('hits')}")


    def health(request):
        if os.path.exists("/var/tmp/envsite-unhealthy"):
            return HttpResponse("not today", status=503)
        return HttpResponse("fine")


    urlpatterns = [path("", index), path("health/", health)]
    """


def pillar(hooks: dict | None = None, schedule: dict | None = None) -> dict:
    """The operator's local.sls: three projects, no passwords (make deploy generates them)."""
    mysite_hooks = {"build": ["compilemessages"], "after_switch": ["loaddata initial_notes"]}
    return {
        "app": {"build_packages": ["gettext"]},
        "projects": {
            "mysite": {
                "domains": ["mysite.localhost"],
                "source": f"{SRC}/mysite",
                "hooks": hooks or mysite_hooks,
                "secrets": {"NOTES_API_TOKEN": API_TOKEN},
                "schedule": {"tick": TICK_JOB} if schedule is None else schedule,
                "app_server": {"workers": 2, "graceful_timeout": 20},
            },
            "uvsite": {"domains": ["uvsite.localhost"], "source": f"{REPO_IN_HOST}/tests/projects/uvsite"},
            "envsite": {
                "domains": ["envsite.localhost"],
                "source": f"{SRC}/envsite",
                "settings": {"wrapper": False, "module": "envsite.settings"},
                "health": {"path": "/health/"},
                # the key of these numbers before app_server: still read, with a warning
                "gunicorn": {"timeout": 45},
            },
        },
    }


def write(host: Host, root: str, files: dict[str, str]) -> None:
    for relpath, text in files.items():
        path = host.path(f"{root}/{relpath}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def generate_projects(host: Host) -> None:
    """startproject/startapp with a Django from the host's wheelhouse, then the files of each project."""
    # python3-venv: the image has none before make deploy installs it, as a fresh cloud server
    host.run("DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null")
    host.run(f"/usr/bin/python3 -m venv /tmp/gen && /tmp/gen/bin/pip install -q Django==5.2.19 && mkdir -p {SRC}/mysite {SRC}/envsite")
    host.run(f"cd {SRC}/mysite && /tmp/gen/bin/django-admin startproject mysite . && /tmp/gen/bin/django-admin startapp notes")
    host.run(f"cd {SRC}/envsite && /tmp/gen/bin/django-admin startproject envsite .")
    write(host, f"{SRC}/mysite", NOTES_FILES)
    settings = host.path(f"{SRC}/mysite/mysite/settings.py")
    settings.write_text(settings.read_text().replace("'django.contrib.staticfiles',", "'django.contrib.staticfiles',\n    'notes',"))
    urls = host.path(f"{SRC}/mysite/mysite/urls.py")
    urls.write_text(urls.read_text().replace("path('admin/', admin.site.urls),", "path('admin/', admin.site.urls),\n    path('', index),"))
    urls.write_text("from notes.views import index\n" + urls.read_text())
    host.run(f"cd {SRC}/mysite && /tmp/gen/bin/python manage.py makemigrations notes -v0")
    write(host, f"{SRC}/envsite", {"envsite/settings.py": ENVSITE_SETTINGS, "envsite/urls.py": ENVSITE_URLS})
    write(host, f"{SRC}/envsite", {"requirements.txt": "Django==5.2.19\ndj-database-url==3.1.2\npsycopg2-binary==2.9.13\nredis==6.4.0\n"})
    host.run("rm -rf /tmp/gen")


def set_local_pillar(host: Host, data: dict) -> None:
    host.path("/etc/salt-django/pillar/local.sls").write_text(yaml.safe_dump(data))


@pytest.fixture(scope="module")
def host(lab_base: Path, lab_workdir: Path) -> Iterator[Host]:
    with repo_host("anyproject", lab_base, lab_workdir) as server:
        generate_projects(server)
        server.run(["install", "-d", "-m", "0700", "/etc/salt-django/pillar"])
        server.run(["sh", "-c", "umask 077 && : > /etc/salt-django/pillar/local.sls"])
        set_local_pillar(server, pillar())
        started = time.monotonic()
        server.first_deploy = make(server)  # type: ignore[attr-defined]
        server.deployed_at = time.time()  # type: ignore[attr-defined]
        print(f"\n[any project] first make deploy (demo + mysite + uvsite + envsite): {time.monotonic() - started:.1f} s")
        yield server


def manage(host: Host, project: str, code: str) -> str:
    """The last line ``manage.py shell -c`` prints (Django 5.2 first says what it imported)."""
    return host.run(f"/srv/{project}/bin/manage shell -c {shlex.quote(code)}").stdout.strip().splitlines()[-1]


def test_startproject_serves_its_page_admin_static_and_health(host: Host) -> None:
    page = fetch(host, "https://mysite.localhost/", domain="mysite.localhost")
    assert page.status == 200 and "loaded by a hook" in page.body, page.body[:500]
    assert psql(host, "SELECT text FROM notes_note WHERE id = 1", database="mysite") == "loaded by a hook"
    assert fetch(host, "https://mysite.localhost/admin/login/", domain="mysite.localhost").status == 200
    css = page.body.split("href='", 1)[1].split("'", 1)[0]
    asset = fetch(host, f"https://mysite.localhost{css}", domain="mysite.localhost")
    assert asset.status == 200 and "#123456" in asset.body
    assert "immutable" in asset.header("Cache-Control"), "served by Nginx from the release's static files"
    health = fetch(host, "http://mysite.localhost/healthz", domain="mysite.localhost")
    body = json.loads(health.body)
    assert health.status == 200 and body["status"] == "ok" and body["checks"] == {"database": "ok", "cache": "ok"}
    assert body["release"] == host.run("readlink /srv/mysite/current").stdout.strip().rsplit("/", 1)[1]


def site_packages(host: Host, project: str) -> str:
    return host.run(f"ls /srv/{project}/current/venv/lib/python3*/site-packages").stdout


def test_salt_django_adds_the_app_server_and_drivers(host: Host) -> None:
    installed = site_packages(host, "mysite")
    for dist in ("gunicorn-27.0.1.dist-info", "psycopg2_binary-2.9.13.dist-info", "redis-6.4.0.dist-info"):
        assert dist in installed, f"{dist} not in mysite's virtualenv"
    assert "gunicorn-27.0.1.dist-info" in site_packages(host, "envsite")


def test_app_server_numbers_come_from_app_server_or_the_deprecated_gunicorn_key(host: Host) -> None:
    runner = host.path("/srv/mysite/bin/app-run").read_text()
    assert "--workers 2 " in runner and "--graceful-timeout 20 " in runner and "--timeout 30 " in runner, runner
    legacy = host.path("/srv/envsite/bin/app-run").read_text()
    assert "--timeout 45 " in legacy, legacy
    assert "proxy_read_timeout 50s;" in host.path("/etc/nginx/snippets/envsite-proxy.conf").read_text()
    moved = "move its keys (graceful_timeout, timeout, workers) under projects:envsite:app_server"
    warning = f"WARNING  salt-django-pillar-validated: projects:envsite:gunicorn is deprecated: {moved}"
    assert warning in host.first_deploy.output, host.first_deploy.output[-3000:]  # type: ignore[attr-defined]


def test_build_hook_output_is_in_the_release_and_no_build_step_ran_as_root(host: Host) -> None:
    assert host.run("test -f /srv/mysite/current/notes/locale/fr/LC_MESSAGES/django.mo", check=False).returncode == 0
    uid = host.run(["cat", BUILD_UID_FILE]).stdout.strip()
    build_uid = host.run(["id", "-u", "salt-django-build"]).stdout.strip()
    assert uid == build_uid and uid != "0", f"setup.py ran as uid {uid}"
    # sealed: root owns the release (but the app's collectstatic target) and its virtualenv; nobody else may write them
    release, venv = (host.run(f"readlink -f /srv/mysite/current{sub}").stdout.strip() for sub in ("", "/venv"))
    writable = f"find {release} {venv} -path {release}/static -prune -o ! -type l \\( ! -user root -o -perm /022 \\) -print"
    assert host.run(writable).stdout.strip() == "", "files the build user or others could still change"


def test_uv_project_deploys_from_its_lock(host: Host) -> None:
    health = fetch(host, "http://uvsite.localhost/healthz", domain="uvsite.localhost")
    assert health.status == 200 and json.loads(health.body)["status"] == "ok"
    assert fetch(host, "https://uvsite.localhost/admin/login/", domain="uvsite.localhost").status == 200
    site = host.run("ls /srv/uvsite/current/venv/lib/python3*/site-packages").stdout
    assert "asgiref-3.13.0.dist-info" in site and "sqlparse-0.6.1.dist-info" in site, "the locked versions"
    assert "pytest" not in site, "no dev dependencies"


def test_env_driven_settings_read_database_url_and_redis_url(host: Host) -> None:
    page = fetch(host, "https://envsite.localhost/", domain="envsite.localhost")
    assert page.status == 200 and "db user envsite, hits" in page.body, page.body[:500]
    assert env_value(host, "DATABASE_URL", "envsite").startswith("postgres://envsite:")
    assert env_value(host, "REDIS_URL", "envsite").startswith("redis://envsite:")


def test_one_projects_database_role_and_redis_user_reach_nothing_of_another(host: Host) -> None:
    url = env_value(host, "DATABASE_URL", "envsite")
    own = host.run(["psql", url, "-XAtc", "select current_user"], check=False)
    assert own.stdout.strip() == "envsite", own.stderr
    for database in ("demo", "mysite", "postgres"):
        other = host.run(["psql", url.rsplit("/", 1)[0] + f"/{database}", "-XAtc", "select 1"], check=False)
        assert other.returncode != 0 and "no pg_hba.conf entry" in other.stderr, (database, other.stdout, other.stderr)
    granted = psql(host, "SELECT datname FROM pg_database WHERE has_database_privilege('public', datname, 'CONNECT') ORDER BY 1")
    assert not {"demo", "mysite", "uvsite", "envsite"} & set(granted.split()), granted
    password = urllib.parse.unquote(urllib.parse.urlsplit(env_value(host, "REDIS_URL", "envsite")).password or "")
    as_envsite = ["redis-cli", "--user", "envsite", "--pass", password, "--no-auth-warning"]
    assert host.run([*as_envsite, "set", "envsite:probe", "1"]).stdout.strip() == "OK"
    for command in (["get", "demo:1:demo:hits"], ["flushall"], ["acl", "setuser", "default", "on", "nopass"]):
        answer = host.run([*as_envsite, *command], check=False)
        assert "NOPERM" in answer.stdout + answer.stderr, (command, answer.stdout, answer.stderr)


def test_the_projects_own_health_endpoint_is_part_of_healthz(host: Host) -> None:
    def healthz() -> tuple[int, dict]:
        answer = fetch(host, "http://envsite.localhost/healthz", domain="envsite.localhost")
        return answer.status, json.loads(answer.body)

    status, body = healthz()
    assert status == 200 and body["checks"] == {"database": "ok", "cache": "ok", "project": "ok"}, body
    host.path("/var/tmp/envsite-unhealthy").touch()
    try:
        status, body = healthz()
    finally:
        host.path("/var/tmp/envsite-unhealthy").unlink()
    assert status == 503 and body["checks"]["project"] == "error: /health/ answered 503 Service Unavailable", body


def test_extra_secret_reaches_the_app_and_no_output_log_or_cache(host: Host) -> None:
    digest = manage(host, "mysite", "import hashlib, os; print(hashlib.sha256(os.environ['NOTES_API_TOKEN'].encode()).hexdigest())")
    assert digest == hashlib.sha256(API_TOKEN.encode()).hexdigest()
    outputs = host.first_deploy.output + make(host).output  # type: ignore[attr-defined]
    generated = yaml.safe_load(host.path("/etc/salt-django/pillar/generated.sls").read_text())["projects"]
    assert set(generated) == {"demo", "mysite", "uvsite", "envsite"}, "every project without passwords in pillar got them"
    secrets = {"NOTES_API_TOKEN": API_TOKEN, **{f"{p}:{k}": v for p, s in generated.items() for k, v in s["secrets"].items()}}
    for name, value in secrets.items():
        assert value not in outputs, f"{name} in make deploy output"
        searched = ["/etc", "/srv", "/var", "/opt", "/root", "/run", "/tmp"]
        hits = set(host.run(["grep", "-rlF", "--", value, *searched], check=False).stdout.split())
        project = name.split(":")[0] if ":" in name else "mysite"
        expected = {f"/etc/{project}/env", "/etc/redis/redis.conf", *(f"/etc/salt-django/pillar/{f}.sls" for f in ("local", "generated"))}
        assert hits <= expected, f"{name} found in {sorted(hits - expected)}"
        for path in hits:
            assert not int(host.run(["stat", "-c", "%a", path]).stdout, 8) & 0o007, f"{path} is world-readable"


def test_second_deploy_changes_nothing(host: Host) -> None:
    second = make(host)
    assert (second.changed, second.failed) == (0, 0), second.output[-3000:]


def _venvs(host: Host, project: str) -> set[str]:
    return set(host.run(f"ls /srv/{project}/venvs").stdout.split())


def test_included_requirements_file_change_builds_a_new_virtualenv_a_code_change_none(host: Host) -> None:
    production = host.path(f"{SRC}/mysite/requirements/production.txt")
    production.write_text(production.read_text() + "distro==1.9.0\n")
    before = _venvs(host, "mysite")
    code, output = run_make(host, "release PROJECT=mysite")
    assert code == 0, output[-2000:]
    assert host.run("/srv/mysite/current/venv/bin/python -c 'import distro'", check=False).returncode == 0
    with_distro = _venvs(host, "mysite")
    assert len(with_distro - before) == 1, "a change to an included file builds a new virtualenv"
    view = host.path(f"{SRC}/mysite/notes/views.py")
    view.write_text(view.read_text().replace("gettext('Notes')", "gettext('Notes') + ' v2'"))
    code, output = run_make(host, "release PROJECT=mysite")
    assert code == 0, output[-2000:]
    assert "v2" in fetch(host, "https://mysite.localhost/", domain="mysite.localhost").body, "make release released the pillar source"
    assert _venvs(host, "mysite") == with_distro, "a code-only release builds no virtualenv"


def test_failing_hook_refuses_the_release_and_the_old_one_keeps_serving(host: Host) -> None:
    live = host.run("readlink /srv/mysite/current").stdout.strip()
    set_local_pillar(host, pillar(hooks={"before_switch": ["nosuchcommand"]}))
    view = host.path(f"{SRC}/mysite/notes/views.py")
    view.write_text(view.read_text().replace("' v2'", "' v3'"))
    try:
        code, output = run_make(host, "release PROJECT=mysite")
    finally:
        set_local_pillar(host, pillar())
    assert code != 0 and "before_switch hook 'nosuchcommand' failed" in output, output[-2000:]
    assert host.run("readlink /srv/mysite/current").stdout.strip() == live
    assert "v2" in fetch(host, "https://mysite.localhost/", domain="mysite.localhost").body


def test_schedule_runs_each_minute_as_the_app_user_until_removed(host: Host) -> None:
    assert host.run("systemctl is-active salt-django-job-mysite-tick.timer", check=False).stdout.strip() == "active"
    runs = minutes_of_ticks([host], host.deployed_at)[host.name]  # type: ignore[attr-defined]
    app_uid = int(host.run(["id", "-u", "mysite"]).stdout)
    assert [uid for _, uid in runs] == [app_uid] * TICK_MINUTES, runs
    set_local_pillar(host, pillar(schedule={}))
    removed = make(host)
    assert {"schedule-mysite-tick-timer-stopped", "schedule-mysite-tick-files-removed"} <= removed.changed_ids, removed.output[-2000:]
    leftovers = host.run(
        "ls /etc/systemd/system /usr/local/lib/salt-django/jobs 2>/dev/null | grep salt-django-job-mysite-tick", check=False
    )
    assert leftovers.stdout == "", leftovers.stdout
    assert host.run("systemctl is-active salt-django-job-mysite-tick.timer", check=False).stdout.strip() != "active"


def test_state_sls_nginx_alone_succeeds_on_a_converged_host(host: Host) -> None:
    salt_call = "/opt/salt-django/venv/bin/salt-call -c /etc/salt-django --local --retcode-passthrough --out=quiet"
    alone = host.run(f"{salt_call} state.sls nginx", check=False, timeout=600)
    assert alone.returncode == 0, (alone.stdout + alone.stderr)[-3000:]


def test_a_project_removed_from_pillar_stops_being_served_and_keeps_its_data(host: Host) -> None:
    data = pillar(schedule={})
    del data["projects"]["envsite"]
    set_local_pillar(host, data)
    removed = make(host)
    gone = {"app-envsite-programs-absent", "app-envsite-programs-unloaded", "nginx-envsite-site-absent", "app-envsite-data-kept"}
    assert gone <= removed.changed_ids, removed.output[-3000:]
    assert "envsite left pillar" in removed.output and "its database and its backups are kept" in removed.output
    assert "envsite" not in host.run("supervisorctl status", check=False).stdout
    assert not host.path("/etc/nginx/sites-enabled/envsite.conf").exists()
    assert host.path("/srv/envsite/current").is_symlink(), "its releases stay"
    assert psql(host, "SELECT count(*) FROM pg_database WHERE datname = 'envsite'") == "1", "its database stays"
    assert fetch(host, "https://mysite.localhost/", domain="mysite.localhost").status == 200, "the others keep serving"
    again = make(host)
    assert again.changed == 0, again.output[-3000:]
