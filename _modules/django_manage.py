"""Run a deployed Django project's management commands the way the app runs.

Replaces Salt's ``django`` execution module (removed from Salt 3008). Every
command runs as the app's system user, from a release directory, with the
release's own virtualenv and the environment of ``/etc/<project>/env``, so
a check here sees exactly what Gunicorn will see. The environment is passed
to the child process only; it is never logged or returned.
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import re
import ssl
import subprocess
import urllib.error
import urllib.request
from typing import Any

__virtualname__ = "django_manage"

_CHECK_LINE = re.compile(r"^(?P<obj>.*?): \((?P<id>[\w.]+)\) (?P<message>.*)$")
_LEVEL_HEADING = re.compile(r"^(CRITICALS|ERRORS|WARNINGS|INFOS|DEBUGS):$")
_PLAN_LINE = re.compile(r"^\[(?P<done>[ X])\]\s+(?P<name>\S+)")
_APPLYING = re.compile(r"^\s*Applying (?P<name>\S+)\.\.\.")


def __virtual__() -> str:
    """Stdlib only; the project's own interpreter does the Django work."""
    return __virtualname__


def project_root(project: str) -> str:
    """``/srv/<project>``: releases, ``current`` and ``shared`` live here.

    CLI Example:

    .. code-block:: bash

        salt-call django_manage.project_root demo
    """
    return __salt__["saltdjango.paths"](project)["root"]  # noqa: F821


def _env_file(project: str) -> str:
    """``/etc/<project>/env``: the secrets and settings of the running app."""
    return __salt__["saltdjango.paths"](project)["env_file"]  # noqa: F821


def _app_user(project: str) -> str:
    """The system user the app runs as (``user`` of the project's config: by default its name)."""
    return __salt__["saltdjango.project"](project)["user"]  # noqa: F821


def _release_dir(project: str, release: str | None = None) -> str:
    """The directory of ``release``, or of the live release when none is named."""
    root = project_root(project)
    if release:
        return os.path.join(root, "releases", release)
    return os.path.realpath(os.path.join(root, "current"))


def _command_env(project: str, directory: str) -> dict[str, str]:
    """The environment a command of this release gets: env file + release identity (secrets included)."""
    env = __utils__["saltdjango_env.read"](_env_file(project))  # noqa: F821
    env.update(
        {
            "PATH": f"{directory}/venv/bin:/usr/local/bin:/usr/bin:/bin",
            "HOME": project_root(project),
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "SALT_DJANGO_RELEASE_DIR": directory,
            "SALT_DJANGO_RELEASE": os.path.basename(directory),
        }
    )
    return env


def masked_env(project: str, directory: str) -> dict[str, str]:
    """The environment of a release with every secret replaced by a throwaway value.

    What build hooks get: settings that read a secret at import time still
    load, and a build never sees a production secret.

    CLI Example:

    .. code-block:: bash

        salt-call django_manage.masked_env demo /srv/demo/current
    """
    env = _command_env(project, directory)
    mods = __salt__  # noqa: F821
    placeholder = mods["saltdjango.generate_secret"]()
    for var in mods["saltdjango.secret_names"](project):
        if var in env:
            env[var] = placeholder
    urls = mods["saltdjango.service_urls"](env)
    env.update({k: v for k, v in urls.items() if k in env})
    return env


def _run_in_release(project: str, argv: list[str], release: str | None, timeout: int, python: bool = True) -> dict[str, Any]:
    """Run ``<release>/venv/bin/python <argv>`` (or ``argv`` itself) as the app user with the
    app's environment; what it prints comes back with the app's secrets masked."""
    directory = _release_dir(project, release)
    interpreter = os.path.join(directory, "venv", "bin", "python")
    if not os.path.exists(interpreter):
        return {"retcode": 127, "stdout": "", "stderr": f"no release virtualenv at {directory}/venv"}
    user = _app_user(project)
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        return {"retcode": 127, "stdout": "", "stderr": f"app user {user!r} does not exist"}
    try:
        proc = subprocess.run(
            [interpreter, *argv] if python else argv,
            cwd=directory,
            env=_command_env(project, directory),
            user=account.pw_uid,
            group=account.pw_gid,
            extra_groups=[g.gr_gid for g in grp.getgrall() if user in g.gr_mem],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"retcode": 124, "stdout": "", "stderr": f"{' '.join(argv)} timed out after {timeout}s"}
    # What a command prints reaches the job cache: a setting that echoes a secret must not.
    mask = __salt__["saltdjango.mask_secrets"]  # noqa: F821
    return {"retcode": proc.returncode, "stdout": mask(proc.stdout, project), "stderr": mask(proc.stderr, project)}


