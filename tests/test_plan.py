"""`make plan` (scripts/plan.py): every class of change on crafted before/after pairs.

The expected classes are literals in the tables below, written from the
Kubernetes API rules (apps ValidateStatefulSetUpdate, batch ValidateJobSpecUpdate,
core PVC and Service update validation), not from the classifier's own tables.
"""

from __future__ import annotations

import copy
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.plan import (
    Ack,
    BadInputError,
    Finding,
    Plan,
    committed_render,
    parse_acks,
    plan,
    render_markdown,
    render_text,
    resolve_base,
)
from tests.support.manifests import ENV_DIR, ROOT, load_dir
from tests.support.render import render_with

NS = "shop"
Obj = dict[str, Any]


def meta(name: str, **labels: str) -> Obj:
    return {"name": name, "namespace": NS, "labels": {"app.kubernetes.io/instance": "shop-prod", **labels}}


def pod(labels: dict[str, str], image: str = "app:1", *, port: int = 8000, probe: str = "/healthz",
        env: list[Obj] | None = None) -> Obj:
    container = {"name": "app", "image": image, "ports": [{"name": "http", "containerPort": port}],
                 "readinessProbe": {"httpGet": {"path": probe, "port": port}},
                 "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "256Mi"}},
                 "env": env or []}
    return {"metadata": {"labels": dict(labels)}, "spec": {"containers": [container]}}


WEB = {"app.kubernetes.io/name": "web", "app.kubernetes.io/component": "web"}
DB = {"app.kubernetes.io/name": "db"}


def deployment(name: str = "web", *, replicas: int = 2, selector: dict[str, str] | None = None,
               labels: dict[str, str] | None = None, **pod_args: Any) -> Obj:
    sel = selector or {"app.kubernetes.io/name": "web"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(name),
            "spec": {"replicas": replicas, "selector": {"matchLabels": sel},
                     "template": pod(labels or WEB, **pod_args)}}


def statefulset(name: str = "db", *, size: str = "10Gi", storage_class: str | None = None, replicas: int = 1,
                claims: bool = True, claim_labels: dict[str, str] | None = None, **spec: Any) -> Obj:
    claim: Obj = {"metadata": {"name": "data", "labels": claim_labels or {"app.kubernetes.io/name": "db"}},
                  "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}}
    if storage_class:
        claim["spec"]["storageClassName"] = storage_class
    body: Obj = {"replicas": replicas, "serviceName": name, "podManagementPolicy": "OrderedReady",
                 "selector": {"matchLabels": dict(DB)}, "template": pod(DB, image="postgres:18", port=5432),
                 "updateStrategy": {"type": "RollingUpdate"}}
    if claims:
        body["volumeClaimTemplates"] = [claim]
    body.update(spec)
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta(name), "spec": body}


def service(name: str = "web", *, selector: dict[str, str] | None = None, cluster_ip: str | None = None) -> Obj:
    spec: Obj = {"selector": selector or {"app.kubernetes.io/name": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    if cluster_ip:
        spec["clusterIP"] = cluster_ip
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta(name), "spec": spec}


def job(name: str = "migrate-1", image: str = "app:1") -> Obj:
    template = pod({"job": "migrate"}, image=image)
    template["spec"]["restartPolicy"] = "Never"
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta(name), "spec": {"template": template}}


def pvc(name: str = "uploads", size: str = "5Gi", storage_class: str | None = None,
        modes: tuple[str, ...] = ("ReadWriteOnce",)) -> Obj:
    spec: Obj = {"accessModes": list(modes), "resources": {"requests": {"storage": size}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta(name), "spec": spec}


def namespace(name: str = NS) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def cronjob(name: str = "db-backup", *, component: str = "backup", schedule: str = "15 2 * * *",
            suspend: bool = False, env: list[Obj] | None = None) -> Obj:
    template = pod({"job": name}, image="backup:1", env=env)
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta(name, **{"app.kubernetes.io/component":
                                                                                    component}),
            "spec": {"schedule": schedule, "suspend": suspend, "jobTemplate": {"spec": {"template": template}}}}


def cnpg_cluster(size: str = "10Gi", destination: str = "s3://backups/db") -> Obj:
    return {"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "metadata": meta("db"),
            "spec": {"instances": 2, "storage": {"size": size},
                     "backup": {"barmanObjectStore": {"destinationPath": destination}}}}


def object_store(destination: str = "s3://backups/db") -> Obj:
    return {"apiVersion": "barmancloud.cnpg.io/v1", "kind": "ObjectStore", "metadata": meta("backups"),
            "spec": {"configuration": {"destinationPath": destination, "endpointURL": "https://s3.example"}}}


