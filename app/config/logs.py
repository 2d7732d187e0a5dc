"""JSON log lines on stdout with personal data masked.

One JSON object per line so the log collector needs no multiline parsing.
The filter masks e-mail addresses, credentials (Authorization headers,
bearer tokens, values of secret-looking keys, URL passwords), query-string
values and client IP addresses in the message, its arguments, extra fields
and tracebacks. Text is URL-decoded before masking, so `jane%40example.com`
is found too. A request attached to a record (Django does that for every
4xx/5xx) is logged as method and path, never with its query.
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
from urllib.parse import unquote

REDACTED = "<redacted>"
EMAIL = "<email>"
IP = "<ip>"

# A key is secret when its squashed name contains one of these...
_SECRET_SUBSTRINGS = (
    "password", "passwd", "passphrase", "pwd", "secret", "token", "apikey",
    "accesskey", "privatekey", "authorization", "cookie", "sessionid",
    "credential", "signature", "csrf", "jwt", "resetkey", "bearer",
)
# ...or when one of its words (split on _ - . and camelCase) is one of these.
# Whole words only: "pin" must not catch "shipping", nor "key" "monkey".
_SECRET_WORDS = frozenset({
    "code", "sig", "otp", "totp", "pin", "jwt", "pass", "key", "auth", "session",
    "sid", "mfa", "nonce", "salt", "hmac", "hash", "ssn", "iban",
})
# Common non-secret names that contain a secret word.
_PUBLIC_KEYS = frozenset({
    "statuscode", "exitcode", "returncode", "errorcode", "httpcode",
    "responsecode", "countrycode", "languagecode", "currencycode", "keyerror",
    "passed", "sessionduration",
})
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
# Any name that might be a secret key; _is_sensitive_key decides.
_KEY = (
    r"[\w.-]*(?:pass|pwd|secret|token|key|auth|cookie|session|sid|credential|sig"
    r"|csrf|jwt|otp|code|pin|mfa|nonce|salt|hmac|hash|ssn|iban|bearer)[\w.-]*"
)
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/]+=*")
# The value runs to the first quote not escaped by a backslash, so a
# password like `a\"b` is masked whole.
_QUOTED_PAIR = re.compile(
    rf"(?i)(?P<key>[\"']?(?<![\w.-])(?P<name>{_KEY})[\"']?\s*[:=]\s*)"
    r"(?P<q>[\"'])(?P<value>(?:\\.|(?!(?P=q))[^\\])*)(?P=q)"
)
_BARE_PAIR = re.compile(
    rf"(?i)(?P<key>(?<![\w.-])(?P<name>{_KEY})[\"']?\s*[:=]\s*)"
    r"(?![\"'])(?P<value>(?:(?:bearer|basic)\s+)?[^\s&,;'\"}\]]+)"
)
# A query string after a path or URL: its values are user input of any kind.
_QUERY = re.compile(r"(?<=[\w/.%-])\?(?P<query>[^\s\"'#]*=[^\s\"'#]*)")
_QUERY_PAIR = re.compile(r"(?P<name>[^=&;]*)=[^&;]*")
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")

# Attributes every LogRecord has; anything else came in through `extra=`.
_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None))
) | {"message", "asctime", "taskName"}


def _is_sensitive_key(key: object) -> bool:
    name = str(key)
    squashed = re.sub(r"[^a-z0-9]", "", name.lower())
    if squashed in _PUBLIC_KEYS:
        return False
    if any(part in squashed for part in _SECRET_SUBSTRINGS):
        return True
    return any(word.lower() in _SECRET_WORDS for word in _WORD.findall(name))


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


def _mask_query(match: re.Match[str]) -> str:
    # Names stay (they help debugging and are chosen by the code), values go.
    return "?" + _QUERY_PAIR.sub(
        lambda pair: f"{pair.group('name')}={REDACTED}", match.group("query")
    )


def _url_decode(text: str) -> str:
    # Repeated, so a double-encoded `%2540` turns into `@` as well.
    for _ in range(3):
        if not _PERCENT.search(text):
            break
        text = unquote(text)
    return text


def _mask_pair(match: re.Match[str], quoted: bool) -> str:
    if not _is_sensitive_key(match.group("name")):
        return match.group(0)
    if quoted:
        return f"{match.group('key')}{match.group('q')}{REDACTED}{match.group('q')}"
    return f"{match.group('key')}{REDACTED}"


def mask_text(text: str) -> str:
    """Mask personal data and credentials in free text."""
    # Query values first, while they are still encoded and cannot contain
    # a space that would end the match early.
    text = _QUERY.sub(_mask_query, text)
    text = _url_decode(text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}{REDACTED}@", text)
    text = _QUOTED_PAIR.sub(lambda m: _mask_pair(m, quoted=True), text)
    text = _BARE_PAIR.sub(lambda m: _mask_pair(m, quoted=False), text)
    text = _EMAIL.sub(EMAIL, text)
    text = _IPV4.sub(_mask_ip, text)
    return _IPV6.sub(_mask_ip, text)


def _is_request(value: object) -> bool:
    # Django's HttpRequest, without importing Django (gunicorn's master).
    return all(hasattr(value, name) for name in ("META", "method", "path"))


def mask_value(value: Any) -> Any:
    """Mask a logged value; mappings lose the values of sensitive keys."""
    if isinstance(value, str):
        return mask_text(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if _is_request(value):
        # The path only: the query and headers carry user input and tokens.
        return mask_text(f"{value.method} {value.path}")
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
