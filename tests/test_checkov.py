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


def scopes(skip: str | dict) -> dict[str, str | list[str]] | None:
    """Where a skip applies: None for every env, else {env: "all" | [resources]}."""
    if isinstance(skip, str):
        return None
    assert set(skip) == {"reason", "where"}, f"a scoped skip has a reason and a where: {skip}"
    return skip["where"]


def reason(skip: str | dict) -> str:
    return skip if isinstance(skip, str) else skip["reason"]


@pytest.mark.skipif(not CHECKOV.exists(), reason="checkov venv missing (scripts/setup.sh test installs it)")
def test_checkov_passes_every_env_except_explained_skips(rendered):
    skips = yaml.safe_load(SKIPS.read_text())
    assert all(isinstance(reason(skip), str) and len(reason(skip)) > 20 for skip in skips.values()), \
        "every skip needs a one-line reason"
    unexplained, used = [], set()
    for env in ENVS:
        for check_id, resource in failed_checks(rendered / env):
            where = scopes(skips[check_id]) if check_id in skips else {}
            if where is None:
                used.add((check_id, "*", "*"))
            elif where.get(env) == "all":
                used.add((check_id, env, "all"))
            elif resource in (where.get(env) or ()):
                used.add((check_id, env, resource))
            else:
                unexplained.append(f"{env}: {check_id} on {resource}")
    assert not unexplained, "failed checks without a reason in tests/checkov-skips.yaml:\n" + "\n".join(unexplained)
    declared = set()
    for check_id, skip in skips.items():
        where = scopes(skip)
        if where is None:
            declared.add((check_id, "*", "*"))
            continue
        for env, resources in where.items():
            assert env in ENVS, f"{check_id}: {env} is not an env"
            declared |= {(check_id, env, "all")} if resources == "all" else {(check_id, env, r) for r in resources}
    assert used == declared, f"skips that no longer fail: {sorted(declared - used)}"


def test_prod_skips_no_digest_check():
    """Prod runs every image by digest: checkov's digest checks have no skip there,
    so a prod image that runs by tag fails test_checkov_passes_every_env_except_explained_skips."""
    skips = yaml.safe_load(SKIPS.read_text())
    for check_id in ("CKV_K8S_43", "CKV_K8S_15"):
        assert "prod" not in (scopes(skips[check_id]) or {"prod": "all"}), check_id
