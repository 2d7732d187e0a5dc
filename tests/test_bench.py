"""The benches say pass or fail against their targets (bench/; run on demand, not timed here)."""

from __future__ import annotations

from bench.backup import TARGET_RATIO, verdict


def test_backup_bench_verdict_at_the_target_boundary() -> None:
    # The target from bench/backup.py's docstring: the whole job <= 1.3x a bare pg_dump.
    assert TARGET_RATIO == 1.3
    assert verdict(1.3) == (True, "backup bench: pass: pg-backup takes 1.30x a bare pg_dump (target <= 1.3x)")
    assert verdict(1.31) == (False, "backup bench: FAIL: pg-backup takes 1.31x a bare pg_dump (target <= 1.3x)")
