"""Prometheus metrics for the API.

Under gunicorn every worker is a separate process, so prometheus_client runs
in multiprocess mode: each worker writes its samples to files in
PROMETHEUS_MULTIPROC_DIR (set by gunicorn.conf.py) and a scrape, whichever
worker answers it, sums the files of all workers. Without that variable
(runserver, tests) the in-process registry is used.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

# Names are a contract with the monitoring dashboards; see app/README.md.
REQUESTS = Counter(
    "django_http_requests_total",
    "HTTP requests handled, by method, route pattern and status code.",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "django_http_request_duration_seconds",
    "Time from the first middleware to the response, by method and route.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)

# Anything else becomes "other": random methods must not add label values.
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
)


def method_label(method: str | None) -> str:
    return method if method in KNOWN_METHODS else "other"


def render() -> tuple[bytes, str]:
    """Return the exposition text and its content type."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)
    else:
        registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST
