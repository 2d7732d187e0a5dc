"""Staging: the production settings with a short HSTS lifetime.

Stage domains get rebuilt; a year-long HSTS pin would outlive a broken
certificate there. Everything else must match prod to make stage meaningful.
"""

from __future__ import annotations

from config import env
from config.settings.prod import *  # noqa: F403

SECURE_HSTS_SECONDS = env.as_int("DJANGO_HSTS_SECONDS", 3600, minimum=0)
