"""WSGI entry point for gunicorn: `config.wsgi:application`."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.prod")

application = get_wsgi_application()
# Import every view now (gunicorn preloads this module in the master), so
# import errors stop the container at start and workers share the modules
# instead of each paying for them on its first request.
get_resolver().url_patterns  # noqa: B018
