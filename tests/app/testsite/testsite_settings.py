"""Production settings plus a slow endpoint, for the gunicorn tests only.

Kept out of the app so the image carries no test-only route.
"""

from config.settings.prod import *  # noqa: F403

ROOT_URLCONF = "testsite_urls"
