"""Argo CD: an AppProject and one Application per env over dist/<env>."""

from __future__ import annotations

import copy
import json
import shutil
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


CHALLENGE = json.loads((ROOT / "tests" / "fixtures" / "argocd" / "acme-challenge-ingress.json").read_text())


def argo_normalize(obj: dict, expressions: list[str]) -> dict:
    """What Argo CD does with jqPathExpressions before diffing: `del(expr)`
    per expression, in order (util/argo/normalizers/diff_normalizer.go);
    run with the real jq."""
    for expression in expressions:
        done = subprocess.run(["jq", "-c", f"del({expression})"], input=json.dumps(obj),
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        obj = json.loads(done.stdout)
    return obj


def challenge_ignores(application: dict) -> list[str]:
    entries = [d for d in application["spec"]["ignoreDifferences"]
               if d.get("group") == "networking.k8s.io" and d["kind"] == "Ingress"]
    assert len(entries) == 1 and set(entries[0]) == {"group", "kind", "jqPathExpressions"}, entries
    return entries[0]["jqPathExpressions"]


@pytest.fixture(scope="module")
def jq() -> None:
    if shutil.which("jq") is None:
        pytest.fail("jq is not installed (scripts/setup.sh installs it)", pytrace=False)


def test_self_heal_leaves_cert_managers_challenge_path_alone(argocd, jq):
    for application in of_kind(argocd, "Application"):
        assert "RespectIgnoreDifferences=true" in application["spec"]["syncPolicy"]["syncOptions"]
        expressions = challenge_ignores(application)
        before = CHALLENGE["before"]
        for live in (CHALLENGE["after_edit_in_place"], CHALLENGE["after_new_rule"]):
            assert live["spec"] != before["spec"]
            assert argo_normalize(live, expressions)["spec"] == before["spec"], "exactly the challenge is ignored"


def test_challenge_ignore_keeps_every_other_path(argocd, jq):
    expressions = challenge_ignores(of_kind(argocd, "Application")[0])
    lookalikes = copy.deepcopy(CHALLENGE["before"])
    paths = lookalikes["spec"]["rules"][0]["http"]["paths"]
    # Our own path under the challenge prefix, and the solver's backend on another path, both stay.
    paths.append({**paths[0], "path": "/.well-known/acme-challenge/ours"})
    paths.append({**CHALLENGE["challenge_path"], "path": "/api/solver"})
    lookalikes["spec"]["rules"].append({"host": "empty.example.com", "http": {"paths": []}})
    assert argo_normalize(lookalikes, expressions) == lookalikes


def test_challenge_ignore_on_the_rendered_ingress(argocd, manifests, jq):
    """Desired state is untouched; a live copy with cert-manager's path
    prepended to the rule for its host compares equal to it."""
    applications = {a["spec"]["source"]["path"]: a for a in of_kind(argocd, "Application")}
    checked = 0
    for env in ENVS:
        application = applications.get(f"dist/{env}")
        if application is None:
            continue
        expressions = challenge_ignores(application)
        for ingress in of_kind(manifests[env], "Ingress"):
            assert argo_normalize(ingress, expressions) == ingress
            # cert-manager challenges each TLS host and edits the rule for it.
            for host in {h for tls in ingress["spec"].get("tls", []) for h in tls["hosts"]}:
                live = copy.deepcopy(ingress)
                rule = next(r for r in live["spec"]["rules"] if r.get("host") == host)
                rule["http"]["paths"].insert(0, CHALLENGE["challenge_path"])
                assert argo_normalize(live, expressions) == ingress
                checked += 1
    assert checked, "no Argo CD managed Ingress to check"


def test_preview_applications_ignore_the_challenge_path_too(jq):
    """The ApplicationSet's generated Applications self-heal as well."""
    sets = of_kind(load_dir(ROOT / "dist" / "argocd"), "ApplicationSet")
    assert sets, "dist/argocd renders the previews' ApplicationSet"
    for application_set in sets:
        template = {"spec": application_set["spec"]["template"]["spec"]}
        assert "RespectIgnoreDifferences=true" in template["spec"]["syncPolicy"]["syncOptions"]
        expressions = challenge_ignores(template)
        live = CHALLENGE["after_edit_in_place"]
        assert argo_normalize(live, expressions)["spec"] == CHALLENGE["before"]["spec"]
