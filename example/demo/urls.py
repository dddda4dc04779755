"""URL routes of the demo project."""

from django.contrib import admin
from django.urls import path
from visits import views

urlpatterns = [
    path("", views.index, name="index"),
    path("admin/", admin.site.urls),
]
