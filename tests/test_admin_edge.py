"""The admin is reachable at the edge only from the profile's client networks.

Per controller, with the mechanism its source supports:
- F5 NGINX Ingress Controller (>= 5.4.0): a k8s.nginx.org/v1 Policy with
  accessControl.allow, attached by the `nginx.org/policies` annotation
  (nginx/kubernetes-ingress internal/configs/annotations.go PoliciesAnnotation,
  internal/configs/ingress.go getIngressPolicyRefs). One Ingress per host, so
  the admin has a host of its own.
- Traefik: a Middleware with ipAllowList.sourceRange (traefik.io CRD).
- retired ingress-nginx: `nginx.ingress.kubernetes.io/whitelist-source-range`
  (internal/ingress/annotations/ipallowlist, location scope, alias of
  allowlist-source-range).
"""

from __future__ import annotations

import pytest

from tests.support.manifests import of_kind, one
from tests.support.render import render_with
from tests.support.schemas import NEWEST, crds_dir, has_crd, validate_builtin, validate_custom

OFFICE = ["10.0.0.0/8"]
TWO = ["192.0.2.0/24", "2001:db8::/48"]


def paths(ingress: dict) -> list[tuple[str, str]]:
    return sorted((rule["host"], path["path"]) for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"])


def env_value(objects: list[dict], deployment: str, name: str) -> str:
    (pod,) = [o["spec"]["template"]["spec"] for o in of_kind(objects, "Deployment")
              if o["metadata"]["name"] == deployment]
    return next(e["value"] for e in pod["containers"][0]["env"] if e["name"] == name)


@pytest.mark.parametrize(("env", "domain"), [("stage", "stage.vibearena.example.com"),
                                            ("prod", "vibearena.example.com")])
def test_committed_stage_and_prod_keep_the_admin_off_the_public_host(manifests, env, domain):
    objects = manifests[env]
    public = one(objects, "Ingress", "public")
    assert ("/admin" not in {p for _h, p in paths(public)}), f"{env}: /admin routed by the public Ingress"
    admin = one(objects, "Ingress", "admin")
    assert paths(admin) == [(f"admin.{domain}", "/admin"), (f"admin.{domain}", "/static")]
    annotations = admin["metadata"]["annotations"]
    (policy,) = [o for o in of_kind(objects, "Policy") if o["metadata"]["name"] == annotations["nginx.org/policies"]]
    assert policy["apiVersion"] == "k8s.nginx.org/v1"
    assert policy["metadata"]["namespace"] == admin["metadata"]["namespace"]
    assert policy["spec"] == {"accessControl": {"allow": OFFICE}}
    assert "nginx.org/policies" not in public["metadata"]["annotations"]
    # Its own certificate, requested the same way as the public one.
    assert admin["spec"]["tls"] == [{"hosts": [f"admin.{domain}"], "secretName": "vibearena-tls-admin"}]
    issuer = "cert-manager.io/cluster-issuer"
    assert annotations[issuer] == public["metadata"]["annotations"][issuer]
    assert annotations["acme.cert-manager.io/http01-edit-in-place"] == "true"
    # The limits hold on the admin host too.
    assert annotations["nginx.org/limit-req-rate"] == public["metadata"]["annotations"]["nginx.org/limit-req-rate"]
    assert not validate_builtin(admin, NEWEST)
    # Django must accept the admin host and its CSRF origin.
    assert f"admin.{domain}" in env_value(objects, "api", "ALLOWED_HOSTS").split(",")
    assert f"https://admin.{domain}" in env_value(objects, "api", "CSRF_TRUSTED_ORIGINS").split(",")


def test_dev_admin_stays_on_the_public_ingress(manifests):
    assert not [o for o in of_kind(manifests["dev"], "Ingress") if o["metadata"]["name"] == "admin"]
    assert not of_kind(manifests["dev"], "Policy")


def test_traefik_allow_list_on_the_same_host():
    stack, objects = render_with("prod", {"edge": {"controller": "traefik", "ingress_class": "traefik",
                                                   "admin": {"subdomain": None, "allow_cidrs": TWO}}})
    domain, namespace = stack.profile.domain, stack.namespace
    admin = one(objects, "Ingress", "admin")
    assert paths(admin) == [(domain, "/admin")]
    assert ("/admin" not in {p for _h, p in paths(one(objects, "Ingress", "public"))})
    (allow,) = [m for m in of_kind(objects, "Middleware") if "ipAllowList" in m["spec"]]
    assert allow["spec"]["ipAllowList"] == {"sourceRange": TWO}
    assert not validate_custom(allow), validate_custom(allow)
    chain = admin["metadata"]["annotations"]["traefik.ingress.kubernetes.io/router.middlewares"].split(",")
    assert chain[0] == f"{namespace}-{allow['metadata']['name']}@kubernetescrd", "allow-list runs first"
    assert f"{namespace}-rate-limit@kubernetescrd" in chain
    public_chain = one(objects, "Ingress", "public")["metadata"]["annotations"][
        "traefik.ingress.kubernetes.io/router.middlewares"]
    assert allow["metadata"]["name"] not in public_chain


def test_legacy_ingress_nginx_allow_list_annotation():
    _stack, objects = render_with("prod", {"edge": {"controller": "ingress-nginx-legacy",
                                                   "admin": {"allow_cidrs": TWO}}})
    admin = one(objects, "Ingress", "admin")["metadata"]["annotations"]
    assert admin["nginx.ingress.kubernetes.io/whitelist-source-range"] == "192.0.2.0/24,2001:db8::/48"
    public = one(objects, "Ingress", "public")["metadata"]["annotations"]
    assert "nginx.ingress.kubernetes.io/whitelist-source-range" not in public


def test_nginx_policy_validates_against_its_crd(manifests):
    (policy,) = of_kind(manifests["prod"], "Policy")
    if not has_crd(policy):
        pytest.skip(f"k8s.nginx.org_policies.yaml (nginx/kubernetes-ingress v5.5.4) is not under {crds_dir()}")
    assert not validate_custom(policy), validate_custom(policy)
