"""The Debian roots of scripts/runtime-roots.sh, as service runtimes and test targets.

trixie runs the app on Python 3.13 (python:3.13-slim is Debian trixie); forky
(Debian testing) runs PostgreSQL 18, Valkey 9, Prometheus 3 and Alertmanager.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.services import Runtime

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "runtime-roots.sh"
ROOTS_DIR = Path(os.environ.get("RUNTIME_ROOTS_DIR", REPO / ".cache" / "roots"))


def root_runtime(name: str) -> Runtime:
    return Runtime(name=name, root=ROOTS_DIR / name, launcher=(str(SCRIPT), "exec", name))


def roots_problem() -> str | None:
    """Why the roots cannot be used here (one line), or None."""
    if os.geteuid() != 0:
        return "runtime roots need root (chroot); run the tests as root"
    result = subprocess.run([str(SCRIPT), "check"], capture_output=True, text=True, check=False)
    if result.returncode == 0:
        return None
    return (result.stdout.strip() or result.stderr.strip() or "runtime roots unusable").splitlines()[0]


def require_roots() -> None:
    """Skip with one line when the roots are missing; in CI that is a failure."""
    problem = roots_problem()
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(problem, pytrace=False)
    pytest.skip(problem)


def package_versions(name: str) -> dict[str, str]:
    """Package versions recorded in a root's stamp ("python" for the venv's Python)."""
    stamp = ROOTS_DIR / f"{name}.stamp"
    lines = stamp.read_text().splitlines()[2:]
    return dict(line.split(" ", 1) for line in lines if " " in line)
