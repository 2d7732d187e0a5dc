"""Scoped object-store keys (charts/storage_keys.py, docs/security.md).

1. Rendering: each workload references only its role's key; the admin key
   reaches the S3 server and the bucket Job and nothing else.
2. The SeaweedFS identities file: built at start by jq from the Secret, with
   any character in a key, and nothing secret in the rendered template.
3. Enforcement on a real S3 server: moto's server with IAM enforcement on,
   the role policies attached to IAM users exactly as docs/security.md tells
   an external S3 operator to do. SeaweedFS itself does not install here, so
   its evaluation of the same documents is not run (see the module docstring
   of charts/storage_keys.py for the source it was checked against).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from charts.storage_keys import (
    APP,
    BACKUP,
    MIRROR,
    PRUNE,
    SCOPED_ROLES,
    SEAWEEDFS_CONFIG_SCRIPT,
    policies,
    seaweedfs_template,
)
from tests.support.iam_s3 import EnforcingS3, enforcing_s3
from tests.support.manifests import ENVS, of_kind, pod_templates
from tests.support.render import render_with
from tests.support.services import MissingBinaryError

UPLOADS, DUMPS = "krvibe", "krvibe-backups"
ROOT_KEYS = {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}


def secret_keys_by_workload(objects: list[dict[str, Any]]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for pod in pod_templates(objects):
        # The name label: Job names carry a release suffix.
        keys = found.setdefault(pod.labels["app.kubernetes.io/name"], set())
        for container in pod.containers():
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    keys.add(ref["key"])
    return found


@pytest.mark.parametrize("env", ENVS)
def test_only_the_server_and_the_bucket_job_hold_the_admin_key(manifests, env):
    keys = secret_keys_by_workload(manifests[env])
    holders = sorted(name for name, used in keys.items() if used & ROOT_KEYS)
    assert holders == ["ensure-bucket", "minio"], f"{env}: admin key held by {holders}"
    for app in ("api", "worker-default", "beat", "migrate", "createsuperuser"):
        assert {APP.access_key, APP.secret_key} <= keys[app], f"{env}: {app} lacks the app key"
        assert not keys[app] & {k for r in (BACKUP, PRUNE, MIRROR) for k in (r.access_key, r.secret_key)}


@pytest.mark.parametrize("env", ENVS)
def test_backup_jobs_use_the_write_only_key_and_retention_its_own(manifests, env):
    keys = secret_keys_by_workload(manifests[env])
    for job in ("postgres-backup", "restore-drill", "postgres-restore", "backup-exporter"):
        if job in keys:
            assert keys[job] & {BACKUP.access_key} and not keys[job] & {PRUNE.access_key, *ROOT_KEYS}, job
    assert keys["backup-prune"] >= {PRUNE.access_key, PRUNE.secret_key}
    assert not keys["backup-prune"] & {BACKUP.access_key, *ROOT_KEYS}
    (dump,) = [c for p in pod_templates(manifests[env]) if p.owner["metadata"]["name"] == "postgres-backup"
               for c in p.containers()]
    variables = {v["name"]: v.get("value") for v in dump["env"]}
    assert variables["BACKUP_APPLY_RETENTION"] == "false", "the dumping job must leave deletion to backup-prune"
    (prune,) = [c for p in pod_templates(manifests[env]) if p.owner["metadata"]["name"] == "backup-prune"
                for c in p.containers()]
    assert prune["command"][-1] == "--prune-only"


def test_offsite_copy_covers_uploads_and_dumps_with_the_read_only_key():
    _stack, objects = render_with("prod", {"backups": {"offsite": {"enabled": True, "bucket": "vibearena-dr"}}})
    mirrors = {}
    for pod in pod_templates(objects):
        container = pod.spec["containers"][0]
        if container.get("command") and container["command"][-1].endswith("/s3-mirror"):
            values = {v["name"]: v.get("value") for v in container["env"]}
            refs = {v["name"]: v["valueFrom"]["secretKeyRef"]["key"] for v in container["env"] if "valueFrom" in v}
            mirrors[values["MIRROR_SRC_BUCKET"]] = (values, refs)
    assert sorted(mirrors) == sorted([UPLOADS, DUMPS])
    for values, refs in mirrors.values():
        assert refs["MIRROR_SRC_S3_ACCESS_KEY_ID"] == MIRROR.access_key
        assert values["MIRROR_DST_BUCKET"] == "vibearena-dr"
    assert mirrors[UPLOADS][0]["MIRROR_JOB_NAME"] != mirrors[DUMPS][0]["MIRROR_JOB_NAME"]


def test_legacy_minio_server_falls_back_to_its_root_key():
    # MinIO community has no identities file here: documented, not hidden.
    _stack, objects = render_with("dev", {"object_store": {"server": "minio",
                                                           "image": {"repository": "quay.io/minio/minio",
                                                                     "tag": "RELEASE.2025-09-07T16-13-09Z"}}})
    keys = secret_keys_by_workload(objects)
    assert keys["api"] >= ROOT_KEYS
    assert "backup-prune" not in keys


# --- the SeaweedFS identities file -------------------------------------------------

def build_identities(template: str, environ: dict[str, str], tmp_path) -> subprocess.CompletedProcess[str]:
    source = tmp_path / "template.json"
    source.write_text(template)
    return subprocess.run(["bash", "-c", SEAWEEDFS_CONFIG_SCRIPT, "identities", str(source), str(tmp_path / "s3.json")],
                          env={"PATH": os.environ["PATH"], **environ}, capture_output=True, text=True, check=False)


def test_rendered_template_carries_no_credentials(manifests):
    for env in ENVS:
        (config_map,) = [c for c in of_kind(manifests[env], "ConfigMap")
                         if c["metadata"]["name"] == "object-store-identities"]
        template = json.loads(config_map["data"]["template.json"])
        assert all("credentials" not in identity for identity in template["identities"])
        assert {i["name"] for i in template["identities"]} == {"app", "backup", "prune", "mirror"}
        named = {p["name"] for p in template["policies"]}
        assert all(set(i["policyNames"]) <= named for i in template["identities"])


def test_identities_file_holds_any_character_and_drops_the_env_names(tmp_path):
    awkward = {role: (f'AK"{role.name}\\', f"se cret\n\"'$(rm -rf /)`{role.name}`\u00e9") for role in SCOPED_ROLES}
    environ = {k: v for role, (ak, sk) in awkward.items() for k, v in ((role.access_key, ak), (role.secret_key, sk))}
    result = build_identities(seaweedfs_template(UPLOADS, DUMPS), environ, tmp_path)
    assert result.returncode == 0, result.stderr
    built = json.loads((tmp_path / "s3.json").read_text())
    by_name = {identity["name"]: identity for identity in built["identities"]}
    for role, (ak, sk) in awkward.items():
        identity = by_name[role.name]
        assert identity["credentials"] == [{"accessKey": ak, "secretKey": sk}]
        assert set(identity) == {"name", "policyNames", "credentials"}, "helper fields must not reach SeaweedFS"
    # The policies are the documents of charts/storage_keys.py, verbatim.
    documents = {p["name"]: json.loads(p["content"]) for p in built["policies"]}
    for role, document in policies(UPLOADS, DUMPS).items():
        assert documents[role.policy_name()] == document


def test_missing_key_stops_the_pod_instead_of_starting_open(tmp_path):
    environ = {k: "x" for role in SCOPED_ROLES for k in (role.access_key, role.secret_key)}
    environ[BACKUP.secret_key] = ""
    result = build_identities(seaweedfs_template(UPLOADS, DUMPS), environ, tmp_path)
    assert result.returncode != 0
    assert BACKUP.secret_key in result.stderr
    assert not (tmp_path / "s3.json").exists()


# --- enforcement on a real S3 server ---------------------------------------------

@pytest.fixture(scope="module")
def enforcing(tmp_path_factory) -> Iterator[EnforcingS3]:
    try:
        with enforcing_s3(tmp_path_factory.mktemp("moto-iam"), UPLOADS, DUMPS) as server:
            server.admin.put_object(Bucket=DUMPS, Key="postgres/app/20260101T000000Z.dump", Body=b"dump")
            server.admin.put_object(Bucket=UPLOADS, Key="uploads/a.bin", Body=b"upload")
            yield server
    except MissingBinaryError as exc:
        pytest.skip(str(exc))


def denied(call: Any) -> bool:
    try:
        call()
    except ClientError as error:
        return error.response["Error"]["Code"] in ("AccessDenied", "403")
    return False


def test_admin_bootstrap_is_really_enforcing(enforcing):
    # Without this, every "denied" below could pass for the wrong reason.
    stranger = boto3.client("s3", endpoint_url=enforcing.endpoint, region_name="us-east-1",
                            aws_access_key_id="AKIANOBODY0000000000", aws_secret_access_key="nope")
    with pytest.raises(ClientError):
        stranger.list_objects_v2(Bucket=UPLOADS)


def test_app_key_works_on_uploads_and_cannot_touch_dumps(enforcing):
    s3 = enforcing.role(APP)
    s3.put_object(Bucket=UPLOADS, Key="uploads/new.bin", Body=b"x")
    assert s3.get_object(Bucket=UPLOADS, Key="uploads/new.bin")["Body"].read() == b"x"
    assert any(o["Key"] == "uploads/new.bin" for o in s3.list_objects_v2(Bucket=UPLOADS)["Contents"])
    s3.delete_object(Bucket=UPLOADS, Key="uploads/new.bin")
    # Large uploads go multipart (app/core/storage.py upload_fileobj), as do rclone's.
    big = os.urandom(6 * 1024 * 1024)
    s3.upload_fileobj(io.BytesIO(big), UPLOADS, "uploads/big.bin",
                      Config=TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024))
    assert s3.head_object(Bucket=UPLOADS, Key="uploads/big.bin")["ContentLength"] == len(big)
    # (HeadBucket is not checked: AWS authorises it with s3:ListBucket, moto with
    # its own "s3:HeadBucket", which is no IAM action.)
    assert denied(lambda: s3.list_objects_v2(Bucket=DUMPS))
    assert denied(lambda: s3.get_object(Bucket=DUMPS, Key="postgres/app/20260101T000000Z.dump"))
    assert denied(lambda: s3.delete_object(Bucket=DUMPS, Key="postgres/app/20260101T000000Z.dump"))
    assert denied(lambda: s3.put_object(Bucket=DUMPS, Key="postgres/app/evil.dump", Body=b"x"))
    assert denied(lambda: s3.create_bucket(Bucket="another"))
    assert denied(lambda: s3.delete_bucket(Bucket=UPLOADS))


def test_backup_key_writes_dumps_and_cannot_delete_them(enforcing):
    s3 = enforcing.role(BACKUP)
    s3.put_object(Bucket=DUMPS, Key="postgres/app/.incomplete/20260102T000000Z.dump", Body=b"partial")
    s3.copy_object(Bucket=DUMPS, Key="postgres/app/20260102T000000Z.dump",
                   CopySource={"Bucket": DUMPS, "Key": "postgres/app/.incomplete/20260102T000000Z.dump"})
    s3.delete_object(Bucket=DUMPS, Key="postgres/app/.incomplete/20260102T000000Z.dump")
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=DUMPS)["Contents"]]
    assert "postgres/app/20260102T000000Z.dump" in listed
    assert denied(lambda: s3.delete_object(Bucket=DUMPS, Key="postgres/app/20260101T000000Z.dump"))
    # A batch delete is refused per key (an error entry) or as a whole.
    try:
        answer = s3.delete_objects(Bucket=DUMPS, Delete={"Objects": [{"Key": "postgres/app/20260101T000000Z.dump"}]})
        assert not answer.get("Deleted"), answer
    except ClientError as error:
        assert error.response["Error"]["Code"] == "AccessDenied"
    # Still there, as the admin sees it.
    enforcing.admin.head_object(Bucket=DUMPS, Key="postgres/app/20260101T000000Z.dump")
    assert denied(lambda: s3.list_objects_v2(Bucket=UPLOADS))
    assert denied(lambda: s3.get_object(Bucket=UPLOADS, Key="uploads/a.bin"))


def test_prune_key_deletes_dumps_and_cannot_write(enforcing):
    s3 = enforcing.role(PRUNE)
    enforcing.admin.put_object(Bucket=DUMPS, Key="postgres/app/20250101T000000Z.dump", Body=b"old")
    s3.delete_object(Bucket=DUMPS, Key="postgres/app/20250101T000000Z.dump")
    assert denied(lambda: s3.put_object(Bucket=DUMPS, Key="postgres/app/x.dump", Body=b"x"))
    assert denied(lambda: s3.list_objects_v2(Bucket=UPLOADS))
    assert denied(lambda: s3.get_object(Bucket=UPLOADS, Key="uploads/a.bin"))


def test_mirror_key_reads_both_buckets_and_writes_nothing(enforcing):
    s3 = enforcing.role(MIRROR)
    assert s3.get_object(Bucket=UPLOADS, Key="uploads/a.bin")["Body"].read() == b"upload"
    assert s3.get_object(Bucket=DUMPS, Key="postgres/app/20260101T000000Z.dump")["Body"].read() == b"dump"
    assert denied(lambda: s3.put_object(Bucket=UPLOADS, Key="uploads/b.bin", Body=b"x"))
    assert denied(lambda: s3.delete_object(Bucket=DUMPS, Key="postgres/app/20260101T000000Z.dump"))

