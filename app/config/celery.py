"""Celery application: `celery -A config worker` / `celery -A config beat`.

Worker liveness: a bootstep touches a heartbeat file from the worker's own
timer. The timer runs in the worker's main event loop, so the file goes
stale when that loop hangs, while a task running in a pool child does not
stop it. `python -m config.liveness` checks the file's age; it imports
neither Django nor Celery and needs no broker round trip, unlike
`celery inspect ping`, which costs a full app start per probe and fails on
a busy or broker-less worker.

Beat liveness: HeartbeatScheduler touches its own file on every scheduler
tick. The schedule file is no signal: on Python 3.13 shelve uses
dbm.sqlite3 in WAL mode, whose main file changes only on checkpoint or
close. A tick happens at least every beat_max_loop_interval seconds
(CELERY_BEAT_MAX_LOOP_INTERVAL), so a file older than a few of those means
the loop is stuck.
"""

from __future__ import annotations

import gc
import logging.config
import os
from pathlib import Path
from typing import Any, ClassVar

from celery import Celery, bootsteps, signals
from celery.beat import PersistentScheduler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.prod")

DEFAULT_LIVENESS_FILE = "/tmp/celery-worker-heartbeat"
DEFAULT_LIVENESS_INTERVAL = 10.0
DEFAULT_BEAT_LIVENESS_FILE = "/tmp/celery-beat-heartbeat"

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


@signals.worker_init.connect
@signals.worker_ready.connect
@signals.beat_init.connect
def freeze_loaded_objects(**_: Any) -> None:
    """Move everything loaded so far to the collector's permanent generation:
    pool children forked later share those pages instead of copying them on
    the first collection, and no process walks them again at exit, which made
    a warm shutdown (worker) or the exit (beat) take seconds
    (tests/app/test_app_sigterm.py)."""
    gc.freeze()


class HeartbeatScheduler(PersistentScheduler):
    """Celery's file-backed scheduler plus a heartbeat file touched per tick.

    `celery beat` calls tick() in its only loop (celery.beat.Service.start);
    a tick returns after at most max_interval seconds of sleep is planned,
    so the file's age is bounded by that interval while the loop runs.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.heartbeat = Path(
            os.environ.get("CELERY_BEAT_LIVENESS_FILE", DEFAULT_BEAT_LIVENESS_FILE)
        )
        super().__init__(*args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        self.heartbeat.touch()
        return float(super().tick(*args, **kwargs))

    def close(self) -> None:
        # A stopped beat is not alive; /tmp is an emptyDir that outlives
        # the container, so do not leave a fresh file behind.
        self.heartbeat.unlink(missing_ok=True)
        super().close()
