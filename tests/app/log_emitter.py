"""Emits log records through one of the app's real logging setups.

Run as a script with app/ on PYTHONPATH: `log_emitter.py django|gunicorn|celery`
with the corpus (JSON) on stdin. Before each case it prints a marker line so
the test can tell which output belongs to which case:
- django: settings.LOGGING applied by django.setup(); request cases go
  through Django's test client, so django.request logs them itself.
- gunicorn: the logconfig_dict of app/gunicorn.conf.py, applied by
  gunicorn's own Logger class.
- celery: the app's Celery instance sets up logging as its worker does
  (app.log.setup), then a task logger (get_task_logger) emits.
"""

from __future__ import annotations

import json
import logging
import runpy
import sys
from typing import Any

MARKER = "@@case "


def emitter_for(via: str) -> tuple[Any, Any]:
    """(log function taking a logger level name, request function or None)."""
    if via == "django":
        import django
        from django.test import Client

        django.setup()
        logger = logging.getLogger("core.views")
        client = Client()
        return logger, lambda path: client.get(path)
    if via == "gunicorn":
        from gunicorn.config import Config
        from gunicorn.glogging import Logger

        config = Config()
        for key, value in runpy.run_path("gunicorn.conf.py").items():
            if key in config.settings:
                config.set(key, value)
        return Logger(config), None
    if via == "celery":
        from celery.utils.log import get_task_logger
        from config.celery import app

        # What celery.apps.worker.Worker.setup_logging does on start.
        app.log.setup("INFO", None, redirect_stdouts=False, hostname="test")
        return get_task_logger("core.tasks"), None
    raise SystemExit(f"unknown setup {via!r}")


def main() -> None:
    via = sys.argv[1]
    cases = json.load(sys.stdin)
    logger, request = emitter_for(via)
    for case in cases:
        if "request" in case and request is None:
            continue
        print(MARKER + case["id"], flush=True)
        if "request" in case:
            request(case["request"])
        elif case.get("exception"):
            try:
                raise ValueError(case["exception"])
            except ValueError:
                logger.exception(case["msg"], *case.get("args", []), extra=case.get("extra"))
        else:
            level = case.get("level", "info")
            getattr(logger, level)(case["msg"], *case.get("args", []), extra=case.get("extra"))
        sys.stdout.flush()
        sys.stderr.flush()


if __name__ == "__main__":
    main()
