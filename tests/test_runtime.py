"""The runtime-dependent suites, run on the images' own runtimes.

tests/app runs inside the trixie root on Python 3.13 (python:3.13-slim is
Debian trixie) against PostgreSQL 18 and Valkey 9 from the forky root;
tests/backup runs inside the forky root, whose pg_dump 18 is the client the
backup image installs. The roots come from scripts/runtime-roots.sh; where
they cannot be built these tests skip with one line (in CI they fail).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.roots import (
    APP_PARTS,
    BACKUP_PARTS,
    HOST_ONLY,
    IN_ROOT,
    REPO,
    package_versions,
    require_roots,
    root_runtime,
    suite_part,
)

pytestmark = pytest.mark.runtime
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def dockerfile_arg(path: Path, pattern: str) -> str:
    match = re.search(pattern, path.read_text(), re.MULTILINE)
    assert match, f"{path}: no match for {pattern}"
    return match.group(1)


def pytest_in_root(root: str, paths: list[str], log: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run pytest on `paths` with the root's venv; its output goes to `log`."""
    clean_env = {"PATH": SYSTEM_PATH, "HOME": "/root", "LC_ALL": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
                 IN_ROOT: root, **env}
    if os.environ.get("CI"):
        clean_env["CI"] = os.environ["CI"]
    command = root_runtime(root).command(
        ["/opt/venv/bin/python", "-m", "pytest", "-p", "no:cacheprovider", "-q", *paths]
    )
    with log.open("w") as out:
        result = subprocess.run(command, cwd=REPO, env=clean_env, stdout=out, stderr=subprocess.STDOUT,
                                text=True, timeout=1800, check=False)
    return subprocess.CompletedProcess(result.args, result.returncode, log.read_text(), "")


def no_missing_tools(output: str) -> bool:
    """No test skipped for a missing server or tool (pytest's -ra summary names each skip)."""
    return re.search(r"^SKIPPED .*(not installed|not found|missing)", output, re.MULTILINE | re.IGNORECASE) is None


def summary(output: str) -> str:
    """pytest's short summary and totals, which name every failure."""
    start = output.rfind("short test summary info")
    return output[start - 40:] if start >= 0 else output[-4000:]


def test_the_roots_run_the_images_runtimes():
    """Each root must hold the version the images run, or the suites below prove nothing."""
    require_roots()
    # app/Dockerfile: FROM python:3.13.15-slim -> the root's Python is 3.13.x.
    base = dockerfile_arg(REPO / "app" / "Dockerfile", r"^FROM python:(\d+\.\d+)\.\d+-slim\b")
    assert package_versions("trixie")["python"].startswith(base + "."), package_versions("trixie")
    # backup/Dockerfile installs postgresql-client-${PG_MAJOR}.
    pg_major = dockerfile_arg(REPO / "backup" / "Dockerfile", r"^ARG PG_MAJOR=(\d+)$")
    assert package_versions("forky")["postgresql-18"].startswith(pg_major + "."), package_versions("forky")
    forky = root_runtime("forky")
    pg_dump = subprocess.run(forky.command([f"/usr/lib/postgresql/{pg_major}/bin/pg_dump", "--version"]),
                             capture_output=True, text=True, check=True).stdout
    assert f"(PostgreSQL) {pg_major}." in pg_dump


@pytest.mark.slow
@pytest.mark.parametrize("part", APP_PARTS)
def test_app_suite_on_python_313(tmp_path, part):
    """The Django suite, Celery worker and beat (liveness), gunicorn's graceful stop and the probes."""
    require_roots()
    result = pytest_in_root("trixie", suite_part("tests/app", APP_PARTS, part), tmp_path / "app.log",
                            TEST_SERVICES_RUNTIME="forky")
    assert result.returncode == 0, summary(result.stdout)
    assert re.search(r"\d+ passed", result.stdout), summary(result.stdout)
    assert no_missing_tools(result.stdout), summary(result.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("part", BACKUP_PARTS)
def test_backup_suite_on_postgresql_18(tmp_path, part):
    """Backup, restore, drill, mirror and exporter with pg_dump/pg_restore 18 against PostgreSQL 18."""
    require_roots()
    deselect = [arg for test in HOST_ONLY for arg in ("--deselect", test)]
    result = pytest_in_root("forky", [*suite_part("tests/backup", BACKUP_PARTS, part), *deselect],
                            tmp_path / "backup.log")
    assert result.returncode == 0, summary(result.stdout)
    assert re.search(r"\d+ passed", result.stdout), summary(result.stdout)
    assert no_missing_tools(result.stdout), summary(result.stdout)
