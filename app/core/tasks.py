"""Celery tasks. Bound to config.celery.app explicitly (see config/__init__)."""

from __future__ import annotations

import hashlib
import logging

from botocore.exceptions import BotoCoreError
from config.celery import app
from django.utils import timezone

from core import storage
from core.models import Heartbeat, StoredFile

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024


# Idempotent (same input, same row update), so redelivery after a lost
# worker is safe and wanted: reject_on_worker_lost requeues it.
@app.task(
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(BotoCoreError,),
    retry_backoff=True,
    max_retries=3,
)
def checksum_file(file_id: int) -> dict[str, object]:
    """Stream the stored object from S3 and record its SHA-256."""
    stored = StoredFile.objects.get(pk=file_id)
    digest = hashlib.sha256()
    size = 0
    body = storage.open_stream(stored.object_key)
    try:
        for chunk in body.iter_chunks(CHUNK_SIZE):
            digest.update(chunk)
            size += len(chunk)
    finally:
        body.close()
    StoredFile.objects.filter(pk=file_id).update(sha256=digest.hexdigest())
    logger.info("checksum recorded", extra={"file_id": file_id, "size": size})
    return {"file_id": file_id, "sha256": digest.hexdigest(), "size": size}


@app.task(ignore_result=True)
def record_heartbeat() -> None:
    """Scheduled by beat; proves beat, broker, worker and database work."""
    Heartbeat.objects.update_or_create(
        name="beat", defaults={"seen_at": timezone.now()}
    )
