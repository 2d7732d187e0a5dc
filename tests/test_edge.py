"""The Ingress is the only public entry; limits and TLS per controller."""

from __future__ import annotations

import ast
import re

import pytest

from tests.support.manifests import ENVS, ROOT, of_kind, one
from tests.support.render import render_with
from tests.support.schemas import NEWEST, validate_builtin, validate_custom


def django_public_paths() -> list[str]:
    """What the app serves, from its own source: the URLconf's top-level
    prefixes (app/config/urls.py) and STATIC_URL (app/config/settings/base.py)."""
    urls = ast.parse((ROOT / "app" / "config" / "urls.py").read_text())
    prefixes = {node.args[0].value for node in ast.walk(urls) if isinstance(node, ast.Call)
                and getattr(node.func, "id", "") == "path" and isinstance(node.args[0], ast.Constant)}
    static = re.search(r'^STATIC_URL = "([^"]+)"', (ROOT / "app" / "config" / "settings" / "base.py").read_text(),
                       re.MULTILINE)
    assert prefixes and static, "the app's routes could not be read"
    # The Ingress routes by first path segment (admin/login/ is under /admin).
    return sorted({"/" + p.strip("/").split("/")[0] for p in {*prefixes, static.group(1)}})


def gunicorn_port() -> int:
    bind = re.search(r'^bind = "[^:]+:(\d+)"', (ROOT / "app" / "gunicorn.conf.py").read_text(), re.MULTILINE)
    assert bind
    return int(bind.group(1))


def test_the_app_route_reader_sees_the_known_routes():
    assert {"/api", "/admin", "/static"} <= set(django_public_paths())


