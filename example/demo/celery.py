"""The demo's Celery application, laid out as Celery's Django guide lays it
out: settings from Django's (``CELERY_*``), tasks from each app's ``tasks``."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo.settings")

app = Celery("demo")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
