"""Reachability computed from the rendered NetworkPolicies alone must equal a
hand-written allow-list exactly (no missing and no extra edge), and what each
container is configured to connect to must be reachable."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

import pytest

from charts.edge import ACME_SOLVER_LABELS
from tests.support.manifests import ENVS, of_kind, pod_templates

NAMESPACE_LABEL = "kubernetes.io/metadata.name"
ANY_PORT = 0


@dataclass(frozen=True)
class Endpoint:
    key: str
    namespace: str
    labels: tuple[tuple[str, str], ...] = ()
    cidr: str | None = None


Edge = tuple[str, str, int, str]  # source key, target key, port, protocol


def universe(objects: list[dict[str, Any]], profile: Any) -> list[Endpoint]:
    """Every pod the policies may talk about: ours (from the rendered pod
    templates) and the few outside ones named by the profile."""
    namespace = profile.namespace
    ours = [Endpoint(p.labels["app.kubernetes.io/name"], namespace, tuple(sorted(p.labels.items())))
            for p in pod_templates(objects)]
    edge, network, monitoring = profile.edge, profile.network, profile.monitoring
    outside = [
        Endpoint("ingress-controller", edge.controller_namespace, tuple(sorted(edge.controller_pod_labels.items()))),
        Endpoint("dns", network.dns_namespace, tuple(sorted(network.dns_pod_labels.items()))),
        Endpoint("operator-prometheus", monitoring.operator_prometheus_namespace,
                 tuple(sorted(monitoring.operator_prometheus_pod_labels.items()))),
        Endpoint("cert-manager", monitoring.cert_manager_namespace,
                 tuple(sorted(monitoring.cert_manager_pod_labels.items()))),
        Endpoint("alertmanager", monitoring.alertmanager.namespace,
                 tuple(sorted(monitoring.alertmanager.pod_labels.items()))),
        Endpoint("keda-operator", profile.worker.keda_namespace,
                 tuple(sorted(profile.worker.keda_operator_pod_labels.items()))),
        Endpoint("kube-state-metrics", monitoring.kube_state_metrics_namespace,
                 tuple(sorted(monitoring.kube_state_metrics_pod_labels.items()))),
        Endpoint("acme-solver", namespace, tuple(sorted(ACME_SOLVER_LABELS.items()))),
        Endpoint("somebody-else", "other", (("app", "intruder"),)),
    ]
    cnpg = profile.postgres.cnpg
    if cnpg is not None:
        # Pods the CloudNativePG operator creates from the Cluster and Pooler.
        outside += [Endpoint(f"{cnpg.name}-cnpg", namespace, (("cnpg.io/cluster", cnpg.name),)),
                    Endpoint(f"{cnpg.name}-pooler-rw", namespace, (("cnpg.io/poolerName", f"{cnpg.name}-pooler-rw"),)),
                    Endpoint("cnpg-operator", cnpg.operator_namespace, tuple(sorted(cnpg.operator_pod_labels.items())))]
    cidrs = {peer["ipBlock"]["cidr"] for policy in of_kind(objects, "NetworkPolicy")
             for rule in policy["spec"].get("egress", []) for peer in rule.get("to", []) if "ipBlock" in peer}
    return ours + outside + [Endpoint(f"cidr:{cidr}", "", cidr=cidr) for cidr in sorted(cidrs)]


def selects(selector: dict[str, Any], labels: tuple[tuple[str, str], ...]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"matchExpressions not understood by this test: {selector}"
    return selector.get("matchLabels", {}).items() <= dict(labels).items()


def peer_matches(peer: dict[str, Any], endpoint: Endpoint, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        return endpoint.cidr == peer["ipBlock"]["cidr"]
    if endpoint.cidr:
        return False
    if "namespaceSelector" in peer:
        namespace_labels = ((NAMESPACE_LABEL, endpoint.namespace),)
        if not selects(peer["namespaceSelector"], namespace_labels):
            return False
    elif endpoint.namespace != policy_namespace:
        return False
    return selects(peer.get("podSelector", {}), endpoint.labels)


def rule_ports(rule: dict[str, Any]) -> set[tuple[int, str]]:
    if not rule.get("ports"):
        return {(ANY_PORT, "*")}
    return {(p["port"], p.get("protocol", "TCP")) for p in rule["ports"]}


def allowed(objects: list[dict[str, Any]], endpoints: list[Endpoint], namespace: str) -> set[Edge]:
    policies = [p for p in of_kind(objects, "NetworkPolicy") if p["metadata"]["namespace"] == namespace]

    def governing(endpoint: Endpoint, direction: str) -> list[dict[str, Any]]:
        if endpoint.namespace != namespace or endpoint.cidr:
            return []
        return [p for p in policies if direction in p["spec"]["policyTypes"]
                and selects(p["spec"]["podSelector"], endpoint.labels)]

    def ports_allowed(endpoint: Endpoint, other: Endpoint, direction: str) -> set[tuple[int, str]] | None:
        """None: not isolated in this direction (not ours to judge)."""
        rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        governing_policies = governing(endpoint, direction)
        if not governing_policies:
            return None
        ports: set[tuple[int, str]] = set()
        for policy in governing_policies:
            for rule in policy["spec"].get(rules_key, []):
                peers = rule.get(peers_key)
                if not peers or any(peer_matches(peer, other, namespace) for peer in peers):
                    ports |= rule_ports(rule)
        return ports

    edges: set[Edge] = set()
    for source in endpoints:
        for target in endpoints:
            if source.namespace != namespace and target.namespace != namespace:
                continue  # neither end is ours
            out = ports_allowed(source, target, "Egress")
            into = ports_allowed(target, source, "Ingress")
            if out is None and into is None:
                continue
            if out is None:
                granted = into
            elif into is None:
                granted = out
            else:
                wildcard = {(ANY_PORT, "*")}
                granted = (out & into) | (into if out >= wildcard else set()) | (out if into >= wildcard else set())
            edges |= {(source.key, target.key, port, protocol) for port, protocol in granted or ()}
    return edges


def key_of(peer: Any) -> str:
    # Off-cluster destinations are known to the policies only by their CIDR.
    return f"cidr:{peer.cidr}" if peer.cidr else peer.key


# Who may talk to whom, written out by hand from what each process does
# (docs/decisions/006-network-policies.md), not from the chart's connection
# table: a wrong or missing entry in that table shows up here.
DB, CACHE, S3 = ("postgres", 5432, "TCP"), ("redis", 6379, "TCP"), ("minio", 9000, "TCP")
APP_EDGES = {(process, *target) for process in ("api", "worker-default", "beat", "migrate", "createsuperuser")
             for target in (DB, CACHE, S3)}
COMMON_EDGES: set[Edge] = APP_EDGES | {
    ("ingress-controller", "api", 8000, "TCP"),
    ("ensure-bucket", *S3),
    ("postgres-backup", *DB), ("postgres-backup", *S3),
    ("postgres-restore", *DB), ("postgres-restore", *S3),
    ("restore-drill", *DB), ("restore-drill", *S3),
    ("backup-exporter", *S3),
    # Retention: the only key that may delete dumps (docs/security.md).
    ("backup-prune", *S3),
    ("celery-exporter", *CACHE),
    ("grafana", "prometheus", 9090, "TCP"),
    ("prometheus", "api", 8000, "TCP"), ("prometheus", "postgres", 9187, "TCP"),
    ("prometheus", "redis", 9121, "TCP"), ("prometheus", "minio", 9327, "TCP"),
    ("prometheus", "backup-exporter", 9188, "TCP"), ("prometheus", "celery-exporter", 9808, "TCP"),
}
COMMON_EDGES |= {("backup-prune", *S3)}
# The StatefulSet Postgres (dev, stage) has its roles Job.
STATEFULSET_EDGES: set[Edge] = COMMON_EDGES | {("postgres-roles", *DB)}
# prod runs CloudNativePG: the same clients reach its instances (cnpg.io/cluster
# pods), plus what CNPG's docs ask for (operator -> 8000 and 5432, instances to
# each other, instance manager -> API server) and the WAL archive over HTTPS.
CNPG = "postgres-cnpg"
CNPG_EDGES: set[Edge] = {(e[0], CNPG, *e[2:]) if e[1] == "postgres" else e for e in COMMON_EDGES} | {
    ("cnpg-operator", CNPG, 5432, "TCP"), ("cnpg-operator", CNPG, 8000, "TCP"),
    (CNPG, CNPG, 5432, "TCP"), (CNPG, CNPG, 8000, "TCP"),
    (CNPG, "cidr:172.20.0.1/32", 443, "TCP"), (CNPG, "cidr:0.0.0.0/0", 443, "TCP"),
}
EXPECTED_EDGES: dict[str, set[Edge]] = {
    # dev scrapes the kind ingress controller's metrics; stage and prod let it
    # reach cert-manager's HTTP-01 solver pods.
    "dev": STATEFULSET_EDGES | {("prometheus", "ingress-controller", 9113, "TCP")},
    "stage": STATEFULSET_EDGES | {("ingress-controller", "acme-solver", 8089, "TCP")},
    # prod also runs the bundled Alertmanager (receivers over HTTPS), KEDA,
    # which reads the queue lengths from Redis, and the off-site copies.
    "prod": CNPG_EDGES | {("ingress-controller", "acme-solver", 8089, "TCP"),
                          ("prometheus", "alertmanager", 9093, "TCP"), ("alertmanager", "cidr:0.0.0.0/0", 443, "TCP"),
                          ("keda-operator", "redis", 6379, "TCP"),
                          ("minio-mirror", *S3), ("minio-mirror", "cidr:0.0.0.0/0", 443, "TCP"),
                          ("dumps-mirror", *S3), ("dumps-mirror", "cidr:0.0.0.0/0", 443, "TCP")},
}
DNS_PORT = 53


def with_dns(edges: set[Edge], endpoints: list[Endpoint], namespace: str,
             servers: tuple[str, ...] = ("dns",)) -> set[Edge]:
    """Every pod in the namespace, ours or cert-manager's solver, may resolve names."""
    return edges | {(e.key, server, DNS_PORT, protocol) for e in endpoints if e.namespace == namespace
                    for server in servers for protocol in ("UDP", "TCP")}


