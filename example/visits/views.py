"""The demo pages: touch every part of the stack a deploy sets up, and what a
release must not break (assets, long requests, forms, sessions)."""

import os
import socket
import time

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from .models import Visit

HITS_KEY = "demo:hits"
# Longest /slow/ sleep: below Gunicorn's worker timeout (30 s by default).
SLOW_MAX_SECONDS = 25


def index(request: HttpRequest) -> HttpResponse:
    """Write a row (PostgreSQL), count hits (Redis cache), count views (session)."""
    server = socket.gethostname()
    Visit.objects.create(server=server, note=request.GET.get("note", "")[:100])
    cache.add(HITS_KEY, 0, timeout=None)
    hits = cache.incr(HITS_KEY)
    request.session["views"] = request.session.get("views", 0) + 1
    response = render(
        request,
        "visits/index.html",
        {
            "server": server,
            "release": _release(),
            "visits": Visit.objects.count(),
            "hits": hits,
            "views": request.session["views"],
        },
    )
    response["X-Served-By"] = server
    return response


def _release() -> str:
    return os.environ.get("SALT_DJANGO_RELEASE", "development")


@require_GET
def slow(request: HttpRequest) -> HttpResponse:
    """Answer after ``?seconds=N`` (at most SLOW_MAX_SECONDS): a long request to survive a switch."""
    try:
        seconds = min(max(float(request.GET.get("seconds", "1")), 0.0), SLOW_MAX_SECONDS)
    except ValueError:
        return HttpResponse("seconds must be a number\n", status=400, content_type="text/plain")
    started = _release()
    time.sleep(seconds)
    return HttpResponse(f"slept {seconds:g} s on {socket.gethostname()}, release {started}\n", content_type="text/plain")


def note(request: HttpRequest) -> HttpResponse:
    """A form (CSRF-protected): each POST stores its note as one row."""
    if request.method == "POST":
        text = request.POST.get("note", "")[:100]
        Visit.objects.create(server=socket.gethostname(), note=text)
        return HttpResponse(f"saved {text} on {socket.gethostname()}, release {_release()}\n", content_type="text/plain")
    return render(request, "visits/note.html", {"release": _release()})
