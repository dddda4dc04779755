"""The demo's upload page: a file through Django's default storage (local
media, or the project's S3 bucket: pillar ``media``), then its /media/ URL,
which Nginx serves to anyone, sandboxed, from whichever app server."""

import socket

from django.core.files.storage import default_storage
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

#: Where uploads go in the storage; Django's storage picks a free name below it.
UPLOAD_DIR = "uploads"


@require_http_methods(["GET", "POST"])
def upload(request: HttpRequest) -> HttpResponse:
    """GET: the form. POST (CSRF-protected): store the file named ``file`` and
    answer its stored name and URL, as JSON when asked for (``Accept:
    application/json``), else on the page."""
    if request.method == "GET":
        return render(request, "visits/upload.html", {})
    uploaded = request.FILES.get("file")
    if uploaded is None:
        return HttpResponse("no file in the form field 'file'\n", status=400, content_type="text/plain")
    # The storage cleans the name (no path, no odd characters) and never overwrites.
    name = default_storage.save(f"{UPLOAD_DIR}/{uploaded.name}", uploaded)
    stored = {"name": name, "url": default_storage.url(name), "size": uploaded.size, "server": socket.gethostname()}
    if request.headers.get("Accept") == "application/json":
        return JsonResponse(stored)
    return render(request, "visits/upload.html", {"stored": stored})
