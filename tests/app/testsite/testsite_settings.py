"""Production settings plus a slow endpoint and a test task, for the
gunicorn and worker tests only.

Kept out of the app so the image carries no test-only route or task.
"""

from config.settings.prod import *  # noqa: F403

ROOT_URLCONF = "testsite_urls"

# Test-only tasks (the worker tests that kill workers mid-task).
CELERY_IMPORTS = ("testsite_tasks",)
