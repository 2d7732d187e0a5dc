"""Typed readers for the environment variables the settings modules use.

Every missing or malformed value raises ImproperlyConfigured with the variable
name in the message, so a container that exits at start says what to fix.
"""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

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


_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def secret(name: str) -> str:
    """A password as given: never stripped, since blanks may be part of it."""
    value = os.environ.get(name, "")
    if not value:
        raise ImproperlyConfigured(
            f"Environment variable {name} is required but not set."
        )
    return value


def database_settings() -> dict[str, Any]:
    """The DATABASES entry, from separate variables or from DATABASE_URL.

    DATABASE_HOST, DATABASE_PORT, DATABASE_NAME, DATABASE_USER and
    DATABASE_PASSWORD (plus DATABASE_SSLMODE and DATABASE_SSLROOTCERT) are
    what Kubernetes renders: each value reaches libpq as a separate keyword,
    so a password may hold any character. DATABASE_URL stays accepted for
    the seed's env file (percent-encode special characters there).
    """
    # An explicit URL (the seed's env file, a local override) wins; the
    # rendered manifests never set it.
    if optional("DATABASE_URL") or not optional("DATABASE_HOST"):
        return parse_database_url(required("DATABASE_URL"))
    options: dict[str, Any] = {}
    sslmode = optional("DATABASE_SSLMODE")
    if sslmode:
        if sslmode not in _SSLMODES:
            raise ImproperlyConfigured(
                f"Environment variable DATABASE_SSLMODE must be one of "
                f"{', '.join(_SSLMODES)}, got {sslmode!r}."
            )
        options["sslmode"] = sslmode
    rootcert = optional("DATABASE_SSLROOTCERT")
    if rootcert:
        options["sslrootcert"] = rootcert
    elif sslmode in ("verify-ca", "verify-full"):
        # libpq would silently fall back to ~/.postgresql/root.crt.
        raise ImproperlyConfigured(
            f"Environment variable DATABASE_SSLROOTCERT is required when "
            f"DATABASE_SSLMODE is {sslmode}."
        )
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": required("DATABASE_NAME"),
        "USER": required("DATABASE_USER"),
        "PASSWORD": secret("DATABASE_PASSWORD"),
        "HOST": required("DATABASE_HOST"),
        "PORT": str(as_int("DATABASE_PORT", 5432, minimum=1)),
        "OPTIONS": options,
    }


@dataclass(frozen=True)
class RedisSettings:
    """A Redis URL safe to hand to redis-py, Celery and kombu, and the TLS
    options they take as keyword arguments (empty without TLS)."""

    url: str
    ssl: dict[str, Any]


def redis_settings() -> RedisSettings:
    """From REDIS_HOST, REDIS_PORT, REDIS_DB, REDIS_USERNAME, REDIS_PASSWORD,
    REDIS_TLS and REDIS_CA, or from REDIS_URL (the seed's env file).

    The password is percent-encoded here, where the URL is consumed; redis-py
    and kombu decode it again, so it may hold any character.
    """
    if optional("REDIS_URL") or not optional("REDIS_HOST"):
        url = require_url_scheme("REDIS_URL", required("REDIS_URL"), ("redis", "rediss"))
        return RedisSettings(url=url, ssl={})
    host = required("REDIS_HOST")
    port = as_int("REDIS_PORT", 6379, minimum=1)
    database = as_int("REDIS_DB", 0, minimum=0)
    username = quote(optional("REDIS_USERNAME"), safe="")
    password = quote(secret("REDIS_PASSWORD"), safe="")
    tls = as_bool("REDIS_TLS", False)
    ssl_options: dict[str, Any] = {}
    if tls:
        ssl_options = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": True}
        ca = optional("REDIS_CA")
        if ca:
            ssl_options["ssl_ca_certs"] = ca
    elif optional("REDIS_CA"):
        raise ImproperlyConfigured(
            "Environment variable REDIS_CA is set but REDIS_TLS is off."
        )
    scheme = "rediss" if tls else "redis"
    netloc = f"{username}:{password}@{host}:{port}"
    return RedisSettings(url=f"{scheme}://{netloc}/{database}", ssl=ssl_options)
