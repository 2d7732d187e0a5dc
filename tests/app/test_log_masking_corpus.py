"""A corpus of log records through the app's real logging setups.

Every case is emitted through Django's LOGGING, gunicorn's logconfig_dict
and Celery's task logger (tests/app/log_emitter.py runs each in its own
process, as the pods do). The emitted lines must be JSON, must not contain
any of the case's secrets or personal data, and must keep what makes the
line useful (the `keep` strings), so masking everything would fail too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from typing import Any

import pytest

from tests.app.harness import APP_DIR

EMITTER = os.path.join(os.path.dirname(__file__), "log_emitter.py")
MARKER = "@@case "
SETUPS = ("django", "gunicorn", "celery")


def case(
    case_id: str,
    msg: str,
    *args: Any,
    secrets: tuple[str, ...],
    keep: tuple[str, ...] = (),
    extra: dict[str, Any] | None = None,
    exception: str | None = None,
    request: str | None = None,
) -> dict[str, Any]:
    return {
        "id": case_id, "msg": msg, "args": list(args), "secrets": list(secrets),
        "keep": list(keep), "extra": extra, "exception": exception,
        **({"request": request} if request else {}),
    }


CORPUS: list[dict[str, Any]] = [
    # Query strings, plain and URL-encoded.
    case("query-email-invite", "GET %s", "/api/files/?email=jane.doe%40example.com&invite_code=K7Q2-PLM9",
         secrets=("jane.doe", "K7Q2-PLM9"), keep=("/api/files/", "invite_code=")),
    case("query-oauth", "callback %s", "/oauth/callback?code=OC-777&state=ST-888",
         secrets=("OC-777", "ST-888"), keep=("/oauth/callback",)),
    case("query-name-plus", "search %s", "/search?q=Jane+Doe%20Smith", secrets=("Jane", "Smith"), keep=("/search",)),
    case("query-presigned", "presigned %s",
         "https://minio:9000/uploads/obj?X-Amz-Credential=AKIAEXAMPLE1%2F20260101&X-Amz-Signature=deadbeef99",
         secrets=("AKIAEXAMPLE1", "deadbeef99"), keep=("/uploads/obj",)),
    case("query-reset-link", "reset link %s", "https://app.example/reset?reset_key=RK-55AA&uid=42",
         secrets=("RK-55AA",), keep=("/reset",)),
    case("query-token", "fetching %s", "/api/x?token=TK-QUERY-1", secrets=("TK-QUERY-1",), keep=("/api/x",)),
    case("gunicorn-error-uri", "Error handling request %s", "/api/files/?email=evelyn%40example.net&sig=SG-42",
         secrets=("evelyn", "SG-42"), keep=("Error handling request",)),
    # E-mail addresses in every spelling.
    case("email-plain", "signup by %s", "jane.doe@example.com", secrets=("jane.doe@example.com", "jane.doe"),
         keep=("signup by",)),
    case("email-encoded", "user jane.doe%40example.com logged in", secrets=("jane.doe",), keep=("logged in",)),
    case("email-double-encoded", "user jane.doe%2540example.com", secrets=("jane.doe",)),
    case("email-plus-tag", "invite sent to %s", "dave+promo@example.co.uk", secrets=("dave+promo", "dave")),
    case("email-list", "recipients %s", ["a1@example.com", "b2@example.com"], secrets=("a1@", "b2@")),
    case("email-in-path", "GET /api/users/frank.o@example.org/", secrets=("frank.o",), keep=("/api/users/",)),
    case("email-dict", "profile %s", {"email": "grace@example.org", "plan": "pro"},
         secrets=("grace",), keep=("pro",)),
    # Secret-looking key names.
    case("otp", "otp=482913 accepted", secrets=("482913",), keep=("accepted",)),
    case("pin", "verify pin: 7788", secrets=("7788",), keep=("verify",)),
    case("jwt", "jwt=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sgn", secrets=("eyJhbGciOiJIUzI1NiJ9",)),
    case("sig", "callback sig=ABCDEF0123 ts=1", secrets=("ABCDEF0123",), keep=("ts=1",)),
    case("code", "code=Zx81-Q for invite", secrets=("Zx81-Q",), keep=("for invite",)),
    case("pass", "pass=hunter2x", secrets=("hunter2x",)),
    case("mfa-code", "mfa_code=918273", secrets=("918273",)),
    case("totp", "totp: 445566", secrets=("445566",)),
    case("camel-invite-code", "inviteCode=IC-CAMEL", secrets=("IC-CAMEL",)),
    case("csrftoken", "x_csrftoken=c-tok-1", secrets=("c-tok-1",)),
    case("refresh-token", "refresh_token: rt-0001", secrets=("rt-0001",)),
    case("uppercase-key", "PASSWORD=UpperCaseSecret1", secrets=("UpperCaseSecret1",)),
    case("dotted-key", "user.password: 'pw-dots-9'", secrets=("pw-dots-9",)),
    case("secret-key", "secret_key=SK-abc123", secrets=("SK-abc123",)),
    case("access-key", "access_key=AK-def456", secrets=("AK-def456",)),
    case("aws-secret", "aws_secret_access_key = 'wJalrXUtnFEMI'", secrets=("wJalrXUtnFEMI",)),
    case("json-api-key", '{"api_key": "AK-123456", "user": "x"}', secrets=("AK-123456",)),
    case("header-api-key", "X-Api-Key: xk-000111", secrets=("xk-000111",)),
    case("cookie", "cookie header %s", "sessionid=sess-AAA111; csrftoken=csrf-BBB222",
         secrets=("sess-AAA111", "csrf-BBB222")),
    # Passwords with quotes inside.
    case("escaped-double-quote", 'login failed password="s3cr\\"TAILPART"', secrets=("TAILPART", "s3cr")),
    case("escaped-single-quote", "password='a\\'b-TAILQ'", secrets=("TAILQ",)),
    case("dict-quote-password", "login %s", {"password": "it's-\"quoted\"-TAIL9", "user": "u1"},
         secrets=("TAIL9", "quoted"), keep=("u1",)),
    # Authorization schemes and URL credentials.
    case("bearer", "Authorization: Bearer tok_live_9f8e7d", secrets=("tok_live_9f8e7d",)),
    case("basic", "Authorization: Basic dXNlcjpwYXNz", secrets=("dXNlcjpwYXNz",)),
    case("postgres-url", "db url postgres://app:DbPa55w0rd@postgres:5432/app", secrets=("DbPa55w0rd",),
         keep=("postgres:5432/app",)),
    case("redis-url", "broker redis://:RedisPa55@redis:6379/0", secrets=("RedisPa55",), keep=("redis:6379/0",)),
    # Addresses.
    case("ipv4", "from 203.0.113.50", secrets=("203.0.113.50",)),
    case("ipv6", "from 2001:db8::1234", secrets=("2001:db8::1234",)),
    case("ip-tuple", "peers %s", ("10.1.2.3", "192.0.2.44"), secrets=("10.1.2.3", "192.0.2.44")),
    # Extra fields and tracebacks.
    case("extra-session-token", "login ok", secrets=("st-XYZ",), keep=('"attempt": 2',),
         extra={"session_token": "st-XYZ", "attempt": 2}),
    case("extra-client-ip", "request", secrets=("198.51.100.7",), extra={"client_ip": "198.51.100.7"}),
    case("extra-headers", "headers", secrets=("hdr-TOKEN1",), keep=("json",),
         extra={"headers": {"Authorization": "Bearer hdr-TOKEN1", "Accept": "json"}}),
    case("extra-url", "fetched", secrets=("TK-EXTRA-1", "heidi"),
         extra={"url": "/api/x?token=TK-EXTRA-1&email=heidi%40example.com"}),
    case("traceback", "lookup failed", secrets=("carol",), keep=("ValueError",),
         exception="invalid token for carol@example.net"),
    # Useful data survives.
    case("public-codes", "status_code=404 exit_code=3", secrets=(), keep=("status_code=404", "exit_code=3")),
    case("bind-address", "Listening at: http://0.0.0.0:8000", secrets=(), keep=("http://0.0.0.0:8000",)),
    # Django's own request records (django.request adds the request object).
    case("django-404-query", "", secrets=("judy", "INV-42"), keep=("Not Found", "/api/nope/"),
         request="/api/nope/?email=judy%40example.com&invite_code=INV-42"),
    case("django-401-query", "", secrets=("TK-REQ-9",), keep=("Unauthorized", "/api/files/"),
         request="/api/files/?token=TK-REQ-9"),
]


def emitter_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "MINIO_", "CELERY_"))}
    env.update({
        "PYTHONPATH": str(APP_DIR),
        "DJANGO_SETTINGS_MODULE": "config.settings.prod",
        "DJANGO_SECRET_KEY": "log-corpus-not-a-secret-" + "x" * 40,
        "DJANGO_SECURE_SSL_REDIRECT": "false",
        "ALLOWED_HOSTS": "testserver",
        "DATABASE_URL": "postgres://corpus@127.0.0.1:9/corpus",
        "REDIS_URL": "redis://127.0.0.1:9/0",
        "MINIO_ENDPOINT": "http://127.0.0.1:9",
        "MINIO_ACCESS_KEY": "corpus",
        "MINIO_SECRET_KEY": "corpus",
        "LOG_LEVEL": "INFO",
    })
    return env


@cache
def emitted(via: str) -> tuple[dict[str, list[str]], str]:
    """Output lines per case id, and everything written to stderr."""
    result = subprocess.run(
        [sys.executable, EMITTER, via], input=json.dumps(CORPUS), cwd=APP_DIR, env=emitter_env(),
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, f"{via} emitter failed:\n{result.stderr[-3000:]}"
    by_case: dict[str, list[str]] = {}
    current = "<before first case>"
    for line in result.stdout.splitlines():
        if line.startswith(MARKER):
            current = line[len(MARKER):]
            by_case[current] = []
        elif line.strip():
            by_case.setdefault(current, []).append(line)
    return by_case, result.stderr


def test_corpus_is_large_enough() -> None:
    ids = [entry["id"] for entry in CORPUS]
    assert len(ids) >= 40 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("via", SETUPS)
@pytest.mark.parametrize("entry", CORPUS, ids=[entry["id"] for entry in CORPUS])
def test_nothing_personal_or_secret_is_logged(via: str, entry: dict[str, Any]) -> None:
    if "request" in entry and via != "django":
        pytest.skip("request records come from Django only")
    by_case, stderr = emitted(via)
    lines = by_case.get(entry["id"], [])
    assert lines, f"{via}: case {entry['id']} emitted no line on stdout (stderr: {stderr[-500:]!r})"
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"{via}: not a JSON line: {line!r}")
    text = "\n".join(lines)
    for secret in entry["secrets"]:
        assert secret not in text, f"{via}: {secret!r} reached the log: {text}"
        assert secret not in stderr, f"{via}: {secret!r} reached stderr"
    for wanted in entry["keep"]:
        assert wanted in text, f"{via}: masking also removed {wanted!r}: {text}"


def test_django_request_record_carries_path_not_query() -> None:
    by_case, _ = emitted("django")
    records = [json.loads(line) for line in by_case["django-404-query"]]
    found = [record for record in records if record["logger"] == "django.request"]
    assert len(found) == 1, records
    record = found[0]
    assert record["status_code"] == 404
    assert record["request"] == "GET /api/nope/", record
