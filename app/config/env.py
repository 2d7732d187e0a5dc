"""Typed readers for the environment variables the settings modules use.

Every missing or malformed value raises ImproperlyConfigured with the variable
name in the message, so a container that exits at start says what to fix.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)b?\s*$", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def optional(name: str, default: str = "") -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ImproperlyConfigured(
            f"Environment variable {name} is required but not set."
        )
    return value


def as_bool(name: str, default: bool) -> bool:
    value = optional(name).lower()
    if not value:
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(
        f"Environment variable {name} must be true or false, got {value!r}."
    )


def as_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = optional(name)
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(
            f"Environment variable {name} must be an integer, got {value!r}."
        ) from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(
            f"Environment variable {name} must be >= {minimum}, got {number}."
        )
    return number


def as_float(name: str, default: float) -> float:
    value = optional(name)
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(
            f"Environment variable {name} must be a number, got {value!r}."
        ) from None


def as_list(name: str, default: list[str] | None = None) -> list[str]:
    value = optional(name)
    if not value:
        return list(default or [])
    return [item.strip() for item in value.split(",") if item.strip()]


def required_list(name: str) -> list[str]:
    values = as_list(name)
    if not values:
        raise ImproperlyConfigured(
            f"Environment variable {name} is required but not set "
            f"(comma-separated list)."
        )
    return values


def parse_size(text: str) -> int:
    """Parse a byte size the way nginx's client_max_body_size does.

    Accepting "50m" lets the profile reuse the ingress value unchanged.
    """
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r}")
    return int(match.group(1)) * _SIZE_FACTORS[match.group(2).lower()]


def as_size(name: str, default: str) -> int:
    value = optional(name, default)
    try:
        return parse_size(value)
    except ValueError:
        raise ImproperlyConfigured(
            f"Environment variable {name} must be a byte count such as "
            f"52428800 or 50m, got {value!r}."
        ) from None


def parse_database_url(
    url: str, *, name: str = "DATABASE_URL"
) -> dict[str, Any]:
    """Turn postgres://user:pass@host:port/db?opt=v into a DATABASES entry.

    Query parameters are passed to libpq unchanged (sslmode, connect_timeout,
    application_name ...). Parsed here with urllib to avoid a dependency for
    twenty lines of code.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ImproperlyConfigured(
            f"Environment variable {name} must start with postgres:// "
            f"or postgresql://."
        )
    try:
        port = parts.port
    except ValueError:
        raise ImproperlyConfigured(
            f"Environment variable {name} has an invalid port."
        ) from None
    database = unquote(parts.path.lstrip("/"))
    if not database:
        raise ImproperlyConfigured(
            f"Environment variable {name} must name a database "
            f"(postgres://user:password@host:5432/dbname)."
        )
    options: dict[str, Any] = dict(parse_qsl(parts.query))
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": database,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": unquote(parts.hostname or ""),
        "PORT": str(port or ""),
        "OPTIONS": options,
    }


def require_url_scheme(name: str, value: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        allowed = " or ".join(f"{scheme}://" for scheme in schemes)
        raise ImproperlyConfigured(
            f"Environment variable {name} must be a URL starting with "
            f"{allowed} and naming a host."
        )
    return value
