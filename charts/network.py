"""Declared connections rendered into NetworkPolicies.

The namespace denies all ingress and egress by default. Every allowed
connection is declared once, as `network.allow(source, target, port)`, by the
component that needs it; `render()` turns the table into one ingress policy
per target and one egress policy per source inside the namespace, plus DNS
egress for every pod.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from constructs import Construct

from charts.labels import Identity, metadata, number
from imports import k8s

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class Peer:
    """One end of a connection.

    `selector` picks pods; `namespace` None means our own namespace. `cidr`
    is for destinations outside the cluster (object storage off-site).
    """

    key: str
    selector: tuple[tuple[str, str], ...] = ()
    namespace: str | None = None
    cidr: str | None = None
    cidr_except: tuple[str, ...] = ()

    @property
    def internal(self) -> bool:
        return self.namespace is None and self.cidr is None

    def policy_peer(self) -> k8s.NetworkPolicyPeer:
        if self.cidr:
            return k8s.NetworkPolicyPeer(
                ip_block=k8s.IpBlock(cidr=self.cidr, except_=list(self.cidr_except) or None))
        pods = k8s.LabelSelector(match_labels=dict(self.selector))
        if self.namespace is None:
            return k8s.NetworkPolicyPeer(pod_selector=pods)
        return k8s.NetworkPolicyPeer(
            namespace_selector=k8s.LabelSelector(match_labels={NAMESPACE_NAME_LABEL: self.namespace}),
            pod_selector=pods)


def pods(identity: Identity) -> Peer:
    return Peer(key=identity.name, selector=tuple(sorted(identity.selector().items())))


def pods_in(namespace: str, labels: Mapping[str, str], key: str) -> Peer:
    return Peer(key=key, selector=tuple(sorted(labels.items())), namespace=namespace)


# Where pods, nodes and Services usually live: RFC 1918, and for IPv6
# unique-local (RFC 4193) and link-local addresses. A cluster that gives pods
# global IPv6 addresses (EKS IPv6) is not covered: name a narrower cidr there.
PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fe80::/10")


def external(cidr: str, key: str) -> Peer:
    """A destination outside the cluster. A range wider than a private one
    ("anywhere", 0.0.0.0/0 or ::/0, or any other supernet) excludes it, so such
    a rule never doubles as a path to pods or nodes; a private range named
    itself (a managed database in the VPC) is kept as written."""
    network = ipaddress.ip_network(cidr, strict=False)
    excluded = tuple(str(private) for private in map(ipaddress.ip_network, PRIVATE_RANGES)
                     if private.version == network.version and private != network
                     and private.subnet_of(network))  # type: ignore[arg-type]  # same version checked
    return Peer(key=key, cidr=cidr, cidr_except=excluded)


@dataclass(frozen=True)
class Connection:
    source: Peer
    target: Peer
    port: int
    protocol: str = "TCP"
    reason: str = ""


class Network:
    """The connection table of one namespace."""

    def __init__(self, *, dns: Peer, dns_cidrs: tuple[str, ...] = (), dns_port: int = 53) -> None:
        self.dns = dns
        self.dns_cidrs = dns_cidrs
        self.dns_port = dns_port
        self._connections: list[Connection] = []

    @property
    def connections(self) -> tuple[Connection, ...]:
        return tuple(self._connections)

    def allow(self, source: Peer, target: Peer, port: int, *, reason: str, protocol: str = "TCP") -> None:
        if not (source.internal or target.internal):
            raise ValueError(f"connection {source.key} -> {target.key} has no end in this namespace")
        if not 0 < port < 65536:
            raise ValueError(f"connection {source.key} -> {target.key}: bad port {port}")
        connection = Connection(source, target, port, protocol, reason)
        if any((c.source, c.target, c.port, c.protocol) == (source, target, port, protocol)
               for c in self._connections):
            raise ValueError(f"connection {source.key} -> {target.key}:{port} declared twice")
        self._connections.append(connection)

    def render(self, scope: Construct, identity: Identity, namespace: str) -> None:
        def policy(name: str, spec: k8s.NetworkPolicySpec) -> None:
            k8s.KubeNetworkPolicy(scope, name, metadata=metadata(identity, name, namespace), spec=spec)

        policy("default-deny", k8s.NetworkPolicySpec(
            pod_selector=k8s.LabelSelector(), policy_types=["Ingress", "Egress"]))
        dns_ports = [k8s.NetworkPolicyPort(port=number(self.dns_port), protocol=p)
                     for p in ("UDP", "TCP")]
        policy("allow-dns-egress", k8s.NetworkPolicySpec(
            pod_selector=k8s.LabelSelector(), policy_types=["Egress"],
            egress=[k8s.NetworkPolicyEgressRule(
                to=[self.dns.policy_peer(), *(external(cidr, key=f"dns:{cidr}").policy_peer()
                                              for cidr in self.dns_cidrs)],
                ports=dns_ports)]))

        inbound: dict[Peer, list[Connection]] = defaultdict(list)
        outbound: dict[Peer, list[Connection]] = defaultdict(list)
        for connection in self._connections:
            if connection.target.internal:
                inbound[connection.target].append(connection)
            if connection.source.internal:
                outbound[connection.source].append(connection)

        for target, connections in sorted(inbound.items(), key=lambda item: item[0].key):
            rules = [k8s.NetworkPolicyIngressRule(from_=[peer.policy_peer()], ports=ports)
                     for peer, ports in _group(connections, lambda c: c.source)]
            policy(f"{target.key}-ingress", k8s.NetworkPolicySpec(
                pod_selector=k8s.LabelSelector(match_labels=dict(target.selector)),
                policy_types=["Ingress"], ingress=rules))
        for source, connections in sorted(outbound.items(), key=lambda item: item[0].key):
            egress = [k8s.NetworkPolicyEgressRule(to=[peer.policy_peer()], ports=ports)
                      for peer, ports in _group(connections, lambda c: c.target)]
            policy(f"{source.key}-egress", k8s.NetworkPolicySpec(
                pod_selector=k8s.LabelSelector(match_labels=dict(source.selector)),
                policy_types=["Egress"], egress=egress))


def _group(connections: list[Connection],
           peer_of: Callable[[Connection], Peer]) -> list[tuple[Peer, list[k8s.NetworkPolicyPort]]]:
    by_peer: dict[Peer, set[tuple[int, str]]] = defaultdict(set)
    for connection in connections:
        by_peer[peer_of(connection)].add((connection.port, connection.protocol))
    return [
        (peer, [k8s.NetworkPolicyPort(port=number(port), protocol=protocol)
                for port, protocol in sorted(ports)])
        for peer, ports in sorted(by_peer.items(), key=lambda item: item[0].key)
    ]
