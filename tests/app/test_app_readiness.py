"""/readyz follows its dependencies; /healthz never does.

Uses its own PostgreSQL and Redis so stopping them does not disturb the
other tests.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.app.harness import App, Server, start_server, stop_server
from tests.support.services import PostgresServer, RedisServer, postgres_server, redis_server

PROBE_HOST = {"Host": "10.244.0.9:8000", "X-Forwarded-Proto": ""}


def probe(server: Server, path: str) -> tuple[int, dict[str, Any]]:
    response = server.request("GET", path, headers=PROBE_HOST, timeout=15)
    return response.status_code, response.json()


def wait_for_readyz(server: Server, status: int, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        code, body = probe(server, "/readyz")
        if code == status or time.monotonic() > deadline:
            assert code == status, f"/readyz stayed {code}: {body}"
            return body
        time.sleep(0.2)


@pytest.mark.slow
def test_readyz_tracks_migrations_database_and_redis(app: App) -> None:
    # The session fixtures behind `app` already proved both binaries exist.
    with postgres_server() as pg, redis_server() as redis:
        env = {"DATABASE_URL": pg.create_database("ready"), "REDIS_URL": redis.url(0)}
        server = start_server(app, workers=1, env=env)
        try:
            check_transitions(app, server, pg, redis, env)
        finally:
            stop_server(server)


def check_transitions(app: App, server: Server, pg: PostgresServer, redis: RedisServer, env: dict[str, str]) -> None:
    # A fresh database: the API must not take traffic before migrate.
    code, body = probe(server, "/readyz")
    assert code == 503, body
    assert body["failed"] == ["migrations"]
    assert body["checks"]["database"] == "ok"

    app.manage_ok("migrate", "--noinput", env=env)
    assert wait_for_readyz(server, 200)["checks"] == {"database": "ok", "migrations": "ok", "redis": "ok"}

    pg.stop()
    body = wait_for_readyz(server, 503)
    assert body["failed"] == ["database"], body
    assert body["checks"]["redis"] == "ok"
    code, health = probe(server, "/healthz")
    assert (code, health) == (200, {"status": "ok"}), "liveness must not depend on the database"

    pg.start()
    wait_for_readyz(server, 200)

    redis.stop()
    body = wait_for_readyz(server, 503)
    assert body["failed"] == ["redis"], body
    assert probe(server, "/healthz")[0] == 200

    redis.start()
    wait_for_readyz(server, 200)