def routes(ingress: dict) -> list[tuple[str, str, str, int]]:
    return sorted((rule["host"], path["path"], path["backend"]["service"]["name"],
                   path["backend"]["service"]["port"]["number"])
                  for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"])


@pytest.mark.parametrize("env", ENVS)
def test_ingress_routes_only_public_paths_to_the_api(manifests, stacks, env):
    ingress = one(manifests[env], "Ingress", "public")
    domain = stacks[env].profile.domain
    # Every prefix the app serves, and nothing else (/healthz, /readyz and /metrics stay inside).
    # Stage and prod serve /admin on its own, restricted Ingress (test_admin_edge.py).
    public = [p for p in django_public_paths() if env == "dev" or p != "/admin"]
    api_port = one(manifests[env], "Service", "api")["spec"]["ports"][0]["port"]
    assert routes(ingress) == sorted((domain, p, "api", api_port) for p in public)
    service = one(manifests[env], "Service", "api")
    container = one(manifests[env], "Deployment", "api")["spec"]["template"]["spec"]["containers"][0]
    target_name = service["spec"]["ports"][0]["targetPort"]
    (target,) = [p["containerPort"] for p in container["ports"] if p["name"] == target_name]
    assert target == gunicorn_port(), "the Service must reach the port gunicorn binds"
    assert all(p["pathType"] == "Prefix" for r in ingress["spec"]["rules"] for p in r["http"]["paths"])
    assert ingress["spec"]["tls"] == [{"hosts": [domain], "secretName": stacks[env].profile.edge.tls.secret_name}]
    assert ingress["spec"]["ingressClassName"] == stacks[env].profile.edge.ingress_class


@pytest.mark.parametrize("env", ENVS)
def test_nginx_inc_limits_come_from_the_profile(manifests, stacks, env):
    edge = stacks[env].profile.edge
    assert edge.controller == "nginx-inc", "the maintained F5 controller is the default"
    annotations = one(manifests[env], "Ingress", "public")["metadata"]["annotations"]
    assert annotations["nginx.org/client-max-body-size"] == edge.body_size
    assert annotations["nginx.org/limit-req-rate"] == edge.rate_limit
    assert annotations["nginx.org/limit-req-burst"] == str(edge.rate_limit_burst)
    assert annotations["ingress.kubernetes.io/ssl-redirect"] == "true"
    assert not any(key.startswith("nginx.ingress.kubernetes.io/") for key in annotations), "retired annotations"


def test_hsts_comes_from_the_profile_through_the_app_env(manifests):
    # Django owns the header (tests/app/test_hsts_contract.py); the Ingress has none.
    def app_env(env):
        api = one(manifests[env], "Deployment", "api")["spec"]["template"]["spec"]["containers"][0]
        return {v["name"]: v.get("value") for v in api["env"]}
    assert (app_env("prod")["DJANGO_HSTS_SECONDS"], app_env("prod")["DJANGO_HSTS_INCLUDE_SUBDOMAINS"]) == \
        ("31536000", "true")
    assert app_env("stage")["DJANGO_HSTS_SECONDS"] == "3600"
    assert app_env("dev")["DJANGO_HSTS_SECONDS"] == "0"
    for env in ("dev", "stage", "prod"):
        assert not [k for k in one(manifests[env], "Ingress", "public")["metadata"]["annotations"] if "hsts" in k]


# Let's Encrypt's ACME directories (letsencrypt.org/docs/acme-protocol-updates, /docs/staging-environment).
@pytest.mark.parametrize(("env", "server"), [("stage", "https://acme-staging-v02.api.letsencrypt.org/directory"),
                                             ("prod", "https://acme-v02.api.letsencrypt.org/directory")])
def test_acme_issuer_per_env(manifests, stacks, env, server):
    (issuer,) = of_kind(manifests[env], "ClusterIssuer")
    acme = issuer["spec"]["acme"]
    assert acme["server"] == server
    assert acme["email"] == stacks[env].profile.edge.tls.acme_email
    assert acme["solvers"][0]["http01"]["ingress"]["ingressClassName"] == "nginx"
    annotations = one(manifests[env], "Ingress", "public")["metadata"]["annotations"]
    assert annotations["cert-manager.io/cluster-issuer"] == issuer["metadata"]["name"]
    # The F5 controller serves one Ingress per host: the challenge path must be
    # added to this Ingress, not to a second one cert-manager would create.
    assert annotations["acme.cert-manager.io/http01-edit-in-place"] == "true"


def test_dev_uses_a_local_ca_and_no_issuer(manifests):
    assert not of_kind(manifests["dev"], "ClusterIssuer")
    assert "cert-manager.io/cluster-issuer" not in one(manifests["dev"], "Ingress", "public")["metadata"]["annotations"]


def test_traefik_renders_middlewares_and_a_redirect_router():
    stack, objects = render_with("prod", {"edge": {"controller": "traefik", "ingress_class": "traefik",
                                                   "rate_limit": "600r/m", "body_size": "20m"}})
    namespace = stack.namespace
    middlewares = {m["metadata"]["name"]: m["spec"] for m in of_kind(objects, "Middleware")}
    assert middlewares["rate-limit"]["rateLimit"] == {"average": 600, "burst": 20, "period": "1m"}
    assert middlewares["body-size"]["buffering"] == {"maxRequestBodyBytes": 20 * 2**20}
    assert middlewares["redirect-https"]["redirectScheme"] == {"scheme": "https", "permanent": True}
    assert "hsts" not in middlewares, "HSTS is Django's (one owner)"
    public = one(objects, "Ingress", "public")["metadata"]["annotations"]
    assert public["traefik.ingress.kubernetes.io/router.entrypoints"] == "websecure"
    assert public["traefik.ingress.kubernetes.io/router.middlewares"] == ",".join(
        f"{namespace}-{name}@kubernetescrd" for name in ("rate-limit", "body-size"))
    http = one(objects, "Ingress", "public-http")
    assert http["metadata"]["annotations"]["traefik.ingress.kubernetes.io/router.middlewares"] == \
        f"{namespace}-redirect-https@kubernetescrd"
    assert "tls" not in http["spec"]
    assert not any(k.startswith("nginx.org/") for k in public)
    for middleware in of_kind(objects, "Middleware"):
        assert not validate_custom(middleware), validate_custom(middleware)


def test_retired_ingress_nginx_only_as_explicit_legacy_choice():
    _stack, objects = render_with("dev", {"edge": {"controller": "ingress-nginx-legacy", "rate_limit": "5r/s",
                                                   "rate_limit_burst": 12}})
    annotations = one(objects, "Ingress", "public")["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/limit-rps"] == "5"
    assert annotations["nginx.ingress.kubernetes.io/limit-burst-multiplier"] == "3"
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "50m"


def test_gateway_api_route_mirrors_the_ingress():
    stack, objects = render_with("stage", {"edge": {"gateway": {"enabled": True, "name": "public-gw",
                                                                "namespace": "gateways"}}})
    (route,) = of_kind(objects, "HTTPRoute")
    assert not validate_custom(route), validate_custom(route)
    spec = route["spec"]
    assert spec["hostnames"] == [stack.profile.domain]
    assert spec["parentRefs"] == [{"name": "public-gw", "namespace": "gateways"}]
    (rule,) = spec["rules"]
    # Gateway API has no standard client allow-list: the restricted admin stays off the route.
    assert sorted(m["path"]["value"] for m in rule["matches"]) == [p for p in django_public_paths() if p != "/admin"]
    assert rule["backendRefs"] == [{"name": "api", "port": 8000}]


@pytest.mark.parametrize("env", ENVS)
def test_acme_solver_is_reachable_only_with_acme(stacks, env):
    keys = {(c.source.key, c.target.key, c.port) for c in stacks[env].network.connections}
    has_acme = stacks[env].profile.edge.tls.mode == "acme"
    assert (("ingress-controller", "acme-solver", 8089) in keys) == has_acme


def test_variants_validate_against_the_newest_schema():
    for overrides in ({"edge": {"controller": "traefik"}}, {"edge": {"controller": "ingress-nginx-legacy"}}):
        _stack, objects = render_with("prod", overrides)
        for obj in of_kind(objects, "Ingress"):
            assert not validate_builtin(obj, NEWEST)