@pytest.mark.parametrize("env", sorted(EXPECTED_EDGES))
def test_rendered_policies_allow_exactly_the_expected_connections(manifests, stacks, env):
    stack = stacks[env]
    endpoints = universe(manifests[env], stack.profile)
    computed = allowed(manifests[env], endpoints, stack.namespace)
    expected = with_dns(EXPECTED_EDGES[env], endpoints, stack.namespace)
    missing, extra = expected - computed, computed - expected
    assert not missing and not extra, f"{env}: missing {sorted(missing)}; extra {sorted(extra)}"


def declared(stack: Any, endpoints: list[Endpoint]) -> set[Edge]:
    """The chart's own table: used only to check the renderer renders what it declares."""
    edges = {(key_of(c.source), key_of(c.target), c.port, c.protocol) for c in stack.network.connections}
    servers = ("dns", *(f"cidr:{cidr}" for cidr in stack.network.dns_cidrs))
    return with_dns(edges, endpoints, stack.namespace, servers)


@pytest.mark.parametrize("env", ENVS)
def test_the_renderer_renders_exactly_its_declared_connections(manifests, stacks, env):
    stack = stacks[env]
    endpoints = universe(manifests[env], stack.profile)
    computed = allowed(manifests[env], endpoints, stack.namespace)
    assert computed == declared(stack, endpoints)


