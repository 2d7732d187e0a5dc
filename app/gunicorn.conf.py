"""gunicorn settings for the API container: `gunicorn -c gunicorn.conf.py`.

Shutdown: on SIGTERM the master stops accepting, lets workers finish their
in-flight requests for up to graceful_timeout seconds, then kills them.
graceful_timeout (default 25 s) must stay below the pod's
terminationGracePeriodSeconds (30 s by default) minus any preStop delay, so
the kubelet's SIGKILL never cuts a request gunicorn would have finished.
"""

from __future__ import annotations

import gc
import os
import shutil
from pathlib import Path
from typing import Any

from config.logs import logging_config


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


# Set before the app is imported (preload_app) so prometheus_client picks
# multiprocess mode in every worker. Under /tmp: the only writable path.
PROMETHEUS_DIR = os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR", "/tmp/prometheus-multiproc"
)

wsgi_app = "config.wsgi:application"
bind = "0.0.0.0:8000"
workers = _int("GUNICORN_WORKERS", 2)
threads = _int("GUNICORN_THREADS", 1)
timeout = _int("GUNICORN_TIMEOUT", 30)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 25)
keepalive = _int("GUNICORN_KEEPALIVE", 5)
# Recycling workers bounds memory leaks; off by default because every new
# worker pid leaves one more metrics file to merge on each scrape.
max_requests = _int("GUNICORN_MAX_REQUESTS", 0)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 0)
# Import the app once in the master: workers share memory pages, and a
# configuration error stops the container at once with one traceback.
preload_app = True
# Worker heartbeat files: tmpfs when present, never the read-only image.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# The runtime control socket (gunicorn >= 25.1) would be created under
# $HOME; nothing uses it in a pod.
control_socket_disable = True

# Requests are logged by Django (config.middleware) with the route pattern
# and without the client address; gunicorn's access logger is muted below.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
logconfig_dict: dict[str, Any] = logging_config(
    "INFO",
    {
        "gunicorn.error": {"level": "INFO", "handlers": ["stdout"], "propagate": False},
        # Django logs each request with its route pattern (config.middleware);
        # a second, path-based access line per request adds only volume.
        "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
    },
)


def on_starting(server: Any) -> None:
    # /tmp is an emptyDir that survives container restarts; counts from a
    # previous run must not be added to this one's.
    shutil.rmtree(PROMETHEUS_DIR, ignore_errors=True)
    Path(PROMETHEUS_DIR).mkdir(parents=True, exist_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    # Drops the dead worker's live-gauge files; its counters stay counted.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def pre_fork(server: Any, worker: Any) -> None:
    # The preloaded app's objects move to the permanent generation: the
    # collector in each forked worker neither touches them (pages stay shared
    # with the master) nor walks them at exit, which took seconds per worker
    # on SIGTERM (tests/app/test_app_sigterm.py).
    gc.freeze()
