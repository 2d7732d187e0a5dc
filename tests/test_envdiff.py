"""`make diff ENV=stage OTHER=prod` (scripts/envdiff.py): real differences, not env names."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from scripts.envdiff import Names, diff_trees, head_tree, names_of, normalised_diff, read_tree
from tests.support.manifests import ENV_DIR, ROOT

DIST = ROOT / "dist"


def changed(lines: list[str]) -> list[str]:
    return [line for line in lines if line[:1] in "+-" and not line.startswith(("+++ ", "--- "))]


@pytest.fixture(scope="module")
def stage_prod() -> list[str]:
    return normalised_diff(DIST / "stage", names_of(ENV_DIR, "stage"), DIST / "prod", names_of(ENV_DIR, "prod"))


def test_env_names_are_gone_from_the_stage_prod_diff(stage_prod):
    text = "".join(stage_prod)
    # The names as written in env/stage.yaml and env/prod.yaml.
    for name in ("vibearena-stage", "vibearena-prod", "stage.vibearena.example.com", "env/stage.yaml"):
        assert name not in text, name


@pytest.fixture(scope="module")
def stage_and_a_copy(tmp_path_factory) -> tuple[list[str], list[str]]:
    """stage and `qa`, a profile that only renames it: (normalised, raw) diff lines."""
    env_dir = tmp_path_factory.mktemp("env")
    for profile in ENV_DIR.glob("*.yaml"):
        shutil.copy2(profile, env_dir / profile.name)
    (env_dir / "qa.yaml").write_text("extends: stage\nnamespace: vibearena-qa\ndomain: qa.vibearena.example.com\n"
                                     "secrets: {remote_key: vibearena/qa}\n")
    out = tmp_path_factory.mktemp("out")
    subprocess.run([sys.executable, str(ROOT / "main.py"), "--env-dir", str(env_dir), "--env", "stage", "--env", "qa",
                    "--out", str(out)], cwd=ROOT, check=True, capture_output=True, timeout=300)
    normalised = normalised_diff(out / "stage", names_of(env_dir, "stage"), out / "qa", names_of(env_dir, "qa"))
    raw = list(diff_trees(read_tree(out / "stage"), read_tree(out / "qa"), "stage", "qa"))
    return normalised, raw


def test_a_renamed_copy_differs_only_where_it_really_does(stage_and_a_copy):
    normalised, raw = stage_and_a_copy
    assert len(changed(raw)) > 500, "the names should make a large raw diff"
    lines = changed(normalised)
    # What is left: Job names carry a hash of the profile, and qa inherits two
    # values that name stage (env/stage.yaml: api.settings_module and
    # secrets.store), so they show.
    # (migrate-0-1-0-<hash>, ensure-bucket-..., postgres-roles-...: Jobs named by image tag and profile hash)
    hashed_job = re.compile(r"[-+]  name: [a-z][a-z0-9-]*-[0-9a-f]{6}\n")
    settings = {"-          value: config.settings.<env>\n", "+          value: config.settings.stage\n"}
    store = {"-    name: <namespace>\n", "+    name: vibearena-stage\n"}
    inherited = {line.lstrip("+- ") for line in settings | store}
    unexplained = [line for line in lines if not hashed_job.fullmatch(line) and line.lstrip("+- ") not in inherited]
    assert not unexplained, unexplained
    assert settings <= set(lines) and store <= set(lines)
    assert "vibearena-qa" not in "".join(normalised) and "qa.vibearena.example.com" not in "".join(normalised)


def test_real_differences_still_show(stage_prod):
    lines = changed(stage_prod)
    # env/prod.yaml: autoscaling {min_replicas: 3, max_replicas: 10}; stage has no HPA.
    assert "+kind: HorizontalPodAutoscaler\n" in lines
    assert "+  minReplicas: 3\n" in lines and "+  maxReplicas: 10\n" in lines
    # env/prod.yaml: api resources cpu_limit "2" against the default 1.
    assert "-            cpu: '1'\n" in lines and "+            cpu: '2'\n" in lines
    # stage uses Let's Encrypt staging (env/stage.yaml: acme_server: letsencrypt-staging).
    assert "-    server: https://acme-staging-v02.api.letsencrypt.org/directory\n" in lines


def test_headers_name_the_envs_not_temporary_paths(stage_prod):
    headers = [line for line in stage_prod if line.startswith(("--- ", "+++ "))]
    assert headers
    for header in headers:
        assert re.fullmatch(r"(--- stage|\+\+\+ prod)/\d\d-[a-z-]+\.yaml\n", header), header


def test_a_value_that_names_the_other_env_still_shows(tmp_path):
    prod = tmp_path / "prod"
    shutil.copytree(DIST / "prod", prod)
    config = prod / "00-config.yaml"
    assert config.read_text().count("key: vibearena/prod") >= 1
    config.write_text(config.read_text().replace("key: vibearena/prod", "key: vibearena/stage", 1))
    lines = changed(normalised_diff(DIST / "stage", names_of(ENV_DIR, "stage"), prod, names_of(ENV_DIR, "prod")))
    assert "+      key: vibearena/stage\n" in lines, [line for line in lines if "key:" in line]


def test_words_that_contain_the_env_name_are_kept():
    dev = Names(env="dev", namespace="vibearena-dev", instance="vibearena-dev", domain="vibearena.localhost")
    assert dev.normalise("mountPath: /dev/shm") == "mountPath: /dev/shm"
    assert dev.normalise("name: rw-dev-shm") == "name: rw-dev-shm"
    assert dev.normalise("image: vibearena/api:dev") == "image: vibearena/api:dev"
    assert dev.normalise("from env/dev.yaml") == "from env/<env>.yaml"
    assert dev.normalise("https://vibearena.localhost/api") == "https://<domain>/api"


def test_any_profile_name_is_normalised_not_just_the_three():
    preview = Names(env="pr-42", namespace="shop-pr-42", instance="vibearena-pr-42", domain="pr-42.example.org")
    text = ("namespace: shop-pr-42\napp.kubernetes.io/instance: vibearena-pr-42\nhost: api.pr-42.example.org\n"
            "key: vibearena/pr-42\nvalue: config.settings.pr-42\n")
    assert preview.normalise(text) == ("namespace: <namespace>\napp.kubernetes.io/instance: <instance>\n"
                                       "host: api.<domain>\nkey: vibearena/<env>\nvalue: config.settings.<env>\n")


@pytest.mark.slow
def test_the_command_renders_both_and_prints_the_normalised_diff():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "envdiff.py"), "stage", "prod"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert "+kind: HorizontalPodAutoscaler" in result.stdout
    assert "vibearena-prod" not in result.stdout and "envdiff-" not in result.stdout
    headers = re.findall(r"^(?:---|\+\+\+) .*$", result.stdout, re.MULTILINE)
    assert headers and all(re.fullmatch(r"(--- stage|\+\+\+ prod)/\d\d-[a-z-]+\.yaml", h) for h in headers), headers
    assert re.fullmatch(r"envdiff: \d+ changed lines\n", result.stderr), result.stderr


def test_an_unknown_env_is_one_line_and_exit_2():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "envdiff.py"), "stage", "nope"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "nope" in result.stderr and result.stdout == ""



def test_against_head_the_headers_name_the_commit_and_the_file():
    committed = head_tree("prod")
    assert "minReplicas: 3" in committed["06-web.yaml"]  # env/prod.yaml: autoscaling.min_replicas
    edited = {**committed, "06-web.yaml": committed["06-web.yaml"].replace("minReplicas: 3", "minReplicas: 4", 1)}
    lines = list(diff_trees(committed, edited, "HEAD:dist/prod", "dist/prod"))
    assert lines[:2] == ["--- HEAD:dist/prod/06-web.yaml\n", "+++ dist/prod/06-web.yaml\n"]
    assert changed(lines) == ["-  minReplicas: 3\n", "+  minReplicas: 4\n"]
