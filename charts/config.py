"""The profile model: everything an environment may set, with safe defaults.

A profile file in env/ holds only its differences from these defaults. The
loader rejects unknown keys, wrong types and invalid values with the file
name and the key path; cross-field and per-environment rules live in
`RULES` at the bottom, in one place.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlparse

from charts.schema import (
    ConfigError,
    InvalidKeyError,
    at_least,
    between,
    build,
    check,
    dns_label,
    dns_name,
    matches,
    non_empty,
    quantity_value,
    show,
)
from charts.validators import (
    MiB,
    bytes_quantity,
    celery_queue,
    cidr_block,
    cpu_quantity,
    cron,
    duration,
    each,
    email,
    git_revision,
    git_url,
    host_port,
    iana_time_zone,
    image_digest,
    image_repository,
    image_tag,
    label_key,
    label_map,
    label_value,
    optional,
    public_host,
    s3_bucket,
    s3_region,
    secret_path,
    url,
)
from charts.yamlsafe import YamlReadError, read_yaml_mapping

# Digits are capped so a value never overflows what nginx or Traefik parse.
RATE_PATTERN = r"[1-9][0-9]{0,5}r/[sm]"
SIZE_PATTERN = r"[1-9][0-9]{0,5}[kmg]?"
memory_amount = bytes_quantity(MiB, "memory")


def frozen_map(**items: str) -> Mapping[str, str]:
    return MappingProxyType(dict(items))


def _raise(message: str) -> None:
    raise ValueError(message)


def unique(values: tuple[str, ...]) -> None:
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"lists {show(repeated[0])} more than once")


def ratio(value: float) -> None:
    if not 0 < value < 1:
        raise ValueError(f"must be between 0 and 1, exclusive (got {show(value)})")


# Digests of third-party images (each the multi-architecture index of the tag
# beside it): public records, with their evidence, in docs/image-digests.md;
# none was checked against a registry from here. A new tag needs its digest
# (`crane digest repo:tag` or `docker buildx imagetools inspect repo:tag`).
DIGESTS = MappingProxyType({
    "valkey": "sha256:3acc0687f2a2e1091fae6450d7842dd658c941338cf0a873ddd9e14b9e4ea4dd",
    "grafana": "sha256:ab5cb380e3ff3172d6c8bd2e7cfd31cce977d2881b260e1f5bc089bf0b759b43",
    "prometheus": "sha256:5ce7540c3c00ef4ab0c9d2c995c6a5b9c421f44b4a115d97a2c7af3b1c21cbb0",
    "alertmanager": "sha256:690c7b525f4367aa91f73e2f91c632206d32e97c6384bdbf2fb7a861b420340d",
    "redis_exporter": "sha256:fed773ffd2bb2eac706e0ed9cc2fff41651193ee4977e2a4f6919658ad2313f4",
    "seaweedfs": "sha256:ce9e796f1fe6f06968f4c04bdaf8f678dad9c8acdfef3d244133d71bfa6bf882",
    "cnpg": "sha256:9287ce030c6f3ce822e383b019ae4aaf1e8370bff3b39f9c51dc10d69dc97219",
})


@dataclass(frozen=True)
class ProjectImage:
    """An image this project builds: images.yml builds `context`/Dockerfile and
    pushes it as ghcr.io/<owner>/<name>, cd.yml pins stage's `key` to its
    digest, `make promote` copies that into prod, `make up` builds it for kind."""

    key: str  # the profile key of its Image
    context: str  # the build context (a top-level folder)
    name: str  # the registry name images.yml pushes

    @property
    def section(self) -> str:
        return self.key.split(".")[0]

    @property
    def attribute(self) -> str:
        return self.key.split(".", 1)[1]


PROJECT_IMAGES = (
    ProjectImage("api.image", "app", "api"),
    ProjectImage("backups.image", "backup", "backup"),
    # Upstream's source at a pinned commit: no digest of its published images
    # could be verified (docs/decisions/051).
    ProjectImage("monitoring.celery_exporter_image", "celery-exporter", "celery-exporter"),
)


@dataclass(frozen=True, kw_only=True)
class Image:
    repository: str = check(image_repository)
    # Required: an image without a tag renders as `repo:`, which no runtime pulls.
    # A sha256:<digest> here renders as repo@sha256:... (how cd.yml pinned stage before `digest`).
    tag: str = check(image_tag)
    # The registry's digest of the tag: renders as repo:tag@sha256:..., and the
    # runtime pulls by the digest, so a tag pushed again cannot change what runs.
    digest: str | None = check(optional(image_digest), default=None)
    # The source commit a digest-pinned image was built from (cd.yml records it).
    revision: str | None = check(optional(matches(r"[0-9a-f]{40}", "must be a 40-character commit id")),
                                 default=None)

    def __post_init__(self) -> None:
        if self.digest is not None and self.tag.startswith("sha256:"):
            raise InvalidKeyError("digest", f"the tag is a digest already; put the version tag in `tag` "
                                            f"(got tag {self.tag!r})")

    @property
    def ref(self) -> str:
        if self.tag.startswith("sha256:"):
            return f"{self.repository}@{self.tag}"
        return f"{self.repository}:{self.tag}" + (f"@{self.digest}" if self.digest else "")

    @property
    def pinned(self) -> bool:
        return bool(self.tag) and self.tag != "latest"

    @property
    def by_digest(self) -> bool:
        return self.digest is not None or self.tag.startswith("sha256:")


@dataclass(frozen=True, kw_only=True)
class Resources:
    """Requests and limits of one container. Limits are always set."""

    cpu: str = check(cpu_quantity)
    memory: str = check(memory_amount)
    cpu_limit: str = check(cpu_quantity)
    memory_limit: str = check(memory_amount)

    def __post_init__(self) -> None:
        if quantity_value(self.cpu_limit) < quantity_value(self.cpu):
            raise InvalidKeyError("cpu_limit", f"is below the request cpu {self.cpu} (got {show(self.cpu_limit)})")
        if quantity_value(self.memory_limit) < quantity_value(self.memory):
            raise InvalidKeyError("memory_limit",
                                  f"is below the request memory {self.memory} (got {show(self.memory_limit)})")


def resources(cpu: str, memory: str, cpu_limit: str, memory_limit: str) -> Resources:
    return Resources(cpu=cpu, memory=memory, cpu_limit=cpu_limit, memory_limit=memory_limit)


@dataclass(frozen=True, kw_only=True)
class Storage:
    size: str = check(bytes_quantity(MiB, "size"), default="1Gi")
    # None keeps the cluster's default StorageClass.
    class_name: str | None = check(optional(dns_name), default=None)


@dataclass(frozen=True, kw_only=True)
class Autoscaling:
    enabled: bool = False
    min_replicas: int = check(at_least(1), default=2)
    max_replicas: int = check(at_least(1), default=6)
    cpu_utilization: int = check(between(10, 100), default=70)

    def __post_init__(self) -> None:
        if self.min_replicas > self.max_replicas:
            raise InvalidKeyError("min_replicas", f"exceeds max_replicas {self.max_replicas} (got {self.min_replicas})")


# gunicorn's graceful timeout (app/gunicorn.conf.py reads GUNICORN_GRACEFUL_TIMEOUT).
GUNICORN_GRACEFUL_TIMEOUT_SECONDS = 25


@dataclass(frozen=True, kw_only=True)
class Toleration:
    """One pod toleration, as in the Kubernetes API (core/v1 Toleration)."""

    key: str | None = check(optional(label_key), default=None)
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = check(optional(label_value), default=None)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = check(lambda v: None if v is None or v >= 0 else
                                           _raise(f"must be >= 0 (got {v})"), default=None)

    def __post_init__(self) -> None:
        if self.operator == "Exists" and self.value:
            raise ValueError(f"value must be empty when operator is 'Exists' (got {self.value!r})")
        if self.key is None and self.operator != "Exists":
            raise ValueError("an empty key needs operator 'Exists' (it tolerates every taint)")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError(f"toleration_seconds applies to effect 'NoExecute' only (got effect {self.effect!r})")


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Where a component's pods may run. Empty: anywhere the scheduler likes."""

    node_selector: Mapping[str, str] = check(label_map(required=False), factory=lambda: frozen_map())
    tolerations: tuple[Toleration, ...] = ()
    priority_class_name: str | None = check(lambda v: None if v is None else dns_name(v), default=None)
    # Spread the pods across zones and nodes (topologySpreadConstraints,
    # ScheduleAnyway); for components that run several replicas.
    spread: bool = False


@dataclass(frozen=True, kw_only=True)
class ImagesConfig:
    # An existing kubernetes.io/dockerconfigjson Secret (never rendered) for
    # the project's own images (API, workers, beat, jobs, backups, the Celery exporter).
    pull_secret: str | None = check(lambda v: None if v is None else dns_name(v), default=None)


