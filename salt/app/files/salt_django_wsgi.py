"""The WSGI application salt-django serves: the project's own, with ``/healthz`` first.

salt-django owns the health check, so that a project deploys unchanged: the
load balancer and the blue/green switch probe ``/healthz`` over plain HTTP,
by address, before host validation and the SSL redirect could turn the probe
into a 400 or a 301. It answers 200 only when the database and the cache
work, and names the release it runs. Every other request goes to the
project's application (``SALT_DJANGO_WSGI``, e.g. ``mysite.wsgi:application``)
untouched, whichever settings module it uses.
"""

import importlib
import json
import os
from collections.abc import Callable, Iterable

_module, _, _attribute = os.environ["SALT_DJANGO_WSGI"].partition(":")
project_application = getattr(importlib.import_module(_module), _attribute or "application")

# The project's WSGI module has set Django up; these need the settings.
from django.core.cache import cache  # noqa: E402
from django.db import close_old_connections, connection  # noqa: E402

HEALTH_PATH = os.environ.get("SALT_DJANGO_HEALTH_PATH", "/healthz")


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


def health() -> tuple[int, dict]:
    """Status code and body of a health answer."""
    # As Django does around a request: no connection outlives CONN_MAX_AGE or a failure.
    close_old_connections()
    try:
        checks = {"database": _check_database(), "cache": _check_cache()}
    finally:
        close_old_connections()
    healthy = all(result == "ok" for result in checks.values())
    body = {"status": "ok" if healthy else "fail", "release": os.environ.get("SALT_DJANGO_RELEASE", "unknown"), "checks": checks}
    return (200 if healthy else 503), body


def application(environ: dict, start_response: Callable) -> Iterable[bytes]:
    if environ.get("PATH_INFO") != HEALTH_PATH:
        return project_application(environ, start_response)
    status, body = health()
    payload = json.dumps(body).encode()
    reason = "OK" if status == 200 else "Service Unavailable"
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload))), ("Cache-Control", "no-store")]
    start_response(f"{status} {reason}", headers)
    return [payload]