def external_secret(*keys: str) -> Obj:
    return {"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret", "metadata": meta("app-secrets"),
            "spec": {"target": {"name": "app-secrets"},
                     "data": [{"secretKey": k, "remoteRef": {"key": "shop", "property": k}} for k in keys]}}


def secret_env(key: str) -> Obj:
    return {"name": key, "valueFrom": {"secretKeyRef": {"name": "app-secrets", "key": key}}}


def configmap(value: str) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("web-config"), "data": {"app.ini": value}}


def edit(obj: Obj, change: Callable[[Obj], None]) -> Obj:
    copied = copy.deepcopy(obj)
    change(copied)
    return copied


def classes(findings: list[Finding]) -> set[tuple[str, str]]:
    return {(f.risk, f.object) for f in findings}


R, D, T, OK = "rejected", "data-at-risk", "downtime", "routine"

# (id, before, after, expected {(class, Kind/name)}) — written by hand.
CASES: list[tuple[str, list[Obj], list[Obj], set[tuple[str, str]]]] = [
    # StatefulSet: only replicas, ordinals, template, updateStrategy, revisionHistoryLimit,
    # persistentVolumeClaimRetentionPolicy and minReadySeconds may change.
    ("sts-grow-volume", [statefulset(size="10Gi")], [statefulset(size="20Gi")],
     {(R, "StatefulSet/db"), (OK, "StatefulSet/db")}),
    ("sts-shrink-volume", [statefulset(size="20Gi")], [statefulset(size="10Gi")],
     {(R, "StatefulSet/db"), (D, "StatefulSet/db"), (OK, "StatefulSet/db")}),
    ("sts-storage-class", [statefulset(storage_class="standard")], [statefulset(storage_class="fast")],
     {(R, "StatefulSet/db"), (OK, "StatefulSet/db")}),
    ("sts-claim-labels", [statefulset()], [statefulset(claim_labels={"app.kubernetes.io/name": "db", "x": "y"})],
     {(R, "StatefulSet/db"), (OK, "StatefulSet/db")}),
    ("sts-claim-added", [statefulset(claims=False)], [statefulset()], {(R, "StatefulSet/db"), (OK, "StatefulSet/db")}),
    ("sts-selector", [statefulset()], [statefulset(selector={"matchLabels": {"app.kubernetes.io/name": "db",
                                                                              "tier": "data"}})],
     {(R, "StatefulSet/db"), (OK, "StatefulSet/db")}),
    ("sts-service-name", [statefulset()], [statefulset(serviceName="db-headless")],
     {(R, "StatefulSet/db"), (OK, "StatefulSet/db")}),
    ("sts-pod-management", [statefulset()], [statefulset(podManagementPolicy="Parallel")],
     {(R, "StatefulSet/db"), (OK, "StatefulSet/db")}),
    ("sts-mutable-fields", [statefulset(replicas=2)],
     [statefulset(replicas=3, updateStrategy={"type": "OnDelete"}, minReadySeconds=10, revisionHistoryLimit=3,
                  persistentVolumeClaimRetentionPolicy={"whenDeleted": "Retain", "whenScaled": "Delete"},
                  ordinals={"start": 0})],
     {(OK, "StatefulSet/db")}),
    ("sts-image", [statefulset()], [edit(statefulset(), lambda o: o["spec"]["template"]["spec"]["containers"][0]
                                         .update(image="postgres:18.1"))], {(OK, "StatefulSet/db")}),
    # Deployment selector, Job template, Service clusterIP.
    ("deploy-selector", [deployment()], [deployment(selector={"app.kubernetes.io/name": "web", "v": "2"},
                                                    labels={**WEB, "v": "2"})],
     {(R, "Deployment/web"), (OK, "Deployment/web")}),
    ("job-template-same-name", [job(image="app:1")], [job(image="app:2")],
     {(R, "Job/migrate-1"), (OK, "Job/migrate-1")}),
    ("job-new-name", [job("migrate-1", image="app:1")], [job("migrate-2", image="app:2")],
     {(OK, "Job/migrate-1"), (OK, "Job/migrate-2")}),
    ("service-headless-to-cluster-ip", [service(cluster_ip="None")], [service()],
     {(R, "Service/web"), (OK, "Service/web")}),
    ("service-cluster-ip-set", [service()], [service(cluster_ip="10.96.0.20")],
     {(R, "Service/web"), (OK, "Service/web")}),
    # PersistentVolumeClaim: grows in place, never shrinks, keeps its class and modes.
    ("pvc-grow", [pvc(size="5Gi")], [pvc(size="8Gi")], {(OK, "PersistentVolumeClaim/uploads")}),
    ("pvc-shrink", [pvc(size="5Gi")], [pvc(size="4Gi")],
     {(R, "PersistentVolumeClaim/uploads"), (D, "PersistentVolumeClaim/uploads"),
      (OK, "PersistentVolumeClaim/uploads")}),
    ("pvc-class", [pvc(storage_class="standard")], [pvc(storage_class="fast")],
     {(R, "PersistentVolumeClaim/uploads"), (OK, "PersistentVolumeClaim/uploads")}),
    ("pvc-access-modes", [pvc()], [pvc(modes=("ReadWriteMany",))],
     {(R, "PersistentVolumeClaim/uploads"), (OK, "PersistentVolumeClaim/uploads")}),
    # Data owners deleted or renamed.
    ("namespace-deleted", [namespace()], [], {(D, "Namespace/shop")}),
    ("namespace-renamed", [namespace("shop")], [namespace("shop-2")],
     {(D, "Namespace/shop"), (OK, "Namespace/shop-2")}),
    ("sts-with-claims-deleted", [statefulset()], [], {(D, "StatefulSet/db")}),
    ("sts-without-claims-deleted", [statefulset(claims=False)], [], {(OK, "StatefulSet/db")}),
    ("pvc-deleted", [pvc()], [], {(D, "PersistentVolumeClaim/uploads")}),
    ("cnpg-cluster-deleted", [cnpg_cluster()], [], {(D, "Cluster/db")}),
    ("cnpg-storage-decrease", [cnpg_cluster(size="20Gi")], [cnpg_cluster(size="10Gi")], {(D, "Cluster/db"),
                                                                                           (OK, "Cluster/db")}),
    ("cnpg-storage-increase", [cnpg_cluster(size="10Gi")], [cnpg_cluster(size="20Gi")], {(OK, "Cluster/db")}),
    ("cnpg-backup-target", [cnpg_cluster()], [cnpg_cluster(destination="s3://other/db")],
     {(D, "Cluster/db"), (OK, "Cluster/db")}),
    ("barman-object-store-bucket", [object_store()], [object_store("s3://elsewhere/db")],
     {(D, "ObjectStore/backups"), (OK, "ObjectStore/backups")}),
    ("backup-cronjob-deleted", [cronjob()], [], {(D, "CronJob/db-backup")}),
    ("backup-cronjob-suspended", [cronjob()], [cronjob(suspend=True)], {(D, "CronJob/db-backup"),
                                                                         (OK, "CronJob/db-backup")}),
    ("backup-cronjob-new-time", [cronjob()], [cronjob(schedule="30 3 * * *")], {(OK, "CronJob/db-backup")}),
    ("other-cronjob-deleted", [cronjob("report", component="reports")], [], {(OK, "CronJob/report")}),
    ("offsite-target-changed", [cronjob("mirror", env=[{"name": "MIRROR_DST_BUCKET", "value": "offsite"}])],
     [cronjob("mirror", env=[{"name": "MIRROR_DST_BUCKET", "value": "offsite-2"}])],
     {(D, "CronJob/mirror"), (OK, "CronJob/mirror")}),
    ("offsite-mirror-removed", [cronjob("mirror", env=[{"name": "MIRROR_DST_BUCKET", "value": "offsite"}])], [],
     {(D, "CronJob/mirror")}),
    ("app-bucket-changed", [deployment(env=[{"name": "MINIO_BUCKET", "value": "media"}])],
     [deployment(env=[{"name": "MINIO_BUCKET", "value": "media-2"}])], {(D, "Deployment/web"), (OK, "Deployment/web")}),
    # Downtime.
    ("replicas-to-zero", [deployment(replicas=2)], [deployment(replicas=0)], {(T, "Deployment/web"),
                                                                              (OK, "Deployment/web")}),
    ("service-selector-cut", [deployment(), service()],
     [deployment(), service(selector={"app.kubernetes.io/name": "website"})],
     {(T, "Service/web"), (OK, "Service/web")}),
    ("pod-labels-cut-service", [deployment(), service(selector={"app.kubernetes.io/component": "web"})],
     [deployment(labels={"app.kubernetes.io/name": "web"}), service(selector={"app.kubernetes.io/component": "web"})],
     {(T, "Service/web"), (OK, "Deployment/web")}),
    ("probe-on-only-replica", [deployment(replicas=1)], [deployment(replicas=1, probe="/ready")],
     {(T, "Deployment/web"), (OK, "Deployment/web")}),
    ("port-on-only-replica", [deployment(replicas=1)], [deployment(replicas=1, port=8080)],
     {(T, "Deployment/web"), (OK, "Deployment/web")}),
    ("probe-with-two-replicas", [deployment(replicas=2)], [deployment(replicas=2, probe="/ready")],
     {(OK, "Deployment/web")}),
    ("secret-key-dropped-but-referenced",
     [external_secret("DB_PASSWORD", "API_KEY"), deployment(env=[secret_env("API_KEY")])],
     [external_secret("DB_PASSWORD"), deployment(env=[secret_env("API_KEY")])],
     {(T, "Deployment/web"), (OK, "ExternalSecret/app-secrets")}),
    ("secret-key-dropped-unreferenced",
     [external_secret("DB_PASSWORD", "API_KEY"), deployment(env=[secret_env("DB_PASSWORD")])],
     [external_secret("DB_PASSWORD"), deployment(env=[secret_env("DB_PASSWORD")])],
     {(OK, "ExternalSecret/app-secrets")}),
    # Routine.
    ("image-tag", [deployment(image="app:1")], [deployment(image="app:2")], {(OK, "Deployment/web")}),
    ("config", [configmap("a=1")], [configmap("a=2")], {(OK, "ConfigMap/web-config")}),
    ("new-object", [], [deployment()], {(OK, "Deployment/web")}),
    ("unchanged", [deployment(), statefulset(), service()], [deployment(), statefulset(), service()], set()),
]


