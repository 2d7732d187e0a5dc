"""The hardened workload construct every component is built on.

The security baseline is always on and kept here only: non-root with a UID
>= 10000, read-only root filesystem with emptyDirs for the paths a process
must write, no privilege escalation, all capabilities dropped, the
RuntimeDefault seccomp profile, a dedicated ServiceAccount whose token is not
mounted, and no service links. Requests and limits are required, and a
container that serves a port must have readiness and liveness probes.

A component states only what is unique to it: image, command, ports, probes,
env, volumes. Deployment, StatefulSet, Job and CronJob share the pod template.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from constructs import Construct

from charts.config import Placement, Resources
from charts.labels import Identity, metadata, named_port, number, quantity
from charts.network import Peer, pods
from imports import k8s

if TYPE_CHECKING:
    from charts.stack import Stack

MIN_UID = 10000
# Node labels every zonal cluster sets (well-known labels).
ZONE_KEY = "topology.kubernetes.io/zone"
HOSTNAME_KEY = "kubernetes.io/hostname"


@dataclass(frozen=True, kw_only=True)
class Probe:
    """One probe: exactly one of http_path, command or tcp."""

    http_path: str | None = None
    command: Sequence[str] | None = None
    tcp: bool = False
    port: int | None = None
    period_seconds: int = 10
    timeout_seconds: int = 3
    failure_threshold: int = 3
    initial_delay_seconds: int | None = None

    def __post_init__(self) -> None:
        kinds = [self.http_path is not None, self.command is not None, self.tcp]
        if sum(kinds) != 1:
            raise ValueError("Probe: set exactly one of http_path, command, tcp")
        if (self.http_path is not None or self.tcp) and self.port is None:
            raise ValueError("Probe: http_path and tcp probes need a port")

    def render(self) -> k8s.Probe:
        port = number(self.port or 0)
        return k8s.Probe(
            http_get=k8s.HttpGetAction(path=self.http_path, port=port) if self.http_path is not None else None,
            exec=k8s.ExecAction(command=list(self.command)) if self.command is not None else None,
            tcp_socket=k8s.TcpSocketAction(port=port) if self.tcp else None,
            period_seconds=self.period_seconds,
            timeout_seconds=self.timeout_seconds,
            failure_threshold=self.failure_threshold,
            initial_delay_seconds=self.initial_delay_seconds,
        )


@dataclass(frozen=True, kw_only=True)
class Probes:
    startup: Probe | None = None
    readiness: Probe | None = None
    liveness: Probe | None = None


@dataclass(frozen=True, kw_only=True)
class Port:
    name: str
    port: int
    # False keeps the port off the Service (e.g. a metrics port scraped per pod).
    in_service: bool = True


@dataclass(frozen=True, kw_only=True)
class Container:
    name: str
    image: str
    resources: Resources
    command: Sequence[str] | None = None
    args: Sequence[str] | None = None
    env: Sequence[k8s.EnvVar] = ()
    ports: Sequence[Port] = ()
    probes: Probes = field(default_factory=Probes)
    # Paths the process writes to; each gets its own emptyDir.
    writable_paths: Sequence[str] = ("/tmp",)
    # Writable paths backed by memory (tmpfs), e.g. /dev/shm for Postgres.
    memory_paths: Sequence[str] = ()
    mounts: Sequence[k8s.VolumeMount] = ()
    # Keep serving for this long after deletion starts, before SIGTERM.
    pre_stop_sleep_seconds: int | None = None
    working_dir: str | None = None

    def __post_init__(self) -> None:
        if self.ports and not (self.probes.readiness and self.probes.liveness):
            raise ValueError(f"container {self.name!r} serves ports, so it needs readiness and liveness probes")
        if ":" not in self.image.rsplit("/", 1)[-1] and "@" not in self.image:
            raise ValueError(f"container {self.name!r}: image {self.image!r} has no tag")


def _volume_name(path: str) -> str:
    return "rw-" + (re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "root")


def render_container(container: Container) -> k8s.Container:
    writable = [k8s.VolumeMount(name=_volume_name(p), mount_path=p)
                for p in (*container.writable_paths, *container.memory_paths)]
    limits = container.resources
    return k8s.Container(
        name=container.name,
        image=container.image,
        image_pull_policy="IfNotPresent",
        command=list(container.command) if container.command else None,
        args=list(container.args) if container.args else None,
        working_dir=container.working_dir,
        env=list(container.env) or None,
        ports=[k8s.ContainerPort(name=p.name, container_port=p.port, protocol="TCP")
               for p in container.ports] or None,
        startup_probe=container.probes.startup.render() if container.probes.startup else None,
        readiness_probe=container.probes.readiness.render() if container.probes.readiness else None,
        liveness_probe=container.probes.liveness.render() if container.probes.liveness else None,
        lifecycle=k8s.Lifecycle(pre_stop=k8s.LifecycleHandler(
            sleep=k8s.SleepAction(seconds=container.pre_stop_sleep_seconds)))
        if container.pre_stop_sleep_seconds else None,
        resources=k8s.ResourceRequirements(
            requests={"cpu": quantity(limits.cpu),
                      "memory": quantity(limits.memory)},
            limits={"cpu": quantity(limits.cpu_limit),
                    "memory": quantity(limits.memory_limit)},
        ),
        security_context=k8s.SecurityContext(
            allow_privilege_escalation=False,
            read_only_root_filesystem=True,
            run_as_non_root=True,
            privileged=False,
            capabilities=k8s.Capabilities(drop=["ALL"]),
        ),
        volume_mounts=[*writable, *container.mounts] or None,
        termination_message_policy="FallbackToLogsOnError",
    )


class Workload(Construct):
    """Pod template, ServiceAccount and Service shared by every workload kind.

    Attributes for wiring: `identity`, `peer` (for network.allow),
    `service` (None without served ports), `service_name`.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        stack: Stack,
        name: str,
        component: str,
        version: str,
        containers: Sequence[Container],
        init_containers: Sequence[Container] = (),
        volumes: Sequence[k8s.Volume] = (),
        uid: int = 10001,
        fs_group: int | None = None,
        termination_grace_seconds: int = 30,
        pod_annotations: Mapping[str, str] | None = None,
        headless_service: bool = False,
        restart_policy: str | None = None,
        scratch_size: str = "256Mi",
        placement: Placement | None = None,
        image_pull_secrets: Sequence[str] = (),
    ) -> None:
        super().__init__(scope, id)
        if not containers:
            raise ValueError(f"workload {name!r} needs at least one container")
        if uid < MIN_UID:
            raise ValueError(f"workload {name!r}: uid {uid} is below {MIN_UID}")
        self.stack = stack
        self.name = name
        self.identity: Identity = stack.identity(name, component, version)
        self.peer: Peer = pods(self.identity)
        self.namespace = stack.namespace

        writable = sorted({p for c in (*containers, *init_containers) for p in c.writable_paths})
        in_memory = sorted({p for c in (*containers, *init_containers) for p in c.memory_paths})
        placement = placement or Placement()
        self.service_account = k8s.KubeServiceAccount(
            self, "service-account",
            metadata=metadata(self.identity, name, self.namespace),
            automount_service_account_token=False,
        )
        self.pod_template = k8s.PodTemplateSpec(
            metadata=k8s.ObjectMeta(labels=self.identity.labels(),
                                    annotations=dict(pod_annotations) if pod_annotations else None),
            spec=k8s.PodSpec(
                service_account_name=name,
                automount_service_account_token=False,
                enable_service_links=False,
                restart_policy=restart_policy,
                termination_grace_period_seconds=termination_grace_seconds,
                image_pull_secrets=[k8s.LocalObjectReference(name=n) for n in image_pull_secrets] or None,
                node_selector=dict(placement.node_selector) or None,
                tolerations=[k8s.Toleration(key=t.key, operator=t.operator, value=t.value, effect=t.effect,
                                            toleration_seconds=t.toleration_seconds)
                             for t in placement.tolerations] or None,
                priority_class_name=placement.priority_class_name,
                topology_spread_constraints=self._spread() if placement.spread else None,
                security_context=k8s.PodSecurityContext(
                    run_as_non_root=True,
                    run_as_user=uid,
                    run_as_group=uid,
                    fs_group=fs_group,
                    # Skip the recursive chown/chmod of a volume whose root already
                    # matches: a large database volume would be walked on every start.
                    fs_group_change_policy="OnRootMismatch" if fs_group is not None else None,
                    seccomp_profile=k8s.SeccompProfile(type="RuntimeDefault"),
                ),
                init_containers=[render_container(c) for c in init_containers] or None,
                containers=[render_container(c) for c in containers],
                volumes=[
                    *(k8s.Volume(name=_volume_name(p), empty_dir=k8s.EmptyDirVolumeSource(
                        size_limit=quantity(scratch_size)))
                      for p in writable),
                    *(k8s.Volume(name=_volume_name(p), empty_dir=k8s.EmptyDirVolumeSource(
                        medium="Memory", size_limit=quantity(scratch_size)))
                      for p in in_memory),
                    *volumes,
                ] or None,
            ),
        )

        served = [p for c in containers for p in c.ports if p.in_service]
        self.service: k8s.KubeService | None = None
        if served or headless_service:
            self.service = k8s.KubeService(
                self, "service",
                metadata=metadata(self.identity, name, self.namespace),
                spec=k8s.ServiceSpec(
                    type="ClusterIP",
                    cluster_ip="None" if headless_service else None,
                    selector=self.identity.selector(),
                    ports=[k8s.ServicePort(name=p.name, port=p.port,
                                           target_port=named_port(p.name), protocol="TCP")
                           for p in served],
                ),
            )

    # Labels whose value tells this controller's pod generations apart; the
    # spread then counts only the pods of the current rollout.
    SPREAD_MATCH_LABEL_KEYS: tuple[str, ...] = ()

    def _spread(self) -> list[k8s.TopologySpreadConstraint]:
        """Across zones first, then nodes. ScheduleAnyway: a one-zone (or
        one-node) cluster still schedules every pod, just less spread; the
        PDB (maxUnavailable 1) then keeps voluntary evictions one at a time."""
        return [
            k8s.TopologySpreadConstraint(
                topology_key=key, max_skew=1, when_unsatisfiable="ScheduleAnyway",
                label_selector=k8s.LabelSelector(match_labels=self.identity.selector()),
                match_label_keys=list(self.SPREAD_MATCH_LABEL_KEYS) or None)
            for key in (ZONE_KEY, HOSTNAME_KEY)
        ]

    @property
    def service_name(self) -> str:
        if self.service is None:
            raise ValueError(f"workload {self.name!r} has no Service")
        return self.name

    def meta(self, annotations: Mapping[str, str] | None = None) -> k8s.ObjectMeta:
        return metadata(self.identity, self.name, self.namespace, annotations=annotations)


