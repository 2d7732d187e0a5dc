"""Settings for `collectstatic` during the image build, and nothing else.

collectstatic needs the production static-file storage but no secrets and no
services. Placeholders satisfy the required-variable checks; the secret key
placeholder carries Django's insecure prefix so `check --deploy` flags it.
"""

from __future__ import annotations

import os
import sys

from django.core.exceptions import ImproperlyConfigured

# Refuse to serve with placeholder secrets if someone points
# DJANGO_SETTINGS_MODULE here by mistake.
if "collectstatic" not in sys.argv:
    raise ImproperlyConfigured(
        "config.settings.build is only for `manage.py collectstatic` "
        "during the image build."
    )

_PLACEHOLDERS = {
    "DJANGO_SECRET_KEY": "django-insecure-build-only-placeholder",
    "ALLOWED_HOSTS": "localhost",
    "DATABASE_URL": "postgres://build@localhost:5432/build",
    "REDIS_URL": "redis://localhost:6379/0",
    "MINIO_ENDPOINT": "http://localhost:9000",
    "MINIO_ROOT_USER": "build",
    "MINIO_ROOT_PASSWORD": "build",
}
for _name, _value in _PLACEHOLDERS.items():
    os.environ.setdefault(_name, _value)

from config.settings.prod import *  # noqa: E402, F403
