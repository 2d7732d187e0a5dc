"""The dev stack fits a laptop: requested CPU and memory stay within budget.

The budget is for the dev profile's namespace, monitoring included, at its
peak (every long-running pod plus the batch pods that can run beside them).
The ingress controller and cert-manager that kind/up.sh installs live in
their own namespaces and are not part of it.
"""

from __future__ import annotations

import pytest

from bench.footprint import BUDGETS, Amount, Row, pod_amount, rows, table, totals, verdict

BUDGET = Amount(cpu=1.5, memory=2 * 2**30)


def test_dev_peak_requests_fit_the_budget(manifests) -> None:
    found = rows(manifests["dev"])
    peak = totals(found).peak
    report = table("dev", found)
    assert peak.cpu <= BUDGET.cpu, f"dev requests {peak.cpu:.3f} CPU > {BUDGET.cpu} at peak:\n{report}"
    assert peak.memory <= BUDGET.memory, (
        f"dev requests {peak.memory / 2**20:.0f}Mi > {BUDGET.memory / 2**20:.0f}Mi at peak:\n{report}")


def test_dev_budget_counts_every_pod_including_monitoring(manifests, stacks) -> None:
    found = rows(manifests["dev"])
    pod_kinds = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
    rendered = {(o["kind"], o["metadata"]["name"]) for o in manifests["dev"] if o["kind"] in pod_kinds}
    assert {(r.kind, r.name) for r in found} == rendered, "every pod template must be counted"
    if stacks["dev"].profile.monitoring.mode == "bundled":
        assert any(r.component == "monitoring" and r.kind in ("Deployment", "StatefulSet") for r in found), \
            "monitoring.mode is bundled but no monitoring workload is counted"


def container(cpu: str, memory: str, **extra: object) -> dict:
    return {"resources": {"requests": {"cpu": cpu, "memory": memory}}, **extra}


def test_init_containers_count_by_the_max_rule() -> None:
    # Containers run together (sum); init containers run one at a time before
    # them (max); a sidecar (restartPolicy Always) runs beside everything after it.
    spec = {
        "initContainers": [
            container("500m", "64Mi"),
            container("50m", "32Mi", restartPolicy="Always"),
            container("100m", "600Mi"),
        ],
        "containers": [container("100m", "128Mi"), container("200m", "256Mi")],
    }
    assert pod_amount(spec) == Amount(cpu=0.5, memory=(600 + 32) * 2**20)
    # Without init containers the pod reserves the sum of its containers.
    plain = pod_amount({"containers": spec["containers"]})
    assert (plain.cpu, plain.memory) == (pytest.approx(0.3), 384 * 2**20)


def test_missing_requests_count_as_zero_and_overhead_adds() -> None:
    spec = {"containers": [{"name": "bare"}], "overhead": {"cpu": "250m", "memory": "120Mi"}}
    assert pod_amount(spec) == Amount(cpu=0.25, memory=120 * 2**20)


def test_replicas_hpa_minimum_and_batch_peak() -> None:
    def workload(kind: str, name: str, cpu: str, **spec: object) -> dict:
        pod = {"spec": {"containers": [container(cpu, "1Mi")]}}
        body = {"jobTemplate": {"spec": {"template": pod}}} if kind == "CronJob" else {"template": pod}
        return {"kind": kind, "metadata": {"name": name, "labels": {"app.kubernetes.io/component": name}},
                "spec": {**body, **spec}}

    objects = [
        workload("Deployment", "api", "100m", replicas=5),
        {"kind": "HorizontalPodAutoscaler", "metadata": {"name": "api"},
         "spec": {"scaleTargetRef": {"name": "api"}, "minReplicas": 3, "maxReplicas": 10}},
        workload("StatefulSet", "postgres", "200m", replicas=1),
        workload("Job", "migrate", "100m"),
        workload("Job", "ensure-bucket", "50m"),
        workload("CronJob", "backup", "300m", schedule="15 2 * * *"),
    ]
    found = rows(objects)
    api = next(r for r in found if r.name == "api")
    assert (api.replicas, api.scaling) == (3, "hpa 3..10"), "the HPA owns the count, not spec.replicas"
    total = totals(found)
    assert total.steady.cpu == pytest.approx(0.5)
    # One-shot Jobs run together (150m); the CronJob alone is larger.
    assert total.batch_peak.cpu == pytest.approx(0.3)
    assert total.peak.cpu == pytest.approx(0.8)
    assert isinstance(found[0], Row) and found[-1].kind in ("Job", "CronJob"), "batch rows come last"


