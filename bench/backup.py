"""Backup and restore timings on a seeded database (run on demand, not a test).

    .venv/bin/python bench/backup.py [--runs 3] [--scale 1]

Starts a throwaway PostgreSQL and an S3 server (moto) on loopback, seeds the same
database as tests/backup (about 110 MB on disk per unit of --scale), then measures:

- ``pg_dump -Fc > /dev/null``: the floor, pure dump and compression cost;
- the bare stream ``pg_dump | tee >(sha256sum) | rclone rcat``: the streaming cost;
- ``pg-backup``: the whole job (stream, size check, manifest, publish by server-side
  copy, retention, status object); the ratio to the floor is the target (<= 1.3x);
- ``pg-restore`` from S3 (verified stream) next to ``pg_restore`` of a local file.

The S3 server is Python and runs on the same cores as PostgreSQL and pg_dump, and
pg-backup makes seven small S3 calls besides the stream (a fixed cost of a few tenths
of a second), so small databases give a pessimistic ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.backup.helpers import (  # noqa: E402 (needs the repository root on sys.path)
    BIN_DIR,
    Postgres,
    clean_env,
    run_script,
    running_postgres,
    running_s3,
    script_env,
    seed_database,
)

TARGET_RATIO = 1.3


def timed(action: Callable[[], None]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def check(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0:
        raise SystemExit(f"{what} failed:\n{result.stderr}")


def pg_dump_to(pg: Postgres, database: str, target: str) -> None:
    with open(target, "wb") as out:
        result = subprocess.run(
            [str(pg.bin_dir / "pg_dump"), "--format=custom", "--compress=6", "--no-password"],
            stdout=out,
            stderr=subprocess.PIPE,
            env={**clean_env(), **pg.env(database)},
            check=False,
        )
    if result.returncode != 0:
        raise SystemExit(f"pg_dump failed: {result.stderr.decode()}")


# The rclone remote is defined exactly as the scripts do it, by sourcing lib.sh.
STREAM_ONLY = """
. "$BIN_DIR/lib.sh"
rclone_setup
backup_remote
pg_dump --format=custom --compress=6 --no-password |
    tee >(sha256sum >/dev/null) |
    rclone rcat "backup:$BACKUP_S3_BUCKET/bench/stream-$RANDOM.dump"
"""


def stream_only(env: dict[str, str]) -> None:
    result = subprocess.run(
        ["bash", "-c", "set -Eeuo pipefail" + STREAM_ONLY],
        env={**env, "BIN_DIR": str(BIN_DIR)},
        capture_output=True,
        text=True,
        check=False,
    )
    check(result, "stream")


def backup_to_s3(env: dict[str, str]) -> None:
    check(run_script("pg-backup", env), "pg-backup")


def restore_from_s3(env: dict[str, str], target: str) -> None:
    check(run_script("pg-restore", {**env, "RESTORE_TARGET_DB": target}, "--create-db"), "pg-restore")


def restore_from_file(pg: Postgres, dump: str, target: str) -> None:
    result = subprocess.run(
        [str(pg.bin_dir / "pg_restore"), "--single-transaction", "--no-owner", "--dbname", target, dump],
        env={**clean_env(), **pg.env(target)},
        capture_output=True,
        text=True,
        check=False,
    )
    check(result, "pg_restore")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="timed runs per step (median is reported)")
    parser.add_argument("--scale", type=int, default=1, help="database size factor (1 = about 110 MB)")
    args = parser.parse_args()

    with running_postgres() as pg, running_s3() as s3, tempfile.TemporaryDirectory() as tmp:
        print("seeding database ...", file=sys.stderr)
        seeded = seed_database(pg, "app", args.scale)
        bucket = s3.make_bucket("bench", versioned=True)
        env = script_env(pg, s3, bucket, seeded.name, BACKUP_KEEP_MIN="100")

        pg_dump_to(pg, seeded.name, os.devnull)  # warm the page cache for both sides
        dump_times: list[float] = []
        stream_times: list[float] = []
        backup_times: list[float] = []
        for _ in range(args.runs):
            dump_times.append(timed(partial(pg_dump_to, pg, seeded.name, os.devnull)))
            stream_times.append(timed(partial(stream_only, env)))
            backup_times.append(timed(partial(backup_to_s3, env)))
            time.sleep(1)  # dump names have one-second resolution

        local_dump = str(Path(tmp) / "app.dump")
        pg_dump_to(pg, seeded.name, local_dump)
        dump_bytes = Path(local_dump).stat().st_size

        restore_s3: list[float] = []
        restore_local: list[float] = []
        for run in range(args.runs):
            restore_s3.append(timed(partial(restore_from_s3, env, f"bench_s3_{run}")))
            target = f"bench_local_{run}"
            pg.create_database(target)
            restore_local.append(timed(partial(restore_from_file, pg, local_dump, target)))

    dump = statistics.median(dump_times)
    stream = statistics.median(stream_times)
    backup = statistics.median(backup_times)
    ratio = backup / dump
    rows = [
        ("pg_dump -Fc > /dev/null", f"{dump:.2f}"),
        ("stream only (dump | sha | rcat)", f"{stream:.2f}  ({stream / dump:.2f}x)"),
        ("pg-backup (whole job)", f"{backup:.2f}  ({ratio:.2f}x, target <= {TARGET_RATIO}x)"),
        ("pg-restore (S3, verified)", f"{statistics.median(restore_s3):.2f}"),
        ("pg_restore (local file)", f"{statistics.median(restore_local):.2f}"),
    ]
    print(
        f"database {seeded.size_bytes / 2**20:.0f} MiB on disk, dump {dump_bytes / 2**20:.1f} MiB, "
        f"median of {args.runs} runs, seconds"
    )
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    passed, line = verdict(ratio)
    print(line)
    return 0 if passed else 1


def verdict(ratio: float) -> tuple[bool, str]:
    """The bench's target: the whole backup job costs at most TARGET_RATIO x a bare pg_dump."""
    passed = ratio <= TARGET_RATIO
    return passed, (f"backup bench: {'pass' if passed else 'FAIL'}: pg-backup takes {ratio:.2f}x a bare pg_dump "
                    f"(target <= {TARGET_RATIO}x)")


if __name__ == "__main__":
    sys.exit(main())
