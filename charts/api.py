"""The Django API: Deployment, Service, and optionally HPA and PDB."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from constructs import Construct

from charts.config import GUNICORN_GRACEFUL_TIMEOUT_SECONDS as GRACEFUL_TIMEOUT_SECONDS
from charts.config import ApiConfig
from charts.labels import number, quantity
from charts.scaling import cpu_hpa
from charts.workload import Container, Deployment, Port, Probe, Probes
from imports import k8s

if TYPE_CHECKING:
    from charts.stack import Stack

HTTP_PORT = 8000
SOURCE_CLAIM = "app-source"
SOURCE_MOUNT = "/app"  # the image's WORKDIR
# app/config/devreload.py: polls the working directory's *.py files.
RELOADER = ("python", "-m", "config.devreload", "--")


class DevSource(Construct):
    """Dev only (`api.dev_reload`): the host's app/ over the image's /app in
    every process of the app image (API, workers, beat, the Jobs), so edited
    code and migrations run without an image build. The claim binds to the
    PersistentVolume kind/up.sh makes from kind's extraMount (no hostPath in
    pods). The API reloads through runserver; workers and beat through
    config.devreload, which restarts them when a .py file changes.
    `volumes` and `mounts` are what every app process mounts: the source here,
    and the CA bundles of external data services (added in stack.py).
    """

    def __init__(self, scope: Construct, id: str, *, stack: Stack, config: ApiConfig) -> None:
        super().__init__(scope, id)
        self.enabled = config.dev_reload
        self.volumes: list[k8s.Volume] = []
        self.mounts: list[k8s.VolumeMount] = []
        if not self.enabled:
            return
        claim = k8s.KubePersistentVolumeClaim(
            self, "claim", metadata=stack.identity_meta(SOURCE_CLAIM, "web", config.image.tag),
            spec=k8s.PersistentVolumeClaimSpec(
                access_modes=["ReadOnlyMany"], storage_class_name="", volume_name=config.dev_source_volume,
                resources=k8s.VolumeResourceRequirements(requests={"storage": quantity("1Gi")})))
        source = k8s.PersistentVolumeClaimVolumeSource(claim_name=claim.name, read_only=True)
        self.volumes = [k8s.Volume(name="source", persistent_volume_claim=source)]
        self.mounts = [k8s.VolumeMount(name="source", mount_path=SOURCE_MOUNT, read_only=True)]

    def restarting(self, command: Sequence[str]) -> list[str]:
        """`command`, restarted on a source change when dev reload is on."""
        return [*RELOADER, *command] if self.enabled else list(command)


class Api(Construct):
    def __init__(self, scope: Construct, id: str, *, stack: Stack, config: ApiConfig,
                 app_env: Sequence[k8s.EnvVar], source: DevSource) -> None:
        super().__init__(scope, id)
        command = (["python", "manage.py", "runserver", f"0.0.0.0:{HTTP_PORT}"] if config.dev_reload
                   else ["gunicorn", "--config", "gunicorn.conf.py", "config.wsgi"])
        # gunicorn.conf.py reads these; the dev server does not.
        gunicorn_env = [] if config.dev_reload else [
            k8s.EnvVar(name="GUNICORN_WORKERS", value=str(config.gunicorn_workers)),
            k8s.EnvVar(name="GUNICORN_GRACEFUL_TIMEOUT", value=str(GRACEFUL_TIMEOUT_SECONDS)),
        ]
        container = Container(
            name="api",
            image=config.image.ref,
            command=command,
            env=[*app_env, *gunicorn_env],
            ports=[Port(name="http", port=HTTP_PORT)],
            probes=Probes(
                # Up to 150 s for a cold start before liveness takes over.
                startup=Probe(http_path="/healthz", port=HTTP_PORT, period_seconds=5, failure_threshold=30),
                readiness=Probe(http_path="/readyz", port=HTTP_PORT, period_seconds=10, failure_threshold=3),
                liveness=Probe(http_path="/healthz", port=HTTP_PORT, period_seconds=15, failure_threshold=4),
            ),
            resources=config.resources,
            mounts=source.mounts,
            pre_stop_sleep_seconds=config.drain_seconds or None,
        )
        self.workload = Deployment(
            self, "workload",
            stack=stack, name="api", component="web", version=config.image.tag or "unversioned",
            containers=[container],
            volumes=source.volumes,
            termination_grace_seconds=config.termination_grace_seconds,
            # With an HPA the replica count belongs to it; leaving it out keeps
            # kubectl apply and Argo CD from resetting the scale on each sync.
            replicas=None if config.autoscaling.enabled else config.replicas,
            max_surge=1, max_unavailable=0,
            placement=config.placement, image_pull_secrets=stack.project_pull_secrets,
        )
        self.peer = self.workload.peer
        self.port = HTTP_PORT

        identity = self.workload.identity
        if config.autoscaling.enabled:
            scaling = config.autoscaling
            cpu_hpa(self, "hpa", workload=self.workload, min_replicas=scaling.min_replicas,
                    max_replicas=scaling.max_replicas, cpu_utilization=scaling.cpu_utilization)
        smallest = config.autoscaling.min_replicas if config.autoscaling.enabled else config.replicas
        # A PDB on a single replica would block every node drain.
        if config.disruption_budget and smallest >= 2:
            k8s.KubePodDisruptionBudget(
                self, "pdb",
                metadata=self.workload.meta(),
                spec=k8s.PodDisruptionBudgetSpec(
                    max_unavailable=number(1),
                    selector=k8s.LabelSelector(match_labels=identity.selector()),
                ),
            )
