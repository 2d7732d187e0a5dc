"""Without ../shared (a user's clone) the tests get the pinned CRDs or stop with one line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import crds
from tests.support.manifests import ROOT
from tests.support.schemas import crds_dir

PROJECT_FILES = ("scripts/crds.py", "scripts/crd-pins.txt", "scripts/fetch_crds.sh")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != crds.ENV_VAR}
    return {**env, **extra}


def test_pins_name_distinct_files_with_full_sha256():
    pinned = crds.pins()
    assert len(pinned) == len({pin.local for pin in pinned})
    for pin in pinned:
        assert len(pin.commit) == 40 and len(pin.sha256) == 64, pin
        assert pin.url.startswith("https://raw.githubusercontent.com/"), pin


def test_the_suite_stops_with_one_line_when_the_crds_are_missing(tmp_path):
    empty = tmp_path / "crds"
    empty.mkdir()
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_schema.py"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
                            env=clean_env(**{crds.ENV_VAR: str(empty)}))
    output = (result.stdout + result.stderr).strip()
    assert result.returncode != 0
    assert "passed" not in output and "LookupError" not in output, output
    # One line says what is missing; pytest adds only its "no tests ran" count.
    lines = [line for line in output.splitlines() if line.strip()]
    assert [line for line in lines if not line.startswith("no tests ran")] == [lines[-1]], output
    assert lines[-1].startswith("ERROR: CRD files for the tests are missing or changed"), output
    assert f"{empty}/argo-cd/application-crd.yaml: missing" in output
    assert f"scripts/fetch_crds.sh {empty}" in output and f"unset {crds.ENV_VAR}" in output


def test_a_changed_copy_is_refused(tmp_path):
    copy = tmp_path / "crds"
    shutil.copytree(crds_dir(), copy)
    tampered = copy / "cert-manager" / "cert-manager.io_clusterissuers.yaml"
    tampered.write_text(tampered.read_text().replace("type: object", "type: object\n  x-note: edited", 1))
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "crds.py")], capture_output=True, text=True,
                            timeout=60, check=False, env=clean_env(**{crds.ENV_VAR: str(copy)}))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{tampered}: SHA-256 " in lines[0] and "expected 30008001b78a" in lines[0]


def test_the_verified_copy_is_found():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "crds.py")], capture_output=True, text=True,
                            timeout=60, check=False, env=clean_env())
    assert result.returncode == 0, result.stderr
    assert crds.problems(Path(result.stdout.strip()), crds.pins()) == []


@pytest.fixture
def clone(tmp_path) -> Path:
    """A checkout with no ../shared beside it."""
    project = tmp_path / "clone" / "project"
    for relative in PROJECT_FILES:
        (project / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, project / relative)
    return project


def fake_raw_github(tmp_path: Path, *, tamper: str | None = None, offline: bool = False) -> str:
    """A curl on PATH that serves raw.githubusercontent.com URLs from the verified files
    (this machine cannot reach GitHub); the real fetch_crds.sh runs against it."""
    mirror = tmp_path / "mirror"
    for pin in crds.pins():
        target = mirror / pin.repo / pin.commit / pin.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(crds_dir() / pin.local, target)
        if pin.local == tamper:
            target.write_bytes(target.read_bytes() + b"\n# changed in transit\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    curl = bin_dir / "curl"
    curl.write_text(f"""#!/usr/bin/env bash
{'echo "curl: (6) Could not resolve host: raw.githubusercontent.com" >&2; exit 6' if offline else ''}
while (($#)); do
  case "$1" in
    -o) out=$2; shift 2;;
    https://raw.githubusercontent.com/*) url=$1; shift;;
    *) shift;;
  esac
done
cp "{mirror}/${{url#https://raw.githubusercontent.com/}}" "$out"
""")
    curl.chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}"


def run_locator(project: Path, path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(project / "scripts" / "crds.py"), "--fetch"], cwd=project,
                          capture_output=True, text=True, timeout=120, check=False, env=clean_env(PATH=path))


def test_a_clone_fetches_the_pinned_files_into_the_ignored_cache(clone, tmp_path):
    result = run_locator(clone, fake_raw_github(tmp_path))
    cache = clone / ".cache" / "crds"
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(cache)
    assert crds.problems(cache, crds.pins()) == []
    assert not list(cache.rglob("*.part"))
    gitignore = (ROOT / ".gitignore").read_text().splitlines()
    assert "/.cache/" in gitignore


def test_a_file_changed_in_transit_is_not_kept(clone, tmp_path):
    tampered = "argo-cd/applicationset-crd.yaml"
    result = run_locator(clone, fake_raw_github(tmp_path, tamper=tampered))
    assert result.returncode == 2
    assert f"fetch_crds: {tampered}: checksum" in result.stderr
    assert not (clone / ".cache" / "crds" / tampered).exists()
    assert not list((clone / ".cache" / "crds").rglob("*.part"))
    verdict = result.stderr.strip().splitlines()[-1]
    assert verdict.startswith("crds: CRD files for the tests are missing or changed"), verdict
    assert f"{tampered}: missing" in verdict


def test_offline_the_locator_stops_with_one_line(clone, tmp_path):
    result = run_locator(clone, fake_raw_github(tmp_path, offline=True))
    assert result.returncode == 2
    assert result.stdout == ""
    verdict = result.stderr.strip().splitlines()[-1]
    assert f"{clone.parent / 'shared' / 'crds'}: no such directory" in verdict
    assert "scripts/fetch_crds.sh .cache/crds" in verdict