@pytest.mark.parametrize(("before", "after", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_change_is_classified(before: list[Obj], after: list[Obj], expected: set[tuple[str, str]]) -> None:
    assert classes(plan(before, after)) == expected


def test_the_exit_status_is_three_for_anything_above_routine() -> None:
    for case_id, before, after, expected in CASES:
        risky = any(risk != OK for risk, _obj in expected)
        assert Plan(findings=plan(before, after)).exit_code == (3 if risky else 0), case_id


def test_growing_a_statefulset_volume_prints_the_orphan_delete_steps() -> None:
    findings = plan([statefulset(size="10Gi", replicas=2)], [statefulset(size="20Gi", replicas=2)],
                    apply_command="kubectl apply --server-side -f dist/stage/")
    (rejected,) = [f for f in findings if f.risk == R]
    assert [line.split("   #")[0] for line in rejected.remedy] == [
        """kubectl -n shop patch pvc data-db-0 -p '{"spec":{"resources":{"requests":{"storage":"20Gi"}}}}'""",
        """kubectl -n shop patch pvc data-db-1 -p '{"spec":{"resources":{"requests":{"storage":"20Gi"}}}}'""",
        "kubectl -n shop delete statefulset db --cascade=orphan",
        "kubectl apply --server-side -f dist/stage/",
    ]


@pytest.fixture(scope="module")
def stage_render() -> list[Obj]:
    return load_dir(ROOT / "dist" / "stage")


def test_the_readme_case_growing_the_postgres_volume_is_rejected_with_the_real_names(stage_render: list[Obj]) -> None:
    _stack, grown = render_with("stage", {"postgres": {"storage": {"size": "20Gi"}}})
    findings = plan(stage_render, grown, apply_command="kubectl apply --server-side -f dist/stage/")
    above = [f for f in findings if f.risk != OK]
    assert [(f.risk, f.object) for f in above] == [(R, "StatefulSet/postgres")]
    (rejected,) = above
    assert "10Gi -> 20Gi" in rejected.change
    assert [line.split("   #")[0] for line in rejected.remedy] == [
        """kubectl -n vibearena-stage patch pvc data-postgres-0 -p '{"spec":{"resources":{"requests":"""
        """{"storage":"20Gi"}}}}'""",
        "kubectl -n vibearena-stage delete statefulset postgres --cascade=orphan",
        "kubectl apply --server-side -f dist/stage/",
    ]
    text = render_text(Plan(findings=findings, env="stage"))
    assert "kubectl -n vibearena-stage patch pvc data-postgres-0" in text
    markdown = render_markdown(Plan(findings=findings, env="stage"))
    assert "```sh\nkubectl -n vibearena-stage patch pvc data-postgres-0" in markdown


@pytest.mark.parametrize("env", ["dev", "stage", "stage"])
def test_rendering_twice_from_the_real_profiles_plans_no_change(env: str) -> None:
    _stack, first = render_with(env, {})
    _stack, second = render_with(env, {})
    findings = plan(first, second)
    assert findings == []
    result = Plan(findings=findings, env=env)
    assert result.exit_code == 0
    assert "no changes" in render_text(result)


def test_a_real_image_bump_is_routine_and_names_the_tags(stage_render: list[Obj]) -> None:
    _stack, bumped = render_with("stage", {"api": {"image": {"tag": "0.2.0"}}})
    findings = plan(stage_render, bumped)
    assert {f.risk for f in findings} == {OK}
    (api,) = [f for f in findings if f.object == "Deployment/api"]
    assert "image api: ghcr.io/vibearena/api:0.1.0 -> ghcr.io/vibearena/api:0.2.0" in api.change


# --- acknowledgements --------------------------------------------------------------------------

def test_an_acknowledgement_with_a_reason_lets_the_plan_pass() -> None:
    findings = plan([statefulset(size="10Gi")], [statefulset(size="20Gi")])
    assert Plan(findings=findings).exit_code == 3
    acks = parse_acks("StatefulSet/db: growing the volume per the runbook")
    result = Plan(findings=findings, acks=acks)
    assert result.exit_code == 0
    assert "acknowledged (ACK): growing the volume per the runbook" in render_text(result)


def test_an_acknowledgement_covers_only_its_object_and_class() -> None:
    findings = plan([statefulset(size="20Gi"), deployment(replicas=2)],
                    [statefulset(size="10Gi"), deployment(replicas=0)])
    only_rejected = Plan(findings=findings, acks=parse_acks("StatefulSet/db@rejected: shrinking on purpose"))
    assert {(f.risk, f.object) for f in only_rejected.blocking} == {(D, "StatefulSet/db"), (T, "Deployment/web")}
    both = Plan(findings=findings, acks=parse_acks("StatefulSet/db: restore planned; Deployment/web: paused"))
    assert both.exit_code == 0


def test_an_acknowledgement_that_matches_nothing_is_reported() -> None:
    result = Plan(findings=plan([deployment()], [deployment(image="app:9")]),
                  acks=[Ack(object="StatefulSet/postgres", reason="old", source="env/prod.yaml")])
    assert result.exit_code == 0
    assert "acknowledgement matches nothing in this plan: StatefulSet/postgres (env/prod.yaml)" in render_text(result)


@pytest.mark.parametrize(("text", "message"), [
    ("StatefulSet/postgres", "acknowledgement must look like 'Kind/name: reason' (got 'StatefulSet/postgres')"),
    ("postgres: grow", "acknowledgement must look like 'Kind/name: reason' (got 'postgres: grow')"),
    ("StatefulSet/postgres:   ", "StatefulSet/postgres: a reason is required (got '')"),
    ("StatefulSet/postgres@routine: x", "class must be one of rejected, data-at-risk, downtime (got 'routine')"),
])
def test_a_malformed_acknowledgement_is_bad_input(text: str, message: str) -> None:
    with pytest.raises(BadInputError) as err:
        parse_acks(text)
    assert str(err.value) == f"ACK: {message}"


# --- the CLI -------------------------------------------------------------------------------------

PLAN = [sys.executable, str(ROOT / "scripts" / "plan.py")]


def run_plan(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PLAN, *args], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, **(env or {})})


