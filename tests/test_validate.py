"""`make validate` (scripts/validate.py): offline checks of rendered files, one line per problem."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts import validate
from tests.support.manifests import ROOT

Edit = Callable[[dict[str, Any]], None]


def copy_of(env: str, tmp_path: Path) -> Path:
    target = tmp_path / env
    shutil.copytree(ROOT / "dist" / env, target)
    return target


def edit(directory: Path, kind: str, name: str, change: Edit) -> None:
    """Apply `change` to the one object kind/name in the rendered files, as a user editing YAML would."""
    hits = 0
    for path in sorted(directory.glob("*.yaml")):
        docs = list(yaml.safe_load_all(path.read_text()))
        matching = [d for d in docs if d and d["kind"] == kind and d["metadata"]["name"] == name]
        for doc in matching:
            change(doc)
        if matching:
            hits += len(matching)
            path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    assert hits == 1, f"{kind}/{name} found {hits} times"


def run(*dirs: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "validate.py"), *map(str, dirs)],
                          capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)


def test_the_committed_renders_pass(tmp_path):
    # A pristine copy passes, so the failures below come from the edits alone.
    pristine = copy_of("prod", tmp_path)
    for directory in (pristine, ROOT / "dist" / "argocd"):
        assert validate.validate(directory) == []


@pytest.mark.slow
def test_an_edited_env_fails_with_a_line_per_problem(tmp_path):
    prod = copy_of("prod", tmp_path)

    def unknown_field(deployment: dict[str, Any]) -> None:
        deployment["spec"]["replicaz"] = 3

    def bad_label(service: dict[str, Any]) -> None:
        service["metadata"]["labels"]["app.kubernetes.io/version"] = "release 7!"

    def no_liveness(deployment: dict[str, Any]) -> None:
        del deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]

    edit(prod, "Deployment", "api", unknown_field)
    edit(prod, "Service", "api", bad_label)
    edit(prod, "Deployment", "grafana", no_liveness)

    result = run(prod)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    unknown = [line for line in lines if "Deployment/api" in line and "'replicaz' was unexpected" in line]
    # Once per supported Kubernetes version.
    assert len(unknown) == 2, lines
    assert any("Kubernetes 1.33" in line for line in unknown) and any("Kubernetes 1.37" in line for line in unknown)
    assert any("bad label value app.kubernetes.io/version='release 7!'" in line for line in lines), lines
    assert any("Deployment/grafana container grafana: no livenessProbe" in line for line in lines), lines
    # Nothing else is reported: every line is about an edited object.
    assert all("Deployment/api" in line or "Service/api" in line or "grafana" in line for line in lines), lines
    assert f"{len(lines)} problem(s)" in result.stderr


def test_an_edited_custom_resource_fails_against_its_crd(tmp_path):
    argocd = copy_of("argocd", tmp_path)

    def typo(application: dict[str, Any]) -> None:
        application["spec"]["syncPolicy"]["automatd"] = {}

    edit(argocd, "Application", "vibearena-stage", typo)
    problems = validate.validate(argocd)
    assert len(problems) == 1, problems
    assert "Application/vibearena-stage: spec.syncPolicy: Additional properties" in problems[0]
    assert "'automatd' was unexpected" in problems[0]


def test_a_broken_file_and_a_missing_directory(tmp_path):
    stage = copy_of("stage", tmp_path)
    (stage / "06-web.yaml").write_text("kind: Deployment\nmetadata: {name: api\n")
    problems = validate.validate(stage)
    assert problems[0].startswith(f"{stage / '06-web.yaml'}: not valid YAML: "), problems
    missing = run(tmp_path / "nothing-here")
    assert missing.returncode == 2
    assert missing.stderr.strip().endswith("nothing-here: no rendered YAML files here")
