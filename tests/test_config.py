"""Bad input gets one clear line naming the file and the key, exit code 2,
and leaves the previously rendered dist/ untouched."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.manifests import ENV_DIR, ROOT, tree_digest


def run_main(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, check=False)


@pytest.fixture(scope="module")
def good_dist(tmp_path_factory) -> Path:
    """A dist/ rendered from the committed profiles, reused as the 'last good output'."""
    out = tmp_path_factory.mktemp("dist")
    result = run_main("--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def workspace(tmp_path, good_dist):
    """A copy of env/ to break, and a copy of the good dist/ to watch."""
    env_dir = tmp_path / "env"
    shutil.copytree(ENV_DIR, env_dir)
    out = tmp_path / "dist"
    shutil.copytree(good_dist, out)
    return env_dir, out


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path.name} does not contain {old!r}"
    path.write_text(text.replace(old, new, 1))


# (case id, file to change, old text, new text, key path expected in the message, words expected)
BAD_PROFILES = [
    ("unknown-key-top", "dev.yaml", "namespace: vibearena-dev", "namespace: vibearena-dev\nnamespase: x",
     "namespase", "unknown key"),
    ("unknown-key-deep", "dev.yaml", "  replicas: 1", "  replicas: 1\n  replics: 2", "api.replics", "unknown key"),
    ("unknown-key-deeper", "dev.yaml", "    mode: local-ca", "    mode: local-ca\n    secret: x",
     "edge.tls.secret", "unknown key"),
    ("wrong-type", "dev.yaml", "  replicas: 1", "  replicas: two", "api.replicas", "must be a whole number"),
    ("wrong-type-bool", "dev.yaml", "  hsts: false", "  hsts: 'no'", "edge.hsts", "must be true or false"),
    ("bad-quantity", "dev.yaml", "memory: 192Mi", "memory: 12Q", "api.resources.memory", "not a Kubernetes quantity"),
    ("negative-replicas", "dev.yaml", "  replicas: 1", "  replicas: -1", "api.replicas", "must be >= 0"),
    ("bad-rate", "dev.yaml", "edge:\n", "edge:\n  rate_limit: 10x/s\n", "edge.rate_limit", "10r/s"),
    ("bad-size", "dev.yaml", "edge:\n", "edge:\n  body_size: 50 MB\n", "edge.body_size", "size"),
    ("bad-choice", "dev.yaml", "mode: local-ca", "mode: selfsigned", "edge.tls.mode", "must be one of"),
    ("missing-required", "dev.yaml", "domain: vibearena.localhost\n", "", "domain", "missing"),
    ("limit-below-request", "dev.yaml", "memory_limit: 512Mi", "memory_limit: 128Mi", "api.resources.memory_limit",
     "below the request"),
    ("prod-latest-tag", "prod.yaml", "tag: unreleased", "tag: latest", "api.image.tag", "pinned"),
    ("prod-empty-tag", "prod.yaml", "tag: unreleased", 'tag: ""', "api.image.tag", "image tag"),
    ("prod-by-tag", "prod.yaml", 'tag: unreleased, digest: "sha256:' + "0" * 64 + '"', "tag: unreleased",
     "api.image.digest", "must be set in the prod tier"),
    ("prod-one-replica", "prod.yaml", "autoscaling: {enabled: true, min_replicas: 3, max_replicas: 10}",
     "autoscaling: {enabled: true, min_replicas: 1, max_replicas: 10}", "api.autoscaling.min_replicas", ">= 2"),
    ("stage-local-ca", "stage.yaml", "    acme_server: letsencrypt-staging",
     "    acme_server: letsencrypt-staging\n    mode: local-ca", "edge.tls.mode", "acme"),
    ("external-secrets-without-store", "prod.yaml", "  store: vibearena-prod\n", "", "secrets.store",
     "is required"),
    ("admin-cidr-host-bits", "prod.yaml", '"10.0.0.0/8"', '"10.0.0.1/8"', "edge.admin.allow_cidrs",
     "no host bits"),
    ("admin-cidr-garbage", "prod.yaml", '"10.0.0.0/8"', '"office"', "edge.admin.allow_cidrs", "'office'"),
    ("admin-cidrs-not-a-list", "prod.yaml", 'allow_cidrs: ["10.0.0.0/8"]', "allow_cidrs: 10.0.0.0/8",
     "edge.admin.allow_cidrs", "must be a list"),
    ("admin-bad-subdomain", "prod.yaml", "subdomain: admin", "subdomain: Admin.Host",
     "edge.admin.subdomain", "DNS label"),
    ("prod-admin-open", "prod.yaml", 'allow_cidrs: ["10.0.0.0/8"]', "allow_cidrs: []",
     "edge.admin.allow_cidrs", "client networks"),
    ("nginx-inc-admin-same-host", "prod.yaml", "    subdomain: admin\n", "",
     "edge.admin.subdomain", "is required with admin.allow_cidrs"),
    ("stage-dev-settings", "stage.yaml", "settings_module: config.settings.stage",
     "settings_module: config.settings.dev", "api.settings_module", "config.settings.dev"),
    ("prod-dev-settings", "prod.yaml", "  replicas: 3", "  replicas: 3\n  settings_module: config.settings.dev",
     "api.settings_module", "must be one of"),
    ("malformed-yaml", "dev.yaml", "namespace: vibearena-dev", "namespace: [vibearena-dev", "", "malformed YAML"),
]


@pytest.mark.parametrize(("case", "file", "old", "new", "key", "words"), BAD_PROFILES,
                         ids=[case[0] for case in BAD_PROFILES])
def test_bad_profile_is_rejected_cleanly(workspace, case, file, old, new, key, words):
    assert_rejected_cleanly(workspace, case, file, old, new, key, words)


def assert_rejected_cleanly(workspace: tuple[Path, Path], case: str, file: str, old: str, new: str, key: str,
                            words: str) -> None:
    """Edit one profile: one line naming the file (and the key, if given) and the
    expected words, exit 2, no traceback, dist/ untouched."""
    env_dir, out = workspace
    edit(env_dir / file, old, new)
    before = tree_digest(out)
    result = run_main("--env-dir", str(env_dir), "--out", str(out))
    assert result.returncode == 2, f"{case}: exit {result.returncode}\n{result.stderr}"
    first_line = result.stderr.splitlines()[0]
    assert str(env_dir / file) in first_line, f"{case}: file not named: {first_line}"
    if key:
        assert f": {key}:" in first_line, f"{case}: key {key!r} not named: {first_line}"
    assert words in first_line, f"{case}: expected {words!r} in: {first_line}"
    assert "Traceback" not in result.stderr
    assert tree_digest(out) == before, f"{case}: dist/ changed after a failed run"


def test_env_without_a_profile_file(workspace):
    env_dir, out = workspace
    before = tree_digest(out)
    result = run_main("--env-dir", str(env_dir), "--out", str(out), "--env", "qa")
    assert result.returncode == 2
    assert f"{env_dir / 'qa.yaml'}: profile file is missing (environments in {env_dir}: dev, prod, stage)" \
        in result.stderr
    assert tree_digest(out) == before


def test_unreadable_profile(workspace):
    env_dir, out = workspace
    (env_dir / "dev.yaml").write_bytes(b"namespace: \xff\xfe broken utf-8\n")
    before = tree_digest(out)
    result = run_main("--env-dir", str(env_dir), "--out", str(out))
    assert result.returncode == 2
    assert f"{env_dir / 'dev.yaml'}: cannot read file" in result.stderr
    assert tree_digest(out) == before


def test_missing_profile_file(workspace):
    env_dir, out = workspace
    (env_dir / "stage.yaml").unlink()
    before = tree_digest(out)
    result = run_main("--env-dir", str(env_dir), "--out", str(out), "--env", "stage")
    assert result.returncode == 2 and "stage.yaml: profile file is missing" in result.stderr
    assert tree_digest(out) == before


def test_bad_cli_argument_exits_2(workspace):
    _env_dir, out = workspace
    before = tree_digest(out)
    result = run_main("--out", str(out), "--frobnicate")
    assert result.returncode == 2 and "--frobnicate" in result.stderr
    assert tree_digest(out) == before


def test_one_bad_env_stops_all_writes(workspace):
    """prod is broken, dev is fine: nothing at all may be written."""
    env_dir, out = workspace
    edit(env_dir / "prod.yaml", "  replicas: 3", "  replicas: -3")
    edit(env_dir / "dev.yaml", "  replicas: 1", "  replicas: 2")
    before = tree_digest(out)
    result = run_main("--env-dir", str(env_dir), "--out", str(out))
    assert result.returncode == 2
    assert tree_digest(out) == before


def test_digest_pinned_images_render_valid_labels():
    from tests.support.manifests import label_problems
    from tests.support.render import render_with
    digest = "sha256:" + "0123456789abcdef" * 4
    _stack, objects = render_with("prod", {"api": {"image": {"tag": digest, "digest": None}}})
    api = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "api")
    assert api["spec"]["template"]["spec"]["containers"][0]["image"].endswith("@" + digest)
    for obj in objects:
        assert not label_problems(obj["metadata"].get("labels", {})), obj["metadata"]["name"]
    assert api["metadata"]["labels"]["app.kubernetes.io/version"] == "sha256-0123456789ab"
