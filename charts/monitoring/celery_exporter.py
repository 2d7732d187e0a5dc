"""The Celery exporter (danihodovic/celery-exporter, built from its source by
celery-exporter/Dockerfile): task events and queue lengths from the broker.
It exists only for monitoring, so it is rendered here.

Changes when the exporter's image, options or broker wiring change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from constructs import Construct

from charts.config import MonitoringConfig
from charts.monitoring.common import COMPONENT
from charts.network import Peer
from charts.workload import Container, Deployment, Port, Probe, Probes
from imports import k8s

if TYPE_CHECKING:
    from charts.stack import Stack

CELERY_EXPORTER_PORT = 9808
CELERY_EXPORTER_UID = 10003
CELERY_EXPORTER_RETRY_SECONDS = 5


class Broker(Protocol):
    """What the Celery exporter needs from the broker: charts.data.Redis."""

    port: int
    peer: Peer

    def client_env(self) -> list[k8s.EnvVar]: ...

    def client_volumes(self) -> list[k8s.Volume]: ...

    def client_mounts(self) -> list[k8s.VolumeMount]: ...

    def celery_exporter_command(self) -> list[str]: ...


def celery_exporter(scope: Construct, id: str, *, stack: Stack, config: MonitoringConfig, broker: Broker,
                    queues: Sequence[str]) -> Deployment:
    broker_env = broker.client_env()
    image = config.celery_exporter_image
    container = Container(
        name="celery-exporter",
        image=image.ref,
        # CE_* are the exporter's click options as env vars; the broker
        # URL is built in the container from the broker's variables.
        command=broker.celery_exporter_command(),
        mounts=broker.client_mounts(),
        env=[*broker_env,
             k8s.EnvVar(name="CE_PORT", value=str(CELERY_EXPORTER_PORT)),
             # Queue lengths are reported even while no worker consumes them.
             k8s.EnvVar(name="CE_QUEUES", value=",".join(queues)),
             # Upstream's default 0 exits on the first broker error, so a
             # Redis restart would crash-loop it; it reconnects instead.
             k8s.EnvVar(name="CE_RETRY_INTERVAL", value=str(CELERY_EXPORTER_RETRY_SECONDS))],
        ports=[Port(name="metrics", port=CELERY_EXPORTER_PORT, in_service=False)],
        probes=Probes(
            # /health checks the exporter's broker connection (upstream
            # v0.12.2 does not notice an outage after start); liveness only
            # checks the server, so a broker outage never restarts it.
            readiness=Probe(http_path="/health", port=CELERY_EXPORTER_PORT, period_seconds=30,
                            timeout_seconds=10),
            liveness=Probe(tcp=True, port=CELERY_EXPORTER_PORT, period_seconds=30, failure_threshold=4),
        ),
        resources=config.celery_exporter_resources,
    )
    exporter = Deployment(scope, id, stack=stack, name="celery-exporter",
                          component=COMPONENT, version=image.tag, containers=[container],
                          # The image's own user (celery-exporter/Dockerfile).
                          uid=CELERY_EXPORTER_UID, image_pull_secrets=stack.project_pull_secrets,
                          # Two exporters would both count every event.
                          replicas=1, recreate=True, volumes=broker.client_volumes())
    stack.network.allow(exporter.peer, broker.peer, broker.port,
                        reason="Celery exporter reads events and queue lengths")
    return exporter
