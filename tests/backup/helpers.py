"""Helpers for the backup tests and bench/backup.py, on top of tests/support/services.py.

The servers come from tests/support/services.py: PostgreSQL run as an unprivileged
user, and moto's S3 server. moto is a pip package (no Docker, no binary download),
speaks the S3 REST API over real HTTP on loopback and supports what the scripts use
(multipart upload, server-side copy, ListObjectsV2, bucket creation); the S3 servers
we would run in a cluster ship as images or release binaries only, which this
environment cannot fetch. This module adds what the backup tests need on top: a
seeded database, table fingerprints, bucket helpers and the scripts' environment.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.services import MissingBinaryError, PostgresServer, postgres_server, s3_server

ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = ROOT / "backup" / "bin"
SEED_MIN_BYTES = 50 * 1024 * 1024
# Tables of the seeded database, each with an integer primary key "id".
SEED_TABLES = ("customers", "orders", "events", "attachments")
DUMP_NAME = r"[0-9]{8}T[0-9]{6}Z\.dump"


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingBinaryError(f"{name} not found: install the Debian package '{package}'")
    return path


def clean_env() -> dict[str, str]:
    """The test process environment without settings that would leak into the scripts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "RCLONE_", "BACKUP_", "MIRROR_", "MINIO_"))}
    # rclone 1.60 refuses to build its HTTP client when AWS_CA_BUNDLE is set
    # ("LoadCustomCABundleError ... unsupported transport"); the scripts never need it.
    env.pop("AWS_CA_BUNDLE", None)
    return env


@dataclass(frozen=True)
class Postgres:
    """A running test server (services.PostgresServer) with the calls these tests use."""

    server: PostgresServer

    @property
    def bin_dir(self) -> Path:
        return self.server.bin_dir

    @property
    def password(self) -> str:
        return self.server.password

    def env(self, database: str) -> dict[str, str]:
        return self.server.env(database)

    def psql(self, database: str, sql: str, *, check: bool = True) -> str:
        """Run SQL (several statements allowed) over TCP; return unaligned output."""
        result = subprocess.run(
            [str(self.bin_dir / "psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d", database],
            input=sql,
            capture_output=True,
            text=True,
            env={**clean_env(), **self.env(database)},
            timeout=300,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"psql on {database} failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def create_database(self, name: str) -> None:
        self.psql("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE);')
        self.psql("postgres", f'CREATE DATABASE "{name}";')

    def database_exists(self, name: str) -> bool:
        return self.psql("postgres", f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") == "1"


@contextlib.contextmanager
def running_postgres() -> Iterator[Postgres]:
    with postgres_server() as server:
        yield Postgres(server)


SEED_SQL = """
CREATE TABLE customers AS
    SELECT g AS id, 'customer ' || g AS name, md5(g::text) || '@example.test' AS email,
           timestamptz '2026-01-01' + g * interval '1 minute' AS created_at
    FROM generate_series(1, 200000 * {scale}) g;
CREATE TABLE orders AS
    SELECT g AS id, (g % (200000 * {scale})) + 1 AS customer_id, round((g % 9973) * 1.37, 2) AS amount,
           (ARRAY['new', 'paid', 'shipped', 'cancelled'])[g % 4 + 1] AS status,
           repeat(md5((g * 7)::text), 2) AS note
    FROM generate_series(1, 400000 * {scale}) g;
CREATE TABLE events AS
    SELECT g AS id, 'kind-' || (g % 17) AS kind,
           jsonb_build_object('n', g, 'tag', md5(g::text), 'ok', g % 2 = 0) AS payload
    FROM generate_series(1, 150000 * {scale}) g;
CREATE TABLE attachments AS
    SELECT g AS id, decode(repeat(md5(g::text) || md5((g + 1)::text), 64), 'hex') AS data
    FROM generate_series(1, 3000 * {scale}) g;
ALTER TABLE customers ADD PRIMARY KEY (id);
ALTER TABLE orders ADD PRIMARY KEY (id);
ALTER TABLE events ADD PRIMARY KEY (id);
ALTER TABLE attachments ADD PRIMARY KEY (id);
CREATE INDEX orders_customer_idx ON orders (customer_id);
ANALYZE;
"""


def table_fingerprints(pg: Postgres, database: str, tables: tuple[str, ...] = SEED_TABLES) -> dict[str, str]:
    """'rows:md5' per table, the md5 taken over all rows in primary-key order."""
    return {
        table: pg.psql(
            database,
            f"SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t.id), '')) FROM {table} t",
        )
        for table in tables
    }


@dataclass(frozen=True)
class SeededDatabase:
    name: str
    size_bytes: int
    fingerprints: dict[str, str] = field(default_factory=dict)


def seed_database(pg: Postgres, name: str, scale: int = 1) -> SeededDatabase:
    """About 110 MB per unit of scale in four tables, made with generate_series."""
    pg.create_database(name)
    pg.psql(name, SEED_SQL.format(scale=scale))
    size = int(
        pg.psql(
            name,
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'",
        )
    )
    if size < SEED_MIN_BYTES:
        raise AssertionError(f"seeded database {name} is only {size} bytes")
    return SeededDatabase(name=name, size_bytes=size, fingerprints=table_fingerprints(pg, name))


@dataclass(frozen=True)
class S3Server:
    """Endpoint and credentials for the scripts, boto3 client for arranging and checking."""

    endpoint: str
    access_key: str
    secret_key: str
    client: Any = None

    def make_bucket(self, prefix: str, *, versioned: bool = False) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.client.create_bucket(Bucket=name)
        if versioned:
            # moto answers CompleteMultipartUpload on an unversioned bucket with
            # "x-amz-version-id: null" (AWS sends no such header) and then rejects
            # rclone's HEAD ?versionId=null. A versioned bucket avoids that moto quirk;
            # listings and deletes of current objects behave the same for these tests.
            self.client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [item["Key"] for item in page.get("Contents", [])]
        return sorted(keys)

    def get(self, bucket: str, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=bucket, Key=key)["Body"].read())

    def put(self, bucket: str, key: str, body: bytes, metadata: Mapping[str, str] | None = None) -> None:
        self.client.put_object(Bucket=bucket, Key=key, Body=body, Metadata=dict(metadata or {}))

    def delete(self, bucket: str, key: str) -> None:
        self.client.delete_object(Bucket=bucket, Key=key)


@contextlib.contextmanager
def running_s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield S3Server(server.endpoint, server.access_key, server.secret_key, server.client())


def script_env(pg: Postgres, s3: S3Server, bucket: str, database: str, **extra: str) -> dict[str, str]:
    """Environment of one script run: the documented contract and nothing else."""
    env = clean_env()
    env["PATH"] = os.pathsep.join([str(BIN_DIR), str(pg.bin_dir), env.get("PATH", "/usr/bin:/bin")])
    env.update(pg.env(database))
    env.update(
        {
            "BACKUP_S3_ENDPOINT": s3.endpoint,
            "BACKUP_S3_BUCKET": bucket,
            "BACKUP_S3_ACCESS_KEY_ID": s3.access_key,
            "BACKUP_S3_SECRET_ACCESS_KEY": s3.secret_key,
            # Short bounds keep the failure tests fast; the defaults are documented.
            "RCLONE_CONTIMEOUT": "2s",
            "RCLONE_TIMEOUT": "5s",
        }
    )
    env.update(extra)
    return env


def run_script(name: str, env: Mapping[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN_DIR / name), *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""
