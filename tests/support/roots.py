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


# Set in the environment of a suite run inside a root (tests/test_runtime.py).
IN_ROOT = "VIBEARENA_RUNTIME_ROOT"

# tests/app and tests/backup run inside the roots in parts, so that pytest's
# workers share them (make test runs two or more); the part named None is
# "every other file", so a new test file always runs. Split by run time here.
APP_PARTS: dict[str, list[str] | None] = {
    "celery-redelivery": ["test_app_redelivery.py", "test_app_sigterm.py"],
    "beat-and-reload": ["test_app_beat_liveness.py", "test_app_celery.py", "test_app_devreload.py"],
    "django-and-http": None,
}
BACKUP_PARTS: dict[str, list[str] | None] = {
    "failures": ["test_backup_failures.py"],
    "roundtrip-and-mirror": None,
}
# Not runtime matters, and they run on the host only: the shellcheck lint, and the
# scripts-vs-rendered-workloads contract (it renders the charts, which needs cdk8s).
HOST_ONLY = (
    "tests/backup/test_scripts.py::test_shellcheck_passes",
    "tests/backup/test_scripts.py::test_every_command_is_run_by_a_rendered_workload_and_every_workload_command_exists",
)
# The in-root test of each suite, by the suite's directory.
SUITES = {"tests/app": ("test_app_suite_on_python_313", APP_PARTS),
          "tests/backup": ("test_backup_suite_on_postgresql_18", BACKUP_PARTS)}


def suite_part(suite: str, parts: dict[str, list[str] | None], name: str) -> list[str]:
    """The test files of one part; None stands for every file no other part names."""
    files = parts[name]
    if files is None:
        named = {file for other in parts.values() if other for file in other}
        files = sorted(path.name for path in (REPO / suite).glob("test_*.py") if path.name not in named)
    assert files and all((REPO / suite / file).is_file() for file in files), (suite, name, files)
    return [f"{suite}/{file}" for file in files]


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


def skip_host_copies(items: list[pytest.Item], rootpath: Path) -> None:
    """A host test of tests/app or tests/backup whose file also runs inside a root in
    this session (tests/test_runtime.py) is skipped here: the image runs the root's
    Python 3.13 and pg_dump 18, not the host's 3.11 and 15. Without usable roots,
    or when the in-root part is not selected, the host runs them as before."""
    if os.environ.get(IN_ROOT):
        return
    in_root: set[str] = set()
    for item in items:
        for suite, (name, parts) in SUITES.items():
            if getattr(item, "originalname", None) == name and hasattr(item, "callspec"):
                in_root.update(suite_part(suite, parts, item.callspec.params["part"]))
    if not in_root or roots_problem() is not None:
        return
    reason = "runs inside the runtime roots instead (tests/test_runtime.py, the images' Python and PostgreSQL)"
    for item in items:
        path = Path(str(item.path)).relative_to(rootpath).as_posix()
        if path in in_root and item.nodeid not in HOST_ONLY:
            item.add_marker(pytest.mark.skip(reason=reason))
