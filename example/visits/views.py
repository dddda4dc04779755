"""The demo page: touches every part of the stack a deploy sets up."""

import os
import socket

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from .models import Visit

HITS_KEY = "demo:hits"


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
            "release": os.environ.get("SALT_DJANGO_RELEASE", "development"),
            "visits": Visit.objects.count(),
            "hits": hits,
            "views": request.session["views"],
        },
    )
    response["X-Served-By"] = server
    return response
