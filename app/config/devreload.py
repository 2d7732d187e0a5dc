"""Dev only: run a command and restart it when the app's Python source changes.

    python -m config.devreload [--path DIR] [--interval SECONDS] -- COMMAND...

Celery workers and beat have no reloader of their own (runserver has
Django's). This supervisor polls the mtimes of DIR/**/*.py (default: the
working directory, the mounted source in dev), and on a change stops the
command with SIGTERM (Celery's warm shutdown) and starts it again. A command
that exits on its own (a syntax error) is restarted at the next change.

It is PID 1 in the container: SIGTERM and SIGINT are forwarded to the
command, and the supervisor exits with the command's status. Stdlib only, so
dev needs no extra package.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType

# Celery's warm shutdown finishes running tasks; past this a restart kills.
STOP_TIMEOUT = 30.0


def snapshot(root: Path) -> dict[str, int]:
    """mtime of every Python file under root, skipping bytecode caches."""
    found = {}
    for path in root.rglob("*.py"):
        if "__pycache__" in path.parts:
            continue
        try:
            found[str(path)] = path.stat().st_mtime_ns
        except FileNotFoundError:  # removed while walking
            continue
    return found


def log(message: str) -> None:
    print(f"devreload: {message}", file=sys.stderr, flush=True)


class Supervisor:
    def __init__(self, command: list[str], root: Path, interval: float) -> None:
        self.command = command
        self.root = root
        self.interval = interval
        self.stopping = threading.Event()
        self.child: subprocess.Popen[bytes] | None = None
        self.forwarded = False

    def forward(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping.set()
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)
            self.forwarded = True

    def stop_child(self) -> None:
        if self.child is None or self.child.poll() is not None:
            return
        self.child.terminate()
        try:
            self.child.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait()

    def run(self) -> int:
        seen = snapshot(self.root)
        while not self.stopping.is_set():
            self.child = subprocess.Popen(self.command)
            exited_reported = False
            while not self.stopping.wait(self.interval):
                current = snapshot(self.root)
                if current != seen:
                    changed = sorted(set(current.items()) ^ set(seen.items()))
                    seen = current
                    log(f"{Path(changed[0][0]).relative_to(self.root)} changed, restarting")
                    self.stop_child()
                    break
                if self.child.poll() is not None and not exited_reported:
                    log(f"command exited with {self.child.returncode}; waiting for a change")
                    exited_reported = True
        # Stopping: the signal was forwarded; wait for the command's own shutdown.
        if self.child is None:
            return 0
        if not self.forwarded and self.child.poll() is None:
            # The signal came while the command was being started.
            self.child.terminate()
        return self.child.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=Path.cwd(), help="source tree to watch (default: cwd)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between polls (default 1)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("a command is required after --")
    if args.interval <= 0:
        parser.error(f"--interval must be positive (got {args.interval})")
    supervisor = Supervisor(command, args.path.resolve(), args.interval)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, supervisor.forward)
    log(f"watching {supervisor.root} for *.py changes: {' '.join(command)}")
    status = supervisor.run()
    # A child killed by a signal reports -N; the shell convention is 128+N.
    return 128 - status if status < 0 else status


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
