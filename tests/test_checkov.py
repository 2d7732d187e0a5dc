"""Policy gate: checkov over every env's rendered output, offline.

Any failed check must be listed in tests/checkov-skips.yaml with a reason.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.manifests import ENVS, ROOT

CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
SKIPS = ROOT / "tests" / "checkov-skips.yaml"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "main.py"), "--out", str(out)],
                   check=True, capture_output=True, timeout=120)
    return out


def failed_checks(directory: Path) -> list[tuple[str, str]]:
    result = subprocess.run(
        [str(CHECKOV), "--directory", str(directory), "--framework", "kubernetes", "--skip-download",
         "--quiet", "--compact", "--output", "json"],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"})
    assert result.returncode in (0, 1), f"checkov failed to run: {result.stderr[-2000:]}"
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    assert any(r["summary"]["passed"] for r in reports), "checkov passed no check: did it read the files?"
    return [(c["check_id"], c["resource"]) for r in reports for c in r["results"]["failed_checks"]]


@pytest.mark.skipif(not CHECKOV.exists(), reason="checkov venv missing (scripts/setup.sh test installs it)")
def test_checkov_passes_every_env_except_explained_skips(rendered):
    skips = yaml.safe_load(SKIPS.read_text())
    assert all(isinstance(reason, str) and len(reason) > 20 for reason in skips.values()), \
        "every skip needs a one-line reason"
    unexplained, used = [], set()
    for env in ENVS:
        for check_id, resource in failed_checks(rendered / env):
            if check_id in skips:
                used.add(check_id)
            else:
                unexplained.append(f"{env}: {check_id} on {resource}")
    assert not unexplained, "failed checks without a reason in tests/checkov-skips.yaml:\n" + "\n".join(unexplained)
    assert used == set(skips), f"skips that no longer fail anywhere: {sorted(set(skips) - used)}"