@pytest.mark.parametrize("env", ENVS)
def test_every_declared_connection_names_a_rendered_pod(manifests, stacks, env):
    """A connection to a workload that is not rendered would be a dead rule."""
    keys = {e.key for e in universe(manifests[env], stacks[env].profile)}
    for connection in stacks[env].network.connections:
        for end in (connection.source, connection.target):
            assert key_of(end) in keys, f"{env}: {end.key} is declared but not rendered"


def expected_for(objects: list[dict[str, Any]], stack: Any) -> set[Edge]:
    return with_dns(EXPECTED_EDGES["prod"], universe(objects, stack.profile), stack.namespace)


def test_the_check_sees_an_extra_port(manifests, stacks):
    """Negative case: widen one rendered policy and the computed edges change."""
    objects = copy.deepcopy(manifests["prod"])
    policy = next(p for p in of_kind(objects, "NetworkPolicy") if p["metadata"]["name"] == "api-ingress")
    policy["spec"]["ingress"][0]["ports"].append({"port": 22, "protocol": "TCP"})
    endpoints = universe(objects, stacks["prod"].profile)
    extra = allowed(objects, endpoints, stacks["prod"].namespace) - expected_for(objects, stacks["prod"])
    assert ("ingress-controller", "api", 22, "TCP") in extra


