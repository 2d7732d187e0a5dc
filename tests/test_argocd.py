"""Argo CD: an AppProject and one Application per env over dist/<env>."""

from __future__ import annotations

import subprocess
import sys

import pytest

from main import build_argocd
from tests.support.manifests import ENVS, ROOT, load_dir, of_kind, one, tree_digest
from tests.support.render import profile_with
from tests.support.schemas import validate_custom


@pytest.fixture(scope="module")
def argocd(stacks, manifests):
    return build_argocd([stacks[env].profile for env in ENVS], manifests)


def test_argo_objects_validate_against_their_crds(argocd):
    assert {o["kind"] for o in argocd} == {"AppProject", "Application"}
    for obj in argocd:
        assert not validate_custom(obj), (obj["metadata"]["name"], validate_custom(obj))


def test_one_application_per_managed_env(argocd, stacks):
    applications = {a["spec"]["source"]["path"]: a for a in of_kind(argocd, "Application")}
    managed = [env for env in ENVS if stacks[env].profile.argocd.enabled]
    assert sorted(applications) == sorted(f"dist/{env}" for env in managed)
    assert "dev" not in managed, "dev is applied by make up, not synced by Argo CD"
    for env in managed:
        app = applications[f"dist/{env}"]
        assert app["spec"]["destination"]["namespace"] == stacks[env].namespace
        assert app["spec"]["source"]["directory"] == {"recurse": False}
        assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]
        # The path Argo CD syncs holds this env's render: its namespace and workloads.
        synced = load_dir(ROOT / app["spec"]["source"]["path"])
        assert [o["metadata"]["name"] for o in synced if o["kind"] == "Namespace"] == [stacks[env].namespace]
        assert any(o["kind"] == "Deployment" and o["metadata"]["name"] == "api" for o in synced)


def test_stage_syncs_itself_and_prod_waits_for_a_person(argocd):
    stage = one(argocd, "Application", "vibearena-stage")["spec"]["syncPolicy"]
    prod = one(argocd, "Application", "vibearena-prod")["spec"]["syncPolicy"]
    assert stage["automated"] == {"prune": True, "selfHeal": True}
    assert "automated" not in prod


def test_prod_auto_sync_only_when_the_profile_says_so(stacks, manifests):
    profiles = [profile_with(env, {"argocd": {"auto_sync": True}}) if env == "prod" else stacks[env].profile
                for env in ENVS]
    prod = one(build_argocd(profiles, manifests), "Application", "vibearena-prod")
    assert prod["spec"]["syncPolicy"]["automated"]["selfHeal"] is True


def test_project_allows_exactly_the_rendered_kinds(argocd, manifests, stacks):
    (project,) = of_kind(argocd, "AppProject")
    spec = project["spec"]
    allowed = {(r["group"], r["kind"]) for r in spec["namespaceResourceWhitelist"]}
    cluster = {(r["group"], r["kind"]) for r in spec["clusterResourceWhitelist"]}
    rendered = {(o["apiVersion"].rpartition("/")[0], o["kind"]) for e in ENVS if stacks[e].profile.argocd.enabled
                for o in manifests[e]}
    assert allowed | cluster == rendered
    # Cluster-scoped among what the envs render (Kubernetes API, cert-manager CRD scope: Cluster).
    cluster_scoped = {("", "Namespace"), ("cert-manager.io", "ClusterIssuer")}
    assert cluster == rendered & cluster_scoped
    assert {d["namespace"] for d in spec["destinations"]} == {stacks[e].namespace for e in ENVS
                                                               if stacks[e].profile.argocd.enabled}


def test_single_env_render_keeps_dist_argocd(tmp_path):
    python = [sys.executable, str(ROOT / "main.py"), "--out", str(tmp_path)]
    subprocess.run(python, check=True, capture_output=True, timeout=120)
    before = tree_digest(tmp_path / "argocd")
    assert load_dir(tmp_path / "argocd")
    subprocess.run([*python, "--env", "prod"], check=True, capture_output=True, timeout=120)
    assert tree_digest(tmp_path / "argocd") == before
