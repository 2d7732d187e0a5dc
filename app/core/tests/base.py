from __future__ import annotations

from django.contrib.auth import get_user_model
from django.test import TestCase

from core import storage
from core.models import ApiToken


class ApiTestCase(TestCase):
    """A user with a bearer token, and the bucket created on the S3 server."""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        storage.ensure_bucket()

    def setUp(self) -> None:
        self.user = get_user_model().objects.create_user("alice", "alice@example.com")
        _, self.token = ApiToken.issue(self.user, "test")

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    def other_user_token(self) -> tuple[object, str]:
        other = get_user_model().objects.create_user("bob", "bob@example.com")
        _, raw = ApiToken.issue(other, "test")
        return other, raw
