"""A real Celery worker and beat against the test Redis, Postgres and S3."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.app.harness import BIN_DIR, App, Server
from tests.support.services import PostgresServer, terminate


def liveness(app: App, worker: dict[str, Any], max_age: float) -> subprocess.CompletedProcess[str]:
    """The worker's exec probe command, as the pod would run it."""
    return app.run(sys.executable, "-m", "config.liveness", "--max-age", str(max_age), env=worker["env"], timeout=30)


@pytest.mark.slow
def test_worker_runs_task_enqueued_by_the_api(
    api_server: Server, celery_worker: dict[str, Any], api_token: str
) -> None:
    auth = {"Authorization": f"Bearer {api_token}"}
    content = os.urandom(64 * 1024)
    upload = api_server.request("POST", "/api/files/", headers=auth, files={"file": ("data.bin", content)})
    assert upload.status_code == 201, upload.text
    file_id = upload.json()["id"]

    queued = api_server.request("POST", "/api/tasks/", headers=auth, json={"file_id": file_id})
    assert queued.status_code == 202, queued.text
    task_id = queued.json()["task_id"]

    deadline = time.monotonic() + 60
    while True:
        status = api_server.request("GET", f"/api/tasks/{task_id}/", headers=auth).json()
        if status["state"] in ("SUCCESS", "FAILURE") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    expected = hashlib.sha256(content).hexdigest()
    assert status["state"] == "SUCCESS", f"{status}\n{celery_worker['log'].read_text()[-3000:]}"
    assert status["result"] == {"file_id": file_id, "sha256": expected, "size": len(content)}
    detail = api_server.request("GET", f"/api/files/{file_id}/", headers=auth).json()
    assert detail["sha256"] == expected


@pytest.mark.slow
def test_liveness_check_detects_a_hung_worker(app: App, celery_worker: dict[str, Any]) -> None:
    ok = liveness(app, celery_worker, max_age=5)
    assert ok.returncode == 0, ok.stderr
    process = celery_worker["process"]
    # SIGSTOP freezes the worker's main loop the way a deadlock would.
    process.send_signal(signal.SIGSTOP)
    try:
        time.sleep(2.5)
        hung = liveness(app, celery_worker, max_age=2)
        assert hung.returncode == 1, "a frozen worker must fail the liveness check"
        assert "old" in hung.stderr
    finally:
        process.send_signal(signal.SIGCONT)
    deadline = time.monotonic() + 10
    while liveness(app, celery_worker, max_age=2).returncode != 0:
        assert time.monotonic() < deadline, "heartbeat did not resume after SIGCONT"
        time.sleep(0.3)


def test_liveness_check_fails_without_heartbeat_file(app: App) -> None:
    missing = app.tmp / "no-such-heartbeat"
    result = app.run(sys.executable, "-m", "config.liveness", "--file", str(missing), timeout=30)
    assert result.returncode == 1
    assert "does not exist" in result.stderr


@pytest.mark.slow
def test_beat_schedules_heartbeat_that_the_worker_records(
    app: App, celery_worker: dict[str, Any], postgres: PostgresServer
) -> None:
    schedule = app.private_dir("beat") / "schedule"
    beat, log = app.start(
        [str(BIN_DIR / "celery"), "-A", "config", "--quiet", "beat", "--loglevel", "INFO"],
        name="celery-beat",
        env={"CELERY_HEARTBEAT_INTERVAL": "1", "CELERY_BEAT_SCHEDULE_FILENAME": str(schedule)},
    )
    try:
        deadline = time.monotonic() + 45
        while postgres.psql("SELECT count(*) FROM core_heartbeat WHERE name = 'beat'", dbname="app") != "1":
            assert beat.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"no heartbeat recorded:\n{log.read_text()[-3000:]}"
            time.sleep(0.3)
    finally:
        terminate(beat)
    assert beat.returncode == 0, log.read_text()[-3000:]
    # The schedule lives where it was told (a writable /tmp), not in the code dir.
    assert list(schedule.parent.iterdir()), "beat wrote no schedule file in CELERY_BEAT_SCHEDULE_FILENAME's dir"
