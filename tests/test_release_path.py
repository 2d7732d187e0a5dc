"""The release path: hashed app requirements, digest-pinned images."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from charts.config import images_by_digest
from charts.schema import ConfigError
from tests.support.manifests import ROOT
from tests.support.render import profile_with

sys.path.insert(0, str(ROOT / "scripts"))
import lock_app_requirements as lock

DIGEST = "sha256:" + "ab" * 32
REVISION = "0123456789abcdef0123456789abcdef01234567"


def locked(text: str) -> dict[str, list[str]]:
    """{name==version: [hashes]} from a --require-hashes requirements file."""
    entries: dict[str, list[str]] = {}
    current = None
    for line in text.replace("\\\n", " ").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, *options = line.split()
        current = requirement
        entries[current] = [o.removeprefix("--hash=sha256:") for o in options]
    return entries


def test_app_lock_pins_exactly_the_app_requirements_with_hashes():
    entries = locked((ROOT / "app" / "requirements.lock").read_text())
    expected = {f"{n}{e}=={v}" for n, e, v in lock.pins((ROOT / "app" / "requirements.txt").read_text())}
    assert set(entries) == expected, "app/requirements.lock is stale: run scripts/lock_app_requirements.py"
    for requirement, hashes in entries.items():
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), requirement
    # Platform wheels need one hash per architecture.
    assert len(entries["psycopg-binary==3.3.9"]) >= 2


def test_the_image_installs_only_from_the_hashed_lock():
    dockerfile = (ROOT / "app" / "Dockerfile").read_text().replace("\\\n", " ")
    installs = re.findall(r"pip install[^\n]*", dockerfile)
    assert installs, "no pip install in app/Dockerfile"
    for install in installs:
        assert "--require-hashes" in install and "/tmp/requirements.lock" in install, install


def test_lock_render_refuses_a_pin_without_a_wheel():
    with pytest.raises(SystemExit, match=re.escape("no wheel downloaded for example==1.0")):
        lock.render([("example", "", "1.0")], {})
    with pytest.raises(SystemExit, match="not an exact pin"):
        lock.pins("django>=5\n")


def test_prod_rule_wants_every_image_by_digest():
    profile = profile_with("prod", {})
    violation = images_by_digest(profile)
    assert violation is not None and violation[0].endswith(".tag") and "sha256:<digest>" in violation[1]
    pinned = {"api": {"image": {"repository": "ghcr.io/vibearena/api", "tag": DIGEST, "revision": REVISION}}}
    assert images_by_digest(profile_with("prod", pinned)) != violation, "the api image was still reported"


def test_image_revision_must_be_a_commit_id():
    with pytest.raises(ConfigError, match="40-character commit id"):
        profile_with("prod", {"api": {"image": {"repository": "r", "tag": DIGEST, "revision": "main"}}})


def test_digest_pinned_image_renders_repository_at_digest():
    from tests.support.render import render_with

    _stack, objects = render_with("prod", {"api": {"image": {"repository": "ghcr.io/vibearena/api", "tag": DIGEST,
                                                             "revision": REVISION}}})
    (api,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "api"]
    assert api["spec"]["template"]["spec"]["containers"][0]["image"] == f"ghcr.io/vibearena/api@{DIGEST}"


def test_node_dependencies_install_from_the_lock_file_only():
    workflows = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
    sources = [ROOT / "Makefile", ROOT / "scripts" / "setup.sh", *workflows]
    for path in sources:
        text = path.read_text()
        assert not re.search(r"\bnpm (install|i)\b", text), f"{path.name}: npm install ignores the lock"
    assert "npm ci" in (ROOT / "scripts" / "setup.sh").read_text()
    assert Path(ROOT / "package-lock.json").exists()
