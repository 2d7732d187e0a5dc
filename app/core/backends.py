"""Authentication backend with login throttling (core.throttle)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from core import throttle


class ThrottledModelBackend(ModelBackend):
    """Django's ModelBackend that refuses locked usernames and addresses.

    PermissionDenied stops django.contrib.auth.authenticate() at once, so
    no other backend and no password hash runs for a locked login.
    """

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> AbstractBaseUser | None:
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        address = throttle.client_address(request)
        if throttle.is_locked(username, address):
            raise PermissionDenied("too many failed logins")
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None:
            throttle.record_failure(username, address)
        elif username:
            throttle.clear_username(username)
        return user
