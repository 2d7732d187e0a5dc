"""The kind dev cluster: config, pinned versions, scripts, and their agreement
with the dev profile. Creating the cluster needs Docker, so `make up` runs in
the e2e workflow, not here; what does not need a cluster is checked here."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from charts.api import SOURCE_CLAIM
from charts.schema import parse_quantity
from tests.support import schemas
from tests.support.manifests import ROOT, one
from tests.support.render import profile_with, render_with
from tests.support.schemas import NEWEST

KIND = ROOT / "kind"
IMAGES_MD = ROOT.parent / "shared" / "images.md"
UP = (KIND / "up.sh").read_text(encoding="utf-8")


def devenv():
    import importlib.util

    spec = importlib.util.spec_from_file_location("devenv", KIND / "devenv.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pinned(name: str) -> str:
    match = re.search(rf"^{name}=(\S+)", UP, re.MULTILINE)
    assert match, f"kind/up.sh must pin {name}"
    return match.group(1)


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((KIND / "cluster.yaml").read_text())


@pytest.fixture(scope="module")
def node(cluster) -> dict:
    assert len(cluster["nodes"]) == 1, "one node keeps the laptop footprint small"
    return cluster["nodes"][0]


@pytest.fixture(scope="module")
def source_pv() -> dict:
    return yaml.safe_load((KIND / "app-source-pv.yaml").read_text())


def test_cluster_config_is_a_kind_cluster(cluster, node) -> None:
    assert (cluster["kind"], cluster["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    assert cluster["name"] == pinned("CLUSTER") == "vibearena"
    assert node["role"] == "control-plane"


def test_node_image_is_pinned_by_digest(node) -> None:
    image = node["image"]
    assert re.fullmatch(r"kindest/node:v1\.37\.\d+@sha256:[0-9a-f]{64}", image), image
    assert image == pinned("NODE_IMAGE"), "kind/up.sh checks an existing cluster against the same image"


def test_node_image_is_the_one_vetted_for_kind_v0_33(node) -> None:
    if not IMAGES_MD.exists():
        pytest.skip(f"{IMAGES_MD} is not beside the repo (it is in the dev workspace and CI)")
    assert node["image"] in IMAGES_MD.read_text(), "the digest must be the one images.md lists for kind v0.33.0"
    assert pinned("KIND_VERSION") == "v0.33.0"


def test_only_ports_80_and_443_reach_the_host_on_loopback(node) -> None:
    mappings = {(m["containerPort"], m["hostPort"], m.get("listenAddress"), m.get("protocol", "TCP"))
                for m in node["extraPortMappings"]}
    assert mappings == {(80, 80, "127.0.0.1", "TCP"), (443, 443, "127.0.0.1", "TCP")}


def test_ingress_controller_lands_on_the_mapped_node(node) -> None:
    values = yaml.safe_load((KIND / "nginx-ingress-values.yaml").read_text())
    controller = values["controller"]
    assert controller["hostPort"] == {"enable": True, "http": 80, "https": 443}
    for key, value in controller["nodeSelector"].items():
        assert node["labels"].get(key) == value, f"no node carries {key}={value}"


def test_ingress_controller_on_host_ports_is_replaced_not_rolled(cluster) -> None:
    """With hostPorts on the only node, RollingUpdate's surge pod can never
    bind 80/443 while the old pod holds them: `make up` after a chart upgrade
    would wait forever. The chart (2.6.4, templates/controller-deployment.yaml)
    renders controller.strategy verbatim as the Deployment's spec.strategy."""
    controller = yaml.safe_load((KIND / "nginx-ingress-values.yaml").read_text())["controller"]
    nodes_taking_ingress = [n for n in cluster["nodes"]
                            if all(n.get("labels", {}).get(k) == v for k, v in controller["nodeSelector"].items())]
    assert controller["kind"] == "deployment" and controller["hostPort"]["enable"] is True
    assert controller["replicaCount"] >= len(nodes_taking_ingress) == 1
    assert controller["strategy"] == {"type": "Recreate"}
    # What `make up` passes to helm (kind/devenv.py adds the profile's values).
    assert devenv().ingress_release(devenv().profile_for("dev"))[1]["controller"]["strategy"] == {"type": "Recreate"}
    # The value must be a valid apps/v1 DeploymentStrategy (strict schema).
    _, registry = schemas._registry(NEWEST)
    strategy = {"$ref": "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.api.apps.v1.DeploymentStrategy"}
    jsonschema.Draft202012Validator(strategy, registry=registry).validate(controller["strategy"])


def test_source_mount_feeds_the_app_source_volume(node, source_pv) -> None:
    mount = one_mount(node)
    assert mount["hostPath"] == "app", "relative to the repo root"
    # What the dev server runs from the mount: manage.py and the settings module dev names.
    module = profile_with("dev", {}).api.settings_module
    assert (ROOT / mount["hostPath"] / "manage.py").is_file()
    assert (ROOT / mount["hostPath"] / (module.replace(".", "/") + ".py")).is_file(), module
    assert mount.get("readOnly") is True, "the cluster never writes to your source"
    assert source_pv["spec"]["local"]["path"] == mount["containerPath"]
    terms = source_pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
    expression = terms[0]["matchExpressions"][0]
    assert node["labels"].get(expression["key"]) in expression["values"], "the PV must select this node"


