"""Settings from the environment: parsing, required variables, deploy checks."""

from __future__ import annotations

import pytest
from config import env
from django.core.exceptions import ImproperlyConfigured

from tests.app.harness import App


def test_database_url_is_parsed_into_django_settings() -> None:
    parsed = env.parse_database_url("postgres://app%40svc:p%2Fss%3Aw@db.internal:6543/vibe%20db?sslmode=require")
    assert parsed == {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "vibe db",
        "USER": "app@svc",
        "PASSWORD": "p/ss:w",
        "HOST": "db.internal",
        "PORT": "6543",
        "OPTIONS": {"sslmode": "require"},
    }


def test_database_url_defaults_and_postgresql_scheme() -> None:
    parsed = env.parse_database_url("postgresql://db/app")
    assert (parsed["HOST"], parsed["PORT"], parsed["USER"], parsed["NAME"]) == ("db", "", "", "app")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u:p@db/app", "must start with postgres://"),
        ("postgres://u:p@db:notaport/app", "invalid port"),
        ("postgres://u:p@db:5432/", "must name a database"),
    ],
)
def test_bad_database_url_names_the_variable(url: str, message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message) as caught:
        env.parse_database_url(url)
    assert "DATABASE_URL" in str(caught.value)
    assert ":p@" not in str(caught.value), "the error must not echo the password"


@pytest.mark.parametrize(
    ("text", "size"),
    [("52428800", 52428800), ("50m", 50 * 1024**2), ("512k", 512 * 1024), ("1G", 1024**3), ("10mb", 10 * 1024**2)],
)
def test_sizes_accept_the_ingress_syntax(text: str, size: int) -> None:
    assert env.parse_size(text) == size


def test_invalid_size_is_rejected() -> None:
    with pytest.raises(ValueError):
        env.parse_size("50 megabytes")


@pytest.mark.parametrize(
    "variable",
    ["DJANGO_SECRET_KEY", "DATABASE_URL", "REDIS_URL", "MINIO_ENDPOINT", "MINIO_ROOT_PASSWORD", "ALLOWED_HOSTS"],
)
def test_missing_required_variable_stops_startup_with_its_name(app: App, variable: str) -> None:
    result = app.manage("check", env={variable: ""})
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    expected = f"django.core.exceptions.ImproperlyConfigured: Environment variable {variable} is required but not set"
    assert last_line.startswith(expected), result.stderr[-1500:]


def test_app_credentials_take_precedence_over_minio_root(app: App) -> None:
    code = "from django.conf import settings; print(settings.S3_ACCESS_KEY)"
    result = app.manage("shell", "-c", code, env={"MINIO_ACCESS_KEY": "app-user", "MINIO_SECRET_KEY": "app-secret"})
    assert result.stdout.strip().splitlines()[-1] == "app-user", result.stderr
    half = app.manage("check", env={"MINIO_ACCESS_KEY": "app-user"})
    assert half.returncode != 0 and "MINIO_SECRET_KEY" in half.stderr.strip().splitlines()[-1]


def test_prod_settings_pass_the_deploy_check(app: App) -> None:
    result = app.manage("check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_deploy_check_catches_a_weak_secret_key(app: App) -> None:
    # Proves the check above is meaningful: a bad value must fail it.
    result = app.manage("check", "--deploy", "--fail-level", "WARNING", env={"DJANGO_SECRET_KEY": "short"})
    assert result.returncode != 0
    assert "security.W009" in result.stderr + result.stdout


def test_build_settings_refuse_anything_but_collectstatic(app: App) -> None:
    result = app.manage("check", env={"DJANGO_SETTINGS_MODULE": "config.settings.build"})
    assert result.returncode != 0
    assert "only for `manage.py collectstatic`" in result.stderr


def test_celery_limits_are_cross_checked(app: App) -> None:
    result = app.manage("check", env={"CELERY_TASK_TIME_LIMIT": "7200", "CELERY_TASK_SOFT_TIME_LIMIT": "60"})
    assert result.returncode != 0
    assert "CELERY_VISIBILITY_TIMEOUT" in result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("value", ["0", "-5", "inf", "nan", "soon"])
def test_beat_loop_interval_must_be_a_positive_number(app: App, value: str) -> None:
    """0 would silently mean Celery's 300 s default and outlast the probe's max age."""
    result = app.manage("check", env={"CELERY_BEAT_MAX_LOOP_INTERVAL": value})
    assert result.returncode != 0
    assert "CELERY_BEAT_MAX_LOOP_INTERVAL" in result.stderr.strip().splitlines()[-1]


def test_migrations_are_applied_and_match_the_models(app: App) -> None:
    # migrate --check exits non-zero when a migration is unapplied.
    app.manage_ok("migrate", "--check")
    result = app.manage("makemigrations", "--check", "--dry-run")
    assert result.returncode == 0, f"models changed without a migration:\n{result.stdout}"


def test_credential_settings_are_hidden_on_debug_pages() -> None:
    # Django hides settings named like *KEY*/*SECRET*/*PASS* on debug pages;
    # the names chosen for the S3 credentials must fall under that rule.
    from django.views.debug import SafeExceptionReporterFilter

    hidden = SafeExceptionReporterFilter.hidden_settings
    for name in ("SECRET_KEY", "S3_SECRET_KEY", "S3_ACCESS_KEY"):
        assert hidden.search(name), f"{name} would be shown on a debug page"
