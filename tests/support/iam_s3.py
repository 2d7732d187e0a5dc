"""An S3 server that enforces IAM policies: moto's server with its IAM
access control switched on (INITIAL_NO_AUTH_ACTION_COUNT).

moto counts requests; the first BOOTSTRAP ones run unauthenticated and
create the provisioning user, every later request is signed and checked
against the IAM policies of the key's user. Each role of
charts/storage_keys.py becomes an IAM user with its policy, which is how
docs/security.md tells an external S3 operator to set it up.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.client import Config

from charts.storage_keys import StorageRole, policies
from tests.support.services import LOOPBACK, find_moto_server, free_port, terminate, wait_for_port

BOOTSTRAP = 3


@dataclass
class EnforcingS3:
    endpoint: str
    admin_key: tuple[str, str]
    keys: dict[StorageRole, tuple[str, str]]

    def client(self, key: tuple[str, str]) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=key[0], aws_secret_access_key=key[1],
                            config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}))

    @property
    def admin(self) -> Any:
        return self.client(self.admin_key)

    def role(self, role: StorageRole) -> Any:
        return self.client(self.keys[role])


@contextlib.contextmanager
def enforcing_s3(log_dir: Path, uploads: str, dumps: str) -> Iterator[EnforcingS3]:
    command = find_moto_server()
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    environ["INITIAL_NO_AUTH_ACTION_COUNT"] = str(BOOTSTRAP)
    with (log_dir / "moto-iam.log").open("wb") as log:
        process = subprocess.Popen([*command, "-H", LOOPBACK, "-p", str(port)], stdout=log,
                                   stderr=subprocess.STDOUT, env=environ, start_new_session=True)
    try:
        # A TCP check only: an HTTP probe would use up one of the BOOTSTRAP requests.
        wait_for_port(port, process=process)
        endpoint = f"http://{LOOPBACK}:{port}"

        def iam(key: tuple[str, str]) -> Any:
            return boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                                aws_access_key_id=key[0], aws_secret_access_key=key[1],
                                config=Config(retries={"max_attempts": 1}))

        bootstrap = iam(("bootstrap", "bootstrap"))
        bootstrap.create_user(UserName="provisioner")
        bootstrap.put_user_policy(UserName="provisioner", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        created = bootstrap.create_access_key(UserName="provisioner")["AccessKey"]
        admin_key = (created["AccessKeyId"], created["SecretAccessKey"])
        admin_iam = iam(admin_key)
        keys: dict[StorageRole, tuple[str, str]] = {}
        for role, document in policies(uploads, dumps).items():
            admin_iam.create_user(UserName=role.name)
            admin_iam.put_user_policy(UserName=role.name, PolicyName=role.policy_name(),
                                      PolicyDocument=json.dumps(document))
            key = admin_iam.create_access_key(UserName=role.name)["AccessKey"]
            keys[role] = (key["AccessKeyId"], key["SecretAccessKey"])
        server = EnforcingS3(endpoint=endpoint, admin_key=admin_key, keys=keys)
        for bucket in (uploads, dumps):
            server.admin.create_bucket(Bucket=bucket)
        yield server
    finally:
        terminate(process)
