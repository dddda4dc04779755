"""The demo pages: touch every part of the stack a deploy sets up, and what a
release must not break (assets, long requests, forms, sessions)."""

import asyncio
import os
import socket
import time
import uuid

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from .models import Job, Tick, Visit

HITS_KEY = "demo:hits"
# Longest /slow/ sleep: below Gunicorn's worker timeout (30 s by default).
SLOW_MAX_SECONDS = 25
# Longest background job: below the workers' max_task_seconds (300 s by default).
JOB_MAX_SECONDS = 120


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
def csp_probe(request: HttpRequest) -> HttpResponse:
    """A page that breaks the site's Content-Security-Policy on purpose: an
    inline script and an inline style. Under the policy neither applies and
    the browser logs a violation for each; without it, the text changes."""
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>CSP probe</title>"
        "<style>#probe { color: red; }</style></head><body>"
        '<p id="probe">The policy blocked the inline script.</p>'
        "<script>document.getElementById('probe').textContent = 'The inline script ran.';</script>"
        "</body></html>"
    )
    return HttpResponse(page)


@require_GET
async def pulse(request: HttpRequest) -> JsonResponse:
    """An async view: it awaits without holding a worker (under an ASGI server)."""
    await asyncio.sleep(0.01)
    return JsonResponse({"async": True, "release": _release()})


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


def _enqueue(token: str) -> None:
    """Hand job ``token`` to the queue library salt-django runs (pillar workers:kind)."""
    if os.environ.get("SALT_DJANGO_WORKERS") == "rq":
        from redis import Redis
        from rq import Queue

        queue = os.environ.get("SALT_DJANGO_QUEUES", "default").split(",")[0]
        Queue(queue, connection=Redis.from_url(os.environ["RQ_REDIS_URL"])).enqueue("visits.tasks.run_job", token)
    else:
        from .tasks import run_job_task

        run_job_task.delay(token)


def jobs(request: HttpRequest) -> HttpResponse:
    """A form (CSRF-protected) that enqueues a job of ``seconds``; the recent jobs and ticks."""
    if request.method == "POST":
        try:
            seconds = min(max(float(request.POST.get("seconds", "0")), 0.0), JOB_MAX_SECONDS)
        except ValueError:
            return HttpResponse("seconds must be a number\n", status=400, content_type="text/plain")
        job = Job.objects.create(token=uuid.uuid4().hex, seconds=seconds, enqueued_on=socket.gethostname(), enqueued_release=_release())
        _enqueue(job.token)
        return HttpResponse(f"enqueued {job.token} on {job.enqueued_on}, release {job.enqueued_release}\n", content_type="text/plain")
    context = {"release": _release(), "jobs": Job.objects.order_by("-id")[:20], "ticks": Tick.objects.order_by("-id")[:5]}
    return render(request, "visits/jobs.html", context)


@require_GET
def job(request: HttpRequest, token: str) -> JsonResponse:
    """One job as JSON: where and on which release it was enqueued and ran, how often, when."""
    found = get_object_or_404(Job, token=token)
    fields = ("token", "seconds", "enqueued_on", "enqueued_release", "runs", "ran_on", "ran_release")
    answer = {name: getattr(found, name) for name in fields}
    for name in ("enqueued", "started", "finished"):
        moment = getattr(found, name)
        answer[name] = moment.timestamp() if moment else None
    return JsonResponse(answer)
