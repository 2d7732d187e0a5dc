"""pg-backup failure modes and retention, against real PostgreSQL, rclone and S3."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from tests.backup.helpers import (
    BIN_DIR,
    DUMP_NAME,
    Postgres,
    S3Server,
    SeededDatabase,
    last_line,
    run_script,
    script_env,
)
from tests.support.services import free_port

pytestmark = pytest.mark.slow
UNREACHABLE_SECRET = "never-printed-secret-value"


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """Accepts TCP connections (kernel backlog) but never answers: a hung S3."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])


class CuttableProxy:
    """TCP proxy to the S3 server that can drop every connection at once, to make S3
    disappear in the middle of an upload."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.bytes_up = 0
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._cut = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                if self._cut:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upward: bool) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                if upward:
                    with self._lock:
                        self.bytes_up += len(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            self.listener.close()
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


@pytest.mark.parametrize("failure", ["closed port", "server never answers"])
def test_unreachable_s3_fails_within_bounded_time(postgres: Postgres, tiny_db: str, failure: str) -> None:
    with contextlib.ExitStack() as stack:
        port = free_port() if failure == "closed port" else stack.enter_context(silent_server())
        unreachable = S3Server(f"http://127.0.0.1:{port}", "AKUNREACHABLE", UNREACHABLE_SECRET)
        env = script_env(
            postgres,
            unreachable,
            "backups",
            tiny_db,
            RCLONE_TIMEOUT="2s",
            RCLONE_LOW_LEVEL_RETRIES="1",
        )
        started = time.monotonic()
        result = run_script("pg-backup", env, timeout=120)
        elapsed = time.monotonic() - started
    assert result.returncode == 1, f"pg-backup should fail with {failure}: {result.stderr}"
    # Hung server: (1 + 1) tries x 2 x 2 s = 8 s (see rclone_setup in lib.sh), plus start-up.
    assert elapsed < 15, f"pg-backup took {elapsed:.1f}s to give up on an unreachable S3"
    assert last_line(result.stderr).startswith("pg-backup: error: cannot list s3 bucket backups")
    output = result.stdout + result.stderr
    assert UNREACHABLE_SECRET not in output and postgres.password not in output, "a secret was printed"


def test_s3_lost_mid_upload_fails_and_publishes_nothing(
    postgres: Postgres, s3: S3Server, seeded_db: SeededDatabase
) -> None:
    bucket = s3.make_bucket("cut", versioned=True)
    proxy = CuttableProxy(int(s3.endpoint.rsplit(":", 1)[1]))
    via_proxy = S3Server(f"http://127.0.0.1:{proxy.port}", s3.access_key, s3.secret_key)
    env = script_env(postgres, via_proxy, bucket, seeded_db.name, RCLONE_BWLIMIT="4M")
    proc = subprocess.Popen([str(BIN_DIR / "pg-backup")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while proxy.bytes_up < 3_000_000 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "backup finished before S3 could be cut; slow it down further"
    proxy.cut()
    cut_at = time.monotonic()
    _, stderr = proc.communicate(timeout=120)
    elapsed = time.monotonic() - cut_at
    assert proc.returncode == 1, f"pg-backup should fail when S3 goes away: {stderr.decode()}"
    assert elapsed < 30, f"pg-backup needed {elapsed:.1f}s to notice that S3 went away"
    assert "upload to s3 failed" in last_line(stderr.decode())
    assert s3.keys(bucket) == [], "a failed upload left objects in the bucket"


def test_pg_dump_killed_mid_stream_publishes_nothing(
    postgres: Postgres, s3: S3Server, seeded_db: SeededDatabase
) -> None:
    bucket = s3.make_bucket("killed", versioned=True)
    # A bandwidth limit on the upload back-pressures pg_dump, so it is still copying
    # table data when its backend is terminated.
    env = script_env(postgres, s3, bucket, seeded_db.name, RCLONE_BWLIMIT="4M")
    proc = subprocess.Popen([str(BIN_DIR / "pg-backup")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    terminated = ""
    deadline = time.monotonic() + 60
    while not terminated and proc.poll() is None and time.monotonic() < deadline:
        terminated = postgres.psql(
            "postgres",
            "SELECT string_agg(pg_terminate_backend(pid)::text, ',') FROM pg_stat_activity "
            "WHERE application_name = 'pg_dump' AND query LIKE 'COPY %' AND state = 'active'",
        )
        time.sleep(0.05)
    _, stderr = proc.communicate(timeout=120)
    assert terminated == "true", "never saw pg_dump copying table data"
    assert proc.returncode == 1, f"pg-backup must fail when pg_dump dies: {stderr.decode()}"
    assert "pg_dump failed" in last_line(stderr.decode())
    assert s3.keys(bucket) == [], "neither a final nor a temporary object may remain"


def test_a_stage_failing_in_the_middle_of_the_pipe_fails_the_backup(
    postgres: Postgres, s3: S3Server, seeded_db: SeededDatabase, tmp_path
) -> None:
    """pg_dump | tee | rclone: the middle stage passes 200 kB on, then fails.
    rclone sees a clean end of input and would publish a truncated dump; the
    script must notice the broken stage, fail, and leave nothing behind."""
    bucket = s3.make_bucket("midpipe", versioned=True)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    real_tee = subprocess.run(["sh", "-c", "command -v tee"], capture_output=True, text=True, check=True).stdout.strip()
    broken_tee = fake_bin / "tee"
    broken_tee.write_text(f"#!/bin/sh\nhead -c 200000 | {real_tee} \"$@\"\nexit 1\n")
    broken_tee.chmod(0o755)
    env = script_env(postgres, s3, bucket, seeded_db.name)
    env["PATH"] = f"{fake_bin}:{env['PATH']}"
    result = run_script("pg-backup", env, timeout=120)
    assert result.returncode == 1, f"a broken middle stage must fail the backup: {result.stderr}"
    assert re.search(r"pg-backup: error: (pg_dump failed|dump stream failed)", last_line(result.stderr)), result.stderr
    assert s3.keys(bucket) == [], "a failed stream left objects in the bucket"


def stamp(age_days: float, now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now - age_days * 86400))


@pytest.mark.parametrize(
    ("ages", "kept_ages"),
    [
        # keep 3 newest (the new dump, 1 d, 2 d); of the rest, only those younger than 10 d.
        ([1, 2, 5, 9.5, 10.5, 12, 30], [1, 2, 5, 9.5]),
        # every old dump is expired: the 3 newest stay anyway.
        ([20, 30, 40, 50], [20, 30]),
    ],
)
def test_retention_deletes_exactly_the_expired_dumps(
    postgres: Postgres, s3: S3Server, tiny_db: str, ages: list[float], kept_ages: list[float]
) -> None:
    bucket = s3.make_bucket("retention")
    now = time.time()
    d = f"postgres/{tiny_db}"
    for age in ages:
        s3.put(bucket, f"{d}/{stamp(age, now)}.dump", b"PGDMP old")
        s3.put(bucket, f"{d}/{stamp(age, now)}.dump.json", b"{}")
    untouchable = {
        f"{d}/notes.txt",  # not a dump name: never deleted
        f"{d}/{stamp(40, now)}.dump.bak",
        f"{d}/{stamp(3, now)}.dump.json",  # manifest without dump, not expired
        f"{d}/.incomplete/fresh.dump",  # may belong to a running backup
        f"other/{tiny_db}/{stamp(90, now)}.dump",  # another prefix
    }
    for key in untouchable:
        s3.put(bucket, key, b"x")
    s3.put(bucket, f"{d}/{stamp(40, now)}.dump.json", b"{}")  # orphan manifest, expired
    # rclone reads the modification time from this metadata: 2 days old.
    s3.put(bucket, f"{d}/.incomplete/stale.dump", b"x", metadata={"mtime": str(now - 2 * 86400)})

    env = script_env(postgres, s3, bucket, tiny_db, BACKUP_KEEP_MIN="3", BACKUP_RETENTION_DAYS="10")
    result = run_script("pg-backup", env)
    assert result.returncode == 0, result.stderr
    new_key = result.stdout.strip()
    assert re.fullmatch(rf"{d}/{DUMP_NAME}", new_key)

    expected = {new_key, f"{new_key}.json", "status/postgres.json", *untouchable}
    for age in kept_ages:
        expected |= {f"{d}/{stamp(age, now)}.dump", f"{d}/{stamp(age, now)}.dump.json"}
    assert set(s3.keys(bucket)) == expected, "retention deleted the wrong set of objects"


def test_invalid_settings_exit_2_without_touching_anything(postgres: Postgres, tiny_db: str) -> None:
    nowhere = S3Server("http://127.0.0.1:9", "AKNOWHERE", UNREACHABLE_SECRET)
    env = script_env(postgres, nowhere, "backups", tiny_db, BACKUP_KEEP_MIN="0")
    result = run_script("pg-backup", env)
    assert result.returncode == 2
    assert last_line(result.stderr) == "pg-backup: error: BACKUP_KEEP_MIN must be >= 1 (see pg-backup --help)"
    del env["BACKUP_S3_SECRET_ACCESS_KEY"]
    env["BACKUP_KEEP_MIN"] = "7"
    result = run_script("pg-backup", env)
    assert result.returncode == 2
    assert "BACKUP_S3_SECRET_ACCESS_KEY is required" in last_line(result.stderr)
