"""docs/topology.md is current, and the picture it draws is the enforced one."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import topology
from scripts.topology import ANYWHERE, EVERY_POD, INTERNET, Namespace
from tests.support.manifests import ENVS, ROOT

DIST = ROOT / "dist"


def test_topology_doc_is_current() -> None:
    expected = topology.render(DIST, ENVS)
    current = topology.DOC.read_text(encoding="utf-8") if topology.DOC.exists() else ""
    assert current == expected, "docs/topology.md is stale: run `make topology` (after `make synth`)"


@pytest.mark.parametrize("env", ENVS)
def test_only_the_ingress_is_public(env: str) -> None:
    namespace = Namespace(topology.load(DIST / env))
    edges, _ = topology.connections(namespace)
    ingresses = [e for e in topology.entries(namespace) if e.kind == "Ingress"]
    # The public Ingress, plus the restricted admin one where the profile has it.
    expected = 2 if env in ("stage", "prod") else 1
    assert len(ingresses) == expected, f"{env}: expected {expected} Ingress(es), found {len(ingresses)}"
    backends = {backend for ingress in ingresses for backend in ingress.backends}
    assert {b.label for b in backends} == {"api"}, f"{env}: the Ingress must reach the API only"
    assert all(e.source != ANYWHERE for e in edges), f"{env}: a policy admits traffic from anywhere"
    outside_in = [e for e in edges if not e.source.internal and e.target.internal]
    controllers = {e.source for e in outside_in if e.target in backends}
    assert len(controllers) == 1, f"{env}: expected one ingress controller peer, found {controllers}"
    for edge in outside_in:
        if edge.source in controllers:
            assert (edge.target.label, edge.ports) == ("api", ("8000",)), f"{env}: controller reaches {edge}"
        else:
            # An operator-managed Prometheus may scrape, and KEDA's operator may
            # read queue lengths from Redis; nothing else enters.
            allowed = edge.source.label.startswith("prometheus (ns ") or (
                edge.source.label.startswith("keda-operator (ns ") and (edge.target.label, edge.ports) ==
                ("redis", ("6379",)))
            assert allowed, f"{env}: unexpected way in: {edge}"


@pytest.mark.parametrize("env", ENVS)
def test_every_rule_is_declared_on_both_sides(env: str) -> None:
    _, one_sided = topology.connections(Namespace(topology.load(DIST / env)))
    assert one_sided == [], f"{env}: rules the other side drops: {one_sided}"


def policy(name: str, selector: dict, types: list[str], **rules: list) -> dict:
    return {"kind": "NetworkPolicy", "metadata": {"name": name},
            "spec": {"podSelector": selector, "policyTypes": types, **rules}}


def workload(name: str) -> dict:
    return {"kind": "Deployment", "metadata": {"name": name},
            "spec": {"template": {"metadata": {"labels": {"app.kubernetes.io/name": name}}}}}


def only(name: str) -> dict:
    return {"matchLabels": {"app.kubernetes.io/name": name}}


def test_connections_need_both_sides_and_report_one_sided_rules() -> None:
    objects = [
        {"kind": "Namespace", "metadata": {"name": "demo"}},
        workload("web"), workload("db"), workload("cache"),
        policy("deny", {}, ["Ingress", "Egress"]),
        policy("db-in", only("db"), ["Ingress"], ingress=[
            {"from": [{"podSelector": only("web")}], "ports": [{"port": 5432, "protocol": "TCP"}]}]),
        policy("web-out", only("web"), ["Egress"], egress=[
            {"to": [{"podSelector": only("db")}], "ports": [{"port": 5432, "protocol": "TCP"}]},
            {"to": [{"podSelector": only("cache")}], "ports": [{"port": 6379, "protocol": "TCP"}]},
            {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}], "ports": [{"port": 443}]}]),
        policy("dns", {}, ["Egress"], egress=[
            {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                     "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
             "ports": [{"port": 53, "protocol": "UDP"}]}]),
        policy("cache-in", only("cache"), ["Ingress"], ingress=[{"ports": [{"port": 6379}]}]),
    ]
    edges, one_sided = topology.connections(Namespace(objects))
    drawn = {(e.source.label, e.target.label, e.ports) for e in edges}
    assert drawn == {
        ("web", "db", ("5432",)),
        ("web", "0.0.0.0/0 except 10.0.0.0/8", ("443",)),
        ("every pod", "kube-dns (ns kube-system)", ("53/UDP",)),
        # A rule without `from` admits anyone, web included.
        ("anywhere", "cache", ("6379",)),
    }
    assert one_sided == [], one_sided
    # Remove web's egress to db: db still admits it, but web may not send.
    objects[6]["spec"]["egress"] = objects[6]["spec"]["egress"][1:]
    edges, one_sided = topology.connections(Namespace(objects))
    assert one_sided == ["db admits web on 5432, but web may not send it"]
    assert ("web", "db") not in {(e.source.label, e.target.label) for e in edges}


def test_egress_to_a_pod_that_does_not_admit_it_is_one_sided() -> None:
    objects = [
        {"kind": "Namespace", "metadata": {"name": "demo"}}, workload("web"), workload("db"),
        policy("deny", {}, ["Ingress", "Egress"]),
        policy("web-out", only("web"), ["Egress"], egress=[
            {"to": [{"podSelector": only("db")}], "ports": [{"port": 5432, "protocol": "TCP"}]}]),
    ]
    edges, one_sided = topology.connections(Namespace(objects))
    assert edges == [] and one_sided == ["web may send to db on 5432, but db does not admit it"]


def test_the_drawing_marks_the_public_entry(tmp_path: Path) -> None:
    text = topology.render(DIST, ["dev"])
    assert text.startswith("# Network topology")
    assert "```mermaid\nflowchart LR" in text
    assert f'  {INTERNET.id} ==>|"443 (TLS), 80 redirects: ' in text
    assert EVERY_POD.id in text
    # Job names carry the release; the picture uses the stable pod name label.
    assert "migrate-dev" not in text and '["migrate"]' in text


def test_check_mode(tmp_path: Path) -> None:
    out = tmp_path / "topology.md"
    assert topology.main(["--out", str(out), "--check"]) == 1, "a missing file is stale"
    assert topology.main(["--out", str(out)]) == 0
    assert topology.main(["--out", str(out), "--check"]) == 0