def grown_env_dir(tmp_path: Path, extra: str = "") -> Path:
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    text = (ENV_DIR / "stage.yaml").read_text()
    (env_dir / "stage.yaml").write_text(text + "postgres:\n  storage: {size: 20Gi}\n" + extra)
    return env_dir


@pytest.mark.slow
def test_cli_exit_codes_for_an_unchanged_grown_and_acknowledged_render(tmp_path: Path) -> None:
    unchanged = run_plan("--env", "stage", "--base-dir", str(ROOT / "dist" / "stage"))
    assert unchanged.returncode == 0, unchanged.stderr
    assert "no changes" in unchanged.stdout

    env_dir = grown_env_dir(tmp_path)
    grown = run_plan("--env", "stage", "--env-dir", str(env_dir), "--base-dir", str(ROOT / "dist" / "stage"))
    assert grown.returncode == 3, grown.stdout + grown.stderr
    assert "kubectl -n vibearena-stage patch pvc data-postgres-0" in grown.stdout

    acked = run_plan("--env", "stage", "--env-dir", str(env_dir), "--base-dir", str(ROOT / "dist" / "stage"),
                     "--ack", "StatefulSet/postgres: growing the volume per the runbook", "--format", "markdown")
    assert acked.returncode == 0, acked.stdout + acked.stderr
    assert "| growing the volume per the runbook |" in acked.stdout