def one_mount(node: dict) -> dict:
    assert len(node["extraMounts"]) == 1
    return node["extraMounts"][0]


def test_source_volume_binds_the_claim_the_dev_profile_renders(source_pv) -> None:
    profile = profile_with("dev", {"api": {"dev_reload": True}})
    _stack, manifests = render_with("dev", {"api": {"dev_reload": True}})
    claim = one(manifests, "PersistentVolumeClaim", SOURCE_CLAIM)
    pv = source_pv["spec"]
    assert source_pv["metadata"]["name"] == profile.api.dev_source_volume == claim["spec"]["volumeName"]
    assert pv["claimRef"] == {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": profile.namespace,
                              "name": claim["metadata"]["name"]}
    assert pv["storageClassName"] == claim["spec"]["storageClassName"] == "", "no provisioner may step in"
    assert set(claim["spec"]["accessModes"]) <= set(pv["accessModes"]) == {"ReadOnlyMany"}
    assert parse_quantity(claim["spec"]["resources"]["requests"]["storage"]) <= parse_quantity(
        pv["capacity"]["storage"])
    assert pv["persistentVolumeReclaimPolicy"] == "Retain", "deleting the claim must not touch the source"
    api = one(manifests, "Deployment", "api")["spec"]["template"]["spec"]
    volume = next(v for v in api["volumes"] if "persistentVolumeClaim" in v)
    assert volume["persistentVolumeClaim"]["claimName"] == SOURCE_CLAIM
    assert all("hostPath" not in v for v in api["volumes"]), "pods never mount hostPath"


def test_up_pins_the_add_on_versions() -> None:
    assert pinned("NGINX_INGRESS_CHART") == "oci://ghcr.io/nginx/charts/nginx-ingress"
    assert pinned("NGINX_INGRESS_CHART_VERSION") == "2.6.4"
    assert pinned("CERT_MANAGER_VERSION") == "v1.21.1"
    assert "releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml" in UP
    values = yaml.safe_load((KIND / "nginx-ingress-values.yaml").read_text())
    assert values["controller"]["image"] == {"repository": "nginx/nginx-ingress", "tag": "5.5.4"}


def test_ingress_values_match_the_profile() -> None:
    module = devenv()
    profile = module.profile_for("dev")
    release, values = module.ingress_release(profile)
    edge = profile.edge
    assert values["controller"]["ingressClass"]["name"] == edge.ingress_class
    # The chart labels its pods with its name, the release, and extraLabels.
    labels = {"app.kubernetes.io/name": values.get("nameOverride", "nginx-ingress"),
              "app.kubernetes.io/instance": release, **values["controller"].get("pod", {}).get("extraLabels", {})}
    assert dict(edge.controller_pod_labels).items() <= labels.items(), "the API's NetworkPolicy must admit them"
    assert values["prometheus"] == {"create": True, "port": profile.monitoring.ingress_metrics_port,
                                    "service": {"create": False}}
    assert values["controller"]["telemetryReporting"] == {"enable": False}
    service = module.metrics_service(profile)
    assert service["metadata"]["namespace"] == edge.controller_namespace
    assert service["spec"]["clusterIP"] == "None", "headless: DNS returns the pods, Prometheus needs no RBAC"
    assert service["spec"]["selector"] == dict(edge.controller_pod_labels)


def test_ingress_values_follow_custom_controller_labels() -> None:
    module = devenv()
    profile = profile_with("dev", {"edge": {"ingress_class": "edge", "controller_pod_labels": {
        "app.kubernetes.io/name": "edge-nginx", "app.kubernetes.io/instance": "edge", "team": "platform"}}})
    release, values = module.ingress_release(profile)
    assert release == "edge" and values["nameOverride"] == "edge-nginx"
    assert values["controller"]["pod"]["extraLabels"] == {"team": "platform"}
    assert values["controller"]["ingressClass"]["name"] == "edge"


def test_other_controllers_are_refused_with_a_way_out() -> None:
    module = devenv()
    profile = profile_with("dev", {"edge": {"controller": "traefik", "ingress_class": "traefik"}})
    with pytest.raises(module.DevEnvError, match="SKIP_INGRESS=1"):
        module.ingress_release(profile)


def test_images_built_are_the_ones_dist_dev_uses() -> None:
    module = devenv()
    profile = module.profile_for("dev")
    images = module.built_images(profile, module.rendered_objects("dev"))
    assert images == [("app/", profile.api.image.ref), ("backup/", profile.backups.image.ref),
                      ("celery-exporter/", profile.monitoring.celery_exporter_image.ref)]
    # The contexts CI builds and lints (images.yml, tests/test_dockerfiles.py).
    build = yaml.safe_load((ROOT / ".github" / "workflows" / "images.yml").read_text())["jobs"]["build"]
    contexts = sorted(f"{entry['context']}/" for entry in build["strategy"]["matrix"]["include"])
    assert sorted(c for c, _ref in images) == contexts
    assert module.rendered_jobs(module.rendered_objects("dev")), "the one-shot Jobs up.sh re-runs"


