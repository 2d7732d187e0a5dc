"""Create the MINIO_BUCKET bucket if it is missing (dev, kind and tests).

In production the bucket usually exists already and the app credentials may
not be allowed to create buckets; then this command reports the error.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core import storage


class Command(BaseCommand):
    help = "Create the configured S3 bucket if it does not exist."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            created = storage.ensure_bucket()
        except (BotoCoreError, ClientError) as exc:
            raise CommandError(
                f"Could not check or create bucket {settings.S3_BUCKET}: {exc}"
            ) from exc
        state = "created" if created else "already exists"
        self.stdout.write(f"Bucket {settings.S3_BUCKET} {state}.")
