"""Resource footprint per env: requests and limits of every workload, with totals.

    .venv/bin/python bench/footprint.py [--env dev ...] [--build]

Reads dist/<env>/ (or, with --build, renders the profiles in process). A
pod's request is what the scheduler reserves for it: the sum of its
containers and sidecars, or its largest init container (plus the sidecars
started before it) if that is larger (Kubernetes' init-container rule), plus
any pod overhead. Long-running workloads count once per replica (an HPA's
minimum when it owns the count). Batch pods come on top: at rollout the
rendered one-shot Jobs run together, at night one CronJob at a time, so the
peak adds the larger of the two.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from charts.schema import parse_quantity  # noqa: E402

Obj = dict[str, Any]
RESOURCES = ("cpu", "memory")
LONG_RUNNING = ("Deployment", "StatefulSet", "DaemonSet")
BATCH = ("Job", "CronJob")


@dataclass(frozen=True)
class Amount:
    """CPU in cores and memory in bytes."""

    cpu: float = 0.0
    memory: float = 0.0

    def __add__(self, other: Amount) -> Amount:
        return Amount(self.cpu + other.cpu, self.memory + other.memory)

    def __mul__(self, factor: int) -> Amount:
        return Amount(self.cpu * factor, self.memory * factor)

    def max(self, other: Amount) -> Amount:
        # Per resource: the scheduler takes each one's maximum separately.
        return Amount(max(self.cpu, other.cpu), max(self.memory, other.memory))


# What the dev stack may request at its peak on a laptop's kind cluster
# (README, "Quick start: dev on kind"; tests/test_footprint.py holds it too).
BUDGETS = {"dev": Amount(cpu=1.5, memory=2 * 2**30)}


def container_amount(container: Mapping[str, Any], kind: str) -> Amount:
    values = (container.get("resources") or {}).get(kind) or {}
    return Amount(*(parse_quantity(str(values[r])) if r in values else 0.0 for r in RESOURCES))


def pod_amount(spec: Mapping[str, Any], kind: str = "requests") -> Amount:
    """What one pod reserves ("requests") or may use at most ("limits")."""
    main = sum((container_amount(c, kind) for c in spec.get("containers") or []), Amount())
    running_sidecars = Amount()
    largest_init = Amount()
    for init in spec.get("initContainers") or []:
        amount = container_amount(init, kind)
        if init.get("restartPolicy") == "Always":
            # A sidecar keeps running next to everything started after it.
            running_sidecars = running_sidecars + amount
        else:
            largest_init = largest_init.max(amount + running_sidecars)
    overhead = spec.get("overhead") or {}
    extra = Amount(*(parse_quantity(str(overhead[r])) if r in overhead else 0.0 for r in RESOURCES))
    return (main + running_sidecars).max(largest_init) + extra


@dataclass(frozen=True)
class Row:
    component: str
    kind: str
    name: str
    replicas: int
    scaling: str
    requests: Amount
    limits: Amount

    @property
    def total_requests(self) -> Amount:
        return self.requests * self.replicas

    @property
    def total_limits(self) -> Amount:
        return self.limits * self.replicas


def pod_spec(obj: Obj) -> Obj:
    spec = obj["spec"]
    return spec["jobTemplate"]["spec"]["template"]["spec"] if obj["kind"] == "CronJob" else spec["template"]["spec"]


def rows(objects: Iterable[Obj]) -> list[Row]:
    objects = list(objects)
    autoscalers = {o["spec"]["scaleTargetRef"]["name"]: {**o["spec"], "kind": "hpa"} for o in objects
                   if o.get("kind") == "HorizontalPodAutoscaler"}
    # KEDA's ScaledObject: its HPA exists only on the cluster. Defaults per
    # the CRD (minReplicaCount 0, maxReplicaCount 100).
    autoscalers |= {o["spec"]["scaleTargetRef"]["name"]: {
        "kind": "keda", "minReplicas": o["spec"].get("minReplicaCount", 0),
        "maxReplicas": o["spec"].get("maxReplicaCount", 100)} for o in objects if o.get("kind") == "ScaledObject"}
    found = []
    for obj in objects:
        if obj.get("kind") not in LONG_RUNNING + BATCH:
            continue
        name = obj["metadata"]["name"]
        scaling = ""
        replicas = 1
        if obj["kind"] in ("Deployment", "StatefulSet"):
            hpa = autoscalers.get(name)
            if hpa:
                replicas = hpa.get("minReplicas", 1)
                scaling = f"{hpa['kind']} {replicas}..{hpa['maxReplicas']}"
            else:
                replicas = obj["spec"].get("replicas", 1)
        elif obj["kind"] == "DaemonSet":
            scaling = "per node"
        elif obj["kind"] == "CronJob":
            scaling = "suspended" if obj["spec"].get("suspend") else obj["spec"]["schedule"]
        component = obj["metadata"].get("labels", {}).get("app.kubernetes.io/component", "?")
        spec = pod_spec(obj)
        found.append(Row(component, obj["kind"], name, replicas, scaling, pod_amount(spec, "requests"),
                         pod_amount(spec, "limits")))
    return sorted(found, key=lambda r: (r.kind in BATCH, r.component, r.name))


@dataclass(frozen=True)
class Totals:
    steady: Amount
    batch_peak: Amount
    steady_limits: Amount

    @property
    def peak(self) -> Amount:
        return self.steady + self.batch_peak


def totals(found: Sequence[Row]) -> Totals:
    steady = sum((r.total_requests for r in found if r.kind in LONG_RUNNING), Amount())
    steady_limits = sum((r.total_limits for r in found if r.kind in LONG_RUNNING), Amount())
    one_shot = sum((r.requests for r in found if r.kind == "Job"), Amount())
    largest_cron = Amount()
    for row in found:
        if row.kind == "CronJob":
            largest_cron = largest_cron.max(row.requests)
    return Totals(steady, one_shot.max(largest_cron), steady_limits)


def cpu(value: float) -> str:
    return f"{value * 1000:.0f}m"


def mib(value: float) -> str:
    return f"{value / 2**20:.0f}Mi"


def table(env: str, found: Sequence[Row]) -> str:
    """Columns as wide as their longest cell, so long names keep the numbers aligned."""
    total = totals(found)
    titles = ("component", "kind", "name", "pods", "cpu req", "mem req", "cpu lim", "mem lim")
    cells = [(r.component, r.kind, r.name, str(r.replicas), cpu(r.total_requests.cpu), mib(r.total_requests.memory),
              cpu(r.total_limits.cpu), mib(r.total_limits.memory)) for r in found]
    summary = [
        ("steady (long-running pods)", cpu(total.steady.cpu), mib(total.steady.memory),
         cpu(total.steady_limits.cpu), mib(total.steady_limits.memory)),
        ("+ batch peak (one-shot Jobs or one CronJob)", cpu(total.batch_peak.cpu), mib(total.batch_peak.memory),
         "", ""),
        ("= peak requests", cpu(total.peak.cpu), mib(total.peak.memory), "", ""),
    ]
    # Number columns at least 8 wide: a gap between neighbours, as before.
    widths = [max(len(row[i]) for row in [titles, *cells]) for i in range(len(titles))]
    widths[4:] = [max(width, 8) for width in widths[4:]]
    numbers = widths[4:]
    # The summary label spans the text columns and the pod count.
    label_width = max(sum(widths[:4]) + 3, *(len(line[0]) for line in summary))
    widths[2] += label_width - (sum(widths[:4]) + 3)

    def line(row: Sequence[str], scaling: str = "") -> str:
        text = " ".join(f"{cell:<{width}}" for cell, width in zip(row[:3], widths[:3], strict=True))
        text += " " + " ".join(f"{cell:>{width}}" for cell, width in zip(row[3:], widths[3:], strict=True))
        return f"{text}  {scaling}".rstrip()

    header = line(titles, "scaling")
    rule = "-" * len(header)
    lines = [f"== {env}", header, rule]
    lines += [line(row, r.scaling) for row, r in zip(cells, found, strict=True)]
    lines.append(rule)
    for label, *values in summary:
        lines.append((f"{label:<{label_width}} " + " ".join(
            f"{value:>{width}}" for value, width in zip(values, numbers, strict=True))).rstrip())
    return "\n".join(lines)


def verdict(env: str, found: Sequence[Row]) -> tuple[bool, str] | None:
    """Pass or fail of the env's peak requests against its budget, if it has one."""
    budget = BUDGETS.get(env)
    if budget is None:
        return None
    peak = totals(found).peak
    ok = peak.cpu <= budget.cpu and peak.memory <= budget.memory
    return ok, (f"{env} budget: {'pass' if ok else 'FAIL'}: peak requests {cpu(peak.cpu)} CPU, {mib(peak.memory)} "
                f"(target <= {cpu(budget.cpu)}, {mib(budget.memory)})")


def from_dist(env: str, dist: Path = ROOT / "dist") -> list[Obj]:
    return [doc for path in sorted((dist / env).glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def from_build(envs: list[str]) -> dict[str, list[Obj]]:
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    import main

    return {env: documents for env, (_chart, documents) in main.build(ROOT / "env", envs).items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="footprint.py", description=__doc__.splitlines()[0])
    parser.add_argument("--env", action="append", dest="envs", help="env to show (repeatable; default all)")
    parser.add_argument("--build", action="store_true", help="render the profiles in process instead of dist/")
    args = parser.parse_args(argv)
    envs = args.envs or sorted(p.stem for p in (ROOT / "env").glob("*.yaml"))
    manifests = from_build(envs) if args.build else {env: from_dist(env) for env in envs}
    failed = False
    for env in envs:
        if not manifests[env]:
            print(f"footprint: dist/{env} is empty; run `make synth` or pass --build", file=sys.stderr)
            return 2
        found = rows(manifests[env])
        print(table(env, found))
        checked = verdict(env, found)
        if checked:
            print(checked[1])
            failed = failed or not checked[0]
        print()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