def test_devenv_cli() -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(ROOT / ".venv" / "bin" / "python"), str(KIND / "devenv.py"), *args],
                              capture_output=True, text=True, cwd=ROOT)

    assert run("namespace", "dev").stdout.strip() == "vibearena-dev"
    assert run("domain", "stage").stdout.strip() == "stage.vibearena.example.com"
    job = yaml.safe_load(run("migration-job", "dev").stdout)
    assert job["kind"] == "Job" and job["metadata"]["name"] == run("migration-job-name", "dev").stdout.strip()
    assert yaml.safe_load(run("namespace-object", "dev").stdout)["kind"] == "Namespace"
    bad = run("namespace", "qa")
    assert bad.returncode == 2 and "qa.yaml: profile file is missing" in bad.stderr


# --- the scripts ------------------------------------------------------------------

SCRIPTS = sorted(KIND.glob("*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_strict_and_shellcheck_clean(script: Path) -> None:
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    assert os.access(script, os.X_OK), f"{script.name} must be executable"
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (make test installs it)")
    result = subprocess.run(["shellcheck", "--severity=style", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """A PATH with only the basics up.sh needs before it reaches a tool, so
    each test decides which tools exist (Docker and kind are absent here)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "mktemp", "rm", "awk", "grep", "cat"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    return bin_dir


def stub(bin_dir: Path, name: str, script: str = "exit 0") -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)


def run_script(script: str, bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash")
    assert bash
    return subprocess.run([bash, str(KIND / script), *args], capture_output=True, text=True, cwd=ROOT,
                          env={"PATH": str(bin_dir), "HOME": str(bin_dir)}, timeout=60)


def test_up_names_the_missing_tool(sandbox: Path) -> None:
    stub(sandbox, "docker")
    result = run_script("up.sh", sandbox, "prereqs")
    assert result.returncode == 1
    assert "up: error: kind is not installed. Install kind v0.33.0" in result.stderr


def test_up_says_when_the_docker_engine_is_down(sandbox: Path) -> None:
    stub(sandbox, "docker", 'echo "Cannot connect to the Docker daemon" >&2; exit 1')
    stub(sandbox, "kind", 'echo "kind v0.33.0 go1.25.1 linux/amd64"')
    for tool in ("kubectl", "helm", "openssl"):
        stub(sandbox, tool)
    result = run_script("up.sh", sandbox, "prereqs")
    assert result.returncode == 1
    assert "the Docker engine is not running" in result.stderr


def test_up_passes_prerequisites_and_warns_about_another_kind(sandbox: Path) -> None:
    stub(sandbox, "docker")
    stub(sandbox, "kind", 'echo "kind v0.31.0 go1.24.1 linux/amd64"')
    for tool in ("kubectl", "helm", "openssl"):
        stub(sandbox, tool)
    result = run_script("up.sh", sandbox, "prereqs")
    assert result.returncode == 0, result.stderr
    assert "kind v0.31.0 found; the pinned node image is built for kind v0.33.0" in result.stderr


def test_up_rejects_an_unknown_step(sandbox: Path) -> None:
    result = run_script("up.sh", sandbox, "bogus")
    assert result.returncode == 1 and "unknown step 'bogus'" in result.stderr


def test_up_needs_a_cluster_for_cluster_steps(sandbox: Path) -> None:
    stub(sandbox, "kind", "exit 0")  # `kind get clusters` lists none
    result = run_script("up.sh", sandbox, "secrets")
    assert result.returncode == 1 and "no kind cluster named vibearena: run 'make up'" in result.stderr


def test_down_is_idempotent(sandbox: Path) -> None:
    stub(sandbox, "docker")
    stub(sandbox, "kind", '[ "$1 $2" = "get clusters" ] && echo other; exit 0')
    result = run_script("down.sh", sandbox)
    assert result.returncode == 0 and "no kind cluster named vibearena; nothing to do" in result.stderr
    stub(sandbox, "kind", '[ "$1 $2" = "get clusters" ] && echo vibearena; echo "$@" >>"$HOME/kind.log"; exit 0')
    result = run_script("down.sh", sandbox)
    assert result.returncode == 0, result.stderr
    assert "delete cluster --name vibearena" in (sandbox / "kind.log").read_text()


def test_up_runs_every_step_in_order() -> None:
    steps = re.search(r"^ALL_STEPS=\((.*)\)$", UP, re.MULTILINE)
    assert steps
    order = steps.group(1).split()
    assert order == ["prereqs", "cluster", "ingress", "certmanager", "images", "source", "namespace", "secrets",
                     "certs", "apply", "migrate", "smoke"]
    for step in order:
        assert f"step_{step}() {{" in UP, f"step {step} has no function"
        assert re.search(rf"^#\s+{step}\s", UP, re.MULTILINE), f"step {step} is not in the usage text"
