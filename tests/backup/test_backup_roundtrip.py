"""pg-backup -> S3 -> pg-restore / restore-drill with real PostgreSQL, rclone and S3."""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass

import pytest

from tests.backup.helpers import (
    DUMP_NAME,
    Postgres,
    S3Server,
    SeededDatabase,
    last_line,
    run_script,
    script_env,
    table_fingerprints,
)

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class PublishedBackup:
    bucket: str
    key: str
    started: float
    finished: float
    stderr: str


@pytest.fixture(scope="module")
def app_backup(postgres: Postgres, s3: S3Server, seeded_db: SeededDatabase) -> PublishedBackup:
    """One backup of the seeded database, shared by the read-only tests below."""
    bucket = s3.make_bucket("roundtrip", versioned=True)
    started = time.time()
    result = run_script("pg-backup", script_env(postgres, s3, bucket, seeded_db.name))
    finished = time.time()
    assert result.returncode == 0, f"pg-backup failed: {result.stderr}"
    return PublishedBackup(bucket, result.stdout.strip(), started, finished, result.stderr)


def test_backup_publishes_dump_manifest_and_status(s3: S3Server, app_backup: PublishedBackup) -> None:
    key = app_backup.key
    assert re.fullmatch(rf"postgres/app/{DUMP_NAME}", key), f"unexpected dump key {key!r}"
    assert s3.keys(app_backup.bucket) == sorted([key, f"{key}.json", "status/postgres.json"]), (
        "bucket should hold exactly the dump, its manifest and the status object (no temporary object)"
    )
    body = s3.get(app_backup.bucket, key)
    manifest = json.loads(s3.get(app_backup.bucket, f"{key}.json"))
    assert body[:5] == b"PGDMP", "dump is not in pg_dump custom format"
    assert manifest["size_bytes"] == len(body), "manifest size differs from the stored object"
    assert manifest["sha256"] == hashlib.sha256(body).hexdigest(), "manifest sha256 differs from the object"
    assert manifest["db"] == "app" and manifest["object"] == key
    assert manifest["pg_dump_version"].startswith("pg_dump (PostgreSQL)")
    assert manifest["server_version"][:2].isdigit()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", manifest["created_at"])
    status = json.loads(s3.get(app_backup.bucket, "status/postgres.json"))
    assert status["job"] == "postgres" and status["object"] == key
    assert app_backup.started - 1 <= status["last_success_timestamp"] <= app_backup.finished + 1
    assert status["size_bytes"] == len(body)


def test_restore_named_dump_into_fresh_database_is_identical(
    postgres: Postgres, s3: S3Server, seeded_db: SeededDatabase, app_backup: PublishedBackup
) -> None:
    target = "restored_named"
    postgres.psql("postgres", f"DROP DATABASE IF EXISTS {target} WITH (FORCE)")
    name = app_backup.key.rsplit("/", 1)[1]
    env = script_env(postgres, s3, app_backup.bucket, seeded_db.name, RESTORE_TARGET_DB=target)
    result = run_script("pg-restore", env, "--create-db", name.removesuffix(".dump"))
    assert result.returncode == 0, f"pg-restore failed: {result.stderr}"
    assert result.stdout.strip() == app_backup.key
    assert "sha256 verified" in result.stderr
    assert table_fingerprints(postgres, target) == seeded_db.fingerprints, "restored tables differ from the source"
    indexes = postgres.psql(target, "SELECT count(*) FROM pg_indexes WHERE indexname = 'orders_customer_idx'")
    assert indexes == "1", "secondary index missing after restore"


def test_restore_replaces_existing_objects(
    postgres: Postgres, s3: S3Server, seeded_db: SeededDatabase, app_backup: PublishedBackup
) -> None:
    """--clean --if-exists: a damaged copy of the database is overwritten by the dump."""
    target = "restored_over"
    postgres.create_database(target)
    postgres.psql(target, "CREATE TABLE orders (id int PRIMARY KEY, note text); INSERT INTO orders VALUES (1, 'bad');")
    env = script_env(postgres, s3, app_backup.bucket, seeded_db.name, RESTORE_TARGET_DB=target)
    result = run_script("pg-restore", env)  # latest
    assert result.returncode == 0, f"pg-restore failed: {result.stderr}"
    assert table_fingerprints(postgres, target) == seeded_db.fingerprints


