"""URL routes of the demo project."""

from django.contrib import admin
from django.urls import path
from visits import uploads, views

urlpatterns = [
    path("", views.index, name="index"),
    path("slow/", views.slow, name="slow"),
    path("pulse/", views.pulse, name="pulse"),
    path("csp-probe/", views.csp_probe, name="csp_probe"),
    path("note/", views.note, name="note"),
    path("jobs/", views.jobs, name="jobs"),
    path("jobs/<str:token>/", views.job, name="job"),
    path("upload/", uploads.upload, name="upload"),
    path("admin/", admin.site.urls),
]
