"""Celery application: `celery -A config worker` / `celery -A config beat`.

Worker liveness: a bootstep touches a heartbeat file from the worker's own
timer. The timer runs in the worker's main event loop, so the file goes
stale when that loop hangs, while a task running in a pool child does not
stop it. `python -m config.liveness` checks the file's age; it imports
neither Django nor Celery and needs no broker round trip, unlike
`celery inspect ping`, which costs a full app start per probe and fails on
a busy or broker-less worker.
"""

from __future__ import annotations

import logging.config
import os
from pathlib import Path
from typing import Any, ClassVar

from celery import Celery, bootsteps, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.prod")

DEFAULT_LIVENESS_FILE = "/tmp/celery-worker-heartbeat"
DEFAULT_LIVENESS_INTERVAL = 10.0

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.setup_logging.connect
def use_django_logging(**kwargs: Any) -> None:
    """Logging comes from Django's LOGGING (JSON, personal data masked).

    Without a receiver Celery gives its task logger (`celery.task`, parent of
    every get_task_logger()) its own plain-text stderr handler that does not
    propagate, so task log lines would skip the masking filter.
    """
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)


class LivenessHeartbeat(bootsteps.StartStopStep):
    """Touches CELERY_LIVENESS_FILE every CELERY_LIVENESS_INTERVAL seconds."""

    requires: ClassVar[set[str]] = {"celery.worker.components:Timer"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.path = Path(os.environ.get("CELERY_LIVENESS_FILE", DEFAULT_LIVENESS_FILE))
        self.interval = float(
            os.environ.get("CELERY_LIVENESS_INTERVAL", DEFAULT_LIVENESS_INTERVAL)
        )
        self.tref: Any = None

    def start(self, worker: Any) -> None:
        self.touch()
        self.tref = worker.timer.call_repeatedly(
            self.interval, self.touch, priority=10
        )

    def stop(self, worker: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
        # A stopped worker is not alive; do not leave a fresh file behind.
        self.path.unlink(missing_ok=True)

    def touch(self) -> None:
        self.path.touch()


app.steps["worker"].add(LivenessHeartbeat)
