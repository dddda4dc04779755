"""The WSGI application salt-django serves: the project's own, with ``/healthz`` first.

salt-django owns the health check, so that a project deploys unchanged: the
load balancer and the blue/green switch probe ``/healthz`` over plain HTTP,
by address, before host validation and the SSL redirect could turn the probe
into a 400 or a 301. It answers 200 only when the database and the cache
work, and names the release it runs. A project with a health endpoint of
its own names it in pillar (``health: {path: ...}``, here
``SALT_DJANGO_PROJECT_HEALTH``): ``/healthz`` then asks it too, in process,
as an HTTPS GET for the project's first domain, and is healthy only if it
answers 2xx. Every other request goes to the project's application
(``SALT_DJANGO_WSGI``, e.g. ``mysite.wsgi:application``) untouched,
whichever settings module it uses.
"""

import importlib
import io
import json
import os
from collections.abc import Callable, Iterable

_module, _, _attribute = os.environ["SALT_DJANGO_WSGI"].partition(":")
project_application = getattr(importlib.import_module(_module), _attribute or "application")

# The project's WSGI module has set Django up; these need the settings.
from django.core.cache import cache  # noqa: E402
from django.db import close_old_connections, connection  # noqa: E402

HEALTH_PATH = os.environ.get("SALT_DJANGO_HEALTH_PATH", "/healthz")
PROJECT_HEALTH = os.environ.get("SALT_DJANGO_PROJECT_HEALTH", "")


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # noqa: BLE001 - any failure makes the server unhealthy
        return f"error: {type(exc).__name__}"
    return "ok"


def _check_cache() -> str:
    try:
        cache.set("salt-django:healthz", "ok", timeout=10)
        if cache.get("salt-django:healthz") != "ok":
            return "error: value not read back"
    except Exception as exc:  # noqa: BLE001 - any failure makes the server unhealthy
        return f"error: {type(exc).__name__}"
    return "ok"


def _check_project(environ: dict) -> str:
    """The project's own health endpoint, asked in process as a browser would reach it."""
    host = os.environ.get("DJANGO_ALLOWED_HOSTS", "").split(",")[0] or environ.get("HTTP_HOST", "")
    request = {
        **environ,
        "REQUEST_METHOD": "GET",
        "PATH_INFO": PROJECT_HEALTH,
        "QUERY_STRING": "",
        "HTTP_HOST": host,
        "SERVER_PORT": "443",
        "wsgi.url_scheme": "https",
        "HTTP_X_FORWARDED_PROTO": "https",
        "CONTENT_LENGTH": "0",
        "wsgi.input": io.BytesIO(b""),
    }
    statuses: list[str] = []

    def start_response(status: str, headers: list, exc_info: object = None) -> Callable[[bytes], None]:
        statuses.append(status)
        return lambda data: None

    try:
        answer = project_application(request, start_response)
        try:
            for _ in answer:
                pass
        finally:
            getattr(answer, "close", lambda: None)()
    except Exception as exc:  # noqa: BLE001 - any failure makes the server unhealthy
        return f"error: {type(exc).__name__}"
    status = statuses[-1] if statuses else "no answer"
    return "ok" if status[:1] == "2" else f"error: {PROJECT_HEALTH} answered {status}"


def health(environ: dict) -> tuple[int, dict]:
    """Status code and body of a health answer."""
    # As Django does around a request: no connection outlives CONN_MAX_AGE or a failure.
    close_old_connections()
    try:
        checks = {"database": _check_database(), "cache": _check_cache()}
        if PROJECT_HEALTH:
            checks["project"] = _check_project(environ)
    finally:
        close_old_connections()
    healthy = all(result == "ok" for result in checks.values())
    body = {"status": "ok" if healthy else "fail", "release": os.environ.get("SALT_DJANGO_RELEASE", "unknown"), "checks": checks}
    return (200 if healthy else 503), body


def application(environ: dict, start_response: Callable) -> Iterable[bytes]:
    if environ.get("PATH_INFO") != HEALTH_PATH:
        return project_application(environ, start_response)
    status, body = health(environ)
    payload = json.dumps(body).encode()
    reason = "OK" if status == 200 else "Service Unavailable"
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload))), ("Cache-Control", "no-store")]
    start_response(f"{status} {reason}", headers)
    return [payload]
