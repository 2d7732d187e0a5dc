"""Scale-in never loses work: real Celery workers against the test Redis.

- A worker killed mid-task (SIGKILL to its whole process tree, as when a pod
  is killed) leaves the message unacknowledged (acks_late); once the
  visibility timeout has passed, the next worker restores and runs it.
- A pool child killed mid-task (OOM kill) is requeued at once
  (reject_on_worker_lost) and run again by the same worker.
- SIGTERM (scale-in, rollout) is Celery's warm shutdown: the running task
  finishes, nothing new is taken, the worker exits 0.
In each case the idempotent task's effect happens once and it completes once.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.app.harness import BIN_DIR, App
from tests.support.services import RedisServer, terminate

# Short limits so the test waits seconds, not an hour; the same invariants
# the chart enforces: soft < hard < visibility timeout.
LIMITS = {"CELERY_TASK_TIME_LIMIT": "8", "CELERY_TASK_SOFT_TIME_LIMIT": "6", "CELERY_VISIBILITY_TIMEOUT": "10"}
VISIBILITY_TIMEOUT = int(LIMITS["CELERY_VISIBILITY_TIMEOUT"])
TASK_SECONDS = 3.0


def descendants(pid: int) -> list[int]:
    """Child processes of pid, recursively (from /proc; no psutil)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def wait_until(condition: Callable[[], bool], timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f":\n{log.read_text()[-3000:]}" if log else ""))
        time.sleep(0.2)


class Workers:
    def __init__(self, app: App, queue: str) -> None:
        self.app, self.queue = app, queue

    def start(self, name: str, **extra: str) -> tuple[subprocess.Popen[bytes], Path]:
        heartbeat = self.app.private_dir("celery") / "heartbeat"
        process, log = self.app.start(
            [str(BIN_DIR / "celery"), "-A", "config", "--quiet", "worker", "--loglevel", "INFO",
             "--without-gossip", "--without-mingle", "--concurrency", "1", "--prefetch-multiplier", "1",
             f"--queues={self.queue}", f"--hostname={name}-{self.queue}@%h"],
            name=name,
            env={"DJANGO_SETTINGS_MODULE": "testsite_settings", "CELERY_LIVENESS_FILE": str(heartbeat),
                 **LIMITS, **extra})
        wait_until(lambda: heartbeat.exists() or process.poll() is not None, 60, f"{name} to start", log)
        assert process.poll() is None, log.read_text()[-3000:]
        return process, log

    def send(self, key: str, seconds: float = TASK_SECONDS) -> None:
        code = ("import testsite_tasks as t; "
                f"t.record_once.apply_async(args=[{key!r}, {seconds}], queue={self.queue!r})")
        result = self.app.run(sys.executable, "-c", code,
                              env={"DJANGO_SETTINGS_MODULE": "testsite_settings", **LIMITS}, timeout=60)
        assert result.returncode == 0, result.stderr


@pytest.fixture
def workers(app: App) -> Workers:
    return Workers(app, f"redelivery-{secrets.token_hex(4)}")


