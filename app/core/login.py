"""The admin login view behind the login throttle.

A locked username or address gets 429 with Retry-After before the form is
processed, so the response says why and no password hash is computed.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse

from core import throttle


def throttled(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method == "POST":
            username = request.POST.get("username")
            if throttle.is_locked(username, throttle.client_address(request)):
                response = HttpResponse(
                    "Too many failed logins. Try again later.\n",
                    status=429,
                    content_type="text/plain",
                )
                response["Retry-After"] = str(throttle.limits().window_seconds)
                return response
        return view(request, *args, **kwargs)

    return wrapper
