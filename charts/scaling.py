"""Autoscalers: a CPU HorizontalPodAutoscaler, and KEDA on Celery queue length.

With either, the Deployment leaves `replicas` out, so kubectl and Argo CD do
not reset the scale on every apply (see Api and Worker).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from constructs import Construct

from charts.config import WorkerAutoscaling
from charts.labels import api_metadata
from charts.network import pods_in
from charts.workload import Deployment
from imports import k8s

if TYPE_CHECKING:
    from charts.data import Redis
    from charts.stack import Stack

# kombu's Redis transport (kombu/transport/redis.py) stores a queue's
# messages in the list named after the queue, and messages sent with a
# priority in `<queue><sep><step>` for the non-zero PRIORITY_STEPS: with
# sep '\x06\x16' and steps [0, 3, 6, 9] (Channel._q_for_pri).
KOMBU_PRIORITY_SEPARATOR = "\x06\x16"
KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)
KEDA_REDIS_AUTH = "keda-redis"


def queue_list_keys(queue: str) -> list[str]:
    """The Redis list keys holding the messages of one Celery queue."""
    return [queue if step == 0 else f"{queue}{KOMBU_PRIORITY_SEPARATOR}{step}" for step in KOMBU_PRIORITY_STEPS]


def cpu_hpa(scope: Construct, id: str, *, workload: Deployment, min_replicas: int, max_replicas: int,
            cpu_utilization: int) -> k8s.KubeHorizontalPodAutoscalerV2:
    return k8s.KubeHorizontalPodAutoscalerV2(
        scope, id,
        metadata=workload.meta(),
        spec=k8s.HorizontalPodAutoscalerSpecV2(
            scale_target_ref=k8s.CrossVersionObjectReferenceV2(
                api_version="apps/v1", kind="Deployment", name=workload.name),
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            metrics=[k8s.MetricSpecV2(type="Resource", resource=k8s.ResourceMetricSourceV2(
                name="cpu", target=k8s.MetricTargetV2(type="Utilization", average_utilization=cpu_utilization)))],
        ),
    )


class RedisAuthentication(Construct):
    """The TriggerAuthentication KEDA reads the Redis password through
    (secretTargetRef to the env's Secret; the value is never rendered), and
    the connection from KEDA's operator to Redis."""

    def __init__(self, scope: Construct, id: str, *, stack: Stack, broker: Redis,
                 keda_namespace: str, keda_operator_labels: dict[str, str]) -> None:
        super().__init__(scope, id)
        # Imported on use: loading a CRD module costs jsii start-up time.
        from imports.sh import keda

        self.name = KEDA_REDIS_AUTH
        # `password` and `ca` are the redis scaler's auth parameters
        # (kedacore/keda pkg/scalers/redis_scaler.go, redisConnectionInfo:
        # `ca` is read from auth parameters only). The CA is the one the app
        # trusts for this server (REDIS_CA); without it KEDA uses its system CAs.
        secrets = [keda.TriggerAuthenticationSpecSecretTargetRef(
            parameter="password", name=stack.secrets.name, key=stack.secrets.key("REDIS_PASSWORD"))]
        config_maps = None
        if broker.ca is not None:
            bundle = broker.ca.bundle
            if bundle.kind == "Secret":
                secrets.append(keda.TriggerAuthenticationSpecSecretTargetRef(
                    parameter="ca", name=bundle.name, key=bundle.key))
            else:
                config_maps = [keda.TriggerAuthenticationSpecConfigMapTargetRef(
                    parameter="ca", name=bundle.name, key=bundle.key)]
        keda.TriggerAuthentication(
            self, "trigger-authentication",
            metadata=api_metadata(stack.identity(self.name, "worker"), self.name, stack.namespace),
            spec=keda.TriggerAuthenticationSpec(secret_target_ref=secrets, config_map_target_ref=config_maps),
        )
        operator = pods_in(keda_namespace, keda_operator_labels, key="keda-operator")
        # An external (managed) Redis is outside this namespace: the egress
        # from KEDA's namespace to it is not ours to declare.
        if broker.peer.internal:
            stack.network.allow(operator, broker.peer, broker.port, reason="KEDA reads Celery queue lengths")


def keda_queue_scaler(scope: Construct, id: str, *, workload: Deployment, queues: Sequence[str],
                      scaling: WorkerAutoscaling, broker: Redis, authentication: str) -> None:
    """A ScaledObject on the summed length of the group's queue lists.

    Each list key is one `redis` trigger; a scalingModifiers formula sums
    them into one metric (without it the HPA would take the largest single
    list, not the backlog). The CPU trigger, if set, stays a separate metric
    and the HPA follows whichever asks for more replicas.
    """
    from imports.sh import keda

    keys = [key for queue in queues for key in queue_list_keys(queue)]
    # The broker exactly as the workers reach it (their REDIS_* variables):
    # the database, TLS and ACL user of a managed Redis too.
    connection = {
        "address": broker.address,
        "databaseIndex": str(broker.db),
        "enableTLS": "true" if broker.tls else "false",
    } | ({"username": broker.username} if broker.username else {})
    names = [f"list{i}" for i in range(len(keys))]
    triggers = [
        keda.ScaledObjectSpecTriggers(
            type="redis", name=name,
            metadata=connection | {
                "listName": key,
                "listLength": str(scaling.queue_length),
                "activationListLength": str(scaling.activation_queue_length),
            },
            authentication_ref=keda.ScaledObjectSpecTriggersAuthenticationRef(name=authentication))
        for name, key in zip(names, keys, strict=True)
    ]
    if scaling.cpu_utilization is not None:
        triggers.append(keda.ScaledObjectSpecTriggers(
            type="cpu", metric_type="Utilization", metadata={"value": str(scaling.cpu_utilization)}))
    keda.ScaledObject(
        scope, id,
        metadata=api_metadata(workload.identity, workload.name, workload.namespace),
        spec=keda.ScaledObjectSpec(
            scale_target_ref=keda.ScaledObjectSpecScaleTargetRef(
                api_version="apps/v1", kind="Deployment", name=workload.name),
            min_replica_count=scaling.min_replicas,
            max_replica_count=scaling.max_replicas,
            polling_interval=scaling.polling_interval_seconds,
            cooldown_period=scaling.cooldown_seconds,
            advanced=keda.ScaledObjectSpecAdvanced(scaling_modifiers=keda.ScaledObjectSpecAdvancedScalingModifiers(
                formula=" + ".join(names),
                target=str(scaling.queue_length),
                activation_target=str(scaling.activation_queue_length),
                metric_type=keda.ScaledObjectSpecAdvancedScalingModifiersMetricType.AVERAGE_VALUE)),
            triggers=triggers,
        ),
    )
