"""`/healthz` answers before host validation and the SSL redirect.

A load balancer probes app servers by IP over plain HTTP; neither may turn
its probe into a 400 or a 301. The probe checks what a page needs: the
database and the cache.
"""

import os
from collections.abc import Callable

from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

HEALTH_PATH = "/healthz"


class HealthCheckMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path != HEALTH_PATH:
            return self.get_response(request)
        checks = {"database": _check_database(), "cache": _check_cache()}
        healthy = all(result == "ok" for result in checks.values())
        body = {
            "status": "ok" if healthy else "fail",
            "release": os.environ.get("SALT_DJANGO_RELEASE", "development"),
            "checks": checks,
        }
        return JsonResponse(body, status=200 if healthy else 503)


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # noqa: BLE001 - any failure makes the node unhealthy
        return f"error: {type(exc).__name__}"
    return "ok"


def _check_cache() -> str:
    try:
        cache.set("healthz", "ok", timeout=10)
        if cache.get("healthz") != "ok":
            return "error: value not read back"
    except Exception as exc:  # noqa: BLE001 - any failure makes the node unhealthy
        return f"error: {type(exc).__name__}"
    return "ok"
