"""Draw who talks to whom, from the rendered NetworkPolicies and Ingress.

    .venv/bin/python scripts/topology.py            # write docs/topology.md
    .venv/bin/python scripts/topology.py --check    # exit 1 if it is stale

The picture is read from dist/<env>/, not from the code's table of declared
connections: it shows what the cluster will enforce. An arrow is drawn when
the source may send (its egress rules, if any policy isolates it) and the
target may receive (its ingress rules, likewise); a rule that only one side
declares is listed under "one-sided rules", because the other side drops it.
The Ingress (or an HTTPRoute) is the only entry from the internet; its
traffic arrives through the ingress controller the policies admit.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "topology.md"
Obj = dict[str, Any]
POD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
NAME_KEYS = ("app.kubernetes.io/name", "k8s-app", "app")


@dataclass(frozen=True, order=True)
class Node:
    """A workload of the namespace, or a peer outside it."""

    key: str
    label: str
    internal: bool

    @property
    def id(self) -> str:
        return re.sub(r"[^A-Za-z0-9_]", "_", self.key)


@dataclass(frozen=True, order=True)
class Edge:
    source: Node
    target: Node
    ports: tuple[str, ...]


INTERNET = Node("internet", "Internet", internal=False)
EVERY_POD = Node("every-pod", "every pod", internal=True)
# A rule without from/to admits every source (or reaches every destination).
ANYWHERE = Node("anywhere", "anywhere", internal=False)


def load(directory: Path) -> list[Obj]:
    return [doc for path in sorted(directory.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def pod_labels(obj: Obj) -> dict[str, str]:
    spec = obj["spec"]
    template = spec["jobTemplate"]["spec"]["template"] if obj["kind"] == "CronJob" else spec["template"]
    return dict(template.get("metadata", {}).get("labels") or {})


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """matchLabels/matchExpressions; an empty selector selects everything."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        ok = {"In": key in labels and labels[key] in values,
              "NotIn": not (key in labels and labels[key] in values),
              "Exists": key in labels, "DoesNotExist": key not in labels}[operator]
        if not ok:
            return False
    return True


def short_name(labels: Mapping[str, str]) -> str:
    for key in NAME_KEYS:
        if key in labels:
            return labels[key]
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "all pods"


def ports_of(rule: Obj) -> tuple[str, ...]:
    found = []
    for port in rule.get("ports") or []:
        number, protocol = port.get("port", "any"), port.get("protocol", "TCP")
        found.append(str(number) if protocol == "TCP" else f"{number}/{protocol}")
    return tuple(found) or ("any port",)


