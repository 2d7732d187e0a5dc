"""imports/ is generated offline and reproducibly from pinned inputs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from scripts import crds
from scripts.gen_imports import CRD_GROUPS, DEFAULT_K8S_VERSION
from tests.support.manifests import ROOT, tree_digest
from tests.support.schemas import OLDEST, crds_dir

SOURCE = json.loads((ROOT / "imports" / "SOURCE.json").read_text())


def test_imports_target_the_oldest_supported_version():
    assert SOURCE["kubernetes"] == DEFAULT_K8S_VERSION
    assert DEFAULT_K8S_VERSION.rsplit(".", 1)[0] == OLDEST


def test_pins_cover_every_crd_the_generator_reads_with_the_recorded_checksums():
    pinned = {pin.local: pin.sha256 for pin in crds.pins()}
    used = {path for paths in CRD_GROUPS.values() for path in paths}
    assert used == set(SOURCE["crds"])
    assert used <= set(pinned), sorted(used - set(pinned))
    # SOURCE.json was written when imports/ was generated: a second record.
    assert {path: pinned[path] for path in used} == SOURCE["crds"]


def test_crd_files_match_the_recorded_checksums():
    for relative, digest in SOURCE["crds"].items():
        assert hashlib.sha256((crds_dir() / relative).read_bytes()).hexdigest() == digest, relative


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / "node_modules" / "cdk8s-cli").is_dir(),
                    reason="needs the cdk8s CLI (scripts/setup.sh)")
def test_regenerating_gives_the_committed_bytes(tmp_path):
    out = tmp_path / "imports"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_imports.py"), "--outdir", str(out),
                             "--crds-dir", str(crds_dir())],
                            cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    fresh, committed = tree_digest(out), tree_digest(ROOT / "imports")
    committed = {k: v for k, v in committed.items() if "__pycache__" not in k}
    differing = sorted(k for k in fresh.keys() | committed.keys() if fresh.get(k) != committed.get(k))
    assert not differing, f"imports/ differs from a fresh generation: {differing[:10]}"
