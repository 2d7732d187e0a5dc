"""JSON log lines on stdout with personal data masked.

One JSON object per line so the log collector needs no multiline parsing.
The filter masks e-mail addresses, credentials (Authorization headers,
bearer tokens, password/secret/token values, URL passwords) and client IP
addresses in the message, its arguments, extra fields and tracebacks.
Stdlib only: the module is also loaded by gunicorn's master for its own logs.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

REDACTED = "<redacted>"
EMAIL = "<email>"
IP = "<ip>"

_SENSITIVE_WORDS = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "privatekey",
    "authorization",
    "cookie",
    "sessionid",
    "credential",
    "signature",
)
_KEY = (
    r"[\w-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key"
    r"|private[_-]?key|authorization|cookie|sessionid|credential|signature)[\w-]*"
)
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/]+=*")
_QUOTED_PAIR = re.compile(
    rf"(?i)(?P<key>[\"']?\b{_KEY}[\"']?\s*[:=]\s*)(?P<q>[\"'])(?P<value>.*?)(?P=q)"
)
_BARE_PAIR = re.compile(
    rf"(?i)(?P<key>\b{_KEY}[\"']?\s*[:=]\s*)"
    r"(?![\"'])(?P<value>(?:(?:bearer|basic)\s+)?[^\s&,;'\"}\]]+)"
)
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")

# Attributes every LogRecord has; anything else came in through `extra=`.
_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None))
) | {"message", "asctime", "taskName"}


def _is_sensitive_key(key: object) -> bool:
    normalized = re.sub(r"[-_\s]", "", str(key)).lower()
    return any(word in normalized for word in _SENSITIVE_WORDS)


def _mask_ip(match: re.Match[str]) -> str:
    text = match.group(0)
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return text
    # Bind and loopback addresses say nothing about a person.
    if address.is_loopback or address.is_unspecified:
        return text
    return IP


def mask_text(text: str) -> str:
    """Mask personal data and credentials in free text."""
    text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}{REDACTED}@", text)
    text = _QUOTED_PAIR.sub(
        lambda m: f"{m.group('key')}{m.group('q')}{REDACTED}{m.group('q')}", text
    )
    text = _BARE_PAIR.sub(lambda m: f"{m.group('key')}{REDACTED}", text)
    text = _EMAIL.sub(EMAIL, text)
    text = _IPV4.sub(_mask_ip, text)
    return _IPV6.sub(_mask_ip, text)


def mask_value(value: Any) -> Any:
    """Mask a logged value; mappings lose the values of sensitive keys."""
    if isinstance(value, str):
        return mask_text(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {
            key: REDACTED if _is_sensitive_key(key) else mask_value(item)
            for key, item in value.items()
        }
    if isinstance(value, tuple):
        return tuple(mask_value(item) for item in value)
    if isinstance(value, (list, set, frozenset)):
        return [mask_value(item) for item in value]
    return mask_text(str(value))


class PersonalDataFilter(logging.Filter):
    """Rewrites the record in place so every formatter sees masked data."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str):
            record.msg = mask_value(record.msg)
        if record.args:
            record.args = mask_value(record.args)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = f"{record.msg} {record.args}"
        record.msg = mask_text(str(message))
        record.args = None
        for key in set(vars(record)) - _RECORD_ATTRS:
            value = getattr(record, key)
            setattr(record, key, REDACTED if _is_sensitive_key(key) else mask_value(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, extras."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for key in sorted(set(vars(record)) - _RECORD_ATTRS):
            payload.setdefault(key, getattr(record, key))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            payload["exc_info"] = record.exc_text
        if record.stack_info:
            payload["stack_info"] = record.stack_info
        return json.dumps(payload, default=str, ensure_ascii=False)


def logging_config(level: str, loggers: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """dictConfig for JSON lines on stdout with personal data masked.

    Django (settings) and gunicorn's master (gunicorn.conf.py) configure
    logging separately; both use this, with their own logger overrides.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"mask_personal_data": {"()": "config.logs.PersonalDataFilter"}},
        "formatters": {"json": {"()": "config.logs.JsonFormatter"}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "json",
                # On the handler, not a logger: it then sees every record that
                # reaches stdout, including ones propagated from libraries.
                "filters": ["mask_personal_data"],
            },
        },
        "root": {"handlers": ["stdout"], "level": level},
        "loggers": {name: dict(settings) for name, settings in loggers.items()},
    }
