"""Background jobs of the demo, for Celery and for RQ alike: each records
where and on which release it ran, so that a deploy can be checked end to end
(every job ran, exactly once, on a release at least as new as the one that
enqueued it)."""

import os
import socket
import time

from celery import shared_task
from django.db.models import F
from django.utils import timezone

from .models import Job, Tick


def _release() -> str:
    return os.environ.get("SALT_DJANGO_RELEASE", "development")


def run_job(token: str) -> str:
    """Sleep the job's seconds; count each run (a duplicate shows as runs > 1)."""
    Job.objects.filter(token=token).update(runs=F("runs") + 1, started=timezone.now(), ran_on=socket.gethostname(), ran_release=_release())
    job = Job.objects.get(token=token)
    time.sleep(job.seconds)
    Job.objects.filter(token=token).update(finished=timezone.now())
    return token


def tick() -> None:
    """A periodic task: one row per run."""
    Tick.objects.create(server=socket.gethostname(), release=_release())


@shared_task(name="visits.run_job")
def run_job_task(token: str) -> str:
    return run_job(token)


@shared_task(name="visits.tick")
def tick_task() -> None:
    tick()
