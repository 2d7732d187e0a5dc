"""The rendered Alertmanager config on Alertmanager 0.33 (Debian testing), unchanged.

tests/test_alertmanager.py checks it with this machine's amtool 0.25, which
predates the webhook `url_file` setting, so those tests rewrite it to `url`.
amtool 0.33 from the forky root of scripts/runtime-roots.sh reads the rendered
text as the image (quay.io/prometheus/alertmanager:v0.34) would.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support.manifests import one
from tests.support.render import render_with
from tests.support.roots import require_roots, root_runtime
from tests.test_alertmanager import ALL_RECEIVERS, NAMESPACE, rendered_config

pytestmark = pytest.mark.runtime


def amtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    require_roots()
    forky = root_runtime("forky")
    binary = forky.which("amtool")
    assert binary, "amtool missing in the forky root"
    return subprocess.run(forky.command([binary, *args]), cwd=cwd, capture_output=True, text=True, timeout=60,
                          check=False)


def test_forky_amtool_is_the_images_generation(manifests, tmp_path):
    image = one(manifests["prod"], "StatefulSet", "alertmanager")["spec"]["template"]["spec"]["containers"][0]["image"]
    wanted = re.search(r":v0\.(\d+)\.", image)
    version = re.search(r"version 0\.(\d+)\.", (result := amtool("--version", cwd=tmp_path)).stdout + result.stderr)
    assert wanted and version, (image, result.stdout, result.stderr)
    # Debian testing trails the image by at most one minor release.
    assert int(wanted.group(1)) - 1 <= int(version.group(1)) <= int(wanted.group(1)), (image, result.stdout)


@pytest.mark.parametrize("variant", ["prod", "all receivers"])
def test_amtool_033_accepts_the_rendered_config_unchanged(manifests, variant, tmp_path):
    objects = manifests["prod"] if variant == "prod" else render_with("prod", ALL_RECEIVERS)[1]
    text = rendered_config(objects)
    assert "url_file:" in text or variant == "prod", "the all-receivers variant should use url_file"
    (tmp_path / "alertmanager.yml").write_text(text)
    result = amtool("check-config", "alertmanager.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_amtool_033_rejects_an_unknown_receiver(tmp_path):
    text = rendered_config(render_with("prod", ALL_RECEIVERS)[1]).replace("receiver: warning", "receiver: nobody", 1)
    (tmp_path / "alertmanager.yml").write_text(text)
    assert amtool("check-config", "alertmanager.yml", cwd=tmp_path).returncode != 0


@pytest.mark.parametrize(("labels", "receiver"), [
    (["severity=critical", "alertname=ApiDown"], "critical"),
    (["severity=warning", "alertname=CeleryQueueBacklog"], "warning"),
    (["severity=none", "alertname=Watchdog"], "heartbeat"),
])
def test_amtool_033_routes_each_severity(manifests, tmp_path, labels, receiver):
    (tmp_path / "alertmanager.yml").write_text(rendered_config(manifests["prod"]))
    result = amtool("config", "routes", "test", "--config.file=alertmanager.yml", f"namespace={NAMESPACE}", *labels,
                    cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == receiver
