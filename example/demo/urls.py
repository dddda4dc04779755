"""URL routes of the demo project."""

from django.contrib import admin
from django.urls import path
from visits import views

urlpatterns = [
    path("", views.index, name="index"),
    path("slow/", views.slow, name="slow"),
    path("note/", views.note, name="note"),
    path("admin/", admin.site.urls),
]
