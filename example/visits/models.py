"""One row per page view, per background job and per periodic tick, so that
a deploy can be checked end to end."""

from django.db import models


class Visit(models.Model):
    created = models.DateTimeField(auto_now_add=True)
    server = models.CharField(max_length=255)
    note = models.CharField(max_length=100, blank=True)

    def __str__(self) -> str:
        return f"{self.created:%Y-%m-%d %H:%M:%S} on {self.server}"


class Job(models.Model):
    """A background job: enqueued by a page, run by a worker (visits.tasks)."""

    token = models.CharField(max_length=64, unique=True)
    seconds = models.FloatField(default=0)
    enqueued = models.DateTimeField(auto_now_add=True)
    enqueued_on = models.CharField(max_length=255)
    enqueued_release = models.CharField(max_length=64)
    runs = models.IntegerField(default=0)
    started = models.DateTimeField(null=True)
    finished = models.DateTimeField(null=True)
    ran_on = models.CharField(max_length=255, blank=True)
    ran_release = models.CharField(max_length=64, blank=True)


class Tick(models.Model):
    """One run of the periodic task."""

    created = models.DateTimeField(auto_now_add=True)
    server = models.CharField(max_length=255)
    release = models.CharField(max_length=64)
