"""Middleware that must run before Django's own.

Kubernetes probes and Prometheus reach the pod IP with an arbitrary Host
header. ProbeMiddleware answers /healthz, /readyz and /metrics before
SecurityMiddleware (HTTPS redirect) and CommonMiddleware (ALLOWED_HOSTS), so
the host check stays strict for everything else. The ingress routes only
/api, /admin and /static, so these paths are not reachable from outside.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from config import metrics, probes

logger = logging.getLogger("app.request")

PROBE_VIEWS: dict[str, Callable[[HttpRequest], HttpResponse]] = {
    "/healthz": probes.healthz,
    "/readyz": probes.readyz,
    "/metrics": probes.metrics_view,
}


def route_label(request: HttpRequest) -> str:
    """A low-cardinality name for the request: the URL pattern, not the path."""
    path = request.path_info
    if path in PROBE_VIEWS:
        return path
    match = getattr(request, "resolver_match", None)
    if match is not None and match.route:
        return "/" + match.route
    if path.startswith(settings.STATIC_URL):
        return settings.STATIC_URL
    return "<unmatched>"


class ProbeMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        view = PROBE_VIEWS.get(request.path_info)
        if view is not None and request.method in ("GET", "HEAD"):
            return view(request)
        return self.get_response(request)


class RequestMetricsMiddleware:
    """Counts and times every request except scrapes, logs one line each."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        elapsed = time.perf_counter() - started
        route = route_label(request)
        method = metrics.method_label(request.method)
        if route != "/metrics":
            metrics.REQUESTS.labels(method, route, str(response.status_code)).inc()
            metrics.LATENCY.labels(method, route).observe(elapsed)
        # Probes arrive every few seconds per pod; keep them out of INFO.
        level = logging.DEBUG if route in PROBE_VIEWS else logging.INFO
        logger.log(
            level,
            "%s %s %s",
            method,
            route,
            response.status_code,
            extra={
                "method": method,
                "route": route,
                "status": response.status_code,
                "duration_ms": round(elapsed * 1000, 1),
            },
        )
        return response
