"""Visits are browsable in the admin."""

from django.contrib import admin

from .models import Visit

admin.site.register(Visit)
