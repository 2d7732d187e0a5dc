from __future__ import annotations

import io
import os
import secrets
from unittest import mock

from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import TestCase

from core.auth import bearer_user
from core.models import ApiToken


def run(*args: str, **env: str) -> str:
    out = io.StringIO()
    with mock.patch.dict(os.environ, env):
        call_command(*args, stdout=out)
    return out.getvalue()


class EnsureSuperuserTest(TestCase):
    def setUp(self) -> None:
        self.password = secrets.token_urlsafe(16)
        self.env = {
            "DJANGO_SUPERUSER_USERNAME": "root-admin",
            "DJANGO_SUPERUSER_EMAIL": "admin@example.com",
            "DJANGO_SUPERUSER_PASSWORD": self.password,
        }

    def test_creates_once_and_then_leaves_the_user_alone(self) -> None:
        self.assertIn("created", run("ensure_superuser", **self.env))
        user = get_user_model().objects.get(username="root-admin")
        self.assertTrue(user.is_superuser and user.is_staff)
        self.assertTrue(user.check_password(self.password))
        # A password changed in the admin must survive the next deploy.
        user.set_password("changed-in-admin-" + secrets.token_hex(4))
        user.save()
        self.assertIn("unchanged", run("ensure_superuser", **self.env))
        user.refresh_from_db()
        self.assertFalse(user.check_password(self.password))
        self.assertEqual(get_user_model().objects.count(), 1)

    def test_without_username_does_nothing(self) -> None:
        self.assertIn("nothing to do", run("ensure_superuser", DJANGO_SUPERUSER_USERNAME=""))
        self.assertFalse(get_user_model().objects.exists())

    def test_without_password_fails(self) -> None:
        env = {**self.env, "DJANGO_SUPERUSER_PASSWORD": ""}
        with self.assertRaisesMessage(CommandError, "DJANGO_SUPERUSER_PASSWORD"):
            run("ensure_superuser", **env)

    def test_weak_passwords_are_refused_and_no_user_is_created(self) -> None:
        # Each fails a different validator in AUTH_PASSWORD_VALIDATORS.
        for weak in ("admin", "password123", "83920174650", "root-admin-1"):
            env = {**self.env, "DJANGO_SUPERUSER_PASSWORD": weak}
            with self.subTest(password=weak), self.assertRaisesMessage(CommandError, "too weak"):
                run("ensure_superuser", **env)
        self.assertFalse(get_user_model().objects.exists())


class CreateApiTokenTest(TestCase):
    def test_printed_token_authenticates_and_only_its_hash_is_stored(self) -> None:
        user = get_user_model().objects.create_user("carol")
        raw = run("create_api_token", "carol").strip()
        token = ApiToken.objects.get(user=user)
        self.assertNotEqual(token.key_hash, raw)
        request = mock.Mock(META={"HTTP_AUTHORIZATION": f"Bearer {raw}"})
        self.assertEqual(bearer_user(request), user)

    def test_unknown_user_fails(self) -> None:
        with self.assertRaises(CommandError):
            run("create_api_token", "nobody-here")
