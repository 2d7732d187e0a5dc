"""Local development (kind or a laptop): debug on, no HTTPS enforcement."""

from __future__ import annotations

from config import env
from config.settings.base import *  # noqa: F403

DEBUG = env.as_bool("DJANGO_DEBUG", True)
ALLOWED_HOSTS = env.as_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])

# runserver serves static files itself; no collectstatic manifest needed.
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
