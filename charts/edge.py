"""The public entry: one Ingress, TLS, and the controller-specific limits.

Only /api, /admin and /static reach the API Service. Rate limit and body
size come from the profile and are rendered in the chosen controller's own
vocabulary: annotations for the F5 NGINX Ingress Controller (and the retired
ingress-nginx, only when chosen explicitly), Middleware resources for
Traefik. In stage and prod a cert-manager ClusterIssuer requests the
certificate from Let's Encrypt; in dev the TLS Secret comes from a local CA
(scripts/dev-certs.sh) and nothing secret is rendered.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import cdk8s
from constructs import Construct

from charts.config import EdgeConfig
from charts.labels import api_metadata, metadata
from charts.network import Peer, pods_in
from imports import k8s
from imports.io import cert_manager as cm

if TYPE_CHECKING:
    from charts.stack import Stack

PUBLIC_PATHS = ("/api", "/admin", "/static")
ADMIN_PATH = "/admin"
ADMIN_ALLOW_POLICY = "admin-allow"
ACME_SERVERS = {
    "letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}
# cert-manager runs its HTTP-01 solver pods in the Ingress' namespace.
ACME_SOLVER_LABELS = {"acme.cert-manager.io/http01-solver": "true"}
ACME_SOLVER_PORT = 8089


def parse_rate(rate: str) -> tuple[int, str]:
    match = re.fullmatch(r"([1-9][0-9]*)r/([sm])", rate)
    if not match:
        raise ValueError(f"edge.rate_limit: {rate!r} must look like 10r/s or 600r/m")
    return int(match.group(1)), match.group(2)


class Edge(Construct):
    def __init__(self, scope: Construct, id: str, *, stack: Stack, config: EdgeConfig,
                 domain: str, backend_service: str, backend_port: int, backend: Peer) -> None:
        super().__init__(scope, id)
        self.identity = stack.identity("edge", "edge", stack.version)
        namespace = stack.namespace
        self.controller: Peer = pods_in(config.controller_namespace, config.controller_pod_labels,
                                        key="ingress-controller")
        stack.network.allow(self.controller, backend, backend_port, reason="public traffic to the API")

        annotations: dict[str, str] = {}
        issuer_name = None
        if config.tls.mode == "acme":
            issuer_name = f"{stack.profile.instance}-{config.tls.acme_server}"
            self._cluster_issuer(issuer_name, config)
            annotations["cert-manager.io/cluster-issuer"] = issuer_name
            solver = Peer(key="acme-solver", selector=tuple(sorted(ACME_SOLVER_LABELS.items())))
            stack.network.allow(self.controller, solver, ACME_SOLVER_PORT,
                                reason="Let's Encrypt HTTP-01 challenge")

        admin = config.admin
        # The admin gets an Ingress of its own when it is restricted or on its
        # own host, so the allow-list applies to it and to nothing else.
        own_host = admin.host(domain)
        admin_apart = bool(admin.allow_cidrs or own_host)
        public_paths = tuple(p for p in PUBLIC_PATHS if p != ADMIN_PATH) if admin_apart else PUBLIC_PATHS
        self.public_paths = public_paths

        def rule(host: str, paths: tuple[str, ...]) -> k8s.IngressRule:
            return k8s.IngressRule(host=host, http=k8s.HttpIngressRuleValue(paths=[
                k8s.HttpIngressPath(
                    path=path, path_type="Prefix",
                    backend=k8s.IngressBackend(service=k8s.IngressServiceBackend(
                        name=backend_service, port=k8s.ServiceBackendPort(number=backend_port))))
                for path in paths]))

        rules = [rule(domain, public_paths)]
        tls = [k8s.IngressTls(hosts=[domain], secret_name=config.tls.secret_name)]
        admin_host = own_host or domain
        # On its own host the admin also needs the static files its pages load.
        admin_rules = [rule(admin_host, (ADMIN_PATH, "/static") if own_host else (ADMIN_PATH,))]
        admin_tls = [k8s.IngressTls(hosts=[admin_host], secret_name=(
            f"{config.tls.secret_name}-admin" if own_host else config.tls.secret_name))]
        admin_annotations: dict[str, str] = {}
        if issuer_name and own_host:
            # Its own certificate; on the shared host the public Ingress' one serves.
            admin_annotations["cert-manager.io/cluster-issuer"] = issuer_name

        if config.controller == "nginx-inc":
            annotations.update(self._nginx_inc_annotations(config))
            admin_annotations.update(self._nginx_inc_annotations(config))
            if issuer_name:
                # The F5 controller serves one Ingress per host (the oldest wins), so
                # cert-manager's separate solver Ingress would be rejected; let it
                # add the challenge path to this Ingress instead.
                annotations["acme.cert-manager.io/http01-edit-in-place"] = "true"
                if own_host:
                    admin_annotations["acme.cert-manager.io/http01-edit-in-place"] = "true"
            if admin.allow_cidrs:
                admin_annotations["nginx.org/policies"] = self._nginx_inc_allow_policy(admin.allow_cidrs, namespace)
        elif config.controller == "ingress-nginx-legacy":
            annotations.update(self._ingress_nginx_annotations(config))
            admin_annotations.update(self._ingress_nginx_annotations(config))
            if admin.allow_cidrs:
                # Location scope: applies to this Ingress' paths only.
                admin_annotations["nginx.ingress.kubernetes.io/whitelist-source-range"] = ",".join(admin.allow_cidrs)
        else:
            chain = self._traefik_middlewares(config, namespace)
            annotations.update(self._traefik_router(chain))
            if admin.allow_cidrs:
                chain = [self._traefik_allow_middleware(admin.allow_cidrs, namespace), *chain]
            admin_annotations.update(self._traefik_router(chain))
            # Traefik routers are per entrypoint: the plain-HTTP router only redirects.
            redirect = f"{namespace}-redirect-https@kubernetescrd"
            k8s.KubeIngress(
                self, "http-redirect",
                metadata=metadata(self.identity, "public-http", namespace, annotations={
                    "traefik.ingress.kubernetes.io/router.entrypoints": "web",
                    "traefik.ingress.kubernetes.io/router.middlewares": redirect,
                }),
                spec=k8s.IngressSpec(ingress_class_name=config.ingress_class,
                                     rules=[*rules, *admin_rules] if admin_apart else rules),
            )

        self.ingress = k8s.KubeIngress(
            self, "ingress",
            metadata=metadata(self.identity, "public", namespace, annotations=annotations),
            spec=k8s.IngressSpec(ingress_class_name=config.ingress_class, tls=tls, rules=rules),
        )
        self.admin_ingress: k8s.KubeIngress | None = None
        if admin_apart:
            self.admin_ingress = k8s.KubeIngress(
                self, "admin-ingress",
                metadata=metadata(self.identity, "admin", namespace, annotations=admin_annotations),
                spec=k8s.IngressSpec(ingress_class_name=config.ingress_class, tls=admin_tls, rules=admin_rules),
            )

        if config.gateway.enabled:
            # Imported on use: loading a CRD module costs jsii start-up time.
            from imports.io.k8s.networking import gateway as gw

            gateway = config.gateway
            gw.HttpRoute(
                self, "http-route",
                metadata=api_metadata(self.identity, "public", namespace),
                spec=gw.HttpRouteSpec(
                    parent_refs=[gw.HttpRouteSpecParentRefs(
                        name=gateway.name, namespace=gateway.namespace, section_name=gateway.section_name)],
                    hostnames=[domain],
                    rules=[gw.HttpRouteSpecRules(
                        matches=[gw.HttpRouteSpecRulesMatches(path=gw.HttpRouteSpecRulesMatchesPath(
                            type=gw.HttpRouteSpecRulesMatchesPathType.PATH_PREFIX, value=path))
                            for path in public_paths],
                        backend_refs=[gw.HttpRouteSpecRulesBackendRefs(name=backend_service, port=backend_port)],
                    )],
                ),
            )

    def _cluster_issuer(self, name: str, config: EdgeConfig) -> None:
        cm.ClusterIssuer(
            self, "cluster-issuer",
            metadata=api_metadata(self.identity, name, None),
            spec=cm.ClusterIssuerSpec(acme=cm.ClusterIssuerSpecAcme(
                server=ACME_SERVERS[config.tls.acme_server],
                email=config.tls.acme_email,
                private_key_secret_ref=cm.ClusterIssuerSpecAcmePrivateKeySecretRef(name=f"{name}-account-key"),
                solvers=[cm.ClusterIssuerSpecAcmeSolvers(http01=cm.ClusterIssuerSpecAcmeSolversHttp01(
                    ingress=cm.ClusterIssuerSpecAcmeSolversHttp01Ingress(ingress_class_name=config.ingress_class)))],
            )),
        )

    @staticmethod
    def _nginx_inc_annotations(config: EdgeConfig) -> dict[str, str]:
        # nginx.org/limit-req-* need F5 NGINX Ingress Controller >= 3.5; the
        # profile model has already checked the rate's Nr/s or Nr/m form.
        annotations = {
            "nginx.org/client-max-body-size": config.body_size,
            "nginx.org/limit-req-rate": config.rate_limit,
            "nginx.org/limit-req-burst": str(config.rate_limit_burst),
            "nginx.org/limit-req-no-delay": "true",
            "nginx.org/limit-req-reject-code": "429",
            "ingress.kubernetes.io/ssl-redirect": "true",
        }
        # No nginx.org/hsts: Django sends Strict-Transport-Security (one owner,
        # values from the profile via DJANGO_HSTS_*); the controller's would
        # replace it.
        return annotations

    @staticmethod
    def _ingress_nginx_annotations(config: EdgeConfig) -> dict[str, str]:
        # The retired kubernetes/ingress-nginx: explicit legacy choice only.
        count, unit = parse_rate(config.rate_limit)
        per = "limit-rps" if unit == "s" else "limit-rpm"
        burst_multiplier = max(1, (config.rate_limit_burst + count - 1) // count)
        return {
            "nginx.ingress.kubernetes.io/proxy-body-size": config.body_size,
            f"nginx.ingress.kubernetes.io/{per}": str(count),
            "nginx.ingress.kubernetes.io/limit-burst-multiplier": str(burst_multiplier),
            "nginx.ingress.kubernetes.io/force-ssl-redirect": "true",
        }

    def _nginx_inc_allow_policy(self, cidrs: tuple[str, ...], namespace: str) -> str:
        # k8s.nginx.org/v1 Policy, accessControl: allowed on Ingress through
        # nginx.org/policies since F5 NGINX Ingress Controller 5.4.0
        # (internal/configs/ingress.go, getIngressPolicyRefs). No typed class
        # is imported for it, hence the plain ApiObject.
        policy = cdk8s.ApiObject(
            self, "admin-allow-policy", api_version="k8s.nginx.org/v1", kind="Policy",
            metadata=api_metadata(self.identity, ADMIN_ALLOW_POLICY, namespace),
        )
        policy.add_json_patch(cdk8s.JsonPatch.add("/spec", {"accessControl": {"allow": list(cidrs)}}))
        return ADMIN_ALLOW_POLICY

    def _traefik_allow_middleware(self, cidrs: tuple[str, ...], namespace: str) -> str:
        from imports.io import traefik

        traefik.Middleware(self, "middleware-admin-allow",
                           metadata=api_metadata(self.identity, ADMIN_ALLOW_POLICY, namespace),
                           spec=traefik.MiddlewareSpec(ip_allow_list=traefik.MiddlewareSpecIpAllowList(
                               source_range=list(cidrs))))
        return f"{namespace}-{ADMIN_ALLOW_POLICY}@kubernetescrd"

    @staticmethod
    def _traefik_router(chain: list[str]) -> dict[str, str]:
        return {
            "traefik.ingress.kubernetes.io/router.entrypoints": "websecure",
            "traefik.ingress.kubernetes.io/router.tls": "true",
            "traefik.ingress.kubernetes.io/router.middlewares": ",".join(chain),
        }

    def _traefik_middlewares(self, config: EdgeConfig, namespace: str) -> list[str]:
        from imports.io import traefik

        count, unit = parse_rate(config.rate_limit)
        middlewares: dict[str, Any] = {
            "rate-limit": traefik.MiddlewareSpec(rate_limit=traefik.MiddlewareSpecRateLimit(
                average=count, burst=max(config.rate_limit_burst, 1),
                period=traefik.MiddlewareSpecRateLimitPeriod.from_string("1s" if unit == "s" else "1m"))),
            "body-size": traefik.MiddlewareSpec(buffering=traefik.MiddlewareSpecBuffering(
                max_request_body_bytes=config.body_size_bytes)),
            "redirect-https": traefik.MiddlewareSpec(redirect_scheme=traefik.MiddlewareSpecRedirectScheme(
                scheme="https", permanent=True)),
        }
        for name, spec in middlewares.items():
            traefik.Middleware(self, f"middleware-{name}",
                               metadata=api_metadata(self.identity, name, namespace), spec=spec)
        return [f"{namespace}-{name}@kubernetescrd" for name in middlewares if name != "redirect-https"]