@pytest.fixture
def broker(redis_srv: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(redis_srv.url(0))


def count(client: redis.Redis, key: str, what: str) -> int:
    return int(client.get(f"{key}:{what}") or 0)


@pytest.mark.slow
def test_task_of_a_killed_worker_is_redelivered_and_completes_once(workers: Workers, broker: redis.Redis) -> None:
    key = f"job-{secrets.token_hex(4)}"
    first, first_log = workers.start("doomed")
    workers.send(key)
    wait_until(lambda: count(broker, key, "attempts") == 1, 30, "the task to start", first_log)
    killed_at = time.monotonic()
    for pid in [first.pid, *descendants(first.pid)]:
        os.kill(pid, signal.SIGKILL)  # the whole pod: main process and pool children
    first.wait(timeout=10)
    assert count(broker, key, "completions") == 0 and broker.get(f"{key}:effect") is None

    # Unacknowledged, so not lost: kombu keeps it in the unacked hash until
    # the visibility timeout passes, then a worker restores it to the queue.
    time.sleep(max(0.0, VISIBILITY_TIMEOUT + 1 - (time.monotonic() - killed_at)))
    second, second_log = workers.start("survivor")
    try:
        wait_until(lambda: count(broker, key, "completions") >= 1, 60, "the redelivered task", second_log)
        time.sleep(TASK_SECONDS + 1)  # a duplicate run would have finished by now
    finally:
        terminate(second, timeout=30)
    assert count(broker, key, "attempts") == 2, "started once, killed, started once more"
    assert count(broker, key, "completions") == 1, "completed exactly once"
    assert broker.get(f"{key}:effect") == b"done"


@pytest.mark.slow
def test_task_of_a_killed_pool_child_is_requeued_at_once(workers: Workers, broker: redis.Redis) -> None:
    key = f"job-{secrets.token_hex(4)}"
    worker, log = workers.start("oom")
    try:
        workers.send(key, seconds=4.0)
        wait_until(lambda: count(broker, key, "attempts") == 1, 30, "the task to start", log)
        child = int(broker.get(f"{key}:pid") or 0)
        assert child in descendants(worker.pid), "the task runs in a pool child"
        os.kill(child, signal.SIGKILL)
        # Well before the visibility timeout: rejected and requeued, not waiting.
        wait_until(lambda: count(broker, key, "completions") == 1, VISIBILITY_TIMEOUT - 1,
                   "the requeued task", log)
        time.sleep(1)
        assert worker.poll() is None, "the worker itself survives a lost child"
    finally:
        terminate(worker, timeout=30)
    assert count(broker, key, "attempts") == 2
    assert count(broker, key, "completions") == 1
    assert "WorkerLostError" in log.read_text()


@pytest.mark.slow
def test_sigterm_finishes_the_running_task_and_takes_no_new_one(workers: Workers, broker: redis.Redis) -> None:
    running, waiting = f"job-{secrets.token_hex(4)}", f"job-{secrets.token_hex(4)}"
    worker, log = workers.start("draining")
    workers.send(running)
    wait_until(lambda: count(broker, running, "attempts") == 1, 30, "the task to start", log)
    worker.send_signal(signal.SIGTERM)
    workers.send(waiting)
    exit_code = worker.wait(timeout=int(LIMITS["CELERY_TASK_TIME_LIMIT"]) + 30)
    assert exit_code == 0, log.read_text()[-3000:]
    assert count(broker, running, "completions") == 1, "the running task finished during the warm shutdown"
    assert count(broker, waiting, "attempts") == 0, "a stopping worker takes no new task"
    assert broker.llen(workers.queue) == 1, "the new task waits in the queue for the next worker"
    # The next worker picks it up.
    nxt, nxt_log = workers.start("next")
    try:
        wait_until(lambda: count(broker, waiting, "completions") == 1, 30, "the waiting task", nxt_log)
    finally:
        terminate(nxt, timeout=30)




@pytest.mark.parametrize("env", ["dev", "stage", "prod"])
def test_rendered_worker_limits_reach_celery(app: App, env: str) -> None:
    """Contract: the limits the chart renders into the worker's env are the
    ones Celery runs with (app/config/settings/base.py reads them)."""
    from tests.support.manifests import ROOT, load_dir, one

    deployment = one(load_dir(ROOT / "dist" / env), "Deployment", "worker-default")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    names = ("CELERY_TASK_TIME_LIMIT", "CELERY_TASK_SOFT_TIME_LIMIT", "CELERY_VISIBILITY_TIMEOUT")
    rendered = {v["name"]: v["value"] for v in container["env"] if v["name"] in names}
    assert set(rendered) == set(names)
    code = ("from config.celery import app; c = app.conf; "
            "print(c.task_time_limit, c.task_soft_time_limit, c.broker_transport_options['visibility_timeout'], "
            "c.task_acks_late)")
    result = app.manage("shell", "-c", code, env=rendered)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-4:] == [*(rendered[n] for n in names), "True"]
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= int(rendered["CELERY_TASK_TIME_LIMIT"]) + 30