def test_the_check_sees_a_missing_rule(manifests, stacks):
    objects = [o for o in copy.deepcopy(manifests["prod"]) if o["metadata"]["name"] != "api-ingress"]
    endpoints = universe(objects, stacks["prod"].profile)
    missing = expected_for(objects, stacks["prod"]) - allowed(objects, endpoints, stacks["prod"].namespace)
    assert ("ingress-controller", "api", 8000, "TCP") in missing


def test_the_check_sees_a_policy_without_ports(manifests, stacks):
    objects = copy.deepcopy(manifests["prod"])
    policy = next(p for p in of_kind(objects, "NetworkPolicy") if p["metadata"]["name"] == "api-ingress")
    del policy["spec"]["ingress"][0]["ports"]
    endpoints = universe(objects, stacks["prod"].profile)
    extra = allowed(objects, endpoints, stacks["prod"].namespace) - expected_for(objects, stacks["prod"])
    assert ("ingress-controller", "api", ANY_PORT, "*") in extra


EXTERNAL_DATA = {
    # cnpg None: replaces the committed prod profile's CNPG settings.
    "postgres": {"mode": "external", "cnpg": None, "external": {"host": "db.example.internal", "cidr": "10.20.0.0/16",
                                                                "ca": {"name": "db-ca"}}},
    "redis": {"mode": "external", "external": {"host": "cache.example.internal", "port": 6380,
                                               "cidr": "10.30.0.5/32"}},
}

CNPG_DATA = {"postgres": {"mode": "cnpg", "cnpg": {
    "api_server_cidr": "10.96.0.1/32", "api_server_port": 6443,
    "backup": {"endpoint": "https://s3.eu-central-1.amazonaws.com", "bucket": "vibearena-wal",
               "cidr": "52.219.0.0/16"}}}}


@pytest.mark.parametrize("overrides", [
    {"monitoring": {"mode": "operator", "alertmanager": {"mode": "off"}}},
    {"object_store": {"mode": "external", "external_endpoint": "https://s3.example.net"},
     "backups": {"offsite": {"enabled": True}}, "network": {"app_internet_egress": True}},
    {"network": {"dns_cidrs": ["169.254.20.10/32"]}},
    {"monitoring": {"alertmanager": {"mode": "existing"}}},
    {"monitoring": {"alertmanager": {"mode": "bundled", "slack": {"enabled": True}, "heartbeat": False,
                                     "webhook": {"enabled": False},
                                     "email": {"to": "ops@example.com", "sender": "am@example.com",
                                               "smarthost": "smtp.example.net:587", "auth_username": "am"}}}},
    {"monitoring": {"kube_state_metrics_service": "kube-state-metrics.kube-system.svc"}},
    {"worker": {"groups": [{"name": "default", "autoscaling": {"mode": "hpa", "cpu_utilization": 70}}]}},
    EXTERNAL_DATA,
    CNPG_DATA,
    {**CNPG_DATA, "postgres": {**CNPG_DATA["postgres"], "cnpg": {
        **CNPG_DATA["postgres"]["cnpg"], "pooler": {"enabled": True}, "import_from_statefulset": True}}},
    {**CNPG_DATA, "monitoring": {"mode": "operator", "alertmanager": {"mode": "off"}}},
], ids=["operator-monitoring", "external-s3-offsite-internet", "node-local-dns", "alertmanager-existing",
        "alertmanager-bundled-email", "kube-state-metrics", "worker-hpa", "external-data",
        "cnpg", "cnpg-pooler-import", "cnpg-operator-monitoring"])
def test_switched_on_features_render_exactly_their_declared_connections(overrides):
    """The renderer renders what the chart declares, for profile switches the committed envs leave off
    (the expected connections themselves are checked by the literal test below)."""
    from tests.support.render import render_with
    stack, objects = render_with("prod", overrides)
    endpoints = universe(objects, stack.profile)
    assert allowed(objects, endpoints, stack.namespace) == declared(stack, endpoints)


