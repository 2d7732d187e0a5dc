"""Static checks on the backup scripts: shellcheck, strict mode, usage text."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.backup.helpers import BIN_DIR, clean_env

SCRIPTS = sorted(p for p in BIN_DIR.iterdir() if p.is_file() and p.suffix != ".py")
COMMANDS = [p for p in SCRIPTS if p.name != "lib.sh"]


def test_every_command_is_run_by_a_rendered_workload_and_every_workload_command_exists() -> None:
    """backup/bin against the charts: a script nothing runs is dead, a command path that names
    no script fails in the pod (prod with the off-site copy renders every one)."""
    from tests.support.manifests import pod_templates
    from tests.support.render import render_with

    _stack, objects = render_with("prod", {"backups": {"offsite": {"enabled": True}}})
    run = {c["command"][0] for pod in pod_templates(objects) for c in pod.containers()
           if (c.get("command") or [""])[0].startswith("/opt/backup/bin/")}
    assert {f"/opt/backup/bin/{p.name}" for p in COMMANDS} == run


def test_shellcheck_passes() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (Debian package 'shellcheck')")
    result = subprocess.run(
        [shellcheck, "--external-sources", "--severity=style", *map(str, SCRIPTS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"shellcheck findings:\n{result.stdout}"


@pytest.mark.parametrize("script", COMMANDS, ids=lambda p: p.name)
def test_strict_mode_and_usage(script: Path) -> None:
    lines = script.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash", f"{script.name}: unexpected shebang"
    assert "set -Eeuo pipefail" in lines[:5], f"{script.name}: strict mode missing near the top"
    result = subprocess.run([str(script), "--help"], env=clean_env(), capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{script.name} --help failed: {result.stderr}"
    assert result.stdout.startswith(f"Usage: {script.name}"), f"{script.name}: usage text missing"
    assert "Environment" in result.stdout, f"{script.name}: usage does not document its environment"


def test_lib_is_sourced_not_executed() -> None:
    lib = BIN_DIR / "lib.sh"
    assert not lib.stat().st_mode & 0o111, "lib.sh is sourced by the scripts and must not be executable"