def test_keda_scaled_workers_count_at_their_minimum():
    pod = {"spec": {"containers": [{"name": "c", "resources": {
        "requests": {"cpu": "200m", "memory": "1Mi"}, "limits": {"cpu": "1", "memory": "2Mi"}}}]}}
    objects = [
        {"kind": "Deployment", "metadata": {"name": "worker-default", "labels": {}}, "spec": {"template": pod}},
        {"kind": "ScaledObject", "metadata": {"name": "worker-default"},
         "spec": {"scaleTargetRef": {"name": "worker-default"}, "minReplicaCount": 2, "maxReplicaCount": 10}},
        {"kind": "Deployment", "metadata": {"name": "worker-idle", "labels": {}}, "spec": {"template": pod}},
        # KEDA's defaults (CRD): minReplicaCount 0, maxReplicaCount 100.
        {"kind": "ScaledObject", "metadata": {"name": "worker-idle"},
         "spec": {"scaleTargetRef": {"name": "worker-idle"}}},
    ]
    found = {r.name: r for r in rows(objects)}
    assert (found["worker-default"].replicas, found["worker-default"].scaling) == (2, "keda 2..10")
    assert (found["worker-idle"].replicas, found["worker-idle"].scaling) == (0, "keda 0..100")
    assert totals(list(found.values())).steady.cpu == pytest.approx(0.4)


def test_columns_stay_aligned_with_long_names() -> None:
    long_name = "ensure-bucket-0-1-0-a2ac02-and-a-much-longer-suffix"
    found = [
        Row("object-store-with-a-long-name", "Job", long_name, 1, "", Amount(0.1, 128 * 2**20),
            Amount(1.0, 512 * 2**20)),
        Row("web", "Deployment", "api", 3, "hpa 3..10", Amount(0.5, 512 * 2**20), Amount(2.0, 1024 * 2**20)),
    ]
    lines = table("dev", found).splitlines()
    header = lines[1]
    ends = {title: header.index(title) + len(title) for title in ("pods", "cpu req", "mem req", "cpu lim", "mem lim")}
    job = next(line for line in lines if long_name in line)
    api = next(line for line in lines if line.startswith("web "))
    # Right-aligned numbers end where their column title ends, on every line.
    for line, expected in ((job, ("1", "100m", "128Mi", "1000m", "512Mi")),
                           (api, ("3", "1500m", "1536Mi", "6000m", "3072Mi"))):
        for (title, end), value in zip(ends.items(), expected, strict=True):
            assert line[:end].endswith(" " + value), (title, line)
    peak = next(line for line in lines if line.startswith("= peak requests"))
    # Steady api 1500m + the Job's 100m as the batch peak.
    assert peak[:ends["cpu req"]].endswith(" 1600m") and peak[:ends["mem req"]].endswith(" 1664Mi"), peak
    assert long_name in job and job.index(long_name) == header.index("name")


def test_footprint_says_pass_or_fail_against_the_dev_budget(manifests) -> None:
    assert BUDGETS["dev"] == BUDGET, "the printed target and this test's budget must agree"
    passed, line = verdict("dev", rows(manifests["dev"]))
    assert passed and line.startswith("dev budget: pass: "), line
    heavy = Row("web", "Deployment", "api", 4, "", Amount(0.5, 512 * 2**20), Amount(1.0, 512 * 2**20))
    passed, line = verdict("dev", [heavy])
    assert not passed and line == "dev budget: FAIL: peak requests 2000m CPU, 2048Mi (target <= 1500m, 2048Mi)"
    assert verdict("stage", [heavy]) is None
