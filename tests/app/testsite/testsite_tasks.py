"""A test-only task for the redelivery tests (tests/app/test_app_redelivery.py).

Idempotent like the app's own redeliverable tasks: its effect is a SET of a
fixed value, so running it again after a lost worker changes nothing. It
counts its attempts and its completions beside the effect, for the test.
"""

from __future__ import annotations

import os
import time

import redis
from config.celery import app


@app.task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def record_once(key: str, seconds: float) -> None:
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    client.incr(f"{key}:attempts")
    client.set(f"{key}:pid", os.getpid())
    time.sleep(seconds)
    client.set(f"{key}:effect", "done")
    client.incr(f"{key}:completions")
