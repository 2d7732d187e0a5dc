"""Celery liveness check for a Kubernetes exec probe.

    python -m config.liveness [--file PATH] [--max-age SECONDS]

Exits 0 when the heartbeat file is younger than --max-age, 1 otherwise. The
worker touches its file from its event loop, beat on every scheduler tick
(see config/celery.py); the default --file is the worker's. Stdlib only, so it starts in
milliseconds and does not load the application.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

DEFAULT_FILE = "/tmp/celery-worker-heartbeat"
DEFAULT_MAX_AGE = 60.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--file", default=os.environ.get("CELERY_LIVENESS_FILE", DEFAULT_FILE)
    )
    parser.add_argument(
        "--max-age",
        type=float,
        default=float(os.environ.get("CELERY_LIVENESS_MAX_AGE", DEFAULT_MAX_AGE)),
        help="seconds; keep well above CELERY_LIVENESS_INTERVAL",
    )
    args = parser.parse_args(argv)
    try:
        age = time.time() - os.stat(args.file).st_mtime
    except FileNotFoundError:
        print(f"heartbeat file {args.file} does not exist", file=sys.stderr)
        return 1
    if age > args.max_age:
        print(
            f"heartbeat {args.file} is {age:.0f}s old (limit {args.max_age:.0f}s)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