@pytest.mark.slow
def test_cli_reads_acknowledgements_from_the_profile(tmp_path: Path) -> None:
    env_dir = grown_env_dir(tmp_path, "plan:\n  acknowledge:\n    - {object: StatefulSet/postgres, risk: rejected,"
                                      " reason: grow per runbook}\n")
    result = run_plan("--env", "stage", "--env-dir", str(env_dir), "--base-dir", str(ROOT / "dist" / "stage"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "acknowledged (env/stage.yaml): grow per runbook" in result.stdout


@pytest.mark.parametrize(("ack", "key", "message"), [
    ({"object": "postgres", "risk": "rejected", "reason": "x"}, "plan.acknowledge[0].object",
     "must be Kind/name, e.g. StatefulSet/postgres (got 'postgres')"),
    ({"object": "StatefulSet/postgres", "risk": "routine", "reason": "x"}, "plan.acknowledge[0].risk",
     "must be one of 'rejected', 'data-at-risk', 'downtime' (got 'routine')"),
    ({"object": "StatefulSet/postgres", "risk": "rejected", "reason": "  "}, "plan.acknowledge[0].reason",
     "must not be empty"),
    ({"object": "StatefulSet/postgres", "risk": "rejected"}, "plan.acknowledge[0].reason",
     "is required: a string (missing)"),
    ({"object": "StatefulSet/postgres", "risk": "rejected", "reason": "x", "until": "friday"},
     "plan.acknowledge[0].until", "unknown key (allowed: object, reason, risk)"),
    ({"object": 7, "risk": "rejected", "reason": "x"}, "plan.acknowledge[0].object", "put it in quotes"),
])
def test_a_bad_profile_acknowledgement_is_one_line_and_exit_two(tmp_path: Path, ack: Obj, key: str,
                                                                message: str) -> None:
    from charts.config import ProfileError, load_profile

    env_dir = tmp_path / "env"
    env_dir.mkdir()
    data = yaml.safe_load((ENV_DIR / "prod.yaml").read_text())
    data["plan"] = {"acknowledge": [ack]}
    (env_dir / "prod.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError) as err:
        load_profile(env_dir, "prod")
    assert err.value.key == key
    assert message in str(err.value)
    result = run_plan("--env", "prod", "--env-dir", str(env_dir), "--base-dir", str(ROOT / "dist" / "prod"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and f"prod.yaml: {key}: " in result.stderr


def test_a_bad_command_line_acknowledgement_exits_two() -> None:
    result = run_plan("--env", "prod", "--base-dir", str(ROOT / "dist" / "prod"), "--ack", "StatefulSet/postgres:")
    assert result.returncode == 2
    assert result.stderr == "error: ACK: StatefulSet/postgres: a reason is required (got '')\n"


def test_acknowledgements_do_not_rename_the_release_jobs() -> None:
    # Job names hash the profile; an acknowledgement changes nothing rendered.
    _s, plain = render_with("prod", {})
    _s, acked = render_with("prod", {"plan": {"acknowledge": [
        {"object": "StatefulSet/postgres", "risk": "rejected", "reason": "grow"}]}})
    assert plan(plain, acked) == []


# --- the git base ----------------------------------------------------------------------------

def make_repo(path: Path, files: dict[str, str]) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=path,
                       check=True, capture_output=True)
    path.mkdir(parents=True, exist_ok=True)
    git("init", "-q", "-b", "main")
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git("add", "-A")
    git("commit", "-q", "-m", "base")


def test_the_base_ref_falls_back_with_a_note_and_reads_the_committed_render(tmp_path: Path) -> None:
    make_repo(tmp_path, {"dist/prod/02-database.yaml": yaml.safe_dump_all([statefulset(), pvc()])})
    assert resolve_base("main", repo=tmp_path) == ("main", None)
    ref, note = resolve_base("origin/main", repo=tmp_path)
    assert (ref, note) == ("main", "note: origin/main does not exist here; comparing with main")
    objects = committed_render(ref, "prod", repo=tmp_path)
    assert objects is not None
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [("StatefulSet", "db"),
                                                                       ("PersistentVolumeClaim", "uploads")]
    assert committed_render(ref, "preview-42", repo=tmp_path) is None


# --- a live cluster through kubectl ------------------------------------------------------------

FAKE_KUBECTL = """#!/bin/sh
# Stands in for kubectl: answers `--context C get <kind>[.<group>] -o yaml [-n ns]`
# from a recorded List split per resource, and logs each call.
echo "$*" >> {log}
case "$4" in
  *.postgresql.cnpg.io) echo "error: the server doesn't have a resource type \"$4\"" >&2; exit 1 ;;
esac
if [ -f "{answers}/$4" ]; then cat "{answers}/$4"; else printf 'apiVersion: v1\nitems: []\nkind: List\n'; fi
"""


def as_live(obj: Obj, number: int) -> Obj:
    """What `kubectl get -o yaml` shows for an applied manifest: server metadata, defaults, status."""
    live = copy.deepcopy(obj)
    live["metadata"].update(uid=f"00000000-0000-0000-0000-{number:012d}", resourceVersion=str(1000 + number),
                            generation=1, creationTimestamp="2026-11-01T10:00:00Z",
                            managedFields=[{"manager": "kubectl", "operation": "Apply"}])
    spec = live.get("spec", {})
    if live["kind"] == "Service" and "clusterIP" not in spec:
        spec.update(clusterIP=f"10.96.0.{number % 250}", clusterIPs=[f"10.96.0.{number % 250}"], type="ClusterIP",
                    sessionAffinity="None", ipFamilies=["IPv4"], internalTrafficPolicy="Cluster")
    template = spec.get("jobTemplate", {}).get("spec", {}).get("template") or spec.get("template")
    if template:
        template["spec"].update(dnsPolicy="ClusterFirst", schedulerName="default-scheduler",
                                terminationGracePeriodSeconds=template["spec"].get("terminationGracePeriodSeconds",
                                                                                   30))
        for container in template["spec"]["containers"]:
            container.setdefault("imagePullPolicy", "IfNotPresent")
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
    if live["kind"] == "StatefulSet":
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"})
        for claim in spec.get("volumeClaimTemplates", []):
            claim.update(apiVersion="v1", kind="PersistentVolumeClaim", status={"phase": "Pending"})
            claim["spec"]["volumeMode"] = "Filesystem"
        live["status"] = {"replicas": 1, "readyReplicas": 1, "currentRevision": "rev-1", "observedGeneration": 1}
    if live["kind"] == "Deployment":
        spec.setdefault("progressDeadlineSeconds", 600)
        live["status"] = {"availableReplicas": spec.get("replicas", 1), "observedGeneration": 1}
    return live


def live_fixture(objects: list[Obj]) -> Obj:
    items = [as_live(o, i) for i, o in enumerate(objects)]
    instance = {"app.kubernetes.io/instance": "vibearena-stage", "app.kubernetes.io/name": "postgres",
                "app.kubernetes.io/component": "database"}
    # A claim the postgres StatefulSet made, and a Job a CronJob made: not in the render, not pruned.
    items.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                  "metadata": {"name": "data-postgres-0", "namespace": "vibearena-stage", "labels": instance},
                  "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}},
                           "storageClassName": "standard", "volumeMode": "Filesystem", "volumeName": "pvc-1"},
                  "status": {"phase": "Bound", "capacity": {"storage": "10Gi"}}})
    items.append({"apiVersion": "batch/v1", "kind": "Job",
                  "metadata": {"name": "postgres-backup-29380000", "namespace": "vibearena-stage",
                               "labels": {**instance, "app.kubernetes.io/component": "backup"},
                               "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob",
                                                    "name": "postgres-backup", "uid": "x"}]},
                  "spec": {"template": {"spec": {"containers": [{"name": "backup", "image": "backup:0.1.0"}]}}}})
    return {"apiVersion": "v1", "kind": "List", "items": items}


