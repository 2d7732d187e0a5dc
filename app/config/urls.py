"""URL routes. /healthz, /readyz and /metrics are served by ProbeMiddleware."""

from __future__ import annotations

from core.login import throttled
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    # Before admin.site.urls so this login view wins (core.throttle).
    path("admin/login/", throttled(admin.site.login), name="admin-login"),
    path("admin/", admin.site.urls),
    path("api/", include("core.urls")),
]