SCRAPED = {("api", 8000), (CNPG, 9187), ("redis", 9121), ("minio", 9327), ("backup-exporter", 9188),
           ("celery-exporter", 9808)}
EVERYONE_ON_S3 = ("api", "worker-default", "beat", "migrate", "createsuperuser", "ensure-bucket",
                  "postgres-backup", "postgres-restore", "restore-drill", "backup-exporter", "backup-prune")
SWITCHED: list[tuple[str, dict[str, Any], set[Edge], set[Edge], tuple[str, ...]]] = [
    # (id, overrides, edges added to prod's, edges removed from prod's, extra DNS servers)
    ("operator-monitoring", {"monitoring": {"mode": "operator", "alertmanager": {"mode": "off"}}},
     {("operator-prometheus", name, port, "TCP") for name, port in SCRAPED},
     {("prometheus", name, port, "TCP") for name, port in SCRAPED} | {("grafana", "prometheus", 9090, "TCP"),
                                                                      ("prometheus", "alertmanager", 9093, "TCP"),
                                                                      ("alertmanager", "cidr:0.0.0.0/0", 443, "TCP")},
     ()),
    # The cluster's Alertmanager (same name, other namespace) instead of the bundled one.
    ("alertmanager-existing", {"monitoring": {"alertmanager": {"mode": "existing"}}},
     set(), {("alertmanager", "cidr:0.0.0.0/0", 443, "TCP")}, ()),
    ("external-s3-offsite-internet",
     {"object_store": {"mode": "external", "external_endpoint": "https://s3.example.net"},
      "backups": {"offsite": {"enabled": True}}, "network": {"app_internet_egress": True}},
     {(name, "cidr:0.0.0.0/0", 443, "TCP") for name in (*EVERYONE_ON_S3, "minio-mirror")},
     {(name, *S3) for name in (*EVERYONE_ON_S3, "minio-mirror", "dumps-mirror")}
     | {("prometheus", "minio", 9327, "TCP")}, ()),
    ("node-local-dns", {"network": {"dns_cidrs": ["169.254.20.10/32"]}}, set(), set(), ("cidr:169.254.20.10/32",)),
]


@pytest.mark.parametrize(("overrides", "added", "removed", "dns"), [c[1:] for c in SWITCHED],
                         ids=[c[0] for c in SWITCHED])
def test_switched_on_features_allow_exactly_the_expected_connections(overrides, added, removed, dns):
    from tests.support.render import render_with
    stack, objects = render_with("prod", overrides)
    endpoints = universe(objects, stack.profile)
    computed = allowed(objects, endpoints, stack.namespace)
    expected = with_dns((EXPECTED_EDGES["prod"] - removed) | added, endpoints, stack.namespace, ("dns", *dns))
    assert computed == expected, f"missing {sorted(expected - computed)}; extra {sorted(computed - expected)}"
    assert computed == declared(stack, endpoints), "the renderer must render exactly its declared connections"


def configured_connections(objects: list[dict[str, Any]], namespace: str) -> set[tuple[str, str, int]]:
    """(source pod, target host, port) for every address a container is
    configured to reach, read from its env: URLs and PGHOST/PGPORT."""
    found = set()
    for pod in pod_templates(objects):
        source = pod.labels["app.kubernetes.io/name"]
        for container in pod.containers():
            env = {v["name"]: v.get("value", "") for v in container.get("env", [])}
            for name, value in env.items():
                match = re.match(r"^(\w+)://(?:[^@/]*@)?([^:/]+)(?::(\d+))?", value)
                if match and name.endswith(("_URL", "_ENDPOINT", "_URI", "_ADDR")) and "://" in value:
                    scheme, host, port = match.groups()
                    default = {"https": 443, "http": 80, "redis": 6379, "rediss": 6379, "postgres": 5432}.get(scheme)
                    if host in ("127.0.0.1", "localhost"):
                        continue  # loopback inside the pod: no NetworkPolicy applies
                    found.add((source, host, int(port) if port else default))
            if "PGHOST" in env:
                found.add((source, env["PGHOST"], int(env.get("PGPORT", 5432))))
            # The app's separate connection variables (config/env.py).
            for host_var, port_var, default in (("DATABASE_HOST", "DATABASE_PORT", 5432),
                                                ("REDIS_HOST", "REDIS_PORT", 6379)):
                if host_var in env:
                    found.add((source, env[host_var], int(env.get(port_var, default))))
            # postgres_exporter's DATA_SOURCE_URI is host:port/db without a scheme.
            uri = re.match(r"^([^:/]+):(\d+)/", env.get("DATA_SOURCE_URI", ""))
            if uri and uri.group(1) not in ("127.0.0.1", "localhost"):
                found.add((source, uri.group(1), int(uri.group(2))))
    return found