def run(project: str, *args: str, release: str | None = None, timeout: int = 900) -> dict[str, Any]:
    """Run ``manage.py <args>`` as the app user; returns retcode, stdout, stderr.

    CLI Example:

    .. code-block:: bash

        salt-call django_manage.run demo showmigrations
    """
    manage = __salt__["saltdjango.project"](project)["manage_py"]  # noqa: F821
    # Relative to the release directory, which is the command's working directory.
    return _run_in_release(project, [manage, *map(str, args)], release, timeout)


def command(project: str, argv: list[str], release: str | None = None, timeout: int = 900) -> dict[str, Any]:
    """Run a command of the release (relative to it) as the app user with the app's environment.

    CLI Example:

    .. code-block:: bash

        salt-call django_manage.command demo '["./scripts/warm-cache.sh", "--quick"]'
    """
    directory = _release_dir(project, release)
    path = os.path.realpath(os.path.join(directory, argv[0]))
    if os.path.commonpath([os.path.realpath(directory), path]) != os.path.realpath(directory) or not os.access(path, os.X_OK):
        return {"retcode": 126, "stdout": "", "stderr": f"{argv[0]} is not an executable inside the release"}
    return _run_in_release(project, [path, *map(str, argv[1:])], release, timeout, python=False)


def wsgi_check(project: str, release: str | None = None) -> dict[str, Any]:
    """Import the release's WSGI application the way Gunicorn will: salt-django's entry point around the project's.

    CLI Example:

    .. code-block:: bash

        salt-call django_manage.wsgi_check demo
    """
    code = "import salt_django_wsgi"
    result = _run_in_release(project, ["-c", code], release, 120)
    if result["retcode"] != 0:
        return {"ok": False, "error": _last_line(result)}
    return {"ok": True}


def _parse_check_output(text: str) -> list[dict[str, str]]:
    """Turn the report of ``manage.py check`` into ``{id, level, object, message}`` items."""
    issues, level = [], "ERROR"
    for line in text.splitlines():
        heading = _LEVEL_HEADING.match(line.strip())
        if heading:
            level = heading.group(1)[:-1]
            continue
        match = _CHECK_LINE.match(line.strip())
        if match:
            issues.append({"id": match["id"], "level": level, "object": match["obj"], "message": match["message"]})
    return issues


def check_deploy(project: str, release: str | None = None, fail_level: str = "WARNING") -> dict[str, Any]:
    """``manage.py check --deploy --fail-level <level>`` as structured check IDs.

    ``ok`` is False when any issue at or above ``fail_level`` is reported or
    when the project cannot even start (an import error is reported with the
    id ``startup``).

    CLI Example:

    .. code-block:: bash

        salt-call django_manage.check_deploy demo fail_level=ERROR
    """
    result = run(project, "check", "--deploy", "--fail-level", fail_level, release=release)
    issues = _parse_check_output(result["stderr"] + "\n" + result["stdout"])
    if result["retcode"] != 0 and not issues:
        last = (result["stderr"].strip().splitlines() or ["no output"])[-1]
        issues = [{"id": "startup", "level": "CRITICAL", "object": "manage.py", "message": last}]
    return {"ok": result["retcode"] == 0, "issues": issues}


