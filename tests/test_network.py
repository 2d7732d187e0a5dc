"""Reachability computed from the rendered NetworkPolicies alone must equal the
declared connection table exactly: no missing and no extra edge."""

from __future__ import annotations

import copy
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
        Endpoint("acme-solver", namespace, tuple(sorted(ACME_SOLVER_LABELS.items()))),
        Endpoint("somebody-else", "other", (("app", "intruder"),)),
    ]
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


def declared(stack: Any, endpoints: list[Endpoint]) -> set[Edge]:
    edges = {(key_of(c.source), key_of(c.target), c.port, c.protocol) for c in stack.network.connections}
    # Every pod in the namespace, ours or cert-manager's solver, may resolve names.
    ours = [e for e in endpoints if e.namespace == stack.namespace]
    dns_servers = ["dns", *(f"cidr:{cidr}" for cidr in stack.network.dns_cidrs)]
    for endpoint in ours:
        edges |= {(endpoint.key, server, stack.network.dns_port, protocol)
                  for server in dns_servers for protocol in ("UDP", "TCP")}
    return edges


@pytest.mark.parametrize("env", ENVS)
def test_rendered_policies_allow_exactly_the_declared_connections(manifests, stacks, env):
    stack = stacks[env]
    endpoints = universe(manifests[env], stack.profile)
    computed = allowed(manifests[env], endpoints, stack.namespace)
    expected = declared(stack, endpoints)
    missing, extra = expected - computed, computed - expected
    assert not missing and not extra, f"{env}: missing {sorted(missing)}; extra {sorted(extra)}"


@pytest.mark.parametrize("env", ENVS)
def test_every_declared_connection_names_a_rendered_pod(manifests, stacks, env):
    """A connection to a workload that is not rendered would be a dead rule."""
    keys = {e.key for e in universe(manifests[env], stacks[env].profile)}
    for connection in stacks[env].network.connections:
        for end in (connection.source, connection.target):
            assert key_of(end) in keys, f"{env}: {end.key} is declared but not rendered"


def test_the_check_sees_an_extra_port(manifests, stacks):
    """Negative case: widen one rendered policy and the computed edges change."""
    objects = copy.deepcopy(manifests["prod"])
    policy = next(p for p in of_kind(objects, "NetworkPolicy") if p["metadata"]["name"] == "api-ingress")
    policy["spec"]["ingress"][0]["ports"].append({"port": 22, "protocol": "TCP"})
    endpoints = universe(objects, stacks["prod"].profile)
    extra = allowed(objects, endpoints, stacks["prod"].namespace) - declared(stacks["prod"], endpoints)
    assert ("ingress-controller", "api", 22, "TCP") in extra


def test_the_check_sees_a_missing_rule(manifests, stacks):
    objects = [o for o in copy.deepcopy(manifests["prod"]) if o["metadata"]["name"] != "api-ingress"]
    endpoints = universe(objects, stacks["prod"].profile)
    missing = declared(stacks["prod"], endpoints) - allowed(objects, endpoints, stacks["prod"].namespace)
    assert ("ingress-controller", "api", 8000, "TCP") in missing


def test_the_check_sees_a_policy_without_ports(manifests, stacks):
    objects = copy.deepcopy(manifests["prod"])
    policy = next(p for p in of_kind(objects, "NetworkPolicy") if p["metadata"]["name"] == "api-ingress")
    del policy["spec"]["ingress"][0]["ports"]
    endpoints = universe(objects, stacks["prod"].profile)
    extra = allowed(objects, endpoints, stacks["prod"].namespace) - declared(stacks["prod"], endpoints)
    assert ("ingress-controller", "api", ANY_PORT, "*") in extra


@pytest.mark.parametrize("overrides", [
    {"monitoring": {"mode": "operator"}},
    {"object_store": {"mode": "external", "external_endpoint": "https://s3.example.net"},
     "backups": {"offsite": {"enabled": True}}, "network": {"app_internet_egress": True}},
    {"network": {"dns_cidrs": ["169.254.20.10/32"]}},
], ids=["operator-monitoring", "external-s3-offsite-internet", "node-local-dns"])
def test_switched_on_features_keep_policies_exact(overrides):
    """The same equality for profile switches the committed envs leave off."""
    from tests.support.render import render_with
    stack, objects = render_with("prod", overrides)
    endpoints = universe(objects, stack.profile)
    computed = allowed(objects, endpoints, stack.namespace)
    expected = declared(stack, endpoints)
    assert computed == expected, f"missing {sorted(expected - computed)}; extra {sorted(computed - expected)}"
