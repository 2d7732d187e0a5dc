"""Bearer-token authentication for the API.

API clients send `Authorization: Bearer <token>`; tokens come from
`manage.py create_api_token`. No cookies are involved, so the API views are
CSRF-exempt; the admin keeps Django's session auth and CSRF protection.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest, HttpResponse, JsonResponse

from core.models import ApiToken, hash_token


def bearer_user(request: HttpRequest) -> AbstractBaseUser | None:
    scheme, _, raw = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    raw = raw.strip()
    if scheme.lower() != "bearer" or not raw:
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=hash_token(raw))
        .first()
    )
    if token is None or not token.user.is_active:
        return None
    return token.user


def unauthorized() -> JsonResponse:
    response = JsonResponse(
        {"error": "unauthorized", "detail": "A valid bearer token is required."},
        status=401,
    )
    response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


def token_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Sets request.api_user or answers 401."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user = bearer_user(request)
        if user is None:
            return unauthorized()
        request.api_user = user  # type: ignore[attr-defined]
        return view(request, *args, **kwargs)

    return wrapper
