"""pg-backup and its retention with the scoped keys of charts/storage_keys.py,
on an S3 server that enforces them (tests/support/iam_s3.py): the dumping
job's key publishes dumps without being able to delete them, and the
retention run (pg-backup --prune-only) deletes with its own key. This is the
contract between the scripts and the policies: a script step the policy
does not allow fails here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from charts.storage_keys import BACKUP, PRUNE
from tests.backup.helpers import Postgres, S3Server, run_script, script_env
from tests.backup.test_backup_failures import stamp
from tests.support.iam_s3 import EnforcingS3, enforcing_s3

UPLOADS, DUMPS = "scoped-uploads", "scoped-dumps"


@pytest.fixture(scope="module")
def enforcing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnforcingS3]:
    with enforcing_s3(Path(tmp_path_factory.mktemp("moto-iam")), UPLOADS, DUMPS) as server:
        yield server


def as_role(server: EnforcingS3, role_key: tuple[str, str]) -> S3Server:
    return S3Server(server.endpoint, role_key[0], role_key[1], server.client(role_key))


def keys(server: EnforcingS3) -> set[str]:
    listed = server.admin.list_objects_v2(Bucket=DUMPS).get("Contents", [])
    return {item["Key"] for item in listed}


def test_backup_key_publishes_and_prune_key_applies_retention(
    postgres: Postgres, tiny_db: str, enforcing: EnforcingS3
) -> None:
    now = time.time()
    d = f"postgres/{tiny_db}"
    old, recent = stamp(40, now), stamp(1, now)
    for age_stamp in (old, recent):
        enforcing.admin.put_object(Bucket=DUMPS, Key=f"{d}/{age_stamp}.dump", Body=b"PGDMP old")
        enforcing.admin.put_object(Bucket=DUMPS, Key=f"{d}/{age_stamp}.dump.json", Body=b"{}")

    backup = as_role(enforcing, enforcing.keys[BACKUP])
    env = script_env(postgres, backup, DUMPS, tiny_db, BACKUP_KEEP_MIN="2", BACKUP_RETENTION_DAYS="10",
                     BACKUP_APPLY_RETENTION="false")
    result = run_script("pg-backup", env)
    assert result.returncode == 0, result.stderr
    published = result.stdout.strip()
    after_dump = keys(enforcing)
    assert {published, f"{published}.json", "status/postgres.json"} <= after_dump
    assert not [k for k in after_dump if "/.incomplete/" in k], "the temporary upload must be gone"
    assert f"{d}/{old}.dump" in after_dump, "the dumping job must not apply retention"

    # The same key applying retention is refused by the server, and says so.
    refused = run_script("pg-backup", {**env, "BACKUP_APPLY_RETENTION": "true"})
    assert refused.returncode == 1
    assert "retention: could not delete" in refused.stderr
    assert f"{d}/{old}.dump" in keys(enforcing)

    prune = as_role(enforcing, enforcing.keys[PRUNE])
    pruned = run_script("pg-backup", script_env(postgres, prune, DUMPS, tiny_db, BACKUP_KEEP_MIN="2",
                                                BACKUP_RETENTION_DAYS="10"), "--prune-only")
    assert pruned.returncode == 0, pruned.stderr
    remaining = keys(enforcing)
    assert f"{d}/{old}.dump" not in remaining and f"{d}/{old}.dump.json" not in remaining
    assert {published, f"{d}/{recent}.dump"} <= remaining
