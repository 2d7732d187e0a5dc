"""Settings shared by every profile. All values come from the environment.

The variable names follow the infra seed (DJANGO_SECRET_KEY, DATABASE_URL,
REDIS_URL, MINIO_*) so one env file serves Compose-era tooling and Kubernetes;
Kubernetes renders separate DATABASE_* and REDIS_* variables instead of URLs,
so passwords may hold any character (config/env.py).
"""

from __future__ import annotations

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from config import env
from config.logs import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent.parent

SECRET_KEY = env.required("DJANGO_SECRET_KEY")
DEBUG = False
ALLOWED_HOSTS = env.as_list("ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env.as_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "core",
]

# Metrics first so it times everything; probes next so Kubernetes probes
# (pod IP as Host) are answered before SecurityMiddleware redirects and
# before CommonMiddleware validates the Host header.
MIDDLEWARE = [
    "config.middleware.RequestMetricsMiddleware",
    "config.middleware.ProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

_database = env.database_settings()
# A bounded connect timeout keeps /readyz under the probe timeout when the
# database host is unreachable rather than refusing.
_database["OPTIONS"].setdefault(
    "connect_timeout", env.as_int("DB_CONNECT_TIMEOUT", 3, minimum=1)
)
_database["CONN_MAX_AGE"] = env.as_int("DB_CONN_MAX_AGE", 60, minimum=0)
_database["CONN_HEALTH_CHECKS"] = True
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {
        "NAME": "django.contrib.auth.password_validation."
        "UserAttributeSimilarityValidator"
    },
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Failed logins are counted per username and per client address in Redis
# (core.throttle); past a limit, logins are refused for the window.
AUTHENTICATION_BACKENDS = ["core.backends.ThrottledModelBackend"]
LOGIN_FAILURES_PER_USERNAME = env.as_int("LOGIN_FAILURES_PER_USERNAME", 5, minimum=1)
LOGIN_FAILURES_PER_ADDRESS = env.as_int("LOGIN_FAILURES_PER_ADDRESS", 20, minimum=1)
LOGIN_LOCKOUT_SECONDS = env.as_int("LOGIN_LOCKOUT_SECONDS", 900, minimum=1)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Collected at image build time; WhiteNoise serves them from the read-only
# image, so the runtime needs no writable static directory.
STATIC_URL = "/static/"
STATIC_ROOT = Path(env.optional("DJANGO_STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# Uploads: one limit for the whole request body, with the same meaning and
# syntax as the ingress body-size limit, so both can share one value.
MAX_UPLOAD_SIZE = env.as_size("MAX_UPLOAD_SIZE", "50m")
# Spooled uploads go to the system temp dir (/tmp, an emptyDir in the pod).
FILE_UPLOAD_TEMP_DIR = env.optional("FILE_UPLOAD_TEMP_DIR") or None

_redis = env.redis_settings()
REDIS_URL = _redis.url
# TLS options (CA bundle, hostname check) for every Redis client the app makes.
REDIS_SSL_OPTIONS = _redis.ssl

# The cache is shared by every API pod (the login throttle depends on that).
# Same Redis as the broker; keys are prefixed and all carry an expiry.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "cache",
        "TIMEOUT": 900,
    }
}

# Object storage (MinIO or any S3 API). Dedicated app credentials win over
# the MinIO root pair so production can run with a bucket-scoped user; the
# root pair stays accepted because that is what the seed's env file has.
S3_ENDPOINT_URL = env.require_url_scheme(
    "MINIO_ENDPOINT", env.required("MINIO_ENDPOINT"), ("http", "https")
)
if env.optional("MINIO_ACCESS_KEY") or env.optional("MINIO_SECRET_KEY"):
    S3_ACCESS_KEY = env.required("MINIO_ACCESS_KEY")
    S3_SECRET_KEY = env.required("MINIO_SECRET_KEY")
else:
    S3_ACCESS_KEY = env.required("MINIO_ROOT_USER")
    S3_SECRET_KEY = env.required("MINIO_ROOT_PASSWORD")
S3_BUCKET = env.optional("MINIO_BUCKET", "krvibe")
S3_REGION = env.optional("MINIO_REGION", "us-east-1")

# Recorded only. The image ships no OpenTelemetry SDK; running the process
# under `opentelemetry-instrument` reads this variable by itself.
OTEL_EXPORTER_OTLP_ENDPOINT = env.optional("OTEL_EXPORTER_OTLP_ENDPOINT")

# Celery. Settings are read by config/celery.py with the CELERY_ namespace.
CELERY_BROKER_URL = env.optional("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = env.optional("CELERY_RESULT_BACKEND", REDIS_URL)
if REDIS_SSL_OPTIONS:
    CELERY_BROKER_USE_SSL = dict(REDIS_SSL_OPTIONS)
    CELERY_REDIS_BACKEND_USE_SSL = dict(REDIS_SSL_OPTIONS)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = env.as_int("CELERY_RESULT_EXPIRES", 86400, minimum=60)
CELERY_TASK_TRACK_STARTED = True
# acks_late redelivers a task whose worker died mid-run; only safe for
# idempotent tasks, which is why reject_on_worker_lost is set per task.
CELERY_TASK_ACKS_LATE = env.as_bool("CELERY_TASK_ACKS_LATE", True)
CELERY_TASK_TIME_LIMIT = env.as_int("CELERY_TASK_TIME_LIMIT", 300, minimum=1)
CELERY_TASK_SOFT_TIME_LIMIT = env.as_int(
    "CELERY_TASK_SOFT_TIME_LIMIT", 240, minimum=1
)
CELERY_WORKER_PREFETCH_MULTIPLIER = env.as_int(
    "CELERY_WORKER_PREFETCH_MULTIPLIER", 1, minimum=1
)
# os.cpu_count() sees the node, not the container's CPU limit.
CELERY_WORKER_CONCURRENCY = env.as_int("CELERY_WORKER_CONCURRENCY", 2, minimum=1)
CELERY_WORKER_MAX_TASKS_PER_CHILD = env.as_int(
    "CELERY_WORKER_MAX_TASKS_PER_CHILD", 1000, minimum=1
)
# JSON logs come from Django's LOGGING; Celery must not replace the root
# logger with its plain-text format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = env.as_bool("CELERY_WORKER_SEND_TASK_EVENTS", False)
# Celery 6's default: a task running when the broker connection drops will
# be redelivered (acks_late), so finishing it too would run it twice.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_VISIBILITY_TIMEOUT = env.as_int("CELERY_VISIBILITY_TIMEOUT", 3600, minimum=1)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"retry_policy": {"timeout": 5.0}}
# The image's root filesystem is read-only: beat keeps its schedule in /tmp.
CELERY_BEAT_SCHEDULE_FILENAME = env.optional(
    "CELERY_BEAT_SCHEDULE_FILENAME", "/tmp/celerybeat-schedule"
)
# Beat's loop wakes at least this often (Celery's default is 300 s); each
# wake touches CELERY_BEAT_LIVENESS_FILE (config.celery.HeartbeatScheduler),
# so the liveness probe's max age is a small multiple of it (charts/app.py).
CELERY_BEAT_SCHEDULER = "config.celery:HeartbeatScheduler"
CELERY_BEAT_MAX_LOOP_INTERVAL = env.as_float("CELERY_BEAT_MAX_LOOP_INTERVAL", 60.0)
CELERY_HEARTBEAT_INTERVAL = env.as_float("CELERY_HEARTBEAT_INTERVAL", 60.0)
CELERY_BEAT_SCHEDULE = {
    "record-heartbeat": {
        "task": "core.tasks.record_heartbeat",
        "schedule": CELERY_HEARTBEAT_INTERVAL,
        # A heartbeat queued while no worker runs is worthless later.
        "options": {"expires": max(CELERY_HEARTBEAT_INTERVAL, 30.0)},
    },
}

# Celery treats 0 as "use the 300 s default": say so instead.
if not 0 < CELERY_BEAT_MAX_LOOP_INTERVAL < float("inf"):
    raise ImproperlyConfigured("CELERY_BEAT_MAX_LOOP_INTERVAL must be a positive number.")
if CELERY_TASK_SOFT_TIME_LIMIT >= CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured(
        "CELERY_TASK_SOFT_TIME_LIMIT must be lower than CELERY_TASK_TIME_LIMIT."
    )
# Redis redelivers unacknowledged tasks after the visibility timeout; a
# shorter timeout than the hard limit would run long tasks twice.
if CELERY_VISIBILITY_TIMEOUT <= CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured(
        "CELERY_VISIBILITY_TIMEOUT must be greater than CELERY_TASK_TIME_LIMIT."
    )

LOG_LEVEL = env.optional("LOG_LEVEL", "INFO").upper()
LOGGING = logging_config(
    LOG_LEVEL,
    {
        # Replace Django's default handlers (plain text on stderr, mail to
        # admins) so every line goes through the JSON handler once.
        "django": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
        "django.server": {"handlers": [], "propagate": True},
        # Scanners send random Host headers all day; each would be an ERROR
        # with a traceback. The 400s still show in the request metrics.
        "django.security.DisallowedHost": {"level": "CRITICAL"},
        "botocore": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
    },
)
