"""config.devreload, the dev supervisor that restarts Celery workers and beat
when the mounted source changes, run for real."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.app.harness import APP_DIR, BIN_DIR, App
from tests.app.test_app_sigterm import long_running

# A child that records each start and its SIGTERM in a journal file.
CHILD = """
import os, signal, sys, time
journal = sys.argv[1]
def note(text):
    with open(journal, "a") as f:
        f.write(f"{text} {os.getpid()}\\n")
def stop(*_):
    note("stopped")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
note("started")
if os.environ.get("CRASH_AT_START") and os.path.exists(os.environ["CRASH_AT_START"]):
    sys.exit(3)
while True:
    time.sleep(0.05)
"""


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def entries(journal: Path) -> list[tuple[str, int]]:
    if not journal.exists():
        return []
    return [(word, int(pid)) for word, pid in (line.split() for line in journal.read_text().splitlines())]


def test_restarts_on_source_change_and_forwards_sigterm(tmp_path: Path) -> None:
    source, journal, crash_flag = tmp_path / "src", tmp_path / "journal", tmp_path / "crash"
    (source / "pkg" / "__pycache__").mkdir(parents=True)
    (source / "pkg" / "tasks.py").write_text("x = 1\n")
    (source / "pkg" / "__pycache__" / "tasks.cpython.py").write_text("")
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "config.devreload", f"--path={source}", "--interval=0.1", "--",
         sys.executable, "-c", CHILD, str(journal)],
        cwd=APP_DIR, env={"PATH": "/usr/bin:/bin", "CRASH_AT_START": str(crash_flag)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: len(entries(journal)) == 1, "the first start")
        first = entries(journal)[0][1]

        # An edited module: the running command gets SIGTERM, a new one starts.
        time.sleep(0.05)
        (source / "pkg" / "tasks.py").write_text("x = 2\n")
        wait_until(lambda: len(entries(journal)) == 3, "a restart")
        assert entries(journal)[1:] == [("stopped", first), ("started", entries(journal)[2][1])]
        assert entries(journal)[2][1] != first

        # Bytecode caches are not source: no restart.
        (source / "pkg" / "__pycache__" / "tasks.cpython.py").write_text("changed")
        time.sleep(0.6)
        assert len(entries(journal)) == 3, "restarted on a __pycache__ change"

        # A command that dies (a syntax error, say) is started again at the next change.
        crash_flag.touch()
        (source / "pkg" / "new_module.py").write_text("")
        wait_until(lambda: len(entries(journal)) == 5, "the crashing start")
        time.sleep(0.5)
        assert supervisor.poll() is None, "the supervisor waits for a fix"
        crash_flag.unlink()
        (source / "pkg" / "new_module.py").write_text("fixed = True\n")
        wait_until(lambda: len(entries(journal)) == 6, "the start after the fix")
        running = entries(journal)[-1][1]

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=5) == 0
        assert entries(journal)[-1] == ("stopped", running), "SIGTERM reaches the command"
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
        output = supervisor.communicate(timeout=10)[0]
    assert "tasks.py changed, restarting" in output, output


@pytest.mark.parametrize("argv", [[], ["--", ], ["--interval=0", "--", "true"]])
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "config.devreload", *argv], cwd=APP_DIR,
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2 and "devreload" in result.stderr, result.stderr


@pytest.mark.slow
def test_rendered_dev_worker_restarts_on_change(app: App) -> None:
    """The dev worker's rendered command, watching a temp tree: a change stops
    the worker (its liveness file goes) and a new one starts (the file returns)."""
    command = long_running("dev")["worker-default"]
    assert command[:4] == ["python", "-m", "config.devreload", "--"]
    watched = app.private_dir("devreload-src")
    (watched / "tasks.py").write_text("")
    heartbeat = app.private_dir("devreload-hb") / "heartbeat"
    argv = [sys.executable, *command[1:3], f"--path={watched}", "--interval=0.2", "--",
            str(BIN_DIR / "celery"), *command[5:]]
    worker, log = app.start(argv, name="devreload-worker",
                            env={"CELERY_LIVENESS_FILE": str(heartbeat), "CELERY_LIVENESS_INTERVAL": "0.5"})
    try:
        wait_until(heartbeat.exists, "the worker", timeout=60)
        time.sleep(1)
        (watched / "tasks.py").write_text("changed = True\n")
        wait_until(lambda: not heartbeat.exists(), "the old worker to stop", timeout=30)
        wait_until(heartbeat.exists, "the new worker", timeout=60)
        assert worker.poll() is None
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    text = log.read_text()
    assert "tasks.py changed, restarting" in text, text[-3000:]
