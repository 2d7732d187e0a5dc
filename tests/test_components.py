"""Component tests: a few exact assertions on what each component must get right."""

from __future__ import annotations

import json
import re

import pytest

from tests.support.manifests import ENVS, ROOT, of_kind, one, pod_templates
from tests.support.render import render_with


def container(obj: dict, name: str) -> dict:
    spec = obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]
    return next(c for c in spec["template"]["spec"]["containers"] if c["name"] == name)


def env_of(c: dict) -> dict[str, dict]:
    return {var["name"]: var for var in c.get("env", [])}


# app/config/devreload.py's command line (dev: workers and beat restart on change).
DEV_RELOADER = ["python", "-m", "config.devreload", "--"]


def unwrapped(command: list[str], profile) -> list[str]:
    """The process command; in dev it must run under the reloader, elsewhere not."""
    if profile.api.dev_reload:
        assert command[:4] == DEV_RELOADER, command
        return command[4:]
    assert "config.devreload" not in command
    return command


@pytest.mark.parametrize("env", ENVS)
def test_api_rollout_and_probes(manifests, env):
    api = one(manifests[env], "Deployment", "api")
    assert api["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    c = container(api, "api")
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    drain = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = api["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    # Unset (the dev server), gunicorn.conf.py's own default applies.
    default = re.search(r'_int\("GUNICORN_GRACEFUL_TIMEOUT", (\d+)\)', (ROOT / "app" / "gunicorn.conf.py").read_text())
    assert default
    graceful = int(env_of(c).get("GUNICORN_GRACEFUL_TIMEOUT", {}).get("value", default.group(1)))
    assert drain > 0 and grace > drain + graceful, f"{env}: drain {drain} + gunicorn {graceful} >= grace {grace}"


def test_prod_api_scales_and_has_a_disruption_budget(manifests):
    objects = manifests["prod"]
    (hpa,) = of_kind(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"}
    assert hpa["spec"]["minReplicas"] >= 2
    assert "replicas" not in one(objects, "Deployment", "api")["spec"], "the HPA owns the replica count"
    pdbs = {p["metadata"]["name"]: p for p in of_kind(objects, "PodDisruptionBudget")}
    assert pdbs["api"]["spec"]["selector"]["matchLabels"] == \
        one(objects, "Deployment", "api")["spec"]["selector"]["matchLabels"]


def test_prod_worker_has_a_disruption_budget():
    _stack, objects = render_with("prod", {"worker": {"groups": [{"name": "default", "replicas": 2}]}})
    pdbs = {p["metadata"]["name"]: p for p in of_kind(objects, "PodDisruptionBudget")}
    worker = one(objects, "Deployment", "worker-default")
    assert pdbs["worker-default"]["spec"]["selector"]["matchLabels"] == worker["spec"]["selector"]["matchLabels"]
    assert pdbs["worker-default"]["spec"]["maxUnavailable"] == 1, "one worker may go at a time, never none"


@pytest.mark.parametrize("env", ENVS)
def test_no_budget_blocks_a_node_drain(manifests, env):
    """A PDB that allows no disruption of any pod would stall drains and upgrades."""
    workloads = {o["metadata"]["name"]: o for o in manifests[env] if o["kind"] in ("Deployment", "StatefulSet")}
    for pdb in of_kind(manifests[env], "PodDisruptionBudget"):
        name = pdb["metadata"]["name"]
        replicas = workloads[name]["spec"].get("replicas")
        if replicas is None:  # an HPA (or KEDA's ScaledObject) owns it: use its minimum
            minimums = [h["spec"]["minReplicas"] for h in of_kind(manifests[env], "HorizontalPodAutoscaler")
                        if h["spec"]["scaleTargetRef"]["name"] == name]
            minimums += [s["spec"]["minReplicaCount"] for s in of_kind(manifests[env], "ScaledObject")
                         if s["spec"]["scaleTargetRef"]["name"] == name]
            (replicas,) = minimums
        spec = pdb["spec"]
        allowed = spec["maxUnavailable"] if "maxUnavailable" in spec else replicas - spec["minAvailable"]
        assert allowed >= 1 and replicas >= 2, f"{env}: PDB {name} allows {allowed} of {replicas} to go"


@pytest.mark.parametrize("env", ENVS)
def test_beat_never_runs_twice(manifests, stacks, env):
    assert not [d for d in of_kind(manifests[env], "Deployment") if d["metadata"]["name"] == "beat"]
    beat = one(manifests[env], "StatefulSet", "beat")
    assert beat["spec"]["replicas"] == 1, "one pod name, beat-0: a replacement waits for the old pod to go"
    assert beat["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    # Parallel: a crash-looping beat-0 from a bad release still gets the fixed template.
    assert beat["spec"]["podManagementPolicy"] == "Parallel"
    assert not [h for h in of_kind(manifests[env], "HorizontalPodAutoscaler")
                if h["spec"]["scaleTargetRef"]["name"] == "beat"], "nothing may scale beat"
    c = container(beat, "beat")
    assert unwrapped(c["command"], stacks[env].profile)[:4] == ["celery", "--app=config", "--quiet", "beat"]
    # Liveness reads the per-tick heartbeat beat is told to write, never the
    # schedule store (its mtime is a dbm detail; tests/app runs the real beat).
    variables = env_of(c)
    heartbeat = variables["CELERY_BEAT_LIVENESS_FILE"]["value"]
    loop = float(variables["CELERY_BEAT_MAX_LOOP_INTERVAL"]["value"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = c[probe]["exec"]["command"]
        assert command[:3] == ["python", "-m", "config.liveness"]
        assert f"--file={heartbeat}" in command and "celerybeat-schedule" not in " ".join(command)
        assert f"--max-age={3 * int(loop)}" in command, "three loop intervals: Celery's default 300 s is not used"
    assert heartbeat.startswith("/tmp/"), "the only writable path of the image"


@pytest.mark.parametrize("env", ENVS)
def test_worker_shutdown_and_liveness(manifests, stacks, env):
    for group in stacks[env].profile.worker.groups:
        worker = one(manifests[env], "Deployment", f"worker-{group.name}")
        c = container(worker, "worker")
        assert f"--queues={','.join(group.queues)}" in c["command"]
        assert f"--concurrency={group.concurrency}" in c["command"]
        assert "--prefetch-multiplier=1" in c["command"]
        assert c["livenessProbe"]["exec"]["command"] == ["python", "-m", "config.liveness"]
        assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == group.termination_grace_seconds


def test_one_deployment_per_worker_group():
    _stack, objects = render_with("stage", {"worker": {"groups": [
        {"name": "default", "queues": ["celery"]},
        {"name": "reports", "queues": ["reports", "exports"], "concurrency": 1}]}})
    names = sorted(d["metadata"]["name"] for d in of_kind(objects, "Deployment") if d["metadata"]["name"]
                   .startswith("worker-"))
    assert names == ["worker-default", "worker-reports"]
    assert "--queues=reports,exports" in container(one(objects, "Deployment", "worker-reports"), "worker")["command"]


@pytest.mark.parametrize("env", ENVS)
def test_migration_job_per_release_and_argo_hook(manifests, stacks, env):
    (job,) = [j for j in of_kind(manifests[env], "Job") if j["metadata"]["name"].startswith("migrate-")]
    tag = stacks[env].profile.api.image.tag
    assert re.fullmatch(rf"migrate-{tag.replace('.', '-')}-[0-9a-f]{{6}}", job["metadata"]["name"])
    annotations = job["metadata"]["annotations"]
    assert annotations["argocd.argoproj.io/hook"] == "Sync"
    assert annotations["argocd.argoproj.io/hook-delete-policy"] == "BeforeHookCreation"
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    assert container(job, "migrate")["command"] == ["python", "manage.py", "migrate", "--noinput"]


def job_names(objects: list[dict]) -> set[str]:
    return {j["metadata"]["name"] for j in of_kind(objects, "Job")}


def test_one_shot_jobs_get_a_new_name_whenever_their_template_can_change(manifests):
    """A Job's pod template is immutable: `kubectl apply` of a changed template
    under the same name fails, so a new tag or any setting renames the Jobs."""
    before = job_names(manifests["prod"])
    # The in-cluster Postgres adds its roles Job (postgres-roles-<tag>-<hash>).
    in_cluster = any(s["metadata"]["name"] == "postgres" for s in of_kind(manifests["prod"], "StatefulSet"))
    expected = {"migrate", "ensure"} | ({"postgres"} if in_cluster else set())
    assert {n.split("-")[0] for n in before} == expected
    _stack, release = render_with("prod", {"api": {"image": {"tag": "0.2.0"}}})
    assert any(n.startswith("migrate-0-2-0-") for n in job_names(release))
    for change in ({"edge": {"body_size": "20m"}}, {"object_store": {"bucket": "krvibe-files"}},
                   {"api": {"resources": {"cpu": "300m", "memory": "512Mi", "cpu_limit": "2", "memory_limit": "1Gi"}}}):
        _stack, objects = render_with("prod", change)
        assert not job_names(objects) & before, f"{change} keeps a Job name with a changed template"
    _stack, same = render_with("prod", {})
    assert job_names(same) == before, "an unchanged profile must keep the names (no needless re-runs)"


@pytest.mark.parametrize("env", ENVS)
def test_sync_waves_order_config_data_migration_app(manifests, env):
    waves = {}
    for obj in manifests[env]:
        waves.setdefault(obj["metadata"]["labels"]["app.kubernetes.io/component"], set()).add(
            int(obj["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]))
    assert len(waves["config"]) == 1, "the namespace, policies and config go first, together"
    assert max(waves["config"]) < min(waves["database"]) == min(waves["cache"])
    assert max(waves["database"]) < min(waves["migration"]) < min(waves["web"]) == min(waves["worker"])


@pytest.mark.parametrize("env", ENVS)
def test_app_urls_reference_passwords_defined_before_them(manifests, env):
    """$(VAR) expands only variables defined earlier in the list."""
    for pod in pod_templates(manifests[env]):
        for c in pod.containers():
            seen: set[str] = set()
            for var in c.get("env", []):
                for referenced in ("POSTGRES_PASSWORD", "REDIS_PASSWORD"):
                    if f"$({referenced})" in var.get("value", ""):
                        assert referenced in seen, f"{pod.where}: {var['name']} uses $({referenced}) too early"
                seen.add(var["name"])


@pytest.mark.parametrize("env", ENVS)
def test_cronjob_hygiene(manifests, stacks, env):
    cronjobs = of_kind(manifests[env], "CronJob")
    assert cronjobs, f"{env}: no CronJobs"
    for cronjob in cronjobs:
        spec, name = cronjob["spec"], cronjob["metadata"]["name"]
        assert spec["concurrencyPolicy"] == "Forbid", name
        assert spec["startingDeadlineSeconds"] > 0, name
        assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1, name
        job = spec["jobTemplate"]["spec"]
        assert job["activeDeadlineSeconds"] > 0 and job["backoffLimit"] <= 3, name
        assert job["ttlSecondsAfterFinished"] > 0, name
        assert job["template"]["spec"]["restartPolicy"] == "Never", name
        if not spec.get("suspend"):
            assert spec["timeZone"] == stacks[env].profile.backups.time_zone, name


@pytest.mark.parametrize("env", ENVS)
def test_data_services_mount_volumes_per_profile(manifests, stacks, env):
    profile = stacks[env].profile
    in_cluster_postgres = profile.postgres.mode == "statefulset"
    for name, storage, persistent in (*((("postgres", profile.postgres.storage, True),) if in_cluster_postgres else ()),
                                      ("redis", profile.redis.storage, profile.redis.persistence),
                                      ("minio", profile.object_store.storage, True)):
        statefulset = one(manifests[env], "StatefulSet", name)
        claims = statefulset["spec"].get("volumeClaimTemplates", [])
        if persistent:
            (claim,) = claims
            assert claim["spec"]["resources"]["requests"]["storage"] == storage.size, name
            assert claim["spec"].get("storageClassName") == storage.class_name, name
            mounts = {m["name"] for c in statefulset["spec"]["template"]["spec"]["containers"]
                      for m in c.get("volumeMounts", [])}
            assert claim["metadata"]["name"] in mounts, f"{name}: the PVC is not mounted"
        else:
            assert not claims, f"{name}: PVC without persistence"


def test_postgres_is_tuned_from_its_memory_limit(manifests):
    # stage runs the StatefulSet with the default 1Gi limit (prod runs CNPG:
    # tests/test_data_modes.py checks the same values there).
    args = container(one(manifests["stage"], "StatefulSet", "postgres"), "postgres")["args"]
    settings = dict(arg.split("=", 1) for arg in args if arg != "-c")
    assert settings["shared_buffers"] == "256MB"  # 25 % of the default 1Gi limit
    assert settings["max_connections"] == "100"
    c = container(one(manifests["stage"], "StatefulSet", "postgres"), "postgres")
    assert c["readinessProbe"]["exec"]["command"][0] == "pg_isready"
    assert any(m["mountPath"] == "/var/lib/postgresql" for m in c["volumeMounts"]), "18+ data path"


def test_redis_never_evicts_broker_messages(manifests):
    config = one(manifests["prod"], "ConfigMap", "redis-config")["data"]["valkey.conf"]
    assert "maxmemory-policy noeviction" in config and "appendfsync everysec" in config
    assert "appendonly yes" in config
    command = " ".join(container(one(manifests["prod"], "StatefulSet", "redis"), "redis")["command"])
    assert "$REDIS_PASSWORD" in command and "requirepass" in command


def test_external_object_store_keeps_the_app_settings():
    stack, objects = render_with("prod", {"object_store": {"mode": "external",
                                                           "external_endpoint": "https://s3.eu-west-1.amazonaws.com"}})
    assert not [s for s in of_kind(objects, "StatefulSet") if s["metadata"]["name"] == "minio"]
    api_env = env_of(container(one(objects, "Deployment", "api"), "api"))
    assert api_env["MINIO_ENDPOINT"]["value"] == "https://s3.eu-west-1.amazonaws.com"
    assert api_env["MINIO_BUCKET"]["value"] == "krvibe"
    # The app's own key (an IAM user with the app policy, docs/security.md), never the admin's.
    assert api_env["MINIO_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "MINIO_ACCESS_KEY"
    assert not {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"} & set(api_env)
    egress = [(c.source.key, c.target.cidr, c.port) for c in stack.network.connections if c.target.cidr]
    assert ("api", "0.0.0.0/0", 443) in egress


def test_minio_console_is_never_on_a_service():
    _stack, objects = render_with("dev", {"object_store": {"server": "minio", "image": {
        "repository": "quay.io/minio/minio", "tag": "RELEASE.2025-09-07T16-13-09Z"}}})
    service = one(objects, "Service", "minio")
    assert [p["port"] for p in service["spec"]["ports"]] == [9000]
    ports = {p["containerPort"] for p in container(one(objects, "StatefulSet", "minio"), "minio")["ports"]}
    assert 9001 in ports, "the console is reachable by port-forward to the pod"


def test_offsite_mirror_when_enabled(manifests):
    # stage keeps the off-site copy off (the prod tier requires it).
    assert not [c for c in of_kind(manifests["stage"], "CronJob") if c["metadata"]["name"] == "minio-mirror"]
    stack, objects = render_with("prod", {"backups": {"offsite": {"enabled": True,
                                                                  "endpoint": "https://s3.example.net"}}})
    mirror = one(objects, "CronJob", "minio-mirror")
    variables = env_of(container(mirror, "minio-mirror"))
    assert variables["MIRROR_DST_S3_ENDPOINT"]["value"] == "https://s3.example.net"
    assert variables["MIRROR_DST_S3_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["key"] == "OFFSITE_S3_ACCESS_KEY_ID"
    targets = {(c.source.key, c.target.key, c.port) for c in stack.network.connections}
    assert ("minio-mirror", "offsite:s3.example.net", 443) in targets


def test_internet_egress_only_when_switched_on(stacks):
    for env in ENVS:
        assert not [c for c in stacks[env].network.connections if c.target.key == "internet"], env
    stack, _objects = render_with("prod", {"network": {"app_internet_egress": True}})
    internet = {(c.source.key, c.port) for c in stack.network.connections if c.target.key == "internet"}
    assert internet == {("api", 443), ("worker-default", 443)}
    (peer,) = {c.target for c in stack.network.connections if c.target.key == "internet"}
    assert set(peer.cidr_except) == {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"}


SEAWEEDFS_FLAGS = json.loads((ROOT / "tests" / "fixtures" / "seaweedfs" / "server-flags.json").read_text())["flags"]


def weed_server_flags(command: list[str]) -> dict[str, str]:
    """`weed [global flags] server -name[=value] ...` as Go's flag package reads it."""
    assert command[0] == "weed" and "server" in command
    flags = {}
    for arg in command[command.index("server") + 1:]:
        name, _, value = arg.lstrip("-").partition("=")
        assert arg.startswith("-") and name in SEAWEEDFS_FLAGS, f"`weed server` has no flag {arg} (it would exit)"
        kind = SEAWEEDFS_FLAGS[name]["type"]
        if kind == "Bool":
            assert value in ("", "true", "false"), arg
            value = value or "true"
        elif kind in ("Int", "Uint", "Int64"):
            int(value)
        flags[name] = value
    return flags


@pytest.mark.parametrize("env", ENVS)
def test_seaweedfs_exposes_only_s3_and_metrics_and_sends_no_telemetry(manifests, stacks, env):
    store = stacks[env].profile.object_store
    if store.mode == "external" or store.server != "seaweedfs":
        pytest.skip(f"{env} runs no SeaweedFS")
    pod = one(manifests[env], "StatefulSet", "minio")
    c = container(pod, "minio")
    flags = weed_server_flags(c["command"])
    # Defaults as weed/command/server.go resolves them: -ip.bind falls back to
    # -ip (the pod's address by default), -s3.ip.bind and -metricsIp to -ip.bind;
    # master, volume and filer listen on -ip.bind and dial each other at -ip.
    assert SEAWEEDFS_FLAGS["master.telemetry"]["default"] == "true", "telemetry is on unless turned off"
    assert flags["master.telemetry"] == "false"
    ip = flags.get("ip")
    bind = flags.get("ip.bind") or ip
    assert ip == bind == "127.0.0.1", "master, volume, filer (HTTP and gRPC) stay inside the pod"
    assert (flags.get("s3.ip.bind") or bind) == "0.0.0.0"
    assert (flags.get("metricsIp") or bind) == "0.0.0.0"
    for catalog in ("s3.port.iceberg", "s3.port.lance"):
        assert int(flags.get(catalog, SEAWEEDFS_FLAGS[catalog]["default"])) == 0, f"{catalog} listener is on"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"s3": int(flags["s3.port"]), "metrics": int(flags["metricsPort"])}
    # Whatever else listens (the S3 gateway's gRPC port) is closed by the policy.
    policies = [p for p in of_kind(manifests[env], "NetworkPolicy")
                if p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == "minio"]
    admitted = {port["port"] for p in policies for rule in p["spec"].get("ingress", [])
                for port in rule.get("ports", [])}
    assert policies and admitted <= set(ports.values()), admitted


@pytest.mark.parametrize("env", ENVS)
def test_dev_reload_runs_every_app_process_on_the_mounted_source(manifests, stacks, env):
    """In dev an edited task or migration must run without an image build:
    every process of the app image (API, workers, beat, the Jobs) mounts the
    source claim over /app, and the long-running Celery processes restart on
    change. Elsewhere nothing mounts it."""
    profile = stacks[env].profile
    app_image = profile.api.image.ref
    kinds_seen = set()
    for pod in pod_templates(manifests[env]):
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod.spec.get("volumes", [])
                  if "persistentVolumeClaim" in v}
        for c in pod.spec["containers"]:
            if c["image"] != app_image:
                continue
            kinds_seen.add(pod.owner["metadata"]["name"].split("-")[0])
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
            if not profile.api.dev_reload:
                assert "/app" not in mounts and "app-source" not in claims.values(), pod.where
                continue
            assert claims.get(mounts["/app"]["name"]) == "app-source" and mounts["/app"]["readOnly"], pod.where
            command = c["command"]
            if command[:3] == ["python", "manage.py", "runserver"]:
                continue  # Django's own reloader
            if pod.owner["kind"] in ("Deployment", "StatefulSet"):
                assert unwrapped(command, profile)[0] == "celery", f"{pod.where} does not restart on change"
    assert {"api", "worker", "beat", "migrate", "createsuperuser"} <= kinds_seen, kinds_seen
