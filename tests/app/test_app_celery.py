"""A real Celery worker and beat against the test Redis, Postgres and S3."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.app.harness import BIN_DIR, App, Server
from tests.support.manifests import ROOT, load_dir, one
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


def rendered_beat() -> dict[str, Any]:
    """The beat container as rendered for dev (dist/ is kept current by test_render)."""
    beat = one(load_dir(ROOT / "dist" / "dev"), "StatefulSet", "beat")
    return next(c for c in beat["spec"]["template"]["spec"]["containers"] if c["name"] == "beat")


def flag(argv: list[str], name: str) -> str:
    return next(a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}="))


@pytest.mark.slow
def test_beat_liveness_follows_scheduler_ticks_not_the_schedule_file(app: App) -> None:
    """Beat runs with the rendered env names and probe command (paths moved to
    a temp dir, loop shortened). The schedule store's mtime is frozen an hour
    in the past, as dbm.sqlite3 in WAL mode leaves it on Python 3.13: the
    probe must still pass while beat ticks, and fail once it stops."""
    rendered = rendered_beat()
    rendered_env = {v["name"]: v["value"] for v in rendered["env"] if "value" in v}
    probe = rendered["livenessProbe"]["exec"]["command"]
    assert rendered["startupProbe"]["exec"]["command"] == probe == rendered["readinessProbe"]["exec"]["command"]
    assert probe[:3] == ["python", "-m", "config.liveness"]
    assert flag(probe, "file") == rendered_env["CELERY_BEAT_LIVENESS_FILE"], "probe reads what beat writes"
    assert not flag(probe, "file").startswith(flag(rendered["command"], "schedule")), "not the schedule store"
    loop = float(rendered_env["CELERY_BEAT_MAX_LOOP_INTERVAL"])
    ratio = float(flag(probe, "max-age")) / loop
    assert 2 <= ratio <= 5, f"max age must allow for a missed tick or two, no more (got {ratio} loops)"

    directory = app.private_dir("beat")
    heartbeat = directory / "heartbeat"
    schedule = directory / "schedule"
    test_loop = 0.5
    max_age = ratio * test_loop

    def probe_for(path: Path) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, *probe[1:]]
        argv = [f"--file={path}" if a.startswith("--file=") else a for a in argv]
        argv = [f"--max-age={max_age}" if a.startswith("--max-age=") else a for a in argv]
        return app.run(*argv, timeout=30)

    beat, log = app.start(
        [str(BIN_DIR / "celery"), "-A", "config", "--quiet", "beat", "--loglevel", "INFO", f"--schedule={schedule}"],
        name="celery-beat-liveness",
        # No task comes due during the test: only the loop interval drives ticks.
        env={"CELERY_BEAT_LIVENESS_FILE": str(heartbeat), "CELERY_BEAT_MAX_LOOP_INTERVAL": str(test_loop),
             "CELERY_HEARTBEAT_INTERVAL": "3600"},
    )
    frozen = time.time() - 3600
    stop_freezing = threading.Event()

    def freeze_schedule_store() -> None:
        while not stop_freezing.wait(0.05):
            for path in directory.glob(f"{schedule.name}*"):
                os.utime(path, (frozen, frozen))

    freezer = threading.Thread(target=freeze_schedule_store, daemon=True)
    freezer.start()
    try:
        deadline = time.monotonic() + 45
        while not heartbeat.exists():
            assert beat.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"beat wrote no heartbeat:\n{log.read_text()[-3000:]}"
            time.sleep(0.1)
        stamps = set()
        for _ in range(12):
            stamps.add(heartbeat.stat().st_mtime_ns)
            time.sleep(test_loop / 2)
        assert len(stamps) >= 4, f"heartbeat not refreshed per tick ({len(stamps)} distinct mtimes in 3 s)"
        assert list(directory.glob(f"{schedule.name}*")), "beat keeps its schedule store beside the heartbeat"
        assert probe_for(schedule).returncode == 1, "the frozen schedule store would fail a probe that read it"
        ok = probe_for(heartbeat)
        assert ok.returncode == 0, ok.stderr

        beat.send_signal(signal.SIGSTOP)  # a hung scheduler loop
        try:
            time.sleep(max_age + 1)
            hung = probe_for(heartbeat)
            assert hung.returncode == 1 and "old" in hung.stderr, hung.stderr
        finally:
            beat.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 10
        while probe_for(heartbeat).returncode != 0:
            assert time.monotonic() < deadline, "heartbeat did not resume after SIGCONT"
            time.sleep(0.2)
    finally:
        stop_freezing.set()
        freezer.join()
        terminate(beat)
    assert beat.returncode == 0, log.read_text()[-3000:]
    stopped = probe_for(heartbeat)
    assert stopped.returncode == 1 and "does not exist" in stopped.stderr, "a stopped beat leaves no fresh heartbeat"
