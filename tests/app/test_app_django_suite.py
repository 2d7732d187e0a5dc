"""The app's Django test suite (app/core/tests) on real PostgreSQL, Redis and S3."""

from __future__ import annotations

import re

import pytest

from tests.app.harness import App


@pytest.mark.slow
def test_django_suite_passes_on_postgres(app: App) -> None:
    # dev settings: no HTTPS redirect for Django's test client. Redis DB 5
    # keeps the suite's queued tasks away from the worker under test.
    redis_url = app.env["REDIS_URL"].rsplit("/", 1)[0] + "/5"
    result = app.manage(
        "test", "core", "--noinput", "--verbosity", "2",
        env={
            "DJANGO_SETTINGS_MODULE": "config.settings.dev",
            "REDIS_URL": redis_url,
            "MINIO_BUCKET": "krvibe-suite",
            "MAX_UPLOAD_SIZE": "50m",
        },
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    ran = re.search(r"Ran (\d+) tests?", output)
    assert ran and int(ran.group(1)) >= 20, f"suspiciously few tests ran:\n{output[-2000:]}"
    assert "test_suite_runs_on_postgresql" in output and "Creating test database" in output