class Deployment(Workload):
    # Set by the Deployment controller on each ReplicaSet's pods.
    SPREAD_MATCH_LABEL_KEYS = ("pod-template-hash",)

    def __init__(self, scope: Construct, id: str, *, replicas: int | None,
                 max_surge: int | str = 1, max_unavailable: int | str = 0,
                 recreate: bool = False, **workload: object) -> None:
        super().__init__(scope, id, **workload)  # type: ignore[arg-type]
        strategy = k8s.DeploymentStrategy(type="Recreate") if recreate else k8s.DeploymentStrategy(
            type="RollingUpdate",
            rolling_update=k8s.RollingUpdateDeployment(
                max_surge=_int_or_string(max_surge), max_unavailable=_int_or_string(max_unavailable)))
        self.deployment = k8s.KubeDeployment(
            self, "deployment",
            metadata=self.meta(),
            spec=k8s.DeploymentSpec(
                replicas=replicas,
                revision_history_limit=5,
                selector=k8s.LabelSelector(match_labels=self.identity.selector()),
                strategy=strategy,
                template=self.pod_template,
            ),
        )


class StatefulSet(Workload):
    def __init__(self, scope: Construct, id: str, *, replicas: int,
                 volume_claims: Sequence[tuple[str, str, str | None]] = (),
                 parallel: bool = False, **workload: object) -> None:
        """`volume_claims`: (name, size, storage class or None for the default).
        `parallel`: Parallel pod management, so a crash-looping pod does not stop
        the controller from rolling out a fixed template (OrderedReady waits)."""
        super().__init__(scope, id, headless_service=True, **workload)  # type: ignore[arg-type]
        self.statefulset = k8s.KubeStatefulSet(
            self, "statefulset",
            metadata=self.meta(),
            spec=k8s.StatefulSetSpec(
                replicas=replicas,
                service_name=self.name,
                pod_management_policy="Parallel" if parallel else "OrderedReady",
                revision_history_limit=5,
                selector=k8s.LabelSelector(match_labels=self.identity.selector()),
                template=self.pod_template,
                update_strategy=k8s.StatefulSetUpdateStrategy(type="RollingUpdate"),
                persistent_volume_claim_retention_policy=k8s.StatefulSetPersistentVolumeClaimRetentionPolicy(
                    when_deleted="Retain", when_scaled="Retain"),
                volume_claim_templates=[
                    k8s.KubePersistentVolumeClaimProps(
                        metadata=k8s.ObjectMeta(name=claim, labels=self.identity.claim_labels()),
                        spec=k8s.PersistentVolumeClaimSpec(
                            access_modes=["ReadWriteOnce"],
                            storage_class_name=storage_class,
                            resources=k8s.VolumeResourceRequirements(
                                requests={"storage": quantity(size)}),
                        ),
                    )
                    for claim, size, storage_class in volume_claims
                ] or None,
            ),
        )