@dataclass(frozen=True, kw_only=True)
class ApiConfig:
    image: Image
    replicas: int = check(at_least(0), default=2)
    resources: Resources = field(default_factory=lambda: resources("250m", "384Mi", "1", "512Mi"))
    gunicorn_workers: int = check(between(1, 32), default=2)
    settings_module: str = check(matches(r"[a-z_][a-z0-9_.]*", "must be a Python module path"),
                                 default="config.settings.prod")
    autoscaling: Autoscaling = field(default_factory=Autoscaling)
    disruption_budget: bool = True
    placement: Placement = field(default_factory=Placement)
    # Dev only: run the auto-reloading server on the source mounted from the
    # host through a PersistentVolume that kind/up.sh creates (no hostPath in pods).
    dev_reload: bool = False
    dev_source_volume: str = check(dns_label, default="vibearena-app-source")
    termination_grace_seconds: int = check(between(10, 300), default=40)
    # The superuser `make createsuperuser` creates; its password is in the Secret.
    superuser_username: str = check(matches(r"[A-Za-z0-9_.@+-]{1,150}", "must be a Django username"),
                                    default="admin")
    superuser_email: str | None = check(optional(email), default=None)
    # Seconds the pod keeps serving after it is marked for deletion, so the
    # ingress controller and endpoints drop it before SIGTERM.
    drain_seconds: int = check(between(0, 60), default=10)

    def __post_init__(self) -> None:
        # The kubelet kills the pod when the grace period ends: it must cover
        # the drain sleep, gunicorn's graceful timeout and a margin.
        needed = self.drain_seconds + GUNICORN_GRACEFUL_TIMEOUT_SECONDS + 5
        if self.termination_grace_seconds < needed:
            raise InvalidKeyError("termination_grace_seconds",
                                  f"must be at least {needed}: drain_seconds {self.drain_seconds} + gunicorn's"
                                  f" graceful timeout {GUNICORN_GRACEFUL_TIMEOUT_SECONDS} + 5"
                                  f" (got {self.termination_grace_seconds})")


def unique_names(items: tuple[Any, ...], what: str) -> None:
    names = [item.name for item in items]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{what} names must be unique (repeated: {', '.join(duplicates)})")


# Seconds a worker needs after its last task ends to acknowledge it and exit.
WORKER_SHUTDOWN_MARGIN_SECONDS = 30


@dataclass(frozen=True, kw_only=True)
class WorkerAutoscaling:
    """off: a fixed `replicas`; hpa: CPU; keda: queue length (and CPU if set)."""

    mode: Literal["off", "hpa", "keda"] = "off"
    min_replicas: int = check(at_least(0), default=1)
    max_replicas: int = check(at_least(1), default=4)
    # Target CPU utilisation (% of the request): required for hpa, optional
    # extra trigger for keda.
    cpu_utilization: int | None = check(lambda v: None if v is None else between(10, 100)(v), default=None)
    # keda: messages waiting per replica (the HPA's average target), the
    # backlog that wakes a group scaled to zero, and how often KEDA looks.
    queue_length: int = check(at_least(1), default=10)
    activation_queue_length: int = check(at_least(0), default=0)
    polling_interval_seconds: int = check(between(5, 3600), default=30)
    # keda: seconds without messages before scaling to zero (min_replicas 0).
    cooldown_seconds: int = check(between(0, 86400), default=300)

    def __post_init__(self) -> None:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} exceeds max_replicas {self.max_replicas}")
        if self.mode == "hpa" and self.cpu_utilization is None:
            raise ValueError("cpu_utilization is required when mode is 'hpa' (got null)")
        if self.mode == "hpa" and self.min_replicas < 1:
            raise ValueError(f"min_replicas must be >= 1 when mode is 'hpa'; scale to zero needs 'keda' "
                             f"(got {self.min_replicas})")


@dataclass(frozen=True, kw_only=True)
class WorkerGroup:
    """One Celery worker Deployment consuming a group of queues."""

    # The Deployment is worker-<name>, a label value: at most 63 characters.
    name: str = check(dns_label, matches(r".{1,56}", "must be at most 56 characters (worker-<name> is a label)"))
    queues: tuple[str, ...] = check(each(celery_queue), default=("celery",))
    concurrency: int = check(between(1, 64), default=2)
    replicas: int = check(at_least(0), default=1)
    autoscaling: WorkerAutoscaling = field(default_factory=WorkerAutoscaling)
    resources: Resources = field(default_factory=lambda: resources("200m", "256Mi", "1", "512Mi"))
    # 1: a worker reserves one task at a time, so a long task never holds
    # others hostage (with late acks, reserved tasks wait on this worker).
    prefetch_multiplier: int = check(between(1, 16), default=1)
    max_tasks_per_child: int = check(at_least(1), default=200)
    # Celery's hard and soft task time limits (CELERY_TASK_TIME_LIMIT,
    # CELERY_TASK_SOFT_TIME_LIMIT) for this group's workers.
    task_time_limit_seconds: int = check(between(10, 86400), default=300)
    task_soft_time_limit_seconds: int = check(between(5, 86400), default=240)
    # A warm shutdown must finish the running tasks within this time: at
    # least the hard time limit plus WORKER_SHUTDOWN_MARGIN_SECONDS.
    termination_grace_seconds: int = check(between(30, 86400), default=330)
    disruption_budget: bool = True
    placement: Placement = field(default_factory=Placement)

    def __post_init__(self) -> None:
        if not self.queues:
            raise InvalidKeyError("queues", "must name at least one queue (got an empty list)")
        if self.task_soft_time_limit_seconds >= self.task_time_limit_seconds:
            raise InvalidKeyError("task_soft_time_limit_seconds",
                                  f"must be below task_time_limit_seconds {self.task_time_limit_seconds}"
                                  f" (got {self.task_soft_time_limit_seconds})")
        needed = self.task_time_limit_seconds + WORKER_SHUTDOWN_MARGIN_SECONDS
        if self.termination_grace_seconds < needed:
            raise InvalidKeyError("termination_grace_seconds",
                                  f"must be >= task_time_limit_seconds + {WORKER_SHUTDOWN_MARGIN_SECONDS} = {needed},"
                                  f" or SIGTERM kills running tasks (got {self.termination_grace_seconds})")

    @property
    def smallest_replicas(self) -> int:
        return self.autoscaling.min_replicas if self.autoscaling.mode != "off" else self.replicas


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    groups: tuple[WorkerGroup, ...] = (WorkerGroup(name="default"),)
    # Redis redelivers a task whose worker died after this many seconds
    # (broker visibility_timeout); it must exceed every group's time limit,
    # or a running task is handed to a second worker.
    visibility_timeout_seconds: int = check(between(60, 7 * 86400), default=3600)
    # Where KEDA's operator runs (keda mode): its NetworkPolicy to Redis.
    keda_namespace: str = check(dns_label, default="keda")
    keda_operator_pod_labels: Mapping[str, str] = check(
        label_map(required=True), factory=lambda: frozen_map(app="keda-operator"))

    def __post_init__(self) -> None:
        if not self.groups:
            raise InvalidKeyError("groups", "must list at least one worker group (got an empty list)")
        unique_names(self.groups, "worker group")
        seen: dict[str, str] = {}
        for index, group in enumerate(self.groups):
            for queue in group.queues:
                if queue in seen:
                    raise InvalidKeyError(f"groups[{index}].queues",
                                          f"queue {queue!r} is already consumed by worker group {seen[queue]!r};"
                                          " a queue belongs to one group")
                seen[queue] = group.name
        longest = max(g.task_time_limit_seconds for g in self.groups)
        if self.visibility_timeout_seconds <= longest:
            raise InvalidKeyError("visibility_timeout_seconds",
                                  f"must exceed the longest task_time_limit_seconds {longest}"
                                  f" (got {self.visibility_timeout_seconds})")


@dataclass(frozen=True, kw_only=True)
class BeatConfig:
    resources: Resources = field(default_factory=lambda: resources("50m", "128Mi", "500m", "256Mi"))
    placement: Placement = field(default_factory=Placement)

    def __post_init__(self) -> None:
        if self.placement.spread:
            raise ValueError("placement.spread: beat runs one replica, there is nothing to spread (got true)")


def cidr(value: str) -> None:
    try:
        # NetworkPolicy ipBlock wants the prefix length written out.
        if "/" not in value:
            raise ValueError(value)
        ipaddress.ip_network(value, strict=True)
    except ValueError:
        raise ValueError(f"must be a CIDR like 10.20.0.0/16 (got {value!r})") from None


def host_name(value: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        dns_name(value)


SQL_NAME = matches(r"[a-z_][a-z0-9_]{0,62}", "must be a lowercase SQL identifier")


@dataclass(frozen=True, kw_only=True)
class CaBundle:
    """A CA certificate bundle (PEM) in a ConfigMap or Secret of the namespace,
    mounted read-only into every client that connects over TLS."""

    kind: Literal["ConfigMap", "Secret"] = "ConfigMap"
    name: str = check(dns_name)
    key: str = check(matches(r"[-._a-zA-Z0-9]{1,253}", "must be a ConfigMap/Secret key"), default="ca.crt")


@dataclass(frozen=True, kw_only=True)
class ExternalPostgres:
    """A managed Postgres (RDS, Cloud SQL, Azure): the app connects over TLS."""

    host: str = check(host_name)
    port: int = check(between(1, 65535), default=5432)
    # Egress from the clients (NetworkPolicy ipBlock): the server's address range.
    cidr: str = check(cidr)
    # verify-full checks the chain and the host name; verify-ca only the chain.
    sslmode: Literal["verify-full", "verify-ca"] = "verify-full"
    ca: CaBundle


@dataclass(frozen=True, kw_only=True)
class ExternalRedis:
    """A managed Redis or Valkey (ElastiCache, Memorystore)."""

    host: str = check(host_name)
    port: int = check(between(1, 65535), default=6379)
    cidr: str = check(cidr)
    db: int = check(between(0, 15), default=0)
    # An ACL user; None authenticates the default user with the password only.
    username: str | None = check(lambda v: None if v is None else
                                 matches(r"[A-Za-z0-9_.@-]{1,64}", "must be a Redis ACL user name")(v),
                                 default=None)
    tls: bool = True
    # None: the server certificate is checked against the image's system CAs.
    ca: CaBundle | None = None

    def __post_init__(self) -> None:
        if self.ca is not None and not self.tls:
            raise ValueError("ca is set but tls is false (a CA bundle is only used with TLS)")


HTTPS_URL = re.compile(r"https?://[^\s/:]+(:[0-9]+)?/?")
RFC3339 = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})"


