"""Worker autoscaling (KEDA, HPA), placement and pull secrets, checked on the
rendered manifests against independent sources: kombu's Redis key layout,
the KEDA redis scaler's metadata keys, the profile's own values."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from charts.config import ProfileError, load_profile
from tests.support.manifests import ENV_DIR, ENVS, of_kind, one, pod_templates
from tests.support.render import render_with

# kombu/transport/redis.py: Channel.sep = '\x06\x16', PRIORITY_STEPS = [0, 3, 6, 9],
# _q_for_pri(queue, pri) -> queue for 0, else f"{queue}{sep}{pri}".
KOMBU_KEYS = ("{q}", "{q}\x06\x163", "{q}\x06\x166", "{q}\x06\x169")
# kedacore/keda v2.20 pkg/scalers/redis_scaler.go: trigger metadata the
# scaler reads (redisMetadata and redisConnectionInfo, order=triggerMetadata).
REDIS_SCALER_METADATA = {
    "address", "addresses", "host", "hosts", "port", "ports", "username", "password", "sentinelUsername",
    "sentinelPassword", "sentinelMaster", "unsafeSsl", "listLength", "activationListLength", "listName",
    "databaseIndex", "enableTLS",
}
ZONE, HOSTNAME = "topology.kubernetes.io/zone", "kubernetes.io/hostname"


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {v["name"]: v.get("value", "") for v in container.get("env", [])}


def worker_container(objects: list[dict[str, Any]], group: str) -> dict[str, Any]:
    deployment = one(objects, "Deployment", f"worker-{group}")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


# --- KEDA ------------------------------------------------------------------

def test_prod_worker_group_scales_on_every_list_key_of_its_queues(manifests, stacks):
    objects, profile = manifests["prod"], stacks["prod"].profile
    (group,) = profile.worker.groups
    assert group.autoscaling.mode == "keda", "the committed prod profile scales its workers with KEDA"
    scaled = one(objects, "ScaledObject", "worker-default")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker-default"}
    assert "replicas" not in one(objects, "Deployment", "worker-default")["spec"], "KEDA owns the replica count"
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 10)

    # The queues come from the worker's own command line, the keys from kombu.
    command = worker_container(objects, "default")["command"]
    (queues_arg,) = [a for a in command if a.startswith("--queues=")]
    queues = queues_arg.removeprefix("--queues=").split(",")
    expected = {key.format(q=q) for q in queues for key in KOMBU_KEYS}
    redis_triggers = [t for t in spec["triggers"] if t["type"] == "redis"]
    assert {t["metadata"]["listName"] for t in redis_triggers} == expected
    assert len(redis_triggers) == len(expected)

    # One summed backlog, not the largest single list.
    modifiers = spec["advanced"]["scalingModifiers"]
    assert sorted(modifiers["formula"].split(" + ")) == sorted(t["name"] for t in redis_triggers)
    assert modifiers["target"] == "20" and modifiers["metricType"] == "AverageValue"
    assert modifiers["activationTarget"] == "0"
    cpu = [t for t in spec["triggers"] if t["type"] == "cpu"]
    assert cpu == [{"type": "cpu", "metricType": "Utilization", "metadata": {"value": "80"}}]


def test_keda_reads_the_broker_the_workers_use(manifests):
    """Address, database and password of the trigger match the worker's
    REDIS_HOST/PORT/DB/TLS and the key Redis itself takes its password from."""
    objects = manifests["prod"]
    worker_env = env_of(worker_container(objects, "default"))
    scheme = "rediss" if worker_env["REDIS_TLS"] == "true" else "redis"
    url = urlparse(f"{scheme}://{worker_env['REDIS_HOST']}:{worker_env['REDIS_PORT']}/{worker_env['REDIS_DB']}")
    service = one(objects, "Service", url.hostname or "")
    namespace = service["metadata"]["namespace"]
    redis = one(objects, "StatefulSet", "redis")
    (server,) = [c for c in redis["spec"]["template"]["spec"]["containers"] if c["name"] == "redis"]
    (password_ref,) = [v["valueFrom"]["secretKeyRef"] for v in server["env"] if v["name"] == "REDIS_PASSWORD"]

    for trigger in [t for t in one(objects, "ScaledObject", "worker-default")["spec"]["triggers"]
                    if t["type"] == "redis"]:
        metadata = trigger["metadata"]
        unknown = set(metadata) - REDIS_SCALER_METADATA
        assert not unknown, f"keys the redis scaler does not read: {unknown}"
        host, port = metadata["address"].rsplit(":", 1)
        assert host == f"{service['metadata']['name']}.{namespace}.svc"
        assert int(port) == url.port and int(port) in {p["port"] for p in service["spec"]["ports"]}
        assert metadata["databaseIndex"] == url.path.lstrip("/")
        assert metadata["enableTLS"] == ("true" if url.scheme == "rediss" else "false")
        auth = one(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
        assert auth["spec"]["secretTargetRef"] == [
            {"parameter": "password", "name": password_ref["name"], "key": password_ref["key"]}]


def ca_source(pod_spec: dict[str, Any], container: dict[str, Any], path: str) -> tuple[str, str, str]:
    """(kind, name, key) of the ConfigMap or Secret a container reads the file `path` from."""
    (mount,) = [m for m in container.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")]
    (volume,) = [v for v in pod_spec["volumes"] if v["name"] == mount["name"]]
    relative = path[len(mount["mountPath"].rstrip("/")) + 1:]
    if "secret" in volume:
        source, kind, name = volume["secret"], "Secret", volume["secret"]["secretName"]
    else:
        source, kind, name = volume["configMap"], "ConfigMap", volume["configMap"]["name"]
    (item,) = [i for i in source["items"] if i["path"] == relative]
    return kind, name, item["key"]


MANAGED_REDIS = {"host": "cache.example.internal", "port": 6380, "cidr": "10.30.0.5/32"}


@pytest.mark.parametrize("external", [
    {**MANAGED_REDIS},
    {**MANAGED_REDIS, "db": 3, "username": "celery", "ca": {"name": "redis-ca"}},
    {**MANAGED_REDIS, "db": 15, "ca": {"kind": "Secret", "name": "redis-ca", "key": "ca.pem"}},
    {**MANAGED_REDIS, "db": 2, "tls": False},
], ids=["tls-system-cas", "configmap-ca-user-db3", "secret-ca-db15", "plain-db2"])
def test_keda_reads_a_managed_redis_as_the_workers_do(external):
    """KEDA's redis scaler (kedacore/keda pkg/scalers/redis_scaler.go) reads
    databaseIndex, enableTLS and username from the trigger, and the CA only
    from the TriggerAuthentication (`ca`): each must be what the workers use."""
    _stack, objects = render_with("prod", {"redis": {"mode": "external", "external": external}})
    deployment = one(objects, "Deployment", "worker-default")
    pod_spec = deployment["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    worker_env = env_of(container)
    (password_ref,) = [v["valueFrom"]["secretKeyRef"] for v in container["env"] if v["name"] == "REDIS_PASSWORD"]
    triggers = [t for t in one(objects, "ScaledObject", "worker-default")["spec"]["triggers"] if t["type"] == "redis"]
    assert triggers
    for trigger in triggers:
        metadata = trigger["metadata"]
        assert not set(metadata) - REDIS_SCALER_METADATA
        assert metadata["address"] == f"{worker_env['REDIS_HOST']}:{worker_env['REDIS_PORT']}"
        assert metadata["databaseIndex"] == worker_env["REDIS_DB"] == str(external.get("db", 0))
        assert metadata["enableTLS"] == worker_env["REDIS_TLS"] == ("false" if external.get("tls") is False
                                                                    else "true")
        assert metadata.get("username") == worker_env.get("REDIS_USERNAME") == external.get("username")
    auth = one(objects, "TriggerAuthentication", triggers[0]["authenticationRef"]["name"])["spec"]
    refs = {(ref["parameter"], kind): (ref["name"], ref["key"])
            for kind, field in (("Secret", "secretTargetRef"), ("ConfigMap", "configMapTargetRef"))
            for ref in auth.get(field, [])}
    expected = {("password", "Secret"): (password_ref["name"], password_ref["key"])}
    if "REDIS_CA" in worker_env:
        kind, name, key = ca_source(pod_spec, container, worker_env["REDIS_CA"])
        expected[("ca", kind)] = (name, key)
    assert refs == expected


def test_keda_operator_may_reach_redis_and_nothing_else(manifests, stacks):
    worker = stacks["prod"].profile.worker
    keda = [c for c in stacks["prod"].network.connections if c.source.key == "keda-operator"]
    assert [(c.target.key, c.port) for c in keda] == [("redis", 6379)]
    assert keda[0].source.namespace == worker.keda_namespace
    assert dict(keda[0].source.selector) == dict(worker.keda_operator_pod_labels)
    for env in ("dev", "stage"):
        assert not [c for c in stacks[env].network.connections if c.source.key == "keda-operator"], env
        assert not of_kind(manifests[env], "ScaledObject") and not of_kind(manifests[env], "TriggerAuthentication")


def test_scale_to_zero_and_custom_queues():
    _stack, objects = render_with("prod", {"worker": {"groups": [
        {"name": "default", "autoscaling": {"mode": "keda", "min_replicas": 0, "max_replicas": 3,
                                            "activation_queue_length": 5, "cooldown_seconds": 600}},
        {"name": "reports", "queues": ["reports", "exports"], "autoscaling": {"mode": "keda", "max_replicas": 2}},
    ]}})
    default = one(objects, "ScaledObject", "worker-default")["spec"]
    assert default["minReplicaCount"] == 0 and default["cooldownPeriod"] == 600
    assert default["advanced"]["scalingModifiers"]["activationTarget"] == "5"
    assert not [t for t in default["triggers"] if t["type"] == "cpu"], "no CPU trigger unless configured"
    reports = one(objects, "ScaledObject", "worker-reports")["spec"]
    assert {t["metadata"]["listName"] for t in reports["triggers"]} == {
        key.format(q=q) for q in ("reports", "exports") for key in KOMBU_KEYS}
    assert len(of_kind(objects, "TriggerAuthentication")) == 1, "one TriggerAuthentication per env"
    names = {p["metadata"]["name"] for p in of_kind(objects, "PodDisruptionBudget")}
    assert "worker-default" not in names and "worker-reports" not in names, "min 0/1: no PDB"


def test_hpa_mode_renders_a_cpu_hpa_like_the_apis():
    _stack, objects = render_with("prod", {"worker": {"groups": [
        {"name": "default", "autoscaling": {"mode": "hpa", "min_replicas": 2, "max_replicas": 5,
                                            "cpu_utilization": 65}}]}})
    hpa = one(objects, "HorizontalPodAutoscaler", "worker-default")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker-default"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 5)
    assert hpa["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 65}}}]
    assert "replicas" not in one(objects, "Deployment", "worker-default")["spec"]
    assert not of_kind(objects, "ScaledObject") and not of_kind(objects, "TriggerAuthentication")
    pdb = one(objects, "PodDisruptionBudget", "worker-default")
    assert pdb["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("env", ENVS)
def test_off_mode_keeps_a_fixed_replica_count(manifests, stacks, env):
    for group in stacks[env].profile.worker.groups:
        deployment = one(manifests[env], "Deployment", f"worker-{group.name}")
        if group.autoscaling.mode == "off":
            assert deployment["spec"]["replicas"] == group.replicas
        else:
            assert "replicas" not in deployment["spec"]


# --- scale-in never loses work -----------------------------------------------

@pytest.mark.parametrize("env", ENVS)
def test_grace_period_covers_the_hard_time_limit(manifests, env):
    """Read from the rendered pod, not the model: SIGTERM must leave a task
    time to reach its hard limit, and Redis must not redeliver it meanwhile."""
    for deployment in [d for d in of_kind(manifests[env], "Deployment")
                       if d["metadata"]["name"].startswith("worker-")]:
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        variables = env_of(container)
        hard, soft = int(variables["CELERY_TASK_TIME_LIMIT"]), int(variables["CELERY_TASK_SOFT_TIME_LIMIT"])
        assert soft < hard
        assert pod["terminationGracePeriodSeconds"] >= hard + 30, deployment["metadata"]["name"]
        assert int(variables["CELERY_VISIBILITY_TIMEOUT"]) > hard


# --- placement ----------------------------------------------------------------

def spread_of(objects: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return one(objects, "Deployment", name)["spec"]["template"]["spec"].get("topologySpreadConstraints", [])


@pytest.mark.parametrize("name", ["api", "worker-default"])
def test_prod_spreads_api_and_workers_across_zones_and_nodes(manifests, name):
    objects = manifests["prod"]
    deployment = one(objects, "Deployment", name)
    selector = deployment["spec"]["selector"]["matchLabels"]
    constraints = spread_of(objects, name)
    assert [c["topologyKey"] for c in constraints] == [ZONE, HOSTNAME]
    for constraint in constraints:
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway", "a one-zone cluster must still schedule"
        assert constraint["maxSkew"] == 1
        assert constraint["labelSelector"] == {"matchLabels": selector}
        assert constraint["matchLabelKeys"] == ["pod-template-hash"], "count only the current rollout's pods"
    # Consistent with the PDB: both count the same pods.
    pdb = one(objects, "PodDisruptionBudget", name)
    assert pdb["spec"]["selector"]["matchLabels"] == selector


@pytest.mark.parametrize("env", ["dev", "stage"])
def test_other_envs_do_not_spread(manifests, env):
    for pod in pod_templates(manifests[env]):
        assert "topologySpreadConstraints" not in pod.spec, pod.where


def test_placement_values_pass_through():
    placement = {"node_selector": {"node.kubernetes.io/pool": "apps"},
                 "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "apps", "effect": "NoSchedule"},
                                 {"key": "spot", "operator": "Exists", "effect": "NoExecute",
                                  "toleration_seconds": 120}],
                 "priority_class_name": "vibearena-high"}
    _stack, objects = render_with("stage", {"api": {"placement": placement}, "beat": {"placement": placement},
                                            "worker": {"groups": [{"name": "default", "placement": placement}]}})
    expected_tolerations = [
        {"key": "dedicated", "operator": "Equal", "value": "apps", "effect": "NoSchedule"},
        {"key": "spot", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 120}]
    for kind, name in (("Deployment", "api"), ("Deployment", "worker-default"), ("StatefulSet", "beat")):
        spec = one(objects, kind, name)["spec"]["template"]["spec"]
        assert spec["nodeSelector"] == {"node.kubernetes.io/pool": "apps"}, name
        assert spec["tolerations"] == expected_tolerations, name
        assert spec["priorityClassName"] == "vibearena-high", name
    postgres = one(objects, "StatefulSet", "postgres")["spec"]["template"]["spec"]
    assert not {"nodeSelector", "tolerations", "priorityClassName"} & set(postgres), "per component, not global"


# --- pull secrets -----------------------------------------------------------------

def image_repository(image: str) -> str:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name[: len(name) - len(last)] + last.split(":", 1)[0]


def test_pull_secret_on_exactly_the_project_image_pods():
    stack, objects = render_with("prod", {"images": {"pull_secret": "ghcr-pull"}})
    profile = stack.profile
    # The images the project builds (images.yml), from the profile, not the chart's own list.
    ours = {profile.api.image.repository, profile.backups.image.repository,
            profile.monitoring.celery_exporter_image.repository}
    seen = set()
    for pod in pod_templates(objects):
        repositories = {image_repository(c["image"]) for c in pod.containers()}
        secrets = pod.spec.get("imagePullSecrets")
        if repositories & ours:
            assert secrets == [{"name": "ghcr-pull"}], f"{pod.where} runs {repositories} without the pull secret"
            seen |= repositories & ours
        else:
            assert secrets is None, f"{pod.where} runs third-party images {repositories} but gets the pull secret"
    assert seen == ours, f"no pod found for {ours - seen}"
    assert not [o for o in objects if o["kind"] == "Secret"], "the pull secret is never rendered"


@pytest.mark.parametrize("env", ENVS)
def test_no_pull_secret_unless_configured(manifests, env):
    for pod in pod_templates(manifests[env]):
        assert "imagePullSecrets" not in pod.spec, pod.where


# --- bad input ----------------------------------------------------------------------

BAD = [
    ("prod.yaml", "        min_replicas: 2\n        max_replicas: 10",
     "        min_replicas: 12\n        max_replicas: 10", "worker.groups[0].autoscaling", "exceeds max_replicas"),
    ("prod.yaml", "        mode: keda", "        mode: kedah", "worker.groups[0].autoscaling.mode", "must be one of"),
    ("prod.yaml", "        mode: keda\n        min_replicas: 2\n        max_replicas: 10\n        queue_length: 20\n"
                  "        activation_queue_length: 0\n        cpu_utilization: 80", "        mode: hpa",
     "worker.groups[0].autoscaling", "cpu_utilization is required"),
    ("prod.yaml", "        mode: keda\n        min_replicas: 2\n", "        mode: hpa\n        min_replicas: 0\n",
     "worker.groups[0].autoscaling", "scale to zero needs 'keda'"),
    ("prod.yaml", "        min_replicas: 2", "        min_replicas: -1", "worker.groups[0].autoscaling.min_replicas",
     ">= 0"),
    ("prod.yaml", "        queue_length: 20", "        queue_length: 0", "worker.groups[0].autoscaling.queue_length",
     ">= 1"),
    ("prod.yaml", "        queue_length: 20", "        queue_length: twenty",
     "worker.groups[0].autoscaling.queue_length", "must be a whole number"),
    ("prod.yaml", "      placement: {spread: true}\nmonitoring",
     "      placement: {spread: true}\n      termination_grace_seconds: 310\nmonitoring",
     "worker.groups[0].termination_grace_seconds",
     "task_time_limit_seconds + 30"),
    ("prod.yaml", "      placement: {spread: true}\nmonitoring",
     "      placement: {spread: true}\n      task_soft_time_limit_seconds: 300\nmonitoring",
     "worker.groups[0].task_soft_time_limit_seconds",
     "below task_time_limit_seconds"),
    ("prod.yaml", "worker:\n", "worker:\n  visibility_timeout_seconds: 300\n", "worker.visibility_timeout_seconds",
     "must exceed the longest task_time_limit_seconds"),
    ("prod.yaml", "  - name: default\n", "  - name: default\n      queues: ['bad queue']\n",
     "worker.groups[0].queues[0]", "queue name"),
    ("prod.yaml", "worker:\n", "worker:\n  keda_namespace: KEDA\n", "worker.keda_namespace", "DNS label"),
    ("prod.yaml", "secrets:\n", "images: {pull_secret: Ghcr_Pull}\nsecrets:\n", "images.pull_secret", "DNS name"),
    ("prod.yaml", "secrets:\n", "images: {pull_secret: -ghcr}\nsecrets:\n", "images.pull_secret", "DNS name"),
    ("prod.yaml", "  placement: {spread: true}\nworker", "  placement: {node_selector: {'bad key!': x}}\nworker",
     "api.placement.node_selector.bad key!", "label key"),
    ("prod.yaml", "  placement: {spread: true}\nworker",
     "  placement: {tolerations: [{key: spot, operator: Exists, value: x}]}\nworker",
     "api.placement.tolerations[0]", "value must be empty"),
    ("prod.yaml", "  placement: {spread: true}\nworker",
     "  placement: {tolerations: [{key: spot, effect: NoSchedule, toleration_seconds: 5}]}\nworker",
     "api.placement.tolerations[0]", "NoExecute"),
    ("prod.yaml", "  placement: {spread: true}\nworker",
     "  placement: {tolerations: [{operator: Equal, value: x}]}\nworker", "api.placement.tolerations[0]",
     "empty key"),
    ("prod.yaml", "  placement: {spread: true}\nworker", "  placement: {priority_class_name: High_Prio}\nworker",
     "api.placement.priority_class_name", "DNS name"),
    ("prod.yaml", "  placement: {spread: true}\nworker", "  placement: {spread: yes please}\nworker",
     "api.placement.spread", "must be true or false"),
    ("dev.yaml", "beat:\n", "beat:\n  placement: {spread: true}\n", "beat", "nothing to spread"),
]


@pytest.mark.parametrize(("file", "old", "new", "key", "words"), BAD, ids=[f"{b[3]}-{b[4][:20]}" for b in BAD])
def test_bad_scaling_input_names_the_key(tmp_path: Path, file, old, new, key, words):
    env_dir = tmp_path / "env"
    shutil.copytree(ENV_DIR, env_dir)
    path = env_dir / file
    text = path.read_text()
    assert old in text, f"{file} does not contain {old!r}"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ProfileError) as caught:
        load_profile(env_dir, file.removesuffix(".yaml"))
    message = str(caught.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert words in message, message
    assert "\n" not in message


VARIANTS = {
    "keda-two-groups-to-zero": {"worker": {"groups": [
        {"name": "default", "autoscaling": {"mode": "keda", "min_replicas": 0, "cpu_utilization": 70}},
        {"name": "reports", "queues": ["reports"], "autoscaling": {"mode": "keda"}}]}},
    "hpa-placement-pull-secret": {
        "images": {"pull_secret": "ghcr-pull"},
        "api": {"placement": {"node_selector": {"pool": "apps"}, "priority_class_name": "high",
                              "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoExecute",
                                               "toleration_seconds": 60}]}},
        "worker": {"groups": [{"name": "default", "autoscaling": {"mode": "hpa", "cpu_utilization": 70}}]}},
    "alertmanager-all-receivers": {"monitoring": {"alertmanager": {
        "mode": "bundled", "slack": {"enabled": True}, "email": {
            "to": "ops@example.com", "sender": "am@example.com", "smarthost": "smtp.example.net:587"}}}},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variants_validate_strictly(variant):
    from tests.support.schemas import NEWEST, OLDEST, is_custom, validate_builtin, validate_custom

    _stack, objects = render_with("prod", VARIANTS[variant])
    for obj in objects:
        for version in (OLDEST, NEWEST):
            errors = validate_custom(obj) if is_custom(obj) else validate_builtin(obj, version)
            assert not errors, f"{variant}: {obj['kind']}/{obj['metadata']['name']} ({version}): {errors[:3]}"
