"""Run a command as PID 1 of a new PID namespace, as in a container.

The kernel delivers a signal to a namespace's init only if it installed a
handler (pid_namespaces(7)): a process that works when started normally may
ignore SIGTERM as PID 1. `unshare --pid --fork` (util-linux, needs root) gives
the same rule here without a container runtime.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest


def available() -> str | None:
    """Why PID 1 cannot be reproduced here, or None."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    if os.geteuid() != 0:
        return "a new PID namespace needs root"
    return None


def skip_or_fail_unless_available() -> None:
    reason = available()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


class Pid1:
    """`command` as PID 1; `pid` is its process id seen from here."""

    def __init__(self, command: list[str], **popen: Any) -> None:
        self.outer = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", *command], **popen)
        self.pid = self._child_pid()

    def _child_pid(self, timeout: float = 10) -> int:
        children = Path(f"/proc/{self.outer.pid}/task/{self.outer.pid}/children")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.outer.poll() is not None:
                raise AssertionError(f"unshare exited with {self.outer.returncode}")
            found = children.read_text().split() if children.exists() else []
            if found:
                return int(found[0])
            time.sleep(0.02)
        raise AssertionError("unshare started no child")

    def namespace_pid(self) -> int:
        """The pid as the process sees itself (1 when the namespace worked)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
        raise AssertionError("no NSpid line")

    def seconds_to_exit_after_sigterm(self, limit: float) -> float | None:
        """Send SIGTERM to PID 1; seconds until it exited, None if not within `limit`."""
        sent = time.monotonic()
        os.kill(self.pid, signal.SIGTERM)
        try:
            self.outer.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            return None
        return time.monotonic() - sent

    def kill(self) -> None:
        if self.outer.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.outer.wait(timeout=10)