class Namespace:
    """The workloads and policies of one rendered env."""

    def __init__(self, objects: list[Obj]) -> None:
        self.objects = objects
        # Keyed by the pods' name label, not the object name: Job names carry
        # the release (migrate-0-1-0), and the picture must not change per release.
        self.workloads = {short_name(pod_labels(o)) if pod_labels(o) else o["metadata"]["name"]: pod_labels(o)
                          for o in objects if o["kind"] in POD_KINDS}
        names = {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"}
        self.name = next(iter(names), "")
        self.policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
        self.nodes = {name: Node(name, name, internal=True) for name in self.workloads}

    def selected(self, selector: Mapping[str, Any] | None) -> list[Node]:
        if not (selector or {}).get("matchLabels") and not (selector or {}).get("matchExpressions"):
            return [EVERY_POD]
        return [self.nodes[name] for name, labels in sorted(self.workloads.items()) if selects(selector, labels)]

    def peers(self, peer: Obj) -> list[Node]:
        if "ipBlock" in peer:
            block = peer["ipBlock"]
            except_ = f" except {', '.join(block['except'])}" if block.get("except") else ""
            return [Node(f"cidr-{block['cidr']}", f"{block['cidr']}{except_}", internal=False)]
        if "namespaceSelector" in peer:
            namespaces = peer["namespaceSelector"].get("matchLabels") or {}
            namespace = namespaces.get("kubernetes.io/metadata.name", "any namespace" if not namespaces
                                       else short_name(namespaces))
            pods = (peer.get("podSelector") or {}).get("matchLabels") or {}
            name = short_name(pods)
            return [Node(f"ext-{namespace}-{name}", f"{name} (ns {namespace})", internal=False)]
        return self.selected(peer.get("podSelector"))

    def rules(self, direction: str) -> list[Edge]:
        """Every (source, target, ports) one direction's rules allow."""
        edges = []
        for policy in self.policies:
            spec = policy["spec"]
            if direction not in spec.get("policyTypes", ["Ingress"]):
                continue
            subjects = self.selected(spec.get("podSelector"))
            for rule in spec.get(direction.lower()) or []:
                ports = ports_of(rule)
                listed = rule.get("from" if direction == "Ingress" else "to")
                peers = [n for p in listed for n in self.peers(p)] if listed else [ANYWHERE]
                for subject in subjects:
                    for peer in peers:
                        edges.append(Edge(peer, subject, ports) if direction == "Ingress"
                                     else Edge(subject, peer, ports))
        return edges

    def isolated(self, node: Node, direction: str) -> bool:
        return any(direction in p["spec"].get("policyTypes", ["Ingress"])
                   and (node in self.selected(p["spec"].get("podSelector"))
                        or EVERY_POD in self.selected(p["spec"].get("podSelector")))
                   for p in self.policies)


def allowed_ports(edges: Iterable[Edge], source: Node, target: Node) -> set[str]:
    return {port for e in edges if e.source in (source, EVERY_POD, ANYWHERE) and e.target in (target, EVERY_POD)
            for port in e.ports}


def connections(namespace: Namespace) -> tuple[list[Edge], list[str]]:
    """(effective edges, one-sided rules) as the cluster enforces them."""
    ingress, egress = namespace.rules("Ingress"), namespace.rules("Egress")
    merged: dict[tuple[Node, Node], set[str]] = defaultdict(set)
    one_sided = []
    for edge in ingress:
        source = edge.source
        if source.internal and source != EVERY_POD and namespace.isolated(source, "Egress"):
            missing = set(edge.ports) - allowed_ports(egress, source, edge.target)
            if missing:
                one_sided.append(f"{edge.target.label} admits {source.label} on {', '.join(sorted(missing))}, "
                                 f"but {source.label} may not send it")
            ports = set(edge.ports) - missing
        else:
            ports = set(edge.ports)
        if ports:
            merged[(source, edge.target)] |= ports
    for edge in egress:
        target = edge.target
        if target.internal and target != EVERY_POD and namespace.isolated(target, "Ingress"):
            missing = set(edge.ports) - allowed_ports(ingress, edge.source, target)
            if missing:
                one_sided.append(f"{edge.source.label} may send to {target.label} on "
                                 f"{', '.join(sorted(missing))}, but {target.label} does not admit it")
            continue  # what the target admits is already in `merged`, from its ingress rules
        merged[(edge.source, target)] |= set(edge.ports)
    edges = [Edge(s, t, tuple(sorted(p, key=port_order))) for (s, t), p in merged.items()]
    return sorted(edges), sorted(set(one_sided))


def port_order(port: str) -> tuple[int, str]:
    number = port.split("/")[0]
    return (int(number), port) if number.isdigit() else (1 << 16, port)


@dataclass(frozen=True)
class Entry:
    """A public route: host, paths, and the pods that serve them."""

    kind: str
    name: str
    hosts: tuple[str, ...]
    paths: tuple[str, ...]
    backends: tuple[Node, ...]
    tls: bool


def entries(namespace: Namespace) -> list[Entry]:
    services = {o["metadata"]["name"]: o for o in namespace.objects if o["kind"] == "Service"}

    def serving(service: str) -> list[Node]:
        selector = services.get(service, {}).get("spec", {}).get("selector") or {}
        return [namespace.nodes[name] for name, labels in sorted(namespace.workloads.items())
                if selector and all(labels.get(k) == v for k, v in selector.items())]

    found = []
    for obj in namespace.objects:
        if obj["kind"] == "Ingress":
            spec = obj["spec"]
            hosts, paths, backends = [], [], []
            for rule in spec.get("rules") or []:
                hosts.append(rule.get("host", "*"))
                for path in rule.get("http", {}).get("paths") or []:
                    paths.append(path.get("path", "/"))
                    backends.extend(serving(path["backend"]["service"]["name"]))
            found.append(Entry("Ingress", obj["metadata"]["name"], tuple(hosts), tuple(paths),
                               tuple(sorted(set(backends))), bool(spec.get("tls"))))
        elif obj["kind"] == "HTTPRoute":
            spec = obj["spec"]
            paths, backends = [], []
            for rule in spec.get("rules") or []:
                paths.extend(m.get("path", {}).get("value", "/") for m in rule.get("matches") or [])
                for ref in rule.get("backendRefs") or []:
                    backends.extend(serving(ref["name"]))
            found.append(Entry("HTTPRoute", obj["metadata"]["name"], tuple(spec.get("hostnames") or ["*"]),
                               tuple(paths), tuple(sorted(set(backends))), True))
    return found


def label(node: Node) -> str:
    text = node.label.replace('"', "'")
    return f'{node.id}["{text}"]' if node.internal else f'{node.id}(["{text}"])'


def flowchart(namespace: Namespace, edges: list[Edge], public: list[Entry]) -> list[str]:
    lines = ["```mermaid", "flowchart LR"]
    internal = sorted({n for e in edges for n in (e.source, e.target) if n.internal}
                      | {b for entry in public for b in entry.backends})
    external = sorted({n for e in edges for n in (e.source, e.target) if not n.internal})
    lines.append(f'  {INTERNET.id}(("Internet"))')
    lines.extend(f"  {label(node)}" for node in external)
    lines.append(f'  subgraph {re.sub(r"[^A-Za-z0-9_]", "_", namespace.name)}["namespace {namespace.name}"]')
    lines.extend(f"    {label(node)}" for node in internal)
    lines.append("  end")
    for entry in public:
        # The controller is the outside peer the backends admit: that is
        # where the Ingress' traffic enters the namespace.
        controllers = sorted({e.source for e in edges if not e.source.internal and e.target in entry.backends})
        schemes = "443 (TLS), 80 redirects" if entry.tls else "80"
        routes = f"{schemes}: {', '.join(entry.hosts)} {' '.join(entry.paths)}"
        for controller in controllers or list(entry.backends):
            lines.append(f'  {INTERNET.id} ==>|"{routes}"| {controller.id}')
    for edge in edges:
        lines.append(f'  {edge.source.id} -->|"{", ".join(edge.ports)}"| {edge.target.id}')
    lines.append("```")
    return lines


def table(edges: list[Edge]) -> list[str]:
    lines = ["| from | to | ports |", "| --- | --- | --- |"]
    lines.extend(f"| {e.source.label} | {e.target.label} | {', '.join(e.ports)} |" for e in edges)
    return lines


HEADER = """# Network topology

Generated by `scripts/topology.py` (`make topology`) from the rendered
NetworkPolicies, Services and Ingress in `dist/<env>/`; do not edit by hand.
`tests/test_topology.py` fails when this file is stale.

How to read it: the thick arrow is the only public entry, the Ingress, served
by the ingress controller outside the namespace. Every other arrow is a
connection the NetworkPolicies allow, labelled with its ports (TCP unless
marked): the source may send it and the target admits it. Everything else is
denied (`default-deny` in every namespace). "every pod" stands for a rule that
selects all pods of the namespace (DNS egress).
"""


def render(dist: Path, envs: Iterable[str]) -> str:
    out = [HEADER]
    for env in envs:
        namespace = Namespace(load(dist / env))
        edges, one_sided = connections(namespace)
        public = entries(namespace)
        out.append(f"## {env} (namespace `{namespace.name}`)\n")
        for entry in public:
            out.append(f"Public: {entry.kind} `{entry.name}` for {', '.join(entry.hosts)}, paths "
                       f"{', '.join(entry.paths)}, served by {', '.join(b.label for b in entry.backends)}.\n")
        out.append("\n".join(flowchart(namespace, edges, public)) + "\n")
        out.append("\n".join(table(edges)) + "\n")
        if one_sided:
            out.append("One-sided rules (dropped by the other side):\n")
            out.append("\n".join(f"- {line}" for line in one_sided) + "\n")
    return "\n".join(out)


def known_envs() -> list[str]:
    return sorted(p.stem for p in (ROOT / "env").glob("*.yaml"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="topology.py", description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="rendered output (default dist/)")
    parser.add_argument("--out", type=Path, default=DOC, help="where to write (default docs/topology.md)")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if the file is stale")
    args = parser.parse_args(argv)
    envs = [env for env in known_envs() if (args.dist / env).is_dir()]
    if not envs:
        print(f"topology: no rendered envs in {args.dist}; run `make synth`", file=sys.stderr)
        return 2
    text = render(args.dist, envs)
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"topology: {args.out} is stale; run `make topology`", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"topology: wrote {args.out} ({', '.join(envs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
