"""One row per page view, so that a deploy can be checked end to end."""

from django.db import models


class Visit(models.Model):
    created = models.DateTimeField(auto_now_add=True)
    server = models.CharField(max_length=255)
    note = models.CharField(max_length=100, blank=True)

    def __str__(self) -> str:
        return f"{self.created:%Y-%m-%d %H:%M:%S} on {self.server}"
