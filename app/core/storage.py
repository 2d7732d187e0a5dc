"""S3 access (MinIO in the cluster) through boto3."""

from __future__ import annotations

import functools
from typing import IO, Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from django.conf import settings

# Uploaded bytes are stored without the client's claimed type so the bucket
# never serves user content as HTML; the claimed type is kept in the DB.
STORED_CONTENT_TYPE = "application/octet-stream"


@functools.cache
def client() -> Any:
    """One client per process; created lazily so it is made after the fork."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.S3_ENDPOINT_URL,
        aws_access_key_id=settings.S3_ACCESS_KEY,
        aws_secret_access_key=settings.S3_SECRET_KEY,
        region_name=settings.S3_REGION,
        config=Config(
            signature_version="s3v4",
            # MinIO and most self-hosted S3 servers expect path-style URLs.
            s3={"addressing_style": "path"},
            connect_timeout=5,
            read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
        ),
    )


def upload(fileobj: IO[bytes], key: str) -> None:
    client().upload_fileobj(
        fileobj,
        settings.S3_BUCKET,
        key,
        ExtraArgs={"ContentType": STORED_CONTENT_TYPE},
    )


def delete(key: str) -> None:
    client().delete_object(Bucket=settings.S3_BUCKET, Key=key)


def open_stream(key: str) -> Any:
    """The object's body as a botocore StreamingBody."""
    return client().get_object(Bucket=settings.S3_BUCKET, Key=key)["Body"]


def ensure_bucket() -> bool:
    """Create the bucket if it is missing. Returns True when it was created."""
    s3 = client()
    try:
        s3.head_bucket(Bucket=settings.S3_BUCKET)
        return False
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
            raise
    params: dict[str, Any] = {"Bucket": settings.S3_BUCKET}
    if settings.S3_REGION != "us-east-1":
        params["CreateBucketConfiguration"] = {
            "LocationConstraint": settings.S3_REGION
        }
    s3.create_bucket(**params)
    return True