@dataclass(frozen=True, kw_only=True)
class CnpgBackup:
    """WAL archive and base backups through the Barman Cloud plugin, to an S3
    bucket outside the cluster. Keys: CNPG_BACKUP_S3_* in the env's Secret."""

    endpoint: str = check(lambda v: None if HTTPS_URL.fullmatch(v) else
                          _raise(f"must be an http(s) URL like https://s3.eu-central-1.amazonaws.com (got {v!r})"))
    bucket: str = check(matches(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", "must be an S3 bucket name"))
    path: str = check(matches(r"[a-z0-9][a-z0-9/_-]{0,200}", "must be a key prefix like cnpg/prod"), default="cnpg")
    # Egress from the instances to the endpoint (NetworkPolicy ipBlock).
    cidr: str = check(cidr, default="0.0.0.0/0")
    # Base backups and WAL older than this go (barman: XXd, XXw or XXm).
    retention: str = check(matches(r"[1-9][0-9]*[dwm]", "must look like 30d, 4w or 3m"), default="30d")
    # Six fields, seconds first (CNPG ScheduledBackup, robfig/cron).
    schedule: str = check(matches(r"(\S+\s+){5}\S+", "must be a 6-field cron expression (seconds first)"),
                          default="0 0 3 * * *")


@dataclass(frozen=True, kw_only=True)
class CnpgRecovery:
    """Point-in-time recovery: bootstrap this cluster from the archive of
    `source_server_name` up to `target_time` (docs/data-tier.md)."""

    enabled: bool = False
    target_time: str | None = check(lambda v: None if v is None or re.fullmatch(RFC3339, v) else
                                    _raise(f"must be an RFC 3339 time like 2026-11-30T02:55:00Z (got {v!r})"),
                                    default=None)
    source_server_name: str = check(dns_label, default="postgres")

    def __post_init__(self) -> None:
        if self.enabled and not self.target_time:
            raise ValueError("target_time is required when enabled")


@dataclass(frozen=True, kw_only=True)
class CnpgPooler:
    enabled: bool = False
    instances: int = check(between(1, 10), default=2)
    pool_mode: Literal["session", "transaction"] = "session"
    image: Image = field(default_factory=lambda: Image(repository="ghcr.io/cloudnative-pg/pgbouncer", tag="1.25.1"))
    resources: Resources = field(default_factory=lambda: resources("50m", "64Mi", "500m", "128Mi"))


@dataclass(frozen=True, kw_only=True)
class CnpgConfig:
    """A CloudNativePG Cluster (the operator and the Barman Cloud plugin are
    installed by the cluster admin; docs/decisions/038)."""

    name: str = check(dns_label, default="postgres")
    instances: int = check(between(1, 9), default=3)
    image: Image = field(default_factory=lambda: Image(repository="ghcr.io/cloudnative-pg/postgresql",
                                                       tag="18.4-system-trixie", digest=DIGESTS["cnpg"]))
    wal_storage: Storage = field(default_factory=lambda: Storage(size="4Gi"))
    # Where the operator runs: it calls each instance's status port and 5432.
    operator_namespace: str = check(dns_label, default="cnpg-system")
    operator_pod_labels: Mapping[str, str] = check(label_map(required=True), factory=lambda: frozen_map(
        **{"app.kubernetes.io/name": "cloudnative-pg"}))
    # The instance manager in every pod watches its Cluster through the API
    # server: `kubectl get endpointslices -n default -l kubernetes.io/service-name=kubernetes`.
    api_server_cidr: str = check(cidr)
    api_server_port: int = check(between(1, 65535), default=443)
    # Archive folder of this cluster in the bucket; change it for a PITR
    # bootstrap so the new cluster never writes into the archive it reads.
    server_name: str = check(dns_label, default="postgres")
    backup: CnpgBackup | None = None
    recovery: CnpgRecovery = field(default_factory=CnpgRecovery)
    # Move the StatefulSet's database in (bootstrap.initdb.import); the
    # StatefulSet keeps running until this is switched off again.
    import_from_statefulset: bool = False
    pooler: CnpgPooler = field(default_factory=CnpgPooler)

    def __post_init__(self) -> None:
        if self.recovery.enabled and self.import_from_statefulset:
            raise ValueError("recovery.enabled and import_from_statefulset exclude each other (one bootstrap)")
        if self.recovery.enabled and self.recovery.source_server_name == self.server_name:
            raise ValueError(f"server_name must differ from recovery.source_server_name ({self.server_name!r}): "
                             "the recovered cluster must not archive into the archive it restores from")
        if self.recovery.enabled and self.backup is None:
            raise ValueError("recovery.enabled needs backup (the object store holding the archive)")


POSTGRES_MIN_MEMORY = 128 * MiB
REDIS_MIN_MAXMEMORY = 16 * MiB


@dataclass(frozen=True, kw_only=True)
class PostgresConfig:
    # statefulset: one Postgres pod in the namespace (dev); cnpg: a
    # CloudNativePG cluster; external: a managed server (docs/data-tier.md).
    mode: Literal["statefulset", "cnpg", "external"] = "statefulset"
    external: ExternalPostgres | None = None
    cnpg: CnpgConfig | None = None
    image: Image = field(default_factory=lambda: Image(repository="postgres", tag="18.6-trixie"))
    exporter_image: Image = field(default_factory=lambda: Image(
        repository="quay.io/prometheuscommunity/postgres-exporter", tag="v0.20.1"))
    # Run the exporter (in external mode as its own Deployment pointed at the server).
    exporter: bool = True
    database: str = check(SQL_NAME, default="vibearena")
    # The app's role: owns the database, no superuser (migrations run as it).
    user: str = check(SQL_NAME, default="vibearena")
    # The bootstrap superuser of the StatefulSet (the image's POSTGRES_USER);
    # only the roles Job connects as it.
    superuser: str = check(SQL_NAME, default="postgres")
    # Read-only role of the dump CronJobs (pg_read_all_data), and the
    # exporter's role (pg_monitor).
    backup_user: str = check(SQL_NAME, default="vibearena_backup")
    monitor_user: str = check(SQL_NAME, default="vibearena_monitor")
    storage: Storage = field(default_factory=lambda: Storage(size="10Gi"))
    resources: Resources = field(default_factory=lambda: resources("250m", "512Mi", "2", "1Gi"))
    max_connections: int = check(between(20, 5000), default=100)
    # A PDB on the single Postgres pod blocks every voluntary eviction: node
    # drains, autoscaler scale-down and managed upgrades stall or fail. Off by
    # default; turn it on only with a planned maintenance procedure.
    disruption_budget: bool = False

    def __post_init__(self) -> None:
        if self.mode == "external" and self.external is None:
            raise ValueError("external: required when mode is 'external' (host, cidr, ca)")
        if self.mode != "external" and self.external is not None:
            raise ValueError(f"external: only allowed when mode is 'external' (mode is {self.mode!r})")
        if self.mode == "cnpg" and self.cnpg is None:
            raise ValueError("cnpg: required when mode is 'cnpg' (at least api_server_cidr)")
        if self.mode != "cnpg" and self.cnpg is not None:
            raise ValueError(f"cnpg: only allowed when mode is 'cnpg' (mode is {self.mode!r})")
        names = [self.user, self.superuser, self.backup_user, self.monitor_user]
        if len(set(names)) != len(names):
            raise ValueError(f"user, superuser, backup_user and monitor_user must differ (got {', '.join(names)})")
        if self.mode == "external":
            return  # resources and settings are the provider's
        # charts/data.py postgres_settings derives shared_buffers (1/4 of the
        # limit, at least 16MB) and work_mem (that quarter shared by every
        # connection, at least 1MB); below these bounds the floors win and
        # the settings promise more memory than the container has.
        limit = quantity_value(self.resources.memory_limit)
        needed = max(POSTGRES_MIN_MEMORY, 4 * MiB * self.max_connections)
        if limit < needed:
            raise InvalidKeyError("resources.memory_limit",
                            f"Postgres needs at least {needed // MiB}Mi for max_connections {self.max_connections}"
                            f" (4Mi per connection, at least {POSTGRES_MIN_MEMORY // MiB}Mi)"
                            f" (got {show(self.resources.memory_limit)})")


@dataclass(frozen=True, kw_only=True)
class RedisConfig:
    # statefulset: one Valkey pod in the namespace; external: a managed server.
    mode: Literal["statefulset", "external"] = "statefulset"
    external: ExternalRedis | None = None
    # Valkey: BSD-licensed, drop-in for the Redis protocol (docs/decisions).
    image: Image = field(default_factory=lambda: Image(repository="valkey/valkey", tag="9.1.1-trixie",
                                                       digest=DIGESTS["valkey"]))
    exporter_image: Image = field(default_factory=lambda: Image(repository="oliver006/redis_exporter", tag="v1.89.0",
                                                                digest=DIGESTS["redis_exporter"]))
    persistence: bool = True
    storage: Storage = field(default_factory=lambda: Storage(size="2Gi"))
    resources: Resources = field(default_factory=lambda: resources("100m", "256Mi", "1", "512Mi"))
    # maxmemory as a share of the memory limit; the rest is for fork/AOF rewrite.
    maxmemory_percent: int = check(between(10, 90), default=70)

    def __post_init__(self) -> None:
        if self.mode == "external" and self.external is None:
            raise ValueError("external: required when mode is 'external' (host, cidr)")
        if self.mode != "external" and self.external is not None:
            raise ValueError(f"external: only allowed when mode is 'external' (mode is {self.mode!r})")
        if self.mode == "external":
            return
        # Valkey reads `maxmemory 0` as "no limit": the derived value must be real.
        maxmemory = quantity_value(self.resources.memory_limit) * self.maxmemory_percent // 100
        if maxmemory < REDIS_MIN_MAXMEMORY:
            raise InvalidKeyError("resources.memory_limit",
                            f"gives maxmemory {int(maxmemory)} bytes at {self.maxmemory_percent}%; Valkey needs"
                            f" at least {REDIS_MIN_MAXMEMORY // MiB}Mi (got {show(self.resources.memory_limit)})")


@dataclass(frozen=True, kw_only=True)
class ObjectStoreConfig:
    """The S3 endpoint the app and backups use (MINIO_ENDPOINT in the seed)."""

    # in-cluster: a StatefulSet named minio; external: a managed S3 endpoint.
    mode: Literal["in-cluster", "external"] = "in-cluster"
    # Which S3 server the in-cluster StatefulSet runs (docs/decisions).
    server: Literal["seaweedfs", "minio"] = "seaweedfs"
    image: Image = field(default_factory=lambda: Image(repository="chrislusf/seaweedfs", tag="4.47",
                                                       digest=DIGESTS["seaweedfs"]))
    bucket: str = check(s3_bucket, default="krvibe")
    storage: Storage = field(default_factory=lambda: Storage(size="10Gi"))
    resources: Resources = field(default_factory=lambda: resources("100m", "256Mi", "1", "1Gi"))
    external_endpoint: str | None = check(optional(url("https", "http", path=False)), default=None)
    region: str = check(s3_region, default="us-east-1")
    # Egress to the external endpoint (NetworkPolicy ipBlock).
    external_cidr: str = check(cidr_block, default="0.0.0.0/0")

    def __post_init__(self) -> None:
        if self.mode == "external" and not self.external_endpoint:
            raise InvalidKeyError("external_endpoint", "is required when mode is 'external' (got nothing)")


@dataclass(frozen=True, kw_only=True)
class OffsiteConfig:
    """Off-site S3 target the object-store mirror copies the app bucket to."""

    enabled: bool = False
    endpoint: str = check(url("https", "http", path=False), default="https://s3.amazonaws.com")
    bucket: str = check(s3_bucket, default="vibearena-offsite")
    region: str = check(s3_region, default="us-east-1")
    cidr: str = check(cidr_block, default="0.0.0.0/0")


@dataclass(frozen=True, kw_only=True)
class BackupConfig:
    enabled: bool = True
    image: Image = field(default_factory=lambda: Image(repository="ghcr.io/vibearena/backup", tag="0.1.0"))
    bucket: str = check(s3_bucket, default="krvibe-backups")
    postgres_schedule: str = check(cron, default="15 2 * * *")
    mirror_schedule: str = check(cron, default="45 2 * * *")
    drill_schedule: str = check(cron, default="30 4 * * 0")
    # Dump retention (backup-prune), after the nightly dump.
    prune_schedule: str = check(cron, default="15 4 * * *")
    restore_drill: bool = True
    time_zone: str = check(iana_time_zone, default="Etc/UTC")
    keep_last: int = check(at_least(1), default=7)
    max_age_days: int = check(at_least(1), default=30)
    # Alert when the newest successful backup is older than this.
    stale_after_hours: int = check(at_least(1), default=26)
    offsite: OffsiteConfig = field(default_factory=OffsiteConfig)
    resources: Resources = field(default_factory=lambda: resources("100m", "128Mi", "1", "512Mi"))


@dataclass(frozen=True, kw_only=True)
class LokiConfig:
    enabled: bool = False
    image: Image = field(default_factory=lambda: Image(repository="grafana/loki", tag="3.7.5"))
    alloy_image: Image = field(default_factory=lambda: Image(repository="grafana/alloy", tag="v1.19.1"))
    # Loki's compactor keeps at least 24h (docs: operations/storage/retention).
    retention: str = check(duration(24 * 3600_000), default="168h")
    storage: Storage = field(default_factory=lambda: Storage(size="10Gi"))
    resources: Resources = field(default_factory=lambda: resources("100m", "256Mi", "1", "512Mi"))
    alloy_resources: Resources = field(default_factory=lambda: resources("20m", "64Mi", "200m", "256Mi"))
    # Alloy tails pod logs through the Kubernetes API (no hostPath), so its
    # NetworkPolicy needs the API server's endpoint address and port: the
    # addresses of `kubectl get endpointslices -n default -l
    # kubernetes.io/service-name=kubernetes` (kind: the control-plane node, 6443).
    api_server_cidr: str | None = check(optional(cidr_block), default=None)
    api_server_port: int = check(between(1, 65535), default=443)

    def __post_init__(self) -> None:
        if self.enabled and not self.api_server_cidr:
            raise InvalidKeyError("api_server_cidr", "is required when enabled (Alloy reads pod logs through the API"
                                                     " server) (got nothing)")


Severity = Literal["critical", "warning"]


@dataclass(frozen=True, kw_only=True)
class EmailReceiver:
    """Mail through an SMTP relay; the password is the Secret's ALERTMANAGER_SMTP_PASSWORD."""

    to: str = check(email)
    sender: str = check(email)
    smarthost: str = check(host_port)
    auth_username: str | None = check(optional(matches(r"[!-~]{1,256}", "must be a user name without spaces")),
                                      default=None)
    require_tls: bool = True
    severities: tuple[Severity, ...] = ("critical",)


@dataclass(frozen=True, kw_only=True)
class ChatReceiver:
    """A webhook or Slack destination; its URL is a key of the env's Secret."""

    enabled: bool = False
    severities: tuple[Severity, ...] = ("critical", "warning")
    # Slack only: the channel (the webhook URL may fix one already).
    channel: str | None = check(lambda v: None if v is None or re.fullmatch(r"[#@]?[a-z0-9_.-]{1,80}", v) else
                                _raise(f"must be a Slack channel like #alerts (got {v!r})"), default=None)


@dataclass(frozen=True, kw_only=True)
class AlertmanagerConfig:
    """Where the bundled Prometheus sends alerts.

    off: nowhere (alerts show in Prometheus only). existing: an Alertmanager
    the cluster runs (dns_name, namespace, pod_labels, port); its receivers
    live with it. bundled: our own Alertmanager, whose receivers read their
    URLs and passwords from the env's Secret through files.
    """

    mode: Literal["off", "existing", "bundled"] = "off"
    # existing: DNS name resolving to the Alertmanager pods (a headless Service).
    dns_name: str = check(dns_name, default="alertmanager-operated.monitoring.svc.cluster.local")
    namespace: str = check(dns_label, default="monitoring")
    pod_labels: Mapping[str, str] = check(label_map(required=True), factory=lambda: frozen_map(
        **{"app.kubernetes.io/name": "alertmanager"}))
    port: int = check(between(1, 65535), default=9093)
    # bundled:
    image: Image = field(default_factory=lambda: Image(repository="quay.io/prometheus/alertmanager", tag="v0.34.0",
                                                       digest=DIGESTS["alertmanager"]))
    resources: Resources = field(default_factory=lambda: resources("20m", "64Mi", "200m", "128Mi"))
    storage: Storage = field(default_factory=lambda: Storage(size="1Gi"))
    webhook: ChatReceiver = field(default_factory=ChatReceiver)
    slack: ChatReceiver = field(default_factory=ChatReceiver)
    email: EmailReceiver | None = None
    # The always-firing Watchdog alert goes to an external dead man's switch
    # (ALERTMANAGER_HEARTBEAT_URL), which pages when the pings stop.
    heartbeat: bool = False
    heartbeat_interval: str = check(duration(1000, units="s|m|h"), default="1m")
    group_by: tuple[str, ...] = ("namespace", "alertname")
    group_wait: str = check(duration(1000, units="s|m|h"), default="30s")
    group_interval: str = check(duration(1000, units="s|m|h"), default="5m")
    critical_repeat_interval: str = check(duration(1000, units="s|m|h"), default="1h")
    warning_repeat_interval: str = check(duration(1000, units="s|m|h"), default="12h")

    def __post_init__(self) -> None:
        if not self.group_by:
            raise InvalidKeyError("group_by", "must name at least one label (got an empty list)")
        for index, label in enumerate(self.group_by):
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}|\.\.\.", label):
                raise InvalidKeyError(f"group_by[{index}]", f"must be a Prometheus label name (got {show(label)})")

    def destinations(self, severity: Severity) -> list[str]:
        """The receivers configured for one severity (bundled mode)."""
        found = [name for name, receiver in (("webhook", self.webhook), ("slack", self.slack))
                 if receiver.enabled and severity in receiver.severities]
        if self.email is not None and severity in self.email.severities:
            found.append("email")
        return found


@dataclass(frozen=True, kw_only=True)
class MonitoringConfig:
    # bundled: our Prometheus + Grafana; operator: ServiceMonitor/PodMonitor/
    # PrometheusRule for an existing prometheus-operator; off: nothing.
    mode: Literal["bundled", "operator", "off"] = "bundled"
    prometheus_image: Image = field(default_factory=lambda: Image(repository="quay.io/prometheus/prometheus",
                                                                  tag="v3.14.0", digest=DIGESTS["prometheus"]))
    grafana_image: Image = field(default_factory=lambda: Image(repository="grafana/grafana", tag="13.1.3",
                                                               digest=DIGESTS["grafana"]))
    # Built by images.yml from upstream's source (celery-exporter/Dockerfile),
    # so its digest is recorded like the app's (docs/decisions/051).
    celery_exporter_image: Image = field(default_factory=lambda: Image(
        repository="ghcr.io/vibearena/celery-exporter", tag="0.12.2"))
    retention: str = check(duration(3600_000), default="15d")
    storage: Storage = field(default_factory=lambda: Storage(size="20Gi"))
    prometheus_resources: Resources = field(default_factory=lambda: resources("200m", "512Mi", "1", "1Gi"))
    grafana_resources: Resources = field(default_factory=lambda: resources("50m", "128Mi", "500m", "256Mi"))
    exporter_resources: Resources = field(default_factory=lambda: resources("20m", "32Mi", "200m", "128Mi"))
    # The Celery exporter is Python and keeps recent task state in memory.
    celery_exporter_resources: Resources = field(default_factory=lambda: resources("20m", "64Mi", "200m", "192Mi"))
    # Labels an operator-managed Prometheus selects monitors and rules by.
    operator_labels: Mapping[str, str] = check(label_map(required=False),
                                               factory=lambda: frozen_map(release="kube-prometheus-stack"))
    # Where the ingress controller exposes metrics (scraped when set).
    ingress_metrics_port: int | None = check(optional(between(1, 65535)), default=9113)
    loki: LokiConfig = field(default_factory=LokiConfig)
    alertmanager: AlertmanagerConfig = field(default_factory=AlertmanagerConfig)
    scrape_interval: str = check(duration(1000, units="s|m"), matches(r"[0-9]{1,4}[sm]", "must be at most 9999s"),
                                 default="30s")
    # The ingress controller's metrics Service (a DNS name, e.g.
    # nginx-ingress-prometheus-service.nginx-ingress.svc): Prometheus finds its
    # pods by DNS, without cluster RBAC. Scraped when this and the port are set.
    ingress_metrics_service: str | None = check(optional(dns_name), default=None)
    # cert-manager's metrics Service (e.g. cert-manager.cert-manager.svc); the
    # certificate-expiry alert exists only when it is scraped.
    cert_manager_metrics_service: str | None = check(optional(dns_name), default=None)
    # kube-state-metrics' Service (e.g. kube-state-metrics.kube-system.svc):
    # the pod-restart alert exists only when it is scraped.
    kube_state_metrics_service: str | None = check(optional(dns_name), default=None)
    kube_state_metrics_port: int = check(between(1, 65535), default=8080)
    kube_state_metrics_namespace: str = check(dns_label, default="kube-system")
    kube_state_metrics_pod_labels: Mapping[str, str] = check(label_map(required=True), factory=lambda: frozen_map(
        **{"app.kubernetes.io/name": "kube-state-metrics"}))
    restarts_in_30m: int = check(at_least(1), default=3)
    cert_manager_namespace: str = check(dns_label, default="cert-manager")
    cert_manager_pod_labels: Mapping[str, str] = check(label_map(required=True), factory=lambda: frozen_map(**{
        "app.kubernetes.io/name": "cert-manager", "app.kubernetes.io/component": "controller"}))
    # Operator mode: where the operator's Prometheus pods run (the NetworkPolicy
    # admits their scrapes), and the labels its Grafana's dashboard sidecar
    # picks dashboard ConfigMaps by (kube-prometheus-stack defaults).
    operator_prometheus_namespace: str = check(dns_label, default="monitoring")
    operator_prometheus_pod_labels: Mapping[str, str] = check(label_map(required=True), factory=lambda: frozen_map(
        **{"app.kubernetes.io/name": "prometheus"}))
    operator_dashboard_labels: Mapping[str, str] = check(label_map(required=False),
                                                         factory=lambda: frozen_map(grafana_dashboard="1"))
    # Alert thresholds.
    api_error_ratio: float = check(ratio, default=0.05)
    api_latency_p95_seconds: float = check(lambda v: None if 0.001 <= v <= 3600 else
                                           _raise(f"must be between 0.001 and 3600 seconds (got {show(v)})"),
                                           default=1.0)
    queue_backlog: int = check(at_least(1), default=100)
    task_failure_ratio: float = check(ratio, default=0.1)
    # Alert when the databases reach this share of the Postgres volume.
    database_volume_ratio: float = check(ratio, default=0.8)
    # The beat-scheduled task whose successes prove beat, broker and a worker
    # run (the app's CELERY_BEAT_SCHEDULE), and how long its absence is tolerated.
    beat_heartbeat_task: str = check(matches(r"[A-Za-z_][A-Za-z0-9_.]*", "must be a dotted task name"),
                                     default="core.tasks.record_heartbeat")
    # Beat sends the heartbeat every minute: a shorter window always fires.
    beat_heartbeat_max_age: str = check(duration(2 * 60_000, units="m"), default="10m")

    def __post_init__(self) -> None:
        if self.loki.enabled and self.mode != "bundled":
            raise InvalidKeyError("loki.enabled", "needs mode 'bundled' (its Grafana is where logs are read)"
                                                  f" (got mode {self.mode!r})")
        if self.alertmanager.mode != "off" and self.mode != "bundled":
            raise InvalidKeyError("alertmanager.mode", f"{self.alertmanager.mode!r} needs mode 'bundled' (an"
                                                       " operator's Prometheus has its own Alertmanager)"
                                                       f" (got mode {self.mode!r})")
        if self.mode == "operator" and not self.operator_labels:
            raise InvalidKeyError("operator_labels", "must name at least one label in mode 'operator' (the"
                                                     " operator's Prometheus selects monitors and rules by them)")
        if self.mode == "operator" and not self.operator_dashboard_labels:
            raise InvalidKeyError("operator_dashboard_labels", "must name at least one label in mode 'operator'"
                                                               " (Grafana's sidecar loads dashboards by them)")
        # Prometheus --storage.tsdb.retention.size is 85% of the volume in MB;
        # 0 would turn the size limit off.
        if self.mode == "bundled" and quantity_value(self.storage.size) < 100 * MiB:
            raise InvalidKeyError("storage.size",
                                  f"must be at least 100Mi for Prometheus (got {show(self.storage.size)})")


@dataclass(frozen=True, kw_only=True)
class TlsConfig:
    # local-ca: a script makes a local CA and creates the TLS Secret (dev).
    # acme: cert-manager issues the certificate from Let's Encrypt.
    mode: Literal["local-ca", "acme"] = "acme"
    secret_name: str = check(dns_label, default="vibearena-tls")
    acme_server: Literal["letsencrypt-staging", "letsencrypt"] = "letsencrypt"
    acme_email: str | None = check(optional(email), default=None)

    def __post_init__(self) -> None:
        if self.mode == "acme" and not self.acme_email:
            raise InvalidKeyError("acme_email", "is required when mode is 'acme' (got nothing)")


@dataclass(frozen=True, kw_only=True)
class GatewayConfig:
    """Optional Gateway API rendering of the same routes (an HTTPRoute)."""

    enabled: bool = False
    name: str = check(dns_label, default="public")
    namespace: str = check(dns_label, default="gateway")
    section_name: str | None = check(optional(dns_name), default=None)


def cidr_list(value: tuple[str, ...]) -> None:
    for item in value:
        try:
            ipaddress.ip_network(item, strict=True)
        except ValueError:
            raise ValueError(f"each entry must be a network like 203.0.113.0/24 with no host bits set "
                             f"(got {item!r})") from None


@dataclass(frozen=True, kw_only=True)
class AdminAccessConfig:
    """Who reaches /admin/ at the edge (the Django login throttle comes after)."""

    # Client networks allowed to reach the admin; empty: anyone (dev only).
    allow_cidrs: tuple[str, ...] = check(cidr_list, default=())
    # Serve the admin on its own host, <subdomain>.<domain> (DNS and
    # certificate of its own; derived from the domain, so every env and
    # preview gets a distinct one). The F5 NGINX Ingress Controller serves
    # one Ingress per host, so an allow-list for the admin alone needs this there.
    subdomain: str | None = check(lambda v: None if v is None else dns_label(v), default=None)

    def host(self, domain: str) -> str | None:
        return f"{self.subdomain}.{domain}" if self.subdomain else None


@dataclass(frozen=True, kw_only=True)
class EdgeConfig:
    # nginx-inc: F5 NGINX Ingress Controller (maintained, default).
    # traefik: Traefik v3 with Middleware resources.
    # ingress-nginx-legacy: the retired kubernetes/ingress-nginx, explicit opt-in only.
    controller: Literal["nginx-inc", "traefik", "ingress-nginx-legacy"] = "nginx-inc"
    ingress_class: str = check(dns_label, default="nginx")
    rate_limit: str = check(matches(RATE_PATTERN, "must look like 10r/s or 600r/m"), default="10r/s")
    rate_limit_burst: int = check(between(0, 10000), default=20)
    body_size: str = check(matches(SIZE_PATTERN, "must be a size like 50m, 512k or 1g"), default="50m")
    # Strict-Transport-Security, sent by Django (DJANGO_HSTS_*), not the controller.
    hsts: bool = True
    hsts_max_age_seconds: int = check(at_least(0), default=31536000)
    hsts_include_subdomains: bool = True
    tls: TlsConfig = field(default_factory=TlsConfig)
    # Where the controller's pods run, for the NetworkPolicy that admits them.
    controller_namespace: str = check(dns_label, default="nginx-ingress")
    controller_pod_labels: Mapping[str, str] = check(label_map(required=True), factory=lambda: frozen_map(
        **{"app.kubernetes.io/name": "nginx-ingress"}))
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    admin: AdminAccessConfig = field(default_factory=AdminAccessConfig)

    @property
    def body_size_bytes(self) -> int:
        units = {"k": 2**10, "m": 2**20, "g": 2**30}
        suffix = self.body_size[-1]
        return int(self.body_size[:-1]) * units[suffix] if suffix in units else int(self.body_size)

    def __post_init__(self) -> None:
        if self.controller == "nginx-inc" and self.admin.allow_cidrs and not self.admin.subdomain:
            # internal/k8s: one Ingress per host unless master/minion
            # mergeable Ingresses, which cert-manager's in-place solver breaks.
            raise InvalidKeyError("admin.subdomain", "is required with admin.allow_cidrs for controller 'nginx-inc'"
                                                     " (it serves one Ingress per host) (got nothing)")


@dataclass(frozen=True, kw_only=True)
class NetworkConfig:
    dns_namespace: str = check(dns_label, default="kube-system")
    dns_pod_labels: Mapping[str, str] = check(label_map(required=True), factory=lambda: frozen_map(
        **{"k8s-app": "kube-dns"}))
    # DNS servers outside the kube-dns pods, e.g. NodeLocal DNSCache
    # ["169.254.20.10/32"] or GKE Cloud DNS ["169.254.169.254/32"].
    dns_cidrs: tuple[str, ...] = check(each(cidr_block), unique, default=())
    # Let the API and workers call HTTPS services on the internet (e.g. the
    # Google Analytics API with GA_SVC_JSON_BASE64). Off: nothing leaves.
    app_internet_egress: bool = False


@dataclass(frozen=True, kw_only=True)
class SecretsConfig:
    # existing: the Secret is created outside the render (dev: scripts/dev-secrets.sh).
    # external-secrets: an ExternalSecret pulls it from a ClusterSecretStore.
    provider: Literal["existing", "external-secrets"] = "existing"
    name: str = check(dns_label, default="vibearena-secrets")
    # ClusterSecretStore: one per env, restricted to the env's namespace with
    # spec.conditions[].namespaces (docs/security.md). SecretStore: lives in
    # the env's namespace, so no other namespace can use it.
    store_kind: Literal["ClusterSecretStore", "SecretStore"] = "ClusterSecretStore"
    store: str | None = check(optional(dns_name), default=None)
    remote_key: str | None = check(optional(secret_path), default=None)
    # 0 would stop refreshing; the Secret would never follow a rotation.
    refresh_interval: str = check(duration(1000, units="s|m|h"), default="1h")

    def __post_init__(self) -> None:
        if self.provider == "external-secrets":
            for key in ("store", "remote_key"):
                if not getattr(self, key):
                    raise InvalidKeyError(key, "is required when provider is 'external-secrets' (got nothing)")


@dataclass(frozen=True, kw_only=True)
class PlanAcknowledgement:
    """A change above routine that `make plan` may let through, and why."""

    object: str = check(matches(r"[A-Z][A-Za-z0-9]*/[a-z0-9][a-z0-9.-]*",
                                "must be Kind/name, e.g. StatefulSet/postgres"))
    risk: Literal["rejected", "data-at-risk", "downtime"]
    reason: str = check(non_empty, matches(r"[^\x00-\x1f\x7f]{1,500}", "must be one line of text, at most 500"
                                                                       " characters"))


@dataclass(frozen=True, kw_only=True)
class PlanConfig:
    """`make plan` (scripts/plan.py): acknowledged changes for the next apply; remove them after it."""

    acknowledge: tuple[PlanAcknowledgement, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ArgoConfig:
    """How Argo CD syncs this env's rendered directory (dist/<env>)."""

    enabled: bool = True
    repo_url: str = check(git_url, default="https://github.com/vibearena/infra.git")
    target_revision: str = check(git_revision, default="main")
    # Off: a person presses Sync. Stage turns it on; prod only on purpose.
    auto_sync: bool = False
    prune: bool = True
    self_heal: bool = True
    destination_server: str = check(url("https"), default="https://kubernetes.default.svc")
    namespace: str = check(dns_label, default="argocd")
    project: str = check(dns_label, default="vibearena")


@dataclass(frozen=True, kw_only=True)
class PreviewConfig:
    """Per-pull-request environments, configured in env/_preview.yaml only.

    Each labelled pull request N gets the environment `pr-N`: namespace
    `<part_of>-pr-N`, host `pr-N.<domain>`. CI renders it into the
    `rendered_branch` branch (dist/previews/pr-N); an Argo CD ApplicationSet
    with the pull-request generator syncs it and deletes it when the PR closes.
    """

    # pr-<number>.<domain> must stay a valid host name (253 characters).
    domain: str = check(public_host, matches(r".{1,240}", "must be at most 240 characters"),
                        default="preview.vibearena.example.com")
    # owner/name of the GitHub repository whose pull requests get previews.
    github_repo: str = check(matches(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}",
                                     "must be a GitHub repository as owner/name"), default="vibearena/infra")
    # Only pull requests with this label get a preview (previews cost a namespace each).
    label: str = check(matches(r"[A-Za-z0-9][A-Za-z0-9 ._:/-]{0,49}", "must be a GitHub label name"),
                       default="preview")
    rendered_branch: str = check(git_revision, default="previews")
    # A Secret in the Argo CD namespace with a GitHub token (key `token`);
    # none: anonymous API calls (public repositories, low rate limit).
    token_secret: str | None = check(lambda v: None if v is None else dns_label(v), default=None)
    requeue_seconds: int = check(between(30, 3600), default=300)


TIERS = ("dev", "stage", "prod")


@dataclass(frozen=True, kw_only=True)
class Profile:
    """One environment. `name` comes from the file name, not from its content.

    `tier` selects the policy rules (RULES): any number of environments can
    share a tier (qa and stage are both `stage`, prod-eu and prod-us `prod`).
    """

    name: str = field(default="", init=False)
    tier: Literal["dev", "stage", "prod"]
    namespace: str = check(dns_label)
    domain: str = check(public_host)
    # <part_of>-<env> is the instance label value (at most 63; env names at most 30).
    part_of: str = check(dns_label, matches(r".{1,32}", "must be at most 32 characters"), default="vibearena")
    api: ApiConfig
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    beat: BeatConfig = field(default_factory=BeatConfig)
    postgres: PostgresConfig = field(default_factory=PostgresConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    object_store: ObjectStoreConfig = field(default_factory=ObjectStoreConfig)
    backups: BackupConfig = field(default_factory=BackupConfig)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    edge: EdgeConfig = field(default_factory=EdgeConfig)
    argocd: ArgoConfig = field(default_factory=ArgoConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    secrets: SecretsConfig = field(default_factory=SecretsConfig)
    preview: PreviewConfig = field(default_factory=PreviewConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    # Out of repr: Job names hash the profile's repr, and an acknowledgement
    # changes nothing rendered, so it must not rename (and re-run) Jobs.
    plan: PlanConfig = field(default_factory=PlanConfig, repr=False)

    @property
    def instance(self) -> str:
        return f"{self.part_of}-{self.name}"

    def image_refs(self) -> dict[str, Image]:
        """Every image in the profile by dotted key path, for pinning rules."""
        found: dict[str, Image] = {}

        def walk(node: object, path: str) -> None:
            if isinstance(node, Image):
                found[path] = node
            elif is_dataclass(node):
                for f in fields(node):
                    walk(getattr(node, f.name), f"{path}.{f.name}" if path else f.name)
            elif isinstance(node, tuple):
                for i, item in enumerate(node):
                    walk(item, f"{path}[{i}]")
        walk(self, "")
        return found


# Rules across fields and per environment. Each returns (key path, message)
# for the first violation, or None.
Rule = Callable[[Profile], "tuple[str, str] | None"]


def images_pinned(profile: Profile) -> tuple[str, str] | None:
    for path, image in profile.image_refs().items():
        if not image.pinned:
            return f"{path}.tag", f"must be pinned in the {profile.tier} tier (no empty tag, no 'latest')"
    return None


def images_by_digest(profile: Profile, rendered: Iterable[str]) -> tuple[str, str] | None:
    """Prod tier: every image the render runs is pulled by digest (a tag can be
    pushed again, a digest cannot change). images.yml records the digests of
    the app images, cd.yml pins stage to them, scripts/promote.py copies them
    into prod. Checked on the rendered images, so a component that is off
    needs no digest. There are no exceptions."""
    paths = {image.ref: path for path, image in profile.image_refs().items()}
    for ref in sorted(set(rendered)):
        if "@sha256:" in ref:
            continue
        path = paths.get(ref)
        where = f"{path}.digest" if path else "images"
        return where, (f"must be set in the {profile.tier} tier: {ref} would run by tag, and a tag can be "
                       "pushed again (docs/image-digests.md)")
    return None


def api_highly_available(profile: Profile) -> tuple[str, str] | None:
    api = profile.api
    smallest = api.autoscaling.min_replicas if api.autoscaling.enabled else api.replicas
    if smallest < 2:
        key = "api.autoscaling.min_replicas" if api.autoscaling.enabled else "api.replicas"
        return key, f"must be >= 2 in the {profile.tier} tier (got {smallest})"
    if not api.disruption_budget:
        return "api.disruption_budget", f"must be true in the {profile.tier} tier"
    return None


def no_dev_server(profile: Profile) -> tuple[str, str] | None:
    if profile.api.dev_reload:
        return "api.dev_reload", f"the auto-reloading dev server is not allowed in the {profile.tier} tier"
    return None


def real_tls(profile: Profile) -> tuple[str, str] | None:
    if profile.edge.tls.mode != "acme":
        return "edge.tls.mode", f"must be 'acme' in the {profile.tier} tier (a local CA is for dev only)"
    return None


def secret_stores_apart(profiles: list[Profile]) -> tuple[str, str, str] | None:
    """Across envs: a stage-tier env and a prod-tier env never read secrets
    through the same ClusterSecretStore, nor the same remote entry (in any
    store: two stores may reach one secret manager). Envs of one tier may
    share (qa and stage). Returns (env, key, message) for the first clash."""
    stores: dict[str, Profile] = {}
    entries: dict[str, Profile] = {}
    for profile in sorted(profiles, key=lambda p: p.name):
        secrets = profile.secrets
        if secrets.provider != "external-secrets" or profile.tier not in ("stage", "prod"):
            continue
        other = stores.get(secrets.store or "") if secrets.store_kind == "ClusterSecretStore" else None
        if other is not None and other.tier != profile.tier:
            return (profile.name, "secrets.store",
                    f"ClusterSecretStore {secrets.store!r} is also used by {other.name} ({other.tier} tier); "
                    "give each tier its own store, restricted to its namespaces")
        other = entries.get(secrets.remote_key or "")
        if other is not None and other.tier != profile.tier:
            return (profile.name, "secrets.remote_key",
                    f"{secrets.remote_key!r} is also read by {other.name} ({other.tier} tier)")
        if secrets.store_kind == "ClusterSecretStore":
            stores.setdefault(secrets.store or "", profile)
        entries.setdefault(secrets.remote_key or "", profile)
    return None


SERVER_SETTINGS_MODULES = ("config.settings.stage", "config.settings.prod")


def server_settings_module(profile: Profile) -> tuple[str, str] | None:
    """Stage and prod tiers: never the dev settings (DEBUG on, no HTTPS)."""
    if profile.api.settings_module not in SERVER_SETTINGS_MODULES:
        tier = profile.tier
        return "api.settings_module", (f"must be one of {', '.join(SERVER_SETTINGS_MODULES)} in {tier} "
                                       f"(got {profile.api.settings_module!r})")
    return None


def admin_restricted(profile: Profile) -> tuple[str, str] | None:
    """Stage and prod: /admin/ only from the listed client networks."""
    if not profile.edge.admin.allow_cidrs:
        tier = profile.tier
        return "edge.admin.allow_cidrs", f"must list the client networks allowed to reach /admin/ in {tier}"
    return None


def production_acme(profile: Profile) -> tuple[str, str] | None:
    if profile.edge.tls.acme_server != "letsencrypt":
        return "edge.tls.acme_server", (f"must be 'letsencrypt' in the {profile.tier} tier "
                                        "(staging certificates are not trusted)")
    if not profile.edge.hsts:
        return "edge.hsts", f"must be true in the {profile.tier} tier"
    return None


def alerts_delivered(profile: Profile) -> tuple[str, str] | None:
    """Monitoring that alerts nobody is not monitoring."""
    monitoring = profile.monitoring
    if monitoring.mode == "off":
        return None
    alertmanager = monitoring.alertmanager
    if monitoring.mode == "bundled" and alertmanager.mode == "off":
        return ("monitoring.alertmanager.mode",
                f"must be 'bundled' or 'existing' in the {profile.tier} tier (got 'off')")
    if alertmanager.mode == "bundled" and not alertmanager.destinations("critical"):
        return ("monitoring.alertmanager", f"must deliver critical alerts in the {profile.tier} tier: enable "
                                           "webhook or slack, or set email (got no destination)")
    return None


def backups_leave_the_cluster(profile: Profile) -> tuple[str, str] | None:
    """Prod tier: losing the cluster must not lose the data. The in-cluster
    object store holds the uploads and the dumps of the StatefulSet Postgres,
    so it needs the off-site copy; a CNPG archive must point outside the
    cluster. A managed (external) Postgres keeps its provider's backups."""
    tier = profile.tier
    if tier != "prod":
        return None
    cnpg = profile.postgres.cnpg
    if profile.postgres.mode == "cnpg" and (cnpg is None or cnpg.backup is None):
        return ("postgres.cnpg.backup",
                f"is required in the {tier} tier: the WAL archive and base backups must leave the cluster")
    if cnpg is not None and cnpg.backup is not None:
        host = (urlparse(cnpg.backup.endpoint).hostname or "")
        if "." not in host or host.endswith((".svc", ".svc.cluster.local", ".cluster.local")):
            return ("postgres.cnpg.backup.endpoint",
                    f"must be outside the cluster in the {tier} tier (got {cnpg.backup.endpoint!r})")
    if profile.object_store.mode == "in-cluster" and not profile.backups.offsite.enabled:
        return ("backups.offsite.enabled",
                f"must be true in the {tier} tier: uploads and database dumps in the in-cluster object store "
                "would stay only inside the cluster")
    return None


def storage_over_tls(profile: Profile) -> tuple[str, str] | None:
    """Stage and prod: every S3 endpoint outside the cluster is https. Dumps,
    the WAL archive and uploads hold personal data, and a request on plain
    http can be read and changed on the way (dev may use a local http one)."""
    endpoints = []
    if profile.object_store.mode == "external":
        endpoints.append(("object_store.external_endpoint", profile.object_store.external_endpoint))
    if profile.backups.enabled and profile.backups.offsite.enabled:
        endpoints.append(("backups.offsite.endpoint", profile.backups.offsite.endpoint))
    cnpg = profile.postgres.cnpg
    if profile.postgres.mode == "cnpg" and cnpg is not None and cnpg.backup is not None:
        endpoints.append(("postgres.cnpg.backup.endpoint", cnpg.backup.endpoint))
    for key, endpoint in endpoints:
        if endpoint and urlparse(endpoint).scheme != "https":
            return key, (f"must be an https URL in the {profile.tier} tier: backups and uploads would cross the "
                         f"network unencrypted (got {endpoint!r})")
    return None


# Rules by tier, not by environment name.
RULES: dict[str, tuple[Rule, ...]] = {
    "dev": (),
    "stage": (images_pinned, no_dev_server, real_tls, admin_restricted, server_settings_module, storage_over_tls),
    "prod": (images_pinned, no_dev_server, real_tls, production_acme, api_highly_available,
             alerts_delivered, admin_restricted, server_settings_module, backups_leave_the_cluster,
             storage_over_tls),
}


# Rules over what an env's render runs (main.py applies them to every render).
RenderRule = Callable[[Profile, Iterable[str]], "tuple[str, str] | None"]
RENDER_RULES: dict[str, tuple[RenderRule, ...]] = {
    "dev": (),
    "stage": (),
    "prod": (images_by_digest,),
}


class ProfileError(Exception):
    """A profile cannot be used; the message names the file and the key."""

    def __init__(self, file: Path | str, message: str, key: str = "") -> None:
        location = f"{file}: {key}: " if key else f"{file}: "
        super().__init__(location + message)
        self.file = str(file)
        self.key = key


# An environment's name: a DNS label short enough to prefix namespaces and
# hosts. Bases (never rendered) are the same with a leading underscore.
ENV_NAME = re.compile(r"[a-z][a-z0-9-]{0,29}")
BASE_NAME = re.compile(r"_[a-z][a-z0-9-]{0,29}")
# Reserved for preview environments (pr-<number>), so a preview can never
# take the name, namespace or host of a committed environment.
PREVIEW_NAME = re.compile(r"pr-[0-9]+")
PREVIEW_BASE = "_preview"
MAX_PR_NUMBER = 10**9


def known_envs(env_dir: Path) -> list[str]:
    """Every renderable profile: env/*.yaml except the bases (_*.yaml)."""
    return sorted(p.stem for p in env_dir.glob("*.yaml") if not p.stem.startswith("_"))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        return read_yaml_mapping(path)
    except YamlReadError as err:
        raise ProfileError(path, err.message, err.key) from None


@dataclass(frozen=True)
class ProfileSource:
    """A profile's data after `extends` is resolved, and where each key came from."""

    data: dict[str, Any]
    # Dotted key path (as in ConfigError.path) -> the file that wrote it.
    origins: dict[str, Path]
    # The files read, the profile's own first.
    chain: tuple[Path, ...]

    def file_of(self, key_path: str) -> Path:
        """The file that wrote `key_path` or its nearest written parent; the
        profile's own file for values that come from the model's defaults."""
        path = key_path
        while path:
            if path in self.origins:
                return self.origins[path]
            parent = re.sub(r"(\.[^.\[\]]+|\[[0-9]+\])$", "", path)
            if parent == path:
                break
            path = parent
        return self.chain[0]


def _merge_tracked(base: dict[str, Any], override: dict[str, Any], file: Path,
                   origins: dict[str, Path], prefix: str = "") -> dict[str, Any]:
    """schema.merge (mappings merge, lists and scalars replace) that also
    records, for every key `override` writes, that `file` wrote it."""
    merged = dict(base)
    for key, value in override.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge_tracked(merged[key], value, file, origins, path)
            origins[path] = file
        else:
            for stale in [p for p in origins if p == path or p.startswith((path + ".", path + "["))]:
                del origins[stale]
            merged[key] = value
            _record(value, file, origins, path)
    return merged


def _record(value: Any, file: Path, origins: dict[str, Path], path: str) -> None:
    origins[path] = file
    if isinstance(value, dict):
        for key, item in value.items():
            _record(item, file, origins, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _record(item, file, origins, f"{path}[{index}]")


def resolve_profile(env_dir: Path, name: str) -> ProfileSource:
    """Read env/<name>.yaml and the chain of profiles it `extends`."""
    chain: list[Path] = []
    layers: list[dict[str, Any]] = []
    current = name
    while True:
        path = env_dir / f"{current}.yaml"
        if path in chain:
            names = " -> ".join([*(p.stem for p in chain), current])
            raise ProfileError(chain[-1], f"inheritance cycle: {names}", "extends")
        # lexists: a symlink loop or dangling link reaches the reader, which names it.
        if not os.path.lexists(path):
            if chain:
                raise ProfileError(chain[-1], f"no profile named {current!r} (expected {path})", "extends")
            known = ", ".join(known_envs(env_dir)) or "none"
            raise ProfileError(path, f"profile file is missing (environments in {env_dir}: {known})")
        data = _read_yaml(path)
        chain.append(path)
        parent = data.pop("extends", None)
        layers.append(data)
        if parent is None:
            break
        if not isinstance(parent, str) or not (ENV_NAME.fullmatch(parent) or BASE_NAME.fullmatch(parent)):
            raise ProfileError(path, "must name another profile in env/, e.g. stage or _base "
                                     f"(got {parent!r})", "extends")
        current = parent
    origins: dict[str, Path] = {}
    merged: dict[str, Any] = {}
    for path, layer in zip(reversed(chain), reversed(layers), strict=True):
        merged = _merge_tracked(merged, layer, path, origins)
    return ProfileSource(data=merged, origins=origins, chain=tuple(chain))


def _located_error(source: ProfileSource, key: str, message: str) -> ProfileError:
    """Name the file where the offending key was written; when that is a
    parent, say which profile inherited it."""
    file = source.file_of(key) if key else source.chain[0]
    if file != source.chain[0] and file in source.chain:
        message = f"{message} (inherited by {source.chain[0]})"
    return ProfileError(file, message, key)


def check_env_name(env_dir: Path, name: str) -> None:
    path = env_dir / f"{name}.yaml"
    if BASE_NAME.fullmatch(name):
        raise ProfileError(path, f"{name!r} is a base profile (its name starts with '_'): it is only "
                                 "inherited with `extends`, never rendered")
    if not ENV_NAME.fullmatch(name):
        raise ProfileError(path, "an environment name must be a DNS label: lowercase letters, digits and '-', "
                                 f"starting with a letter, at most 30 characters (got {name!r})")
    if PREVIEW_NAME.fullmatch(name):
        raise ProfileError(path, f"names like {name!r} are reserved for preview environments "
                                 "(make preview PR=<number>)")


def load_profile(env_dir: Path, name: str, *, overrides: Mapping[str, Any] | None = None) -> Profile:
    """Load env/<name>.yaml with what it extends. `overrides` (tests, previews)
    are merged last, as if written in the profile's own file."""
    check_env_name(env_dir, name)
    return _build_profile(env_dir, name, name, overrides)


def _build_profile(env_dir: Path, file_name: str, name: str, overrides: Mapping[str, Any] | None,
                   overrides_origin: str | None = None) -> Profile:
    source = resolve_profile(env_dir, file_name)
    data = source.data
    if overrides:
        # Values given on the command line are blamed on it, not on a file.
        origins = dict(source.origins)
        origin = Path(overrides_origin) if overrides_origin else source.chain[0]
        data = _merge_tracked(source.data, dict(overrides), origin, origins)
        source = ProfileSource(data=data, origins=origins, chain=source.chain)
    try:
        profile = build(Profile, data)
    except ConfigError as err:
        raise _located_error(source, err.path, err.message) from None
    object.__setattr__(profile, "name", name)
    stale = _inherited_digest(profile, source)
    if stale:
        raise _located_error(source, *stale)
    for rule in RULES[profile.tier]:
        violation = rule(profile)
        if violation:
            key, message = violation
            raise _located_error(source, key, message)
    # After the tier's rules: a minimum the tier refuses is the first thing to fix.
    ignored = _ignored_replicas(profile, source)
    if ignored:
        raise _located_error(source, *ignored)
    return profile


def _inherited_digest(profile: Profile, source: ProfileSource) -> tuple[str, str] | None:
    """An image whose tag (or repository) a profile changes while its digest
    comes from the profile it extends would run the parent's image under the
    new tag: the runtime pulls the digest. Refuse it."""
    def rank(file: Path | None) -> int:
        # Files earlier in the chain are more derived; overrides (previews) most.
        return source.chain.index(file) if file in source.chain else -1
    for path, image in profile.image_refs().items():
        digest_file = source.origins.get(f"{path}.digest")
        if image.digest is None or digest_file is None:
            continue
        for key in ("tag", "repository"):
            file = source.origins.get(f"{path}.{key}")
            if file is not None and rank(file) < rank(digest_file):
                return (f"{path}.{key}", f"is changed here, but {path}.digest comes from {digest_file}: the "
                                         f"runtime would pull that image; set the digest here too (or digest: null)")
    return None


def _ignored_replicas(profile: Profile, source: ProfileSource) -> tuple[str, str] | None:
    """A `replicas` someone wrote, on a workload an autoscaler owns, would be
    silently dropped from the render: refuse it unless it agrees with the
    autoscaler's minimum. A default (not written) is never reported."""
    scaled = []
    if profile.api.autoscaling.enabled:
        scaled.append(("api", profile.api.replicas, profile.api.autoscaling.min_replicas))
    for index, group in enumerate(profile.worker.groups):
        if group.autoscaling.mode != "off":
            scaled.append((f"worker.groups[{index}]", group.replicas, group.autoscaling.min_replicas))
    for path, replicas, minimum in scaled:
        if f"{path}.replicas" in source.origins and replicas != minimum:
            return (f"{path}.replicas", f"is not used while autoscaling is on: the autoscaler keeps at least "
                                        f"{path}.autoscaling.min_replicas = {minimum}; remove it or make the two "
                                        f"equal (got {replicas})")
    return None


def preview_name(number: int) -> str:
    return f"pr-{number}"


def load_preview(env_dir: Path, number: int, *, image_tag: str | None = None) -> Profile:
    """The preview environment of pull request `number`, from env/_preview.yaml.

    Its name, namespace and host are derived from the number alone, so two
    previews never collide with each other, and the reserved `pr-` names keep
    them apart from the committed environments (check_profile_set)."""
    path = env_dir / f"{PREVIEW_BASE}.yaml"
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number < MAX_PR_NUMBER:
        raise ProfileError(path, f"a pull request number must be between 1 and {MAX_PR_NUMBER - 1} "
                                 f"(got {number!r})")
    if not path.is_file():
        raise ProfileError(path, "previews need this base profile (see README: Preview environments)")
    base = _build_profile(env_dir, PREVIEW_BASE, PREVIEW_BASE, None)
    name = preview_name(number)
    overrides: dict[str, Any] = {
        "namespace": f"{base.part_of}-{name}",
        "domain": f"{name}.{base.preview.domain}",
        # The ApplicationSet syncs previews; no Application of their own.
        "argocd": {"enabled": False},
    }
    if image_tag is not None:
        # The pull request's own image: a digest or revision inherited from the
        # base (stage's release) would run that release instead.
        overrides["api"] = {"image": {"tag": image_tag, "digest": None, "revision": None}}
    return _build_profile(env_dir, PREVIEW_BASE, name, overrides, overrides_origin="--preview/--image-tag")


def check_profile_set(env_dir: Path, profiles: Sequence[Profile]) -> None:
    """Rules across environments: each owns its namespace, host and Argo CD
    Application, and none takes what previews are derived from."""
    seen: dict[tuple[str, str], str] = {}
    preview = _preview_base(env_dir)
    for profile in profiles:
        path = env_dir / f"{profile.name}.yaml"
        for key, value in (("namespace", profile.namespace), ("domain", profile.domain),
                           ("instance", profile.instance)):
            other = seen.setdefault((key, value), profile.name)
            if other != profile.name:
                shown = "part_of" if key == "instance" else key
                raise ProfileError(path, f"{value!r} is already used by env/{other}.yaml; every environment "
                                         "needs its own", shown)
        if preview is None:
            continue
        pattern = re.escape(preview.part_of) + r"-pr-[0-9]+"
        if re.fullmatch(pattern, profile.namespace):
            raise ProfileError(path, f"{profile.namespace!r} has the form of a preview namespace "
                                     f"({preview.part_of}-pr-<number>)", "namespace")
        if profile.domain == preview.preview.domain or profile.domain.endswith("." + preview.preview.domain):
            raise ProfileError(path, f"{profile.domain!r} is inside the preview domain "
                                     f"{preview.preview.domain!r}", "domain")
        # The remote entry alone: stores of their own may still reach the same backend.
        if (profile.secrets.provider == "external-secrets" and preview.secrets.provider == "external-secrets"
                and profile.secrets.remote_key == preview.secrets.remote_key):
            raise ProfileError(env_dir / f"{PREVIEW_BASE}.yaml",
                               f"previews must not read the secrets of env/{profile.name}.yaml "
                               f"({preview.secrets.remote_key!r}); give them their own entry", "secrets.remote_key")
    # dist/argocd holds one AppProject: every env Argo CD manages names the same one.
    managed = [profile for profile in profiles if profile.argocd.enabled]
    for profile in managed[1:]:
        for key in ("project", "namespace"):
            first, value = getattr(managed[0].argocd, key), getattr(profile.argocd, key)
            if value != first:
                raise ProfileError(env_dir / f"{profile.name}.yaml",
                                   f"must be the same in every env Argo CD manages: env/{managed[0].name}.yaml "
                                   f"has {first!r} (got {value!r})", f"argocd.{key}")
    clash = secret_stores_apart([*profiles, *([preview] if preview else [])])
    if clash:
        env, key, message = clash
        raise ProfileError(env_dir / f"{env}.yaml", message, key)


def _preview_base(env_dir: Path) -> Profile | None:
    if not (env_dir / f"{PREVIEW_BASE}.yaml").is_file():
        return None
    return _build_profile(env_dir, PREVIEW_BASE, PREVIEW_BASE, None)