@dataclass(frozen=True, kw_only=True)
class JobSettings:
    backoff_limit: int = 2
    active_deadline_seconds: int = 3600
    ttl_seconds_after_finished: int = 86400


class Job(Workload):
    def __init__(self, scope: Construct, id: str, *, job_name: str | None = None,
                 settings: JobSettings = JobSettings(), annotations: Mapping[str, str] | None = None,
                 **workload: object) -> None:
        super().__init__(scope, id, restart_policy="Never", **workload)  # type: ignore[arg-type]
        self.job = k8s.KubeJob(
            self, "job",
            metadata=metadata(self.identity, job_name or self.name, self.namespace, annotations=annotations),
            spec=_job_spec(settings, self.pod_template),
        )


@dataclass(frozen=True, kw_only=True)
class Schedule:
    cron: str
    time_zone: str = "Etc/UTC"
    starting_deadline_seconds: int = 300
    successful_jobs_history_limit: int = 3
    failed_jobs_history_limit: int = 3


class CronJob(Workload):
    def __init__(self, scope: Construct, id: str, *, schedule: Schedule,
                 settings: JobSettings = JobSettings(), suspend: bool = False,
                 **workload: object) -> None:
        super().__init__(scope, id, restart_policy="Never", **workload)  # type: ignore[arg-type]
        self.cronjob = k8s.KubeCronJob(
            self, "cronjob",
            metadata=self.meta(),
            spec=k8s.CronJobSpec(
                schedule=schedule.cron,
                time_zone=schedule.time_zone,
                # Two runs at once would race on the same dump name and retention.
                concurrency_policy="Forbid",
                starting_deadline_seconds=schedule.starting_deadline_seconds,
                successful_jobs_history_limit=schedule.successful_jobs_history_limit,
                failed_jobs_history_limit=schedule.failed_jobs_history_limit,
                suspend=suspend,
                job_template=k8s.JobTemplateSpec(
                    metadata=k8s.ObjectMeta(labels=self.identity.labels()),
                    spec=_job_spec(settings, self.pod_template),
                ),
            ),
        )


def _job_spec(settings: JobSettings, template: k8s.PodTemplateSpec) -> k8s.JobSpec:
    return k8s.JobSpec(
        backoff_limit=settings.backoff_limit,
        active_deadline_seconds=settings.active_deadline_seconds,
        ttl_seconds_after_finished=settings.ttl_seconds_after_finished,
        template=template,
    )


def _int_or_string(value: int | str) -> k8s.IntOrString:
    return number(value) if isinstance(value, int) else named_port(value)
