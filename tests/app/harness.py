"""Helpers for the app tests: run the app's commands as the image would.

The app runs in subprocesses: the Dockerfile's CMD, prod settings, an
unprivileged UID where possible (see app_account), a code directory it does
not own, and HOME/TMPDIR in a temp dir.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from tests.support.services import Account, MissingBinaryError, free_port, terminate, unprivileged_account

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_DIR = REPO_ROOT / "app"
TESTSITE_DIR = Path(__file__).resolve().parent / "testsite"
BIN_DIR = Path(sys.executable).parent

# Variables the app reads; a developer's shell must not leak into the tests.
APP_ENV_PREFIXES = (
    "AWS_", "DJANGO_", "CELERY_", "MINIO_", "GUNICORN_", "DATABASE_", "REDIS_", "OTEL_",
)
APP_ENV_NAMES = {
    "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "MAX_UPLOAD_SIZE", "LOG_LEVEL",
    "PROMETHEUS_MULTIPROC_DIR", "GA_SVC_JSON_BASE64", "DB_CONN_MAX_AGE", "DB_CONNECT_TIMEOUT",
    "PYTHONPATH", "FILE_UPLOAD_TEMP_DIR",
}
TEST_HOST = "api.vibearena.test"
MAX_UPLOAD = 1024 * 1024

S = TypeVar("S")
Env = dict[str, str] | None

def unavailable(exc: Exception) -> None:
    # In CI a missing server is a broken setup, not a reason to pass quietly.
    if os.environ.get("CI"):
        pytest.fail(str(exc), pytrace=False)
    pytest.skip(str(exc))


def serve(factory: Callable[[], AbstractContextManager[S]]) -> Iterator[S]:
    """Fixture body: start a service, skip/fail if its binary is missing."""
    manager = factory()
    try:
        server = manager.__enter__()
    except MissingBinaryError as exc:
        unavailable(exc)
        raise
    try:
        yield server
    finally:
        manager.__exit__(None, None, None)


def dockerfile_cmd() -> list[str]:
    """The exec-form CMD of app/Dockerfile."""
    text = (APP_DIR / "Dockerfile").read_text()
    match = re.search(r"^CMD\s+(\[.*\])\s*$", text, re.MULTILINE)
    assert match, "app/Dockerfile has no exec-form CMD"
    return list(json.loads(match.group(1)))


@dataclass
class App:
    """Runs the app's commands as the image would, against the test services."""

    env: dict[str, str]
    account: Account
    tmp: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def run(self, *args: str, env: Env = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.account.prefix(), *args],
            cwd=APP_DIR,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def manage(self, *args: str, env: Env = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "manage.py", *args, env=env, timeout=timeout)

    def manage_ok(self, *args: str, env: Env = None) -> str:
        result = self.manage(*args, env=env)
        assert result.returncode == 0, f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def start(self, args: list[str], *, name: str, env: Env = None) -> tuple[subprocess.Popen[bytes], Path]:
        """Start a long-running process; returns it and its combined log file."""
        log_path = self.tmp / f"{name}-{secrets.token_hex(3)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [*self.account.prefix(), *args],
                cwd=APP_DIR,
                env={**self.env, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(process)
        return process, log_path

    def private_dir(self, name: str) -> Path:
        path = self.tmp / f"{name}-{secrets.token_hex(3)}"
        path.mkdir()
        self.account.own(path)
        return path


def base_env(tmp: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(APP_ENV_PREFIXES) and key not in APP_ENV_NAMES
    }
    env.update(
        {
            "HOME": str(tmp),
            "TMPDIR": str(tmp),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            # As in the image (ENV PYTHONPATH=/app), plus the test-only site.
            "PYTHONPATH": f"{APP_DIR}{os.pathsep}{TESTSITE_DIR}",
            "PATH": f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    return env


def app_account() -> Account:
    """The unprivileged account if it can run this interpreter, else the current user.

    As root the app runs as `nobody`, like the image's UID 10001, which
    catches writes outside HOME/TMPDIR. That needs an interpreter `nobody`
    can execute; a venv built on a Python under /root is not, so then the
    app runs as the current user.
    """
    account = unprivileged_account()
    probe = subprocess.run(
        [*account.prefix(), sys.executable, "-c", "import sys; print(sys.version)"],
        capture_output=True, text=True, check=False,
    )
    if probe.returncode == 0 and probe.stdout.strip() == sys.version:
        return account
    entry = pwd.getpwuid(os.geteuid())
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


@dataclass
class Server:
    """A gunicorn started with the Dockerfile's CMD."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path
    metrics_dir: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, *, headers: Env = None, **kwargs: Any) -> requests.Response:
        # Requests as they arrive from the ingress: public host, HTTPS scheme.
        merged = {"Host": TEST_HOST, "X-Forwarded-Proto": "https", **(headers or {})}
        kwargs.setdefault("timeout", 30)
        kwargs.setdefault("allow_redirects", False)
        return requests.request(method, self.base_url + path, headers=merged, **kwargs)

    def log_lines(self) -> list[str]:
        return [line for line in self.log.read_text(errors="replace").splitlines() if line.strip()]

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"gunicorn exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if requests.get(self.base_url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"gunicorn did not serve /healthz:\n{self.log.read_text()[-3000:]}")


def start_server(app: App, *, workers: int = 2, env: Env = None) -> Server:
    port = free_port()
    metrics_dir = app.private_dir("prometheus")
    command = dockerfile_cmd()
    command[0] = str(BIN_DIR / command[0])
    process, log = app.start(
        command,
        name="gunicorn",
        env={
            # GUNICORN_CMD_ARGS overrides the config file: loopback, free port.
            "GUNICORN_CMD_ARGS": f"--bind 127.0.0.1:{port}",
            "GUNICORN_WORKERS": str(workers),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "DJANGO_SETTINGS_MODULE": "testsite_settings",
            **(env or {}),
        },
    )
    server = Server(process=process, port=port, log=log, metrics_dir=metrics_dir)
    server.wait_ready()
    return server


def stop_server(server: Server) -> None:
    terminate(server.process, timeout=40)
