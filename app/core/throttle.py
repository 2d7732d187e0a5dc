"""Login throttling per username and per client address.

Each failed login counts against the username and the client address in
the shared cache (Redis), in a fixed window. Once either count reaches its
limit, further logins for that username or from that address are refused
until the window ends, without checking the password: that also spares the
~0.3 s of PBKDF2 CPU per guess. A successful login clears the username's
count, never the address's, so one known account cannot reset a guessing
run against others.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest

KEY_PREFIX = "login-failures"


@dataclass(frozen=True)
class Limits:
    per_username: int
    per_address: int
    window_seconds: int


def limits() -> Limits:
    return Limits(
        per_username=settings.LOGIN_FAILURES_PER_USERNAME,
        per_address=settings.LOGIN_FAILURES_PER_ADDRESS,
        window_seconds=settings.LOGIN_LOCKOUT_SECONDS,
    )


def client_address(request: HttpRequest | None) -> str:
    """The client as the ingress saw it.

    Only the ingress reaches the API (NetworkPolicy), and it appends the
    address it saw to X-Forwarded-For, so the last entry is trustworthy and
    the ones before it are whatever the client sent.
    """
    if request is None:
        return "unknown"
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    last = forwarded.rsplit(",", 1)[-1].strip()
    return last or request.META.get("REMOTE_ADDR", "") or "unknown"


def _key(kind: str, value: str) -> str:
    # Hashed: usernames and addresses are personal data, keys show in tools.
    digest = hashlib.sha256(value.strip().lower().encode()).hexdigest()[:32]
    return f"{KEY_PREFIX}:{kind}:{digest}"


def _count(key: str) -> int:
    return int(cache.get(key, 0))


def is_locked(username: str | None, address: str) -> bool:
    current = limits()
    if username and _count(_key("user", username)) >= current.per_username:
        return True
    return _count(_key("addr", address)) >= current.per_address


def record_failure(username: str | None, address: str) -> None:
    window = limits().window_seconds
    keys = [_key("addr", address)]
    if username:
        keys.append(_key("user", username))
    for key in keys:
        # add() starts the window only once; incr() keeps its expiry.
        cache.add(key, 0, timeout=window)
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=window)


def clear_username(username: str) -> None:
    cache.delete(_key("user", username))
