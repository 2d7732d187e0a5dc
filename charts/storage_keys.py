"""Who may do what on the object store: one key pair per role.

role     Secret keys (access, secret)                         may
admin    MINIO_ROOT_USER, MINIO_ROOT_PASSWORD                  everything (server, bucket Job only)
app      MINIO_ACCESS_KEY, MINIO_SECRET_KEY                    read, write, delete, list the uploads bucket
backup   BACKUP_S3_ACCESS_KEY_ID, BACKUP_S3_SECRET_ACCESS_KEY  read, write, list dumps; delete only its
                                                               own unfinished uploads (.incomplete/)
prune    BACKUP_PRUNE_S3_ACCESS_KEY_ID, ..._SECRET_ACCESS_KEY  list, read and delete dumps (retention), no write
mirror   MIRROR_S3_ACCESS_KEY_ID, MIRROR_S3_SECRET_ACCESS_KEY  read and list uploads and dumps

The policies are AWS IAM policy documents. The same documents serve three
purposes: the in-cluster SeaweedFS loads them as static policies attached to
its identities (weed/s3api auth_credentials.go: identities with policyNames
are authorised by these documents, with s3:PutObject vs s3:DeleteObject kept
apart); docs/security.md shows them for external S3; the tests enforce them
on a real S3 server (moto with IAM enforcement).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

INCOMPLETE = ".incomplete"


@dataclass(frozen=True)
class StorageRole:
    name: str
    access_key: str  # Secret key (and env var) holding the access key id
    secret_key: str  # Secret key (and env var) holding the secret key

    def policy_name(self) -> str:
        return f"vibearena-{self.name}"


ADMIN = StorageRole("admin", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD")
APP = StorageRole("app", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY")
BACKUP = StorageRole("backup", "BACKUP_S3_ACCESS_KEY_ID", "BACKUP_S3_SECRET_ACCESS_KEY")
PRUNE = StorageRole("prune", "BACKUP_PRUNE_S3_ACCESS_KEY_ID", "BACKUP_PRUNE_S3_SECRET_ACCESS_KEY")
MIRROR = StorageRole("mirror", "MIRROR_S3_ACCESS_KEY_ID", "MIRROR_S3_SECRET_ACCESS_KEY")
SCOPED_ROLES = (APP, BACKUP, PRUNE, MIRROR)


def _bucket(name: str) -> str:
    return f"arn:aws:s3:::{name}"


def _objects(name: str, pattern: str = "*") -> str:
    return f"arn:aws:s3:::{name}/{pattern}"


def _statement(sid: str, actions: list[str], resources: list[str]) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources}


def policies(uploads: str, dumps: str) -> dict[StorageRole, dict[str, Any]]:
    """The IAM policy document of every scoped role, for these bucket names."""
    read_write = ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"]
    return {
        APP: {"Version": "2012-10-17", "Statement": [
            _statement("ListUploads", ["s3:ListBucket", "s3:GetBucketLocation"], [_bucket(uploads)]),
            _statement("ReadWriteDeleteUploads", [*read_write, "s3:DeleteObject"], [_objects(uploads)]),
        ]},
        BACKUP: {"Version": "2012-10-17", "Statement": [
            _statement("ListDumps", ["s3:ListBucket", "s3:GetBucketLocation"], [_bucket(dumps)]),
            _statement("ReadWriteDumps", read_write, [_objects(dumps)]),
            # pg-backup streams into <prefix>/<db>/.incomplete/ and publishes by
            # copy + delete; a failed run removes its own partial upload.
            _statement("DeleteOwnUnfinishedUploads", ["s3:DeleteObject"],
                       [_objects(dumps, f"*/{INCOMPLETE}/*")]),
        ]},
        PRUNE: {"Version": "2012-10-17", "Statement": [
            _statement("ListDumps", ["s3:ListBucket", "s3:GetBucketLocation"], [_bucket(dumps)]),
            # rclone stats (HEAD = s3:GetObject) an object before deleting it.
            _statement("DeleteExpiredDumps", ["s3:GetObject", "s3:DeleteObject"], [_objects(dumps)]),
        ]},
        MIRROR: {"Version": "2012-10-17", "Statement": [
            _statement("ListSources", ["s3:ListBucket", "s3:GetBucketLocation"], [_bucket(uploads), _bucket(dumps)]),
            _statement("ReadSources", ["s3:GetObject"], [_objects(uploads), _objects(dumps)]),
        ]},
    }


def seaweedfs_template(uploads: str, dumps: str) -> str:
    """SeaweedFS -s3.config without credentials (rendered into a ConfigMap).

    Each identity names the env vars its key pair comes from; the init
    container (SEAWEEDFS_CONFIG_SCRIPT) puts the values in with jq and drops
    those two fields. The admin identity is not listed: SeaweedFS adds it
    from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY of the server container
    (loadEnvironmentVariableCredentials).
    """
    documents = policies(uploads, dumps)
    config = {
        "identities": [
            {"name": role.name, "policyNames": [role.policy_name()],
             "accessKeyEnv": role.access_key, "secretKeyEnv": role.secret_key}
            for role in SCOPED_ROLES
        ],
        "policies": [
            {"name": role.policy_name(), "content": json.dumps(documents[role], sort_keys=True)}
            for role in SCOPED_ROLES
        ],
    }
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


# Runs in the init container (the backup image: bash and jq). jq's --arg and
# $ENV encode any character correctly; an unset or empty key stops the pod.
SEAWEEDFS_CONFIG_SCRIPT = r"""set -eu
jq '
  .identities |= map(
    . as $identity
    | ($ENV[$identity.accessKeyEnv] // "") as $access
    | ($ENV[$identity.secretKeyEnv] // "") as $secret
    | if $access == "" or $secret == "" then
        error("missing \($identity.accessKeyEnv) or \($identity.secretKeyEnv) for identity \($identity.name)")
      else . end
    | .credentials = [{accessKey: $access, secretKey: $secret}]
    | del(.accessKeyEnv, .secretKeyEnv))
' "$1" >"$2.tmp"
mv "$2.tmp" "$2"
"""
