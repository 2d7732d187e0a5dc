"""Prometheus exporter for backup freshness.

Every backup job writes ``<status-prefix>/<job>.json`` to the backup bucket as the
last step of a fully successful run. This server reads those objects with
``rclone cat`` (the ``backup`` remote is defined by the ``backup-exporter`` wrapper
through ``RCLONE_CONFIG_BACKUP_*`` variables, the same contract as the jobs) and
serves them as gauges. The alert therefore measures what is stored in S3, and a
job that stops running makes the timestamp age on its own: no Pushgateway, no
node-exporter volume.

Standard library only, so the backup image needs nothing beyond python3.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
PREFIX = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_JOBS = "postgres,restore-drill,s3-mirror"

# name -> (help text, JobStatus attribute)
GAUGES: dict[str, tuple[str, str]] = {
    "vibearena_backup_last_success_timestamp_seconds": (
        "Unix time at which the last successful run of the job finished.",
        "last_success",
    ),
    "vibearena_backup_last_duration_seconds": (
        "Duration of the last successful run of the job.",
        "duration",
    ),
    "vibearena_backup_last_size_bytes": (
        "Size of the object written by the last successful run.",
        "size_bytes",
    ),
}
UP_METRIC = "vibearena_backup_status_up"

Reader = Callable[[str], bytes]


@dataclass(frozen=True)
class Settings:
    bucket: str
    status_prefix: str
    jobs: tuple[str, ...]
    listen_address: str
    port: int
    cache_seconds: float
    read_timeout_seconds: float = 15.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Build settings from the environment; errors name the variable."""
        bucket = env.get("BACKUP_S3_BUCKET", "")
        if not bucket:
            raise ValueError("BACKUP_S3_BUCKET is required")
        prefix = env.get("BACKUP_STATUS_PREFIX") or "status"
        if not PREFIX.match(prefix):
            raise ValueError("BACKUP_STATUS_PREFIX is not a valid key prefix")
        jobs = tuple(job.strip() for job in (env.get("EXPORTER_JOBS") or DEFAULT_JOBS).split(",") if job.strip())
        if not jobs or not all(JOB_NAME.match(job) for job in jobs):
            raise ValueError("EXPORTER_JOBS must be comma-separated job names")
        try:
            port = int(env.get("EXPORTER_PORT") or "9188")
            cache = float(env.get("EXPORTER_CACHE_SECONDS") or "30")
        except ValueError as exc:
            raise ValueError("EXPORTER_PORT / EXPORTER_CACHE_SECONDS must be numbers") from exc
        if not 0 < port < 65536:
            raise ValueError("EXPORTER_PORT must be a TCP port")
        if cache < 0:
            raise ValueError("EXPORTER_CACHE_SECONDS must be >= 0")
        return cls(
            bucket=bucket,
            status_prefix=prefix,
            jobs=jobs,
            listen_address=env.get("EXPORTER_LISTEN_ADDRESS") or "0.0.0.0",
            port=port,
            cache_seconds=cache,
        )


@dataclass(frozen=True)
class JobStatus:
    job: str
    up: bool
    last_success: float | None = None
    duration: float | None = None
    size_bytes: float | None = None


def _number(data: Mapping[str, object], key: str, required: bool) -> float | None:
    value = data.get(key)
    if value is None and not required:
        return None
    # bool is an int subclass; a status file saying "true" is malformed, not 1.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} is not a number")
    if not math.isfinite(value):
        raise ValueError(f"{key} is not finite")
    return float(value)


def parse_status(job: str, raw: bytes) -> JobStatus:
    """Turn a status object into a JobStatus; raise ValueError if it is malformed."""
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("status object is not a JSON object")
    return JobStatus(
        job=job,
        up=True,
        last_success=_number(data, "last_success_timestamp", required=True),
        duration=_number(data, "duration_seconds", required=False),
        size_bytes=_number(data, "size_bytes", required=False),
    )


def rclone_reader(settings: Settings) -> Reader:
    """Read status objects from the rclone remote named "backup"."""

    def read(job: str) -> bytes:
        path = f"backup:{settings.bucket}/{settings.status_prefix}/{job}.json"
        result = subprocess.run(
            ["rclone", "cat", path],
            capture_output=True,
            timeout=settings.read_timeout_seconds,
            check=False,
        )
        if result.returncode != 0:
            lines = result.stderr.decode(errors="replace").strip().splitlines()
            detail = lines[-1] if lines else "no output"
            raise OSError(f"rclone cat {path} exited {result.returncode}: {detail}")
        if not result.stdout:
            # rclone cat of a missing key succeeds with no output.
            raise OSError(f"{path} is missing or empty")
        return result.stdout

    return read


def collect(jobs: Sequence[str], reader: Reader) -> list[JobStatus]:
    statuses = []
    for job in jobs:
        try:
            statuses.append(parse_status(job, reader(job)))
        except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
            # One unreadable job must not hide the others; it shows as status_up 0.
            print(f"backup-exporter: {job}: {exc}", file=sys.stderr, flush=True)
            statuses.append(JobStatus(job=job, up=False))
    return statuses


def _format(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def render(statuses: Sequence[JobStatus]) -> str:
    """Prometheus text format 0.0.4. A gauge with no known value is left out."""
    lines = [
        f"# HELP {UP_METRIC} 1 if the job's status object was read and parsed, else 0.",
        f"# TYPE {UP_METRIC} gauge",
    ]
    lines += [f'{UP_METRIC}{{job="{s.job}"}} {int(s.up)}' for s in statuses]
    for name, (help_text, attribute) in GAUGES.items():
        samples = [
            f'{name}{{job="{s.job}"}} {_format(value)}'
            for s in statuses
            if (value := getattr(s, attribute)) is not None
        ]
        if samples:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", *samples]
    return "\n".join(lines) + "\n"


class CachedCollector:
    """Reads S3 at most once per ttl, whatever the number of scrapers."""

    def __init__(
        self,
        jobs: Sequence[str],
        reader: Reader,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._jobs = tuple(jobs)
        self._reader = reader
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._body: str | None = None
        self._fetched_at = 0.0

    def metrics(self) -> str:
        with self._lock:
            now = self._clock()
            if self._body is None or now - self._fetched_at >= self._ttl:
                self._body = render(collect(self._jobs, self._reader))
                self._fetched_at = now
            return self._body


def make_handler(collector: CachedCollector) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, CONTENT_TYPE, collector.metrics())
            elif self.path == "/healthz":
                self._send(200, "text/plain; charset=utf-8", "ok\n")
            else:
                self._send(404, "text/plain; charset=utf-8", "not found\n")

        def _send(self, code: int, content_type: str, body: str) -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            # One line per scrape would drown the useful log lines.
            return

    return Handler


def main(env: Mapping[str, str] = os.environ) -> int:
    try:
        settings = Settings.from_env(env)
    except ValueError as exc:
        print(f"backup-exporter: error: {exc}", file=sys.stderr)
        return 2
    collector = CachedCollector(settings.jobs, rclone_reader(settings), settings.cache_seconds)
    server = ThreadingHTTPServer((settings.listen_address, settings.port), make_handler(collector))
    print(
        f"backup-exporter: serving /metrics on {settings.listen_address}:{settings.port}"
        f" for jobs {','.join(settings.jobs)}",
        file=sys.stderr,
        flush=True,
    )
    # The exporter is PID 1 in its container, where a signal without a handler
    # is ignored: without this, every rollout waits out the grace period.
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    serving = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    serving.start()
    try:
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
