"""backup-exporter: parsing and rendering, then end to end with pg-backup, S3, rclone."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import ModuleType

import pytest

from tests.backup.helpers import (
    BIN_DIR,
    ROOT,
    Postgres,
    S3Server,
    clean_env,
    run_script,
    script_env,
)
from tests.support import pid1
from tests.support.services import free_port, wait_for_port


def load_exporter() -> ModuleType:
    path = ROOT / "backup" / "exporter" / "backup_exporter.py"
    spec = importlib.util.spec_from_file_location("backup_exporter", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


exporter = load_exporter()
TS_METRIC = "vibearena_backup_last_success_timestamp_seconds"


def test_parse_status_reads_numbers_and_rejects_malformed_objects() -> None:
    status = exporter.parse_status("postgres", b'{"last_success_timestamp": 1700000000, "size_bytes": 12}')
    assert (status.up, status.last_success, status.size_bytes, status.duration) == (True, 1700000000, 12, None)
    for raw in (b"", b"[]", b"{}", b'{"last_success_timestamp": "1"}', b'{"last_success_timestamp": true}'):
        with pytest.raises(ValueError):
            exporter.parse_status("postgres", raw)


def test_collect_isolates_failing_jobs_and_render_omits_unknown_values() -> None:
    def reader(job: str) -> bytes:
        if job == "s3-mirror":
            raise OSError("missing")
        return json.dumps({"last_success_timestamp": 1700000000, "duration_seconds": 2.5}).encode()

    text = exporter.render(exporter.collect(["postgres", "s3-mirror"], reader))
    lines = text.splitlines()
    assert 'vibearena_backup_status_up{job="postgres"} 1' in lines
    assert 'vibearena_backup_status_up{job="s3-mirror"} 0' in lines
    assert f'{TS_METRIC}{{job="postgres"}} 1700000000' in lines
    assert 'vibearena_backup_last_duration_seconds{job="postgres"} 2.5' in lines
    assert not any(line.startswith(f'{TS_METRIC}{{job="s3-mirror"}}') for line in lines), (
        "a job without a readable status must not get a made-up timestamp"
    )
    assert "vibearena_backup_last_size_bytes" not in text, "no sample, so no HELP/TYPE either"
    assert f"# TYPE {TS_METRIC} gauge" in lines


def test_cached_collector_reads_s3_once_per_ttl() -> None:
    calls: list[str] = []
    now = [100.0]

    def reader(job: str) -> bytes:
        calls.append(job)
        return b'{"last_success_timestamp": 1}'

    collector = exporter.CachedCollector(["postgres"], reader, ttl=30, clock=lambda: now[0])
    collector.metrics()
    now[0] += 29
    collector.metrics()
    assert calls == ["postgres"]
    now[0] += 1
    collector.metrics()
    assert calls == ["postgres", "postgres"]


def test_settings_errors_name_the_variable() -> None:
    with pytest.raises(ValueError, match="BACKUP_S3_BUCKET"):
        exporter.Settings.from_env({})
    with pytest.raises(ValueError, match="EXPORTER_JOBS"):
        exporter.Settings.from_env({"BACKUP_S3_BUCKET": "b", "EXPORTER_JOBS": 'bad"name'})
    with pytest.raises(ValueError, match="EXPORTER_PORT"):
        exporter.Settings.from_env({"BACKUP_S3_BUCKET": "b", "EXPORTER_PORT": "70000"})
    settings = exporter.Settings.from_env({"BACKUP_S3_BUCKET": "b"})
    assert settings.jobs == ("postgres", "restore-drill", "s3-mirror") and settings.port == 9188


def fetch(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.headers["Content-Type"], response.read().decode()


@pytest.mark.slow
def test_exporter_serves_the_timestamp_written_by_pg_backup(
    postgres: Postgres, s3: S3Server, tiny_db: str, tmp_path: Path
) -> None:
    bucket = s3.make_bucket("exporter", versioned=True)
    backup = run_script("pg-backup", script_env(postgres, s3, bucket, tiny_db))
    assert backup.returncode == 0, backup.stderr
    written = json.loads(s3.get(bucket, "status/postgres.json"))["last_success_timestamp"]

    port = free_port()
    env = script_env(
        postgres,
        s3,
        bucket,
        tiny_db,
        EXPORTER_PORT=str(port),
        EXPORTER_LISTEN_ADDRESS="127.0.0.1",
        EXPORTER_JOBS="postgres,s3-mirror",
        EXPORTER_CACHE_SECONDS="0",
    )
    log = (tmp_path / "exporter.log").open("w")
    proc = subprocess.Popen([str(BIN_DIR / "backup-exporter")], env=env, stdout=log, stderr=log)
    try:
        wait_for_port(port, timeout=20, process=proc)
        assert fetch(f"http://127.0.0.1:{port}/healthz")[0] == 200
        status, content_type, body = fetch(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert content_type.startswith("text/plain; version=0.0.4"), content_type
        lines = body.splitlines()
        assert f'{TS_METRIC}{{job="postgres"}} {written}' in lines, body
        assert 'vibearena_backup_status_up{job="s3-mirror"} 0' in lines, body
        assert abs(written - time.time()) < 120

        # A newer status object shows up without a restart (cache disabled here).
        s3.put(bucket, "status/s3-mirror.json", json.dumps({"last_success_timestamp": 1234}).encode())
        _, _, body = fetch(f"http://127.0.0.1:{port}/metrics")
        assert f'{TS_METRIC}{{job="s3-mirror"}} 1234' in body.splitlines(), body
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_exporter_as_pid1_stops_on_sigterm(tmp_path: Path) -> None:
    """In its container the exporter is PID 1, which ignores any signal it has
    no handler for: a rollout would wait out the whole grace period."""
    pid1.skip_or_fail_unless_available()
    port = free_port()
    env = clean_env()
    env["PATH"] = f"{BIN_DIR}:{env.get('PATH', '/usr/bin:/bin')}"
    env.update({"BACKUP_S3_ENDPOINT": "http://127.0.0.1:9", "BACKUP_S3_BUCKET": "unused",
                "BACKUP_S3_ACCESS_KEY_ID": "unused", "BACKUP_S3_SECRET_ACCESS_KEY": "unused",
                "EXPORTER_PORT": str(port), "EXPORTER_LISTEN_ADDRESS": "127.0.0.1"})
    with (tmp_path / "exporter.log").open("w") as log:
        exporter = pid1.Pid1([str(BIN_DIR / "backup-exporter")], env=env, stdout=log, stderr=log)
    try:
        wait_for_port(port, timeout=20, process=exporter.outer)
        assert exporter.namespace_pid() == 1
        assert fetch(f"http://127.0.0.1:{port}/healthz")[0] == 200
        took = exporter.seconds_to_exit_after_sigterm(limit=2)
        assert took is not None, "SIGTERM ignored as PID 1:\n" + (tmp_path / "exporter.log").read_text()
        assert exporter.outer.returncode == 0
    finally:
        exporter.kill()