def resolve(objects: list[dict[str, Any]], host: str, port: int) -> tuple[str, int] | None:
    """The pod (by name label) and container port behind a Service host:port."""
    service_name = host.split(".")[0]
    services = [s for s in of_kind(objects, "Service") if s["metadata"]["name"] == service_name]
    if not services:
        # Services CloudNativePG creates: <cluster>-rw/-ro/-r, and one per Pooler.
        for cluster in of_kind(objects, "Cluster"):
            name = cluster["metadata"]["name"]
            if service_name in (f"{name}-rw", f"{name}-ro", f"{name}-r") and port == 5432:
                return f"{name}-cnpg", 5432
        for pooler in of_kind(objects, "Pooler"):
            if service_name == pooler["metadata"]["name"] and port == 5432:
                return service_name, 5432
        return None
    (service,) = services
    (service_port,) = [p for p in service["spec"]["ports"] if p["port"] == port]
    for pod in pod_templates(objects):
        if service["spec"]["selector"].items() <= pod.labels.items():
            for container in pod.spec["containers"]:
                for p in container.get("ports", []):
                    if service_port["targetPort"] in (p.get("name"), p["containerPort"]):
                        return pod.labels["app.kubernetes.io/name"], p["containerPort"]
    raise AssertionError(f"Service {service_name}:{port} reaches no container port")


@pytest.mark.parametrize("env", ENVS)
def test_every_configured_address_is_allowed_by_the_policies(manifests, stacks, env):
    """Independent of the connection table: what the containers are told to
    connect to (from their env) must be reachable through the rendered policies."""
    objects, stack = manifests[env], stacks[env]
    endpoints = universe(objects, stack.profile)
    edges = allowed(objects, endpoints, stack.namespace)
    wanted = configured_connections(objects, stack.namespace)
    assert wanted, f"{env}: no configured connections found (the parser is broken)"
    blocked = []
    for source, host, port in sorted(wanted):
        target = resolve(objects, host, port)
        if target is None:  # off-cluster: needs an ipBlock egress on that port
            if not any(e[0] == source and e[1].startswith("cidr:") and e[2] == port for e in edges):
                blocked.append(f"{source} -> {host}:{port} (off-cluster)")
        elif (source, target[0], target[1], "TCP") not in edges:
            blocked.append(f"{source} -> {host}:{port} ({target[0]}:{target[1]})")
    assert not blocked, f"{env}: configured but blocked: {blocked}"


def test_configured_address_check_sees_a_missing_rule(manifests, stacks):
    # stage runs the Postgres StatefulSet.
    objects = [o for o in copy.deepcopy(manifests["stage"]) if o["metadata"]["name"] != "postgres-ingress"]
    stack = stacks["stage"]
    edges = allowed(objects, universe(objects, stack.profile), stack.namespace)
    target = resolve(objects, "postgres", 5432)
    assert target == ("postgres", 5432)
    assert ("api", "postgres", 5432, "TCP") not in edges


def test_configured_addresses_with_external_s3_and_offsite_copy():
    from tests.support.render import render_with
    stack, objects = render_with("prod", {
        "postgres": {"cnpg": {"pooler": {"enabled": True}}},
        "object_store": {"mode": "external", "external_endpoint": "https://s3.eu-west-1.amazonaws.com"},
        "backups": {"offsite": {"enabled": True, "endpoint": "https://s3.example.net:8443"}}})
    edges = allowed(objects, universe(objects, stack.profile), stack.namespace)
    wanted = configured_connections(objects, stack.namespace)
    assert ("minio-mirror", "s3.example.net", 8443) in wanted and ("api", "s3.eu-west-1.amazonaws.com", 443) in wanted
    for source, host, port in wanted:
        if resolve(objects, host, port) is None:
            assert any(e[0] == source and e[1].startswith("cidr:") and e[2] == port for e in edges), \
                f"{source} -> {host}:{port} is blocked"