def test_list_shows_dumps_newest_first(
    postgres: Postgres, s3: S3Server, seeded_db: SeededDatabase, app_backup: PublishedBackup
) -> None:
    env = script_env(postgres, s3, app_backup.bucket, seeded_db.name)
    result = run_script("pg-restore", env, "--list")
    assert result.returncode == 0, result.stderr
    name, size = result.stdout.split()
    assert name == app_backup.key.rsplit("/", 1)[1]
    assert int(size) == len(s3.get(app_backup.bucket, app_backup.key))


def test_restore_drill_passes_and_records_status(
    postgres: Postgres, s3: S3Server, seeded_db: SeededDatabase, app_backup: PublishedBackup
) -> None:
    env = script_env(
        postgres,
        s3,
        app_backup.bucket,
        seeded_db.name,
        DRILL_DB="drill_ok",
        DRILL_MIN_TABLES="4",
        DRILL_CHECK_SQL="SELECT count(*) = 400000 FROM orders",
    )
    result = run_script("restore-drill", env)
    assert result.returncode == 0, f"restore-drill failed: {result.stderr}"
    assert not postgres.database_exists("drill_ok"), "scratch database left behind"
    status = json.loads(s3.get(app_backup.bucket, "status/restore-drill.json"))
    assert status["object"] == app_backup.key and status["tables"] == 4


def test_restore_drill_fails_on_failed_check(
    postgres: Postgres, s3: S3Server, seeded_db: SeededDatabase, app_backup: PublishedBackup
) -> None:
    env = script_env(
        postgres,
        s3,
        app_backup.bucket,
        seeded_db.name,
        DRILL_DB="drill_bad",
        DRILL_JOB_NAME="drill-bad",
        DRILL_CHECK_SQL="SELECT count(*) = 1 FROM orders",
    )
    result = run_script("restore-drill", env)
    assert result.returncode == 1, f"drill should fail: {result.stderr}"
    assert "DRILL_CHECK_SQL returned 'f'" in last_line(result.stderr)
    assert not postgres.database_exists("drill_bad"), "scratch database left behind after a failed drill"
    assert "status/drill-bad.json" not in s3.keys(app_backup.bucket), "failed drill must not record success"


@pytest.mark.parametrize("size", ["tiny", "seeded"])
def test_restore_rejects_checksum_mismatch_and_leaves_target_unchanged(
    postgres: Postgres, s3: S3Server, request: pytest.FixtureRequest, size: str
) -> None:
    """Small dumps fit in the held-back tail; large ones are nearly all restored before
    the mismatch is known. Both must roll back."""
    database = request.getfixturevalue("tiny_db") if size == "tiny" else request.getfixturevalue("seeded_db").name
    table = "items" if size == "tiny" else "orders"
    bucket = s3.make_bucket("mismatch", versioned=True)
    backup = run_script("pg-backup", script_env(postgres, s3, bucket, database))
    assert backup.returncode == 0, backup.stderr
    key = backup.stdout.strip()
    manifest = json.loads(s3.get(bucket, f"{key}.json"))
    manifest["sha256"] = hashlib.sha256(b"something else").hexdigest()
    s3.put(bucket, f"{key}.json", json.dumps(manifest).encode())

    target = f"mismatch_{size}"
    postgres.create_database(target)
    # Same table name as in the dump: --clean would drop it if anything were committed.
    postgres.psql(target, f"CREATE TABLE {table} (id int PRIMARY KEY, v text); INSERT INTO {table} VALUES (42, 'keep')")
    env = script_env(postgres, s3, bucket, database, RESTORE_TARGET_DB=target)
    result = run_script("pg-restore", env)
    assert result.returncode == 1, f"pg-restore accepted a dump that does not match its manifest: {result.stderr}"
    assert "sha256 mismatch" in last_line(result.stderr)
    assert postgres.psql(target, f"SELECT id || ':' || v FROM {table}") == "42:keep", (
        "target database was modified although verification failed"
    )
    tables = postgres.psql(target, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
    assert tables == "1", "restored tables are visible although verification failed"


def test_restore_without_manifest_refuses(postgres: Postgres, s3: S3Server, tiny_db: str) -> None:
    bucket = s3.make_bucket("nomanifest", versioned=True)
    backup = run_script("pg-backup", script_env(postgres, s3, bucket, tiny_db))
    assert backup.returncode == 0, backup.stderr
    s3.delete(bucket, backup.stdout.strip() + ".json")
    env = script_env(postgres, s3, bucket, tiny_db, RESTORE_TARGET_DB="never_created")
    result = run_script("pg-restore", env, "--create-db")
    assert result.returncode == 1
    assert "cannot read manifest" in last_line(result.stderr)
    assert not postgres.database_exists("never_created")
