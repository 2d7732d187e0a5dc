"""Rendering: deterministic bytes, atomic swap, committed dist/ is current."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.support.manifests import ENVS, ROOT, load_dir, tree_digest


def render(out, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), "--out", str(out), *args],
                            capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result


def test_same_input_gives_same_bytes(tmp_path):
    render(tmp_path / "a")
    render(tmp_path / "b")
    first, second = tree_digest(tmp_path / "a"), tree_digest(tmp_path / "b")
    assert first, "nothing rendered"
    assert first == second, "two renders of the same input differ"


def test_every_env_is_rendered_by_default(tmp_path):
    render(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*ENVS, "argocd"])
    for env in ENVS:
        assert load_dir(tmp_path / env), f"dist/{env} is empty"


def test_single_env_leaves_the_others_alone(tmp_path):
    render(tmp_path)
    before = tree_digest(tmp_path / "prod")
    (tmp_path / "dev" / "99-stale.yaml").write_text("kind: Stale\n")
    render(tmp_path, "--env", "dev")
    assert not (tmp_path / "dev" / "99-stale.yaml").exists(), "the env dir was not replaced as a whole"
    assert tree_digest(tmp_path / "prod") == before


def test_no_temporary_directories_are_left(tmp_path):
    render(tmp_path)
    render(tmp_path)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not leftovers, f"temporary directories left in dist: {leftovers}"


def test_namespace_file_sorts_first(tmp_path):
    """kubectl apply -f dist/<env> applies files in name order."""
    render(tmp_path)
    for env in ENVS:
        first = sorted((tmp_path / env).glob("*.yaml"))[0]
        kinds = [doc["kind"] for doc in load_dir(tmp_path / env) if doc]
        assert kinds[0] == "Namespace", f"{env}: first object is {kinds[0]}"
        assert "Namespace" in first.read_text().split("---")[0], f"{env}: {first.name} does not open with it"


def test_committed_dist_matches_a_fresh_render(tmp_path):
    """dist/ is what Argo CD syncs: it must never lag behind the code."""
    render(tmp_path)
    committed = ROOT / "dist"
    for env in [*ENVS, "argocd"]:
        fresh, current = tree_digest(tmp_path / env), tree_digest(committed / env)
        stale = sorted(set(fresh) ^ set(current)) + sorted(k for k in fresh if current.get(k) != fresh[k])
        assert not stale, f"dist/{env} is out of date ({', '.join(sorted(set(stale)))}); run `make synth`"


@pytest.mark.skipif(not (ROOT / "node_modules" / ".bin" / "cdk8s").exists(),
                    reason="cdk8s CLI not installed (scripts/setup.sh installs it)")
def test_cdk8s_synth_renders_dist(tmp_path):
    """The card's command, a bare `npx cdk8s synth`, drives main.py and prints no upgrade check."""
    project = tmp_path / "project"
    # The project's own files only (tracked or new, not ignored): a work tree
    # can hold caches (runtime roots with /proc bound into them) that must
    # never be copied.
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    skipped = ("dist/", "app/", "tests/", "backup/")
    for name in filter(None, listed):
        source = ROOT / name
        if name.startswith(skipped) or not source.is_file() or source.is_symlink():
            continue
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, project / name)
    (project / "node_modules").symlink_to(ROOT / "node_modules")
    (project / ".venv").symlink_to(ROOT / ".venv")
    # cdk8s-cli caches npm's answer in ~/.cdk8s-cli.version for 30 minutes
    # (lib/upgrades.js); a fresh cache naming a newer version makes the check
    # announce it without network, so the assertion below holds on any machine.
    home = tmp_path / "home"
    home.mkdir()
    (home / ".cdk8s-cli.version").write_text("99.0.0")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDK8S_", "NODE_OPTIONS", "npm_config_"))}
    result = subprocess.run(["npx", "--no-install", "cdk8s", "synth"], cwd=project, capture_output=True,
                            text=True, timeout=300, check=False,
                            env={**env, "HOME": str(home), "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for env_name in ENVS:
        assert load_dir(project / "dist" / env_name), f"cdk8s synth wrote no dist/{env_name}"
    assert "end-of-life" not in output, "the Node 20 banner is not silenced"
    assert "of cdk8s-cli is available" not in output, "cdk8s-cli's upgrade check still runs"
    assert not re.search(r"^\s+at .+:\d+:\d+\)?$", output, re.MULTILINE), f"a stack trace was printed:\n{output}"
    assert "npm notice" not in output, "npm's update notice is printed"
