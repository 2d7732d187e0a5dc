from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.db import models


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiToken(models.Model):
    """A bearer token for the API. Only its SHA-256 is stored.

    Tokens are random 256-bit values, so a plain hash (no salt, no slow KDF)
    is enough and keeps the lookup a single indexed query per request.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.user})"

    @classmethod
    def issue(cls, user: models.Model, name: str) -> tuple[ApiToken, str]:
        """Create a token and return it with the raw value, shown only once."""
        raw = secrets.token_urlsafe(32)
        return cls.objects.create(user=user, name=name, key_hash=hash_token(raw)), raw


class StoredFile(models.Model):
    """An uploaded file. The bytes live in the S3 bucket under object_key."""

    # PROTECT: deleting a user must not orphan objects in the bucket silently.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="files"
    )
    object_key = models.CharField(max_length=512, unique=True)
    name = models.CharField(max_length=255)
    size = models.BigIntegerField()
    content_type = models.CharField(max_length=255)
    sha256 = models.CharField(max_length=64, blank=True)
    checksum_task_id = models.CharField(max_length=36, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ("-created_at", "-id")

    def __str__(self) -> str:
        return self.name

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.pk,
            "name": self.name,
            "size": self.size,
            "content_type": self.content_type,
            "sha256": self.sha256 or None,
            "created_at": self.created_at.isoformat(),
        }


class Heartbeat(models.Model):
    """Last time a scheduled task ran, written by the beat-scheduled task.

    Shows in the admin whether beat, broker and worker work end to end.
    """

    name = models.CharField(max_length=50, unique=True)
    seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} at {self.seen_at.isoformat()}"