def test_external_data_services_reachable_only_at_their_cidr_and_port():
    """Declared table for external Postgres and Redis: every client reaches the
    managed server's CIDR on its port, and nothing in the namespace serves 5432/6379."""
    from tests.support.render import render_with
    stack, objects = render_with("prod", EXTERNAL_DATA)
    edges = allowed(objects, universe(objects, stack.profile), stack.namespace)
    to_db = {e[0] for e in edges if e[1:] == ("cidr:10.20.0.0/16", 5432, "TCP")}
    to_cache = {e[0] for e in edges if e[1:] == ("cidr:10.30.0.5/32", 6380, "TCP")}
    app = {"api", "worker-default", "beat", "migrate", "createsuperuser"}
    assert to_db == app | {"postgres-backup", "restore-drill", "postgres-restore", "postgres-exporter"}, to_db
    assert to_cache == app | {"celery-exporter", "redis-exporter"}, to_cache
    assert not [e for e in edges if e[2] in (5432, 6379, 6380) and not e[1].startswith("cidr:")], \
        "an in-namespace target still serves a database port"
    wanted = configured_connections(objects, stack.namespace)
    assert ("api", "db.example.internal", 5432) in wanted and ("api", "cache.example.internal", 6380) in wanted


def test_cnpg_reachability_is_the_declared_table():
    """What CloudNativePG needs (its docs: operator -> 8000 and 5432, pods to
    each other, instance manager -> API server) plus archive and clients."""
    from tests.support.render import render_with
    stack, objects = render_with("prod", CNPG_DATA)
    edges = allowed(objects, universe(objects, stack.profile), stack.namespace)
    into = {(e[0], e[2]) for e in edges if e[1] == "postgres-cnpg"}
    out = {(e[1], e[2]) for e in edges if e[0] == "postgres-cnpg" and e[1] != "dns"}
    app = {"api", "worker-default", "beat", "migrate", "createsuperuser"}
    dumps = {"postgres-backup", "restore-drill", "postgres-restore"}
    assert into == ({("cnpg-operator", 8000), ("cnpg-operator", 5432), ("postgres-cnpg", 5432),
                     ("postgres-cnpg", 8000), ("prometheus", 9187)} | {(a, 5432) for a in app | dumps}), into
    assert out == {("postgres-cnpg", 5432), ("postgres-cnpg", 8000), ("cidr:10.96.0.1/32", 6443),
                   ("cidr:52.219.0.0/16", 443)}, out


# A range wider than a private one never doubles as a path to pods or nodes:
# (written CIDR, the ranges NetworkPolicy must cut out of it).
EXTERNAL_EXCEPTIONS = {
    "0.0.0.0/0": {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"},
    "::/0": {"fc00::/7", "fe80::/10"},
    "8.0.0.0/6": {"10.0.0.0/8"},
    "172.0.0.0/8": {"172.16.0.0/12"},
    "fc00::/6": {"fc00::/7", "fe80::/10"},
    # A private range named itself (a managed database in the VPC) stays as written.
    "10.0.0.0/8": set(),
    "10.20.0.0/16": set(),
    "fd12:3456::/32": set(),
    "52.219.0.0/16": set(),
    "2600:1f18::/32": set(),
}


@pytest.mark.parametrize("cidr", EXTERNAL_EXCEPTIONS)
def test_external_ranges_exclude_the_private_ranges_they_contain(cidr):
    from charts.network import external

    assert set(external(cidr, key="x").cidr_except) == EXTERNAL_EXCEPTIONS[cidr]


def test_an_ipv6_offsite_target_excludes_the_private_ipv6_ranges():
    from tests.support.render import render_with

    _stack, objects = render_with("prod", {"backups": {"offsite": {"cidr": "::/0"}}})
    blocks = [peer["ipBlock"] for policy in of_kind(objects, "NetworkPolicy")
              for rule in policy["spec"].get("egress", []) for peer in rule.get("to", []) if "ipBlock" in peer]
    (ipv6,) = {tuple(b.get("except", ())) for b in blocks if b["cidr"] == "::/0"}
    assert set(ipv6) == {"fc00::/7", "fe80::/10"}
