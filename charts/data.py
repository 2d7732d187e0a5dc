"""Data services: Postgres, Redis (Valkey) and the S3 object store.

Each exposes what its clients need by reference: `peer` and `port` for
network.allow, and `client_env()` for the variables an app container reads
(URLs are assembled with Kubernetes' $(VAR) expansion, so passwords stay in
the Secret and never appear in the rendered manifest).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from constructs import Construct

from charts.config import ObjectStoreConfig, PostgresConfig, RedisConfig, Resources
from charts.labels import number, quantity
from charts.network import Peer, external
from charts.schema import parse_quantity
from charts.storage_keys import ADMIN, APP, SCOPED_ROLES, SEAWEEDFS_CONFIG_SCRIPT, StorageRole, seaweedfs_template
from charts.workload import Container, Port, Probe, Probes, StatefulSet
from imports import k8s

if TYPE_CHECKING:
    from charts.stack import Stack


def env(name: str, value: str) -> k8s.EnvVar:
    return k8s.EnvVar(name=name, value=value)


def memory_limit_bytes(resources: Resources) -> int:
    return int(parse_quantity(resources.memory_limit))


def postgres_settings(config: PostgresConfig) -> dict[str, str]:
    """Memory settings derived from the container's memory limit (the usual
    starting points: 25 % shared_buffers, 75 % effective_cache_size, and
    work_mem sized so every connection can sort at once without OOM)."""
    limit_mb = memory_limit_bytes(config.resources) // 2**20
    return {
        "max_connections": str(config.max_connections),
        "shared_buffers": f"{max(16, limit_mb // 4)}MB",
        "effective_cache_size": f"{max(32, limit_mb * 3 // 4)}MB",
        "work_mem": f"{max(1, limit_mb // 4 // config.max_connections)}MB",
        "maintenance_work_mem": f"{max(16, min(1024, limit_mb // 16))}MB",
        "wal_buffers": "16MB" if limit_mb >= 1024 else "-1",
        "log_min_duration_statement": "1s",
        "log_line_prefix": "%m [%p] %q%u@%d ",
    }


class Postgres(Construct):
    PORT = 5432
    EXPORTER_PORT = 9187

    def __init__(self, scope: Construct, id: str, *, stack: Stack, config: PostgresConfig) -> None:
        super().__init__(scope, id)
        self.config = config
        self.stack = stack
        ready = ["pg_isready", "--host=127.0.0.1", f"--username={config.user}", f"--dbname={config.database}"]
        settings = [arg for key, value in postgres_settings(config).items() for arg in ("-c", f"{key}={value}")]
        server = Container(
            name="postgres",
            image=config.image.ref,
            args=settings,
            env=[
                env("POSTGRES_USER", config.user),
                env("POSTGRES_DB", config.database),
                stack.secrets.env("POSTGRES_PASSWORD"),
            ],
            ports=[Port(name="postgres", port=self.PORT)],
            probes=Probes(
                # First start runs initdb; allow five minutes before liveness applies.
                startup=Probe(command=ready, period_seconds=5, failure_threshold=60),
                readiness=Probe(command=ready, period_seconds=10),
                liveness=Probe(command=ready, period_seconds=20, timeout_seconds=5, failure_threshold=6),
            ),
            resources=config.resources,
            # Postgres 18 images keep PGDATA under /var/lib/postgresql/18/docker.
            mounts=[k8s.VolumeMount(name="data", mount_path="/var/lib/postgresql")],
            writable_paths=("/tmp", "/var/run/postgresql"),
            memory_paths=("/dev/shm",),
        )
        exporter = Container(
            name="exporter",
            image=config.exporter_image.ref,
            env=[
                env("DATA_SOURCE_URI", f"127.0.0.1:{self.PORT}/{config.database}?sslmode=disable"),
                env("DATA_SOURCE_USER", config.user),
                stack.secrets.env("DATA_SOURCE_PASS", "POSTGRES_PASSWORD"),
            ],
            ports=[Port(name="metrics", port=self.EXPORTER_PORT, in_service=False)],
            probes=Probes(readiness=Probe(tcp=True, port=self.EXPORTER_PORT),
                          liveness=Probe(tcp=True, port=self.EXPORTER_PORT, period_seconds=30)),
            resources=stack.profile.monitoring.exporter_resources,
        )
        self.workload = StatefulSet(
            self, "workload", stack=stack, name="postgres", component="database", version=config.image.tag,
            containers=[server, exporter], replicas=1, fs_group=10001,
            # A fast shutdown (SIGINT after the grace period) is still clean; give
            # checkpoints time to finish first.
            termination_grace_seconds=60,
            volume_claims=[("data", config.storage.size, config.storage.class_name)],
        )
        self.peer: Peer = self.workload.peer
        if config.disruption_budget:
            k8s.KubePodDisruptionBudget(
                self, "pdb", metadata=self.workload.meta(),
                spec=k8s.PodDisruptionBudgetSpec(
                    min_available=number(1),
                    selector=k8s.LabelSelector(match_labels=self.workload.identity.selector())))

    @property
    def host(self) -> str:
        return self.workload.service_name

    def client_env(self) -> list[k8s.EnvVar]:
        c = self.config
        return [
            self.stack.secrets.env("POSTGRES_PASSWORD"),
            env("DATABASE_URL", f"postgres://{c.user}:$(POSTGRES_PASSWORD)@{self.host}:{self.PORT}/{c.database}"),
        ]

    def libpq_env(self) -> list[k8s.EnvVar]:
        """Standard libpq variables, for pg_dump and friends."""
        return [env("PGHOST", self.host), env("PGPORT", str(self.PORT)), env("PGUSER", self.config.user),
                env("PGDATABASE", self.config.database), self.stack.secrets.env("PGPASSWORD", "POSTGRES_PASSWORD")]


class Redis(Construct):
    """Valkey, the BSD-licensed Redis fork, speaking the same protocol."""

    PORT = 6379
    EXPORTER_PORT = 9121

    def __init__(self, scope: Construct, id: str, *, stack: Stack, config: RedisConfig) -> None:
        super().__init__(scope, id)
        self.stack = stack
        maxmemory = memory_limit_bytes(config.resources) * config.maxmemory_percent // 100
        conf = "\n".join([
            f"port {self.PORT}",
            "bind 0.0.0.0",
            "dir /data",
            # The Celery broker must never lose a message to eviction: refuse
            # writes at the limit instead (alerts fire before that).
            f"maxmemory {maxmemory}",
            "maxmemory-policy noeviction",
            f"appendonly {'yes' if config.persistence else 'no'}",
            "appendfsync everysec",
            "save 3600 1 300 100" if config.persistence else 'save ""',
            "",
        ])
        self.config_map = k8s.KubeConfigMap(
            self, "config", metadata=stack.identity_meta("redis-config", "cache", config.image.tag),
            data={"valkey.conf": conf})
        ping = ["sh", "-c", 'REDISCLI_AUTH="$REDIS_PASSWORD" valkey-cli -h 127.0.0.1 ping | grep -q PONG']
        server = Container(
            name="redis",
            image=config.image.ref,
            # The password goes into a file in /tmp, not onto the command line.
            command=["sh", "-c", 'printf "include /etc/valkey/valkey.conf\\nrequirepass \\"%s\\"\\n" "$REDIS_PASSWORD" '
                                 '> /tmp/valkey.conf && exec valkey-server /tmp/valkey.conf'],
            env=[stack.secrets.env("REDIS_PASSWORD")],
            ports=[Port(name="redis", port=self.PORT)],
            probes=Probes(
                startup=Probe(command=ping, period_seconds=5, failure_threshold=60),
                readiness=Probe(command=ping, period_seconds=10),
                liveness=Probe(command=ping, period_seconds=20, failure_threshold=5),
            ),
            resources=config.resources,
            mounts=[k8s.VolumeMount(name="config", mount_path="/etc/valkey", read_only=True),
                    k8s.VolumeMount(name="data", mount_path="/data")],
        )
        exporter = Container(
            name="exporter",
            image=config.exporter_image.ref,
            env=[env("REDIS_ADDR", f"redis://127.0.0.1:{self.PORT}"), stack.secrets.env("REDIS_PASSWORD")],
            ports=[Port(name="metrics", port=self.EXPORTER_PORT, in_service=False)],
            probes=Probes(readiness=Probe(tcp=True, port=self.EXPORTER_PORT),
                          liveness=Probe(tcp=True, port=self.EXPORTER_PORT, period_seconds=30)),
            resources=stack.profile.monitoring.exporter_resources,
        )
        volumes = [k8s.Volume(name="config", config_map=k8s.ConfigMapVolumeSource(name="redis-config"))]
        if not config.persistence:
            volumes.append(k8s.Volume(name="data", empty_dir=k8s.EmptyDirVolumeSource(
                size_limit=quantity(config.storage.size))))
        self.workload = StatefulSet(
            self, "workload", stack=stack, name="redis", component="cache", version=config.image.tag,
            containers=[server, exporter], volumes=volumes, replicas=1, fs_group=10001,
            termination_grace_seconds=30,
            volume_claims=[("data", config.storage.size, config.storage.class_name)] if config.persistence else (),
            pod_annotations={"checksum/config": stack.checksum(conf)},
        )
        self.peer: Peer = self.workload.peer

    @property
    def address(self) -> str:
        """host:port for clients outside the namespace (KEDA's operator)."""
        return f"{self.workload.service_name}.{self.stack.namespace}.svc:{self.PORT}"

    def client_env(self) -> list[k8s.EnvVar]:
        url = f"redis://:$(REDIS_PASSWORD)@{self.workload.service_name}:{self.PORT}/0"
        return [self.stack.secrets.env("REDIS_PASSWORD"), env("REDIS_URL", url)]


IDENTITIES_CONFIG_MAP = "object-store-identities"
IDENTITIES_DIR = "/run/seaweedfs"


@dataclass(frozen=True)
class ServerPreset:
    """How to run one S3 server in the object-store StatefulSet."""

    command: tuple[str, ...]
    credentials: tuple[str, str]  # env names the server reads its admin key pair from
    extra_env: tuple[tuple[str, str], ...]
    metrics_port: int
    metrics_path: str
    console_port: int | None
    data_path: str
    # Loads per-role identities and policies (charts/storage_keys.py) from a
    # file given with this flag; None: the server only knows its admin key.
    identities_flag: str | None = None


SERVERS = {
    # SeaweedFS all-in-one (master, volume, filer, S3 gateway) in one process.
    "seaweedfs": ServerPreset(
        # -volume.max=0 sizes the volume count to the disk (the default of 8
        # volumes would cap the store at 8 GiB); logs go to stderr, not /tmp.
        # Listeners (weed/command/server.go, s3.go): master, volume and filer
        # (HTTP and gRPC; the filer's HTTP API has no S3 authentication) bind
        # loopback, and -ip=127.0.0.1 makes the components find each other
        # there. Only S3 and metrics bind all interfaces. The S3 gateway's gRPC
        # port (S3 port + 10000) follows -s3.ip.bind and cannot be turned off:
        # the NetworkPolicy admits only the S3 and metrics ports. The Iceberg
        # and Lance catalogs (on by default) are off; so is telemetry to
        # telemetry.seaweedfs.com (-master.telemetry, default true).
        command=("weed", "-logtostderr=true", "server", "-dir=/data", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                 "-s3", "-s3.port=9000", "-s3.ip.bind=0.0.0.0", "-s3.port.iceberg=0", "-s3.port.lance=0",
                 "-metricsPort=9327", "-metricsIp=0.0.0.0", "-master.telemetry=false",
                 "-master.volumeSizeLimitMB=1024", "-volume.max=0"),
        credentials=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
        extra_env=(),
        metrics_port=9327, metrics_path="/metrics", console_port=None, data_path="/data",
        identities_flag="-s3.config"),
    # MinIO community: unmaintained since 2025-10; legacy compatibility only.
    "minio": ServerPreset(
        command=("minio", "server", "/data", "--address", ":9000", "--console-address", ":9001"),
        credentials=("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"),
        extra_env=(("MINIO_PROMETHEUS_AUTH_TYPE", "public"),),
        metrics_port=9000, metrics_path="/minio/v2/metrics/cluster", console_port=9001, data_path="/data"),
}


class ObjectStore(Construct):
    """The app's S3 endpoint: an in-cluster StatefulSet named minio, or external S3."""

    PORT = 9000

    def __init__(self, scope: Construct, id: str, *, stack: Stack, config: ObjectStoreConfig) -> None:
        super().__init__(scope, id)
        self.stack = stack
        self.config = config
        self.workload: StatefulSet | None = None
        self.preset = SERVERS[config.server]
        if config.mode == "external":
            parsed = urlparse(config.external_endpoint or "")
            self.endpoint = (config.external_endpoint or "").rstrip("/")
            self.port = parsed.port or (443 if parsed.scheme == "https" else 80)
            self.peer: Peer = external(config.external_cidr, key=f"s3:{parsed.hostname}")
            return
        preset = self.preset
        user, password = preset.credentials
        ports = [Port(name="s3", port=self.PORT)]
        if preset.metrics_port != self.PORT:
            ports.append(Port(name="metrics", port=preset.metrics_port, in_service=False))
        if preset.console_port:
            # Reached by `kubectl port-forward` only; never on the Service.
            ports.append(Port(name="console", port=preset.console_port, in_service=False))
        init_containers: list[Container] = []
        volumes: list[k8s.Volume] = []
        command = list(preset.command)
        memory_paths: tuple[str, ...] = ()
        pod_annotations: dict[str, str] = {}
        if preset.identities_flag:
            # The scoped keys reach the server through a file built at start
            # from the Secret, so no key is ever rendered (storage_keys.py).
            template = seaweedfs_template(config.bucket, stack.profile.backups.bucket)
            k8s.KubeConfigMap(self, "identities", metadata=stack.identity_meta(
                IDENTITIES_CONFIG_MAP, "object-store", config.image.tag), data={"template.json": template})
            volumes.append(k8s.Volume(name="identities", config_map=k8s.ConfigMapVolumeSource(
                name=IDENTITIES_CONFIG_MAP)))
            memory_paths = (IDENTITIES_DIR,)
            init_containers.append(Container(
                name="identities",
                # bash and jq, for an encoder that handles any character.
                image=stack.profile.backups.image.ref,
                command=["bash", "-c", SEAWEEDFS_CONFIG_SCRIPT, "identities",
                         "/etc/seaweedfs/template.json", f"{IDENTITIES_DIR}/s3.json"],
                env=[stack.secrets.env(key) for role in SCOPED_ROLES for key in (role.access_key, role.secret_key)],
                resources=stack.profile.monitoring.exporter_resources,
                writable_paths=(), memory_paths=memory_paths,
                mounts=[k8s.VolumeMount(name="identities", mount_path="/etc/seaweedfs", read_only=True)],
            ))
            command.append(f"{preset.identities_flag}={IDENTITIES_DIR}/s3.json")
            pod_annotations["checksum/identities"] = stack.checksum(template)
        server = Container(
            name="minio",
            image=config.image.ref,
            command=command,
            memory_paths=memory_paths,
            env=[stack.secrets.env(user, "MINIO_ROOT_USER"), stack.secrets.env(password, "MINIO_ROOT_PASSWORD"),
                 *(env(k, v) for k, v in preset.extra_env)],
            ports=ports,
            probes=Probes(
                startup=Probe(tcp=True, port=self.PORT, period_seconds=5, failure_threshold=60),
                readiness=Probe(tcp=True, port=self.PORT, period_seconds=10),
                liveness=Probe(tcp=True, port=self.PORT, period_seconds=20, failure_threshold=5),
            ),
            resources=config.resources,
            mounts=[k8s.VolumeMount(name="data", mount_path=preset.data_path)],
        )
        self.workload = StatefulSet(
            self, "workload", stack=stack, name="minio", component="object-store", version=config.image.tag,
            containers=[server], init_containers=init_containers, volumes=volumes, replicas=1, fs_group=10001,
            termination_grace_seconds=30, pod_annotations=pod_annotations or None,
            # The identities init container runs the project's backup image.
            image_pull_secrets=stack.project_pull_secrets if init_containers else (),
            volume_claims=[("data", config.storage.size, config.storage.class_name)],
        )
        self.endpoint = f"http://{self.workload.service_name}:{self.PORT}"
        self.port = self.PORT
        self.peer = self.workload.peer

    @property
    def scoped_keys(self) -> bool:
        """Whether each role has its own key (storage_keys.py).

        In-cluster SeaweedFS loads the roles itself; external S3 gets them
        from whoever runs it (IAM users with the documented policies). The
        legacy MinIO preset knows only its root key, which then serves all.
        """
        return self.config.mode == "external" or self.preset.identities_flag is not None

    def key_env(self, role: StorageRole, access_var: str, secret_var: str) -> list[k8s.EnvVar]:
        """`role`'s key pair as these env vars (the admin key where roles are not scoped)."""
        chosen = role if self.scoped_keys else ADMIN
        return [self.stack.secrets.env(access_var, chosen.access_key),
                self.stack.secrets.env(secret_var, chosen.secret_key)]

    def client_env(self) -> list[k8s.EnvVar]:
        """The app's MINIO_* variables: its own key, for its own bucket only."""
        return [
            env("MINIO_ENDPOINT", self.endpoint),
            env("MINIO_BUCKET", self.config.bucket),
            env("MINIO_REGION", self.config.region),
            *self.key_env(APP, "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"),
        ]

    def admin_env(self) -> list[k8s.EnvVar]:
        """The admin key, for the bucket-provisioning Job only."""
        return [
            env("MINIO_ENDPOINT", self.endpoint),
            env("MINIO_BUCKET", self.config.bucket),
            env("MINIO_REGION", self.config.region),
            self.stack.secrets.env("MINIO_ROOT_USER"),
            self.stack.secrets.env("MINIO_ROOT_PASSWORD"),
        ]
