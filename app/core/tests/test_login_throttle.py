"""Failed admin logins lock the username and the client address (core.throttle).

Runs on the real Redis cache (the suite's settings), with Django's test
client posting the admin login form. Each test uses its own usernames and
addresses, so counts from other tests (same Redis) cannot interfere.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import TestCase

LOGIN = "/admin/login/"


def random_address() -> str:
    return f"198.18.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"


class LoginThrottleTest(TestCase):
    def setUp(self) -> None:
        self.suffix = secrets.token_hex(4)
        self.username = f"staff-{self.suffix}"
        self.password = secrets.token_urlsafe(16)
        get_user_model().objects.create_user(
            self.username, password=self.password, is_staff=True, is_superuser=True
        )

    def post(self, username: str, password: str, address: str) -> int:
        response = self.client.post(
            LOGIN,
            {"username": username, "password": password, "next": "/admin/"},
            HTTP_X_FORWARDED_FOR=address,
        )
        return response.status_code

    def logged_in(self) -> bool:
        return "_auth_user_id" in self.client.session

    def test_right_password_logs_in_before_any_failure(self) -> None:
        self.assertEqual(self.post(self.username, self.password, random_address()), 302)
        self.assertTrue(self.logged_in())

    def test_twenty_failures_for_one_user_lock_it_from_every_address(self) -> None:
        for _ in range(20):
            status = self.post(self.username, "wrong-" + secrets.token_hex(4), random_address())
            self.assertIn(status, (200, 429))
        status = self.post(self.username, self.password, random_address())
        self.assertEqual(status, 429, "the right password must be refused while locked")
        self.assertFalse(self.logged_in())

    def test_twenty_failures_from_one_address_lock_it_for_every_user(self) -> None:
        address = random_address()
        for attempt in range(20):
            # A different made-up username each time: only the address repeats.
            self.post(f"guess-{self.suffix}-{attempt}", "wrong", address)
        self.assertEqual(self.post(self.username, self.password, address), 429)
        self.assertFalse(self.logged_in())
        # The same account from another address still works: per address.
        self.assertEqual(self.post(self.username, self.password, random_address()), 302)
        self.assertTrue(self.logged_in())

    def test_lock_also_holds_outside_the_admin_view(self) -> None:
        # The backend refuses too, so any other login path is covered.
        for _ in range(settings.LOGIN_FAILURES_PER_USERNAME):
            self.post(self.username, "wrong", random_address())
        self.assertFalse(self.client.login(username=self.username, password=self.password))

    def test_only_the_last_forwarded_address_counts(self) -> None:
        # A client cannot dodge the per-address count by sending its own
        # X-Forwarded-For: the ingress appends the real one last.
        address = random_address()
        for attempt in range(settings.LOGIN_FAILURES_PER_ADDRESS):
            self.post(f"spoof-{self.suffix}-{attempt}", "wrong", f"{random_address()}, {address}")
        self.assertEqual(self.post(self.username, self.password, address), 429)
