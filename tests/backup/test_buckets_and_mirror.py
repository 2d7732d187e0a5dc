"""ensure-bucket and s3-mirror against a real S3 server with real rclone."""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest

from tests.backup.helpers import S3Server, clean_env, last_line, run_script

pytestmark = pytest.mark.slow


def minio_env(s3: S3Server, **extra: str) -> dict[str, str]:
    return {
        **clean_env(),
        "MINIO_ENDPOINT": s3.endpoint,
        "MINIO_ROOT_USER": s3.access_key,
        "MINIO_ROOT_PASSWORD": s3.secret_key,
        **extra,
    }


def bucket_names(s3: S3Server) -> list[str]:
    return sorted(b["Name"] for b in s3.client.list_buckets()["Buckets"])


def test_ensure_bucket_creates_once_and_then_changes_nothing(s3: S3Server) -> None:
    bucket = f"krvibe-{uuid.uuid4().hex[:8]}"
    env = minio_env(s3, MINIO_BUCKET=bucket)
    first = run_script("ensure-bucket", env)
    assert first.returncode == 0, first.stderr
    assert f"bucket {bucket} created" in first.stderr
    assert bucket in bucket_names(s3)
    s3.put(bucket, "media/keep.txt", b"user upload")
    created = {b["Name"]: b["CreationDate"] for b in s3.client.list_buckets()["Buckets"]}[bucket]
    before = bucket_names(s3)

    second = run_script("ensure-bucket", env)
    assert second.returncode == 0, second.stderr
    assert f"bucket {bucket} exists" in second.stderr
    assert bucket_names(s3) == before, "second run changed the set of buckets"
    assert {b["Name"]: b["CreationDate"] for b in s3.client.list_buckets()["Buckets"]}[bucket] == created
    assert s3.get(bucket, "media/keep.txt") == b"user upload", "existing objects must survive"


def test_ensure_bucket_accepts_several_and_bare_endpoint_and_rejects_bad_names(s3: S3Server) -> None:
    names = [f"app-{uuid.uuid4().hex[:8]}", f"backups-{uuid.uuid4().hex[:8]}"]
    # An endpoint without a scheme, as in-cluster settings often are, means http://.
    result = run_script("ensure-bucket", minio_env(s3, MINIO_ENDPOINT=s3.endpoint.removeprefix("http://")), *names)
    assert result.returncode == 0, result.stderr
    assert set(names) <= set(bucket_names(s3))
    bad = run_script("ensure-bucket", minio_env(s3), "Not_A_Bucket")
    assert bad.returncode == 2
    assert "valid S3 bucket name" in last_line(bad.stderr)


def mirror_env(s3: S3Server, src: str, dst: str, status_bucket: str, **extra: str) -> dict[str, str]:
    connection = {"ENDPOINT": s3.endpoint, "ACCESS_KEY_ID": s3.access_key, "SECRET_ACCESS_KEY": s3.secret_key}
    env = clean_env()
    for side in ("MIRROR_SRC_S3", "MIRROR_DST_S3", "BACKUP_S3"):
        env.update({f"{side}_{name}": value for name, value in connection.items()})
    env.update(
        {
            "MIRROR_SRC_BUCKET": src,
            "MIRROR_DST_BUCKET": dst,
            "MIRROR_DST_PREFIX": "krvibe",
            "BACKUP_S3_BUCKET": status_bucket,
            "RCLONE_CONTIMEOUT": "2s",
            "RCLONE_TIMEOUT": "5s",
        }
    )
    env.update(extra)
    return env


def objects(s3: S3Server, bucket: str, prefix: str = "") -> dict[str, tuple[str, object]]:
    """key -> (ETag, LastModified) under prefix, with the prefix removed."""
    found = {}
    for page in s3.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            found[item["Key"].removeprefix(prefix)] = (item["ETag"], item["LastModified"])
    return found


def test_s3_mirror_copies_then_second_run_is_a_noop_then_keeps_history(s3: S3Server) -> None:
    src = s3.make_bucket("app")
    dst = s3.make_bucket("offsite")
    status_bucket = s3.make_bucket("status")
    files = {
        "media/a.txt": b"alpha",
        "media/b/c.bin": bytes(range(256)) * 4096,
        "static/site.css": b"body {}",
    }
    for key, body in files.items():
        s3.put(src, key, body)
    now = time.time()
    old_stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now - 40 * 86400))
    recent_stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now - 5 * 86400))
    s3.put(dst, f"krvibe/history/{old_stamp}/media/gone.txt", b"old")
    s3.put(dst, f"krvibe/history/{recent_stamp}/media/recent.txt", b"recent")
    env = mirror_env(s3, src, dst, status_bucket, MIRROR_RETENTION_DAYS="30")

    first = run_script("s3-mirror", env)
    assert first.returncode == 0, first.stderr
    current = objects(s3, dst, "krvibe/current/")
    assert sorted(current) == sorted(files)
    for key, body in files.items():
        assert s3.get(dst, f"krvibe/current/{key}") == body, f"mirrored {key} differs"
    history = sorted(objects(s3, dst, "krvibe/history/"))
    assert history == [f"{recent_stamp}/media/recent.txt"], "expired history folder kept or recent one deleted"
    status = json.loads(s3.get(status_bucket, "status/s3-mirror.json"))
    assert status["job"] == "s3-mirror" and status["source"] == src

    second = run_script("s3-mirror", env)
    assert second.returncode == 0, second.stderr
    assert objects(s3, dst, "krvibe/current/") == current, "second run rewrote unchanged objects"
    assert sorted(objects(s3, dst, "krvibe/history/")) == history, "second run created history"

    s3.put(src, "media/a.txt", b"alpha, edited")
    s3.delete(src, "static/site.css")
    third = run_script("s3-mirror", env)
    assert third.returncode == 0, third.stderr
    assert s3.get(dst, "krvibe/current/media/a.txt") == b"alpha, edited"
    assert "static/site.css" not in objects(s3, dst, "krvibe/current/")
    new_history = {k: v for k, v in objects(s3, dst, "krvibe/history/").items() if not k.startswith(recent_stamp)}
    assert len({k.split("/", 1)[0] for k in new_history}) == 1, "one dated folder per run"
    folder = next(iter(new_history)).split("/", 1)[0]
    assert re.fullmatch(r"[0-9]{8}T[0-9]{6}Z", folder)
    assert s3.get(dst, f"krvibe/history/{folder}/media/a.txt") == b"alpha", "replaced version not kept"
    assert s3.get(dst, f"krvibe/history/{folder}/static/site.css") == b"body {}", "deleted file not kept"


def test_s3_mirror_fails_cleanly_when_target_bucket_is_missing(s3: S3Server) -> None:
    src = s3.make_bucket("app")
    s3.put(src, "a.txt", b"a")
    status_bucket = s3.make_bucket("status")
    env = mirror_env(s3, src, "no-such-bucket-here", status_bucket)
    result = run_script("s3-mirror", env)
    assert result.returncode == 1
    assert "sync of" in last_line(result.stderr)
    assert "no-such-bucket-here" not in bucket_names(s3), "the mirror must not create buckets"
    assert s3.keys(status_bucket) == [], "a failed mirror must not record success"
