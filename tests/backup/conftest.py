"""Session fixtures for the backup tests: one PostgreSQL server, one S3 server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.backup.helpers import (
    Postgres,
    S3Server,
    SeededDatabase,
    require_tool,
    running_postgres,
    running_s3,
    seed_database,
)
from tests.support.services import MissingBinaryError


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    try:
        require_tool("rclone", "rclone")
        require_tool("jq", "jq")
        with running_postgres() as pg:
            yield pg
    except MissingBinaryError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    try:
        with running_s3() as server:
            yield server
    except MissingBinaryError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def seeded_db(postgres: Postgres) -> SeededDatabase:
    """The >= 50 MB database, created once per session."""
    return seed_database(postgres, "app")


@pytest.fixture(scope="session")
def tiny_db(postgres: Postgres) -> str:
    """A small database for tests about naming, retention and verification."""
    postgres.create_database("tiny")
    postgres.psql("tiny", "CREATE TABLE items AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 500) g;")
    return "tiny"
