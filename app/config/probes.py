"""Health endpoints for Kubernetes and the metrics endpoint for Prometheus.

/healthz says the process can serve a request and touches no dependency, so
a database outage never makes the kubelet restart healthy API pods.
/readyz checks what a request needs: the database, Redis (cache, broker and
result backend) and that every migration is applied. Object storage is left
out on purpose: uploads failing must not take the whole API out of rotation.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, HttpResponse, JsonResponse

from config import metrics

logger = logging.getLogger(__name__)

REDIS_TIMEOUT_SECONDS = 2.0
_migrations_applied = False


def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


def metrics_view(request: HttpRequest) -> HttpResponse:
    body, content_type = metrics.render()
    return HttpResponse(body, content_type=content_type)


def _redis_targets() -> dict[str, str]:
    """Each distinct Redis URL the app depends on, under a readable name."""
    targets: dict[str, str] = {"redis": settings.REDIS_URL}
    for name, url in (
        ("celery_broker", settings.CELERY_BROKER_URL),
        ("celery_result_backend", settings.CELERY_RESULT_BACKEND),
    ):
        if url.startswith(("redis://", "rediss://")) and url not in targets.values():
            targets[name] = url
    return targets


@functools.cache
def _redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        **(settings.REDIS_SSL_OPTIONS if url.startswith("rediss://") else {}),
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
    )


def _ping_redis(url: str) -> None:
    _redis_client(url).ping()


def _check_database() -> None:
    try:
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        # Drop the broken connection so the next probe reconnects.
        connection.close_if_unusable_or_obsolete()
        raise


def _check_migrations() -> None:
    global _migrations_applied
    # Once applied, a release's migrations stay applied for this process.
    if _migrations_applied:
        return
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        raise RuntimeError(f"{len(plan)} unapplied migration(s)")
    _migrations_applied = True


def run_checks() -> dict[str, str]:
    results: dict[str, str] = {}

    def attempt(name: str, check: Callable[[], object]) -> bool:
        try:
            check()
        except Exception as exc:
            results[name] = f"failed: {type(exc).__name__}"
            logger.warning("readiness check %s failed: %s", name, exc)
            return False
        results[name] = "ok"
        return True

    if attempt("database", _check_database):
        attempt("migrations", _check_migrations)
    else:
        results["migrations"] = "skipped: database unavailable"
    for name, url in _redis_targets().items():
        attempt(name, functools.partial(_ping_redis, url))
    return results


def readyz(request: HttpRequest) -> HttpResponse:
    checks = run_checks()
    failed = sorted(
        name for name, result in checks.items() if result.startswith("failed")
    )
    ready = all(result == "ok" for result in checks.values())
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "failed": failed, "checks": checks},
        status=200 if ready else 503,
    )