def fake_kubectl(tmp_path: Path, fixture: Obj) -> tuple[dict[str, str], Path]:
    bin_dir, answers, log = tmp_path / "bin", tmp_path / "answers", tmp_path / "kubectl.log"
    bin_dir.mkdir()
    answers.mkdir()
    by_resource: dict[str, list[Obj]] = {}
    for item in fixture["items"]:
        group = item["apiVersion"].split("/")[0] if "/" in item["apiVersion"] else ""
        by_resource.setdefault(item["kind"].lower() + (f".{group}" if group else ""), []).append(item)
    for resource, items in by_resource.items():
        (answers / resource).write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items,
                                                        "metadata": {"resourceVersion": ""}}))
    script = bin_dir / "kubectl"
    script.write_text(FAKE_KUBECTL.format(log=log, answers=answers))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, log


@pytest.mark.slow
def test_live_objects_with_server_fields_plan_no_change(tmp_path: Path, stage_render: list[Obj]) -> None:
    path_env, log = fake_kubectl(tmp_path, live_fixture(stage_render))
    result = run_plan("--env", "stage", "--context", "prod-admin", env=path_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no changes" in result.stdout
    calls = log.read_text().splitlines()
    assert "--context prod-admin get statefulset.apps -o yaml -n vibearena-stage" in calls
    assert "--context prod-admin get persistentvolumeclaim -o yaml -n vibearena-stage" in calls
    assert "--context prod-admin get namespace -o yaml" in calls


@pytest.mark.slow
def test_live_objects_show_a_rejected_volume_change_and_a_pruned_claim(tmp_path: Path,
                                                                      stage_render: list[Obj]) -> None:
    fixture = live_fixture(stage_render)
    fixture["items"].append(as_live(pvc("uploads") | {"metadata": {
        "name": "uploads", "namespace": "vibearena-stage",
        "labels": {"app.kubernetes.io/instance": "vibearena-stage"}}}, 900))
    path_env, _log = fake_kubectl(tmp_path, fixture)
    result = run_plan("--env", "stage", "--env-dir", str(grown_env_dir(tmp_path)), "--context", "prod-admin",
                      env=path_env)
    assert result.returncode == 3, result.stdout + result.stderr
    above = [line for line in result.stdout.splitlines() if line.startswith("  ") and ": " in line
             and not line.startswith("    ")]
    assert any(line.startswith("  StatefulSet/postgres: spec.volumeClaimTemplates[data] storage 10Gi -> 20Gi")
               for line in above), result.stdout
    assert any(line.startswith("  PersistentVolumeClaim/uploads: deleted") for line in above), result.stdout
    assert "data-postgres-0: deleted" not in result.stdout
    assert "Job/postgres-backup-29380000" not in result.stdout


def test_the_makefile_passes_env_base_context_ack_and_format() -> None:
    result = subprocess.run(["make", "-n", "plan", "ENV=stage", "BASE=origin/release", "CONTEXT=ctx",
                             "ACK=StatefulSet/postgres: grow", "FORMAT=markdown"],
                            capture_output=True, text=True, cwd=ROOT, check=True)
    line = [ln for ln in result.stdout.splitlines() if "scripts/plan.py" in ln][-1]
    assert "--env stage" in line and "--base origin/release" in line and "--context ctx" in line
    assert "--ack 'StatefulSet/postgres: grow'" in line and "--format markdown" in line
    dev = subprocess.run(["make", "-n", "plan", "ENV=dev"], capture_output=True, text=True, cwd=ROOT, check=True)
    # dev's CONTEXT default (the kind cluster) must not switch the plan to a live cluster.
    assert "--context" not in [ln for ln in dev.stdout.splitlines() if "scripts/plan.py" in ln][-1]


def test_json_of_findings_is_stable() -> None:
    # Findings are plain data a workflow can post; same input, same order.
    first = plan([deployment(), statefulset(size="10Gi")], [deployment(replicas=0), statefulset(size="20Gi")])
    second = plan([statefulset(size="10Gi"), deployment()], [statefulset(size="20Gi"), deployment(replicas=0)])
    assert json.dumps([f.__dict__ for f in first]) == json.dumps([f.__dict__ for f in second])


def test_routine_changes_are_summarised_per_object() -> None:
    before = [deployment(image="app:1"), configmap("a=1")]
    bigger = edit(deployment(image="app:2"), lambda o: o["spec"]["template"]["spec"]["containers"][0]["resources"]
                  ["requests"].update(cpu="500m"))
    findings = {f.object: f.change for f in plan(before, [bigger, configmap("a=2")])}
    assert findings == {"Deployment/web": "image app: app:1 -> app:2; resources app: requests.cpu 100m -> 500m",
                        "ConfigMap/web-config": "data.app.ini changed"}


LIVE_FIXTURE = ROOT / "tests" / "fixtures" / "plan" / "kubectl-get-statefulset.yaml"


def fixture_get(path: Path) -> Callable[[str, str, str, str | None], list[Obj]]:
    """kubectl_get's stand-in: the items of a `kubectl get -o yaml` List, by kind."""
    listed = yaml.safe_load(path.read_text())
    assert listed["kind"] == "List"

    def get(_context: str, group: str, kind: str, namespace: str | None) -> list[Obj]:
        return [copy.deepcopy(i) for i in listed["items"] if i["kind"] == kind
                and (i["apiVersion"].split("/")[0] if "/" in i["apiVersion"] else "") == group
                and (namespace is None or i["metadata"].get("namespace") == namespace)]
    return get


def test_live_objects_in_kubectl_shape_equal_the_render_they_came_from() -> None:
    from scripts.plan import live_objects

    desired = [statefulset(), service()]
    live = live_objects("ctx", NS, "shop-prod", desired, get=fixture_get(LIVE_FIXTURE))
    # The claim the StatefulSet made is not a deletion; defaults and status are not changes.
    assert sorted(f"{o['kind']}/{o['metadata']['name']}" for o in live) == ["Service/web", "StatefulSet/db"]
    assert plan(live, desired) == []


def test_live_objects_in_kubectl_shape_show_the_grown_volume_as_rejected() -> None:
    from scripts.plan import live_objects

    grown = [statefulset(size="20Gi"), service(cluster_ip="None")]
    live = live_objects("ctx", NS, "shop-prod", grown, get=fixture_get(LIVE_FIXTURE))
    above = {(f.risk, f.object): f for f in plan(live, grown) if f.risk != OK}
    assert set(above) == {(R, "StatefulSet/db"), (R, "Service/web")}
    assert above[(R, "StatefulSet/db")].remedy[0] == (
        """kubectl -n shop patch pvc data-db-0 -p '{"spec":{"resources":{"requests":{"storage":"20Gi"}}}}'""")
    assert "10.96.141.7 -> None" in above[(R, "Service/web")].change
