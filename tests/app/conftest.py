"""Session fixtures for the reference app: real PostgreSQL, Redis and S3
servers, the migrated app, a gunicorn and a Celery worker (helpers live in
tests/app/harness.py)."""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.app.harness import (
    APP_DIR,
    BIN_DIR,
    TEST_HOST,
    App,
    Server,
    app_account,
    base_env,
    serve,
    start_server,
    stop_server,
)
from tests.support.services import (
    PostgresServer,
    RedisServer,
    S3Server,
    make_temp_dir,
    postgres_server,
    redis_server,
    s3_server,
    terminate,
)

# Pure-Python modules of the app (config.env, config.logs) are imported
# in-process by some tests; appended so nothing else is shadowed.
if str(APP_DIR) not in sys.path:
    sys.path.append(str(APP_DIR))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    yield from serve(postgres_server)


@pytest.fixture(scope="session")
def redis_srv() -> Iterator[RedisServer]:
    yield from serve(redis_server)


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    yield from serve(s3_server)


@pytest.fixture(scope="session")
def app(postgres: PostgresServer, redis_srv: RedisServer, s3: S3Server) -> Iterator[App]:
    """Migrated database, bucket, collected static files, superuser and token."""
    account = app_account()
    tmp = make_temp_dir("apptest-", account)
    static_root = make_temp_dir("appstatic-")
    static_root.chmod(0o755)  # collected by root, read by the app user
    env = base_env(tmp)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.prod",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": f"{TEST_HOST},127.0.0.1,localhost",
            "DATABASE_URL": postgres.create_database("app"),
            "REDIS_URL": redis_srv.url(0),
            "MINIO_ENDPOINT": s3.endpoint,
            "MINIO_ROOT_USER": s3.access_key,
            "MINIO_ROOT_PASSWORD": s3.secret_key,
            "MINIO_BUCKET": "krvibe-test",
            "MAX_UPLOAD_SIZE": "1m",
            "DJANGO_STATIC_ROOT": str(static_root),
            "DJANGO_SUPERUSER_USERNAME": "admin",
            "DJANGO_SUPERUSER_EMAIL": "admin@vibearena.test",
            "DJANGO_SUPERUSER_PASSWORD": secrets.token_urlsafe(18),
        }
    )
    runner = App(env=env, account=account, tmp=tmp)
    try:
        # collectstatic runs as root, like the image build; the app only reads.
        build = subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
            cwd=APP_DIR,
            env={**env, "DJANGO_SETTINGS_MODULE": "config.settings.build"},
            capture_output=True,
            text=True,
            check=False,
        )
        assert build.returncode == 0, f"collectstatic failed:\n{build.stderr}"
        runner.manage_ok("migrate", "--noinput")
        runner.manage_ok("ensure_bucket")
        runner.manage_ok("ensure_superuser")
        yield runner
    finally:
        for process in runner.processes:
            terminate(process)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(static_root, ignore_errors=True)


@pytest.fixture(scope="session")
def api_token(app: App) -> str:
    return app.manage_ok("create_api_token", "admin", "--name", "tests").strip()


@pytest.fixture(scope="session")
def api_server(app: App) -> Iterator[Server]:
    """Shared gunicorn with two workers (prod settings plus /slow/)."""
    server = start_server(app, workers=2)
    yield server
    stop_server(server)


@pytest.fixture(scope="session")
def celery_worker(app: App) -> Iterator[dict[str, Any]]:
    """A real worker consuming from the test Redis; heartbeat every 0.5 s."""
    heartbeat = app.private_dir("celery") / "heartbeat"
    env = {"CELERY_LIVENESS_FILE": str(heartbeat), "CELERY_LIVENESS_INTERVAL": "0.5"}
    process, log = app.start(
        [str(BIN_DIR / "celery"), "-A", "config", "--quiet", "worker", "--loglevel", "INFO",
         "--without-gossip", "--without-mingle",
         "--concurrency", "1", "--hostname", "test@%h"],
        name="celery-worker",
        env=env,
    )
    deadline = time.monotonic() + 60
    while not heartbeat.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"worker did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    yield {"process": process, "log": log, "heartbeat": heartbeat, "env": env}
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)
    terminate(process, timeout=30)
