"""JSON log lines and masking of personal data (config.logs)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from config.logs import EMAIL, IP, REDACTED, JsonFormatter, PersonalDataFilter, mask_text


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(PersonalDataFilter())
    logger = logging.getLogger("tests.app.masking")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_logged_dict_loses_email_bearer_token_and_password(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    logger.info(
        "login attempt %s",
        {
            "email": "jane.doe@example.com",
            "headers": {"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig"},
            "password": "hunter2-Secret!",
            "client": "198.51.100.23",
            "attempts": 3,
        },
    )
    text = stream.getvalue()
    for secret in ("jane.doe@example.com", "eyJhbGciOiJIUzI1NiJ9", "hunter2-Secret!", "198.51.100.23"):
        assert secret not in text, f"{secret!r} reached the log"
    message = records(stream)[0]["message"]
    assert EMAIL in message and REDACTED in message and IP in message
    assert "'attempts': 3" in message, "non-personal data must survive"


def test_free_text_credentials_are_masked() -> None:
    line = (
        "user=bob@example.org password=pa55word token: abc123 api_key=K-999 "
        "Authorization: Bearer tok.en-1 url=postgres://app:dbpass@db:5432/app from 2001:db8::7"
    )
    masked = mask_text(line)
    for secret in ("bob@example.org", "pa55word", "abc123", "K-999", "tok.en-1", "dbpass", "2001:db8::7"):
        assert secret not in masked, f"{secret!r} survived: {masked}"
    assert "postgres://app:<redacted>@db:5432/app" in masked


def test_bind_and_loopback_addresses_are_kept() -> None:
    line = "Listening at: http://0.0.0.0:8000 and 127.0.0.1"
    assert mask_text(line) == line


def test_extra_fields_and_tracebacks_are_masked(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    try:
        raise ValueError("no account for carol@example.net")
    except ValueError:
        logger.exception("lookup failed", extra={"client_ip": "203.0.113.5", "session_token": "s3cr3t", "count": 2})
    record = records(stream)[0]
    assert record["client_ip"] == IP
    assert record["session_token"] == REDACTED
    assert record["count"] == 2
    assert "carol@example.net" not in record["exc_info"] and EMAIL in record["exc_info"]


def test_one_json_object_per_line(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    logger.warning("multi\nline\nmessage")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["level"] == "WARNING"
    assert record["logger"] == "tests.app.masking"
    assert record["message"] == "multi\nline\nmessage"
    assert record["time"].endswith("Z")