def unapplied_migrations(project: str, release: str | None = None) -> dict[str, Any]:
    """Migrations of the release that the database does not have yet.

    CLI Example:

    .. code-block:: bash

        salt-call django_manage.unapplied_migrations demo release=20261129T040000Z-1a2b3c4
    """
    result = run(project, "showmigrations", "--plan", release=release)
    if result["retcode"] != 0:
        return {"ok": False, "migrations": [], "error": _last_line(result)}
    pending = [m["name"] for m in map(_PLAN_LINE.match, result["stdout"].splitlines()) if m and m["done"] == " "]
    return {"ok": True, "migrations": pending}


# Every app server of a cluster converges at once: on PostgreSQL, migrate
# holds a session advisory lock, so a second server waits, then finds
# nothing left to apply instead of failing on "relation already exists".
_LOCKED_MIGRATE = """
from django.core.management import call_command
from django.db import connection
locking = connection.vendor == "postgresql"
if locking:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [{key}])
try:
    call_command("migrate", interactive=False)
finally:
    if locking:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [{key}])
"""


def migrate(project: str, release: str | None = None) -> dict[str, Any]:
    """Apply migrations, one server at a time; names the migration that failed, if one does.

    CLI Example:

    .. code-block:: bash

        salt-call django_manage.migrate demo
    """
    key = int.from_bytes(hashlib.sha256(f"salt-django migrate {project}".encode()).digest()[:8], "big", signed=True)
    result = run(project, "shell", "-c", _LOCKED_MIGRATE.format(key=key), release=release)
    applied = [m["name"] for m in map(_APPLYING.match, result["stdout"].splitlines()) if m]
    if result["retcode"] != 0:
        failed = applied[-1] if applied else None
        return {"ok": False, "applied": applied[:-1], "failed": failed, "error": _last_line(result)}
    return {"ok": True, "applied": applied}


def collectstatic(project: str, release: str | None = None) -> dict[str, Any]:
    """Collect the release's static files into its own STATIC_ROOT.

    CLI Example:

    .. code-block:: bash

        salt-call django_manage.collectstatic demo release=20261129T040000Z-1a2b3c4
    """
    result = run(project, "collectstatic", "--noinput", release=release)
    if result["retcode"] != 0:
        return {"ok": False, "error": _last_line(result)}
    return {"ok": True, "summary": result["stdout"].strip().splitlines()[-1:]}


def health(url: str = "http://127.0.0.1/healthz", host: str | None = None, timeout: float = 5, verify: bool = True) -> dict[str, Any]:
    """Call a health endpoint; ``ok`` only on HTTP 200 with status "ok".

    ``verify=False`` accepts any certificate: a load balancer probing itself
    by address (its certificate names the domain, maybe self-signed).

    CLI Example:

    .. code-block:: bash

        salt-call django_manage.health https://127.0.0.1/healthz host=demo.example.org verify=False
    """
    if not url.startswith(("http://", "https://")):
        return {"ok": False, "status": None, "error": f"not an http(s) URL: {url}"}
    request = urllib.request.Request(url, headers={"Host": host} if host else {})  # noqa: S310 - scheme checked above
    context = None if verify else ssl._create_unverified_context()  # noqa: S323 - asked for by the caller
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310 - scheme checked above
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (OSError, urllib.error.URLError) as exc:
        return {"ok": False, "status": None, "error": str(exc)}
    return health_answer(status, body)


def health_answer(status: int, body: bytes) -> dict[str, Any]:
    """Judge a /healthz answer: ``ok`` only on HTTP 200 with a JSON status "ok".

    CLI Example:

    .. code-block:: bash

        salt-call django_manage.health_answer 200 '{"status": "ok"}'
    """
    try:
        payload = json.loads(body)
    except ValueError:
        payload = {"raw": body[:200].decode(errors="replace")}
    return {"ok": status == 200 and payload.get("status") == "ok", "status": status, "body": payload}


def _last_line(result: dict[str, Any]) -> str:
    lines = (result["stderr"] or result["stdout"]).strip().splitlines()
    return lines[-1] if lines else f"exit code {result['retcode']}"
