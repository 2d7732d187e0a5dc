"""Data services: Postgres, Redis (Valkey) and the S3 object store.

Each exposes what its clients need by reference: `peer` and `port` for
network.allow, and `client_env()` for the variables an app container reads.
Passwords stay in the Secret and reach each client as a variable of their
own, never spliced into a URL or a config file by the render, so they may
hold any character (docs/data-tier.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from constructs import Construct

from charts.app import ARGO_SYNC_HOOK, release_suffix
from charts.cnpg import CnpgCluster
from charts.config import CaBundle, CnpgConfig, ObjectStoreConfig, PostgresConfig, RedisConfig, Resources
from charts.labels import number, quantity
from charts.network import Peer, external
from charts.schema import parse_quantity
from charts.storage_keys import ADMIN, APP, SCOPED_ROLES, SEAWEEDFS_CONFIG_SCRIPT, StorageRole, seaweedfs_template
from charts.workload import Container, Deployment, Job, JobSettings, Port, Probe, Probes, StatefulSet, Workload
from imports import k8s

if TYPE_CHECKING:
    from charts.stack import Stack


def env(name: str, value: str) -> k8s.EnvVar:
    return k8s.EnvVar(name=name, value=value)


def memory_limit_bytes(resources: Resources) -> int:
    return int(parse_quantity(resources.memory_limit))


def cnpg_parameters(config: PostgresConfig) -> dict[str, str]:
    """The same memory-derived settings for CNPG's postgresql.parameters.
    log_line_prefix is left out (CNPG logs csvlog, turned into JSON), and
    archive_timeout is stated: it bounds the recovery point (CNPG's default
    is 5min too, pkg/postgres/configuration.go at v1.30.0)."""
    settings = {k: v for k, v in postgres_settings(config).items() if k != "log_line_prefix"}
    settings["archive_timeout"] = "5min"
    return settings


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


CA_DIR = "/etc/vibearena/ca"


@dataclass(frozen=True)
class CaMount:
    """A CA bundle from a ConfigMap or Secret, mounted read-only at `path`."""

    volume_name: str
    bundle: CaBundle

    @property
    def path(self) -> str:
        return f"{CA_DIR}/{self.volume_name}/{self.bundle.key}"

    def volume(self) -> k8s.Volume:
        items = [k8s.KeyToPath(key=self.bundle.key, path=self.bundle.key)]
        if self.bundle.kind == "Secret":
            return k8s.Volume(name=self.volume_name, secret=k8s.SecretVolumeSource(
                secret_name=self.bundle.name, items=items))
        return k8s.Volume(name=self.volume_name, config_map=k8s.ConfigMapVolumeSource(
            name=self.bundle.name, items=items))

    def mount(self) -> k8s.VolumeMount:
        return k8s.VolumeMount(name=self.volume_name, mount_path=f"{CA_DIR}/{self.volume_name}", read_only=True)


# Creates or updates the roles from the Secret's passwords, idempotently, as
# the bootstrap superuser. psql quotes each value itself (:'var' is a
# literal, :"var" an identifier), so names and passwords may hold any
# character; nothing is spliced into SQL text by the shell or the render.
ROLES_SQL = r"""\set ON_ERROR_STOP on
\getenv app_password POSTGRES_PASSWORD
\getenv backup_password POSTGRES_BACKUP_PASSWORD
\getenv monitor_password POSTGRES_MONITOR_PASSWORD
\getenv app_user APP_USER
\getenv backup_user BACKUP_USER
\getenv monitor_user MONITOR_USER
\getenv database APP_DATABASE
SELECT format('CREATE ROLE %I', name) FROM unnest(ARRAY[:'app_user', :'backup_user', :'monitor_user']) AS name
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = name) \gexec
ALTER ROLE :"app_user" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
 PASSWORD :'app_password';
ALTER ROLE :"backup_user" WITH LOGIN NOSUPERUSER CREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
 PASSWORD :'backup_password';
ALTER ROLE :"monitor_user" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
 PASSWORD :'monitor_password';
GRANT pg_read_all_data TO :"backup_user";
GRANT pg_monitor TO :"monitor_user";
SELECT format('CREATE DATABASE %I OWNER %I', :'database', :'app_user')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'database') \gexec
ALTER DATABASE :"database" OWNER TO :"app_user";
REVOKE ALL ON DATABASE :"database" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"database" TO :"backup_user";
GRANT CONNECT ON DATABASE :"database" TO :"monitor_user";
"""


class Postgres(Construct):
    """The app's Postgres: a StatefulSet in the namespace, or a managed
    server (mode external). Clients read `host`, `port`, `peer`, the env
    builders and `client_volumes()`/`client_mounts()` for the CA bundle."""

    EXPORTER_PORT = 9187
    SERVER_PORT = 5432

    def __init__(self, scope: Construct, id: str, *, stack: Stack, config: PostgresConfig) -> None:
        super().__init__(scope, id)
        self.config = config
        self.stack = stack
        self.workload: Workload | None = None
        self.exporter: Workload | None = None
        self.ca: CaMount | None = None
        self.cnpg: CnpgCluster | None = None
        if config.cnpg is not None:
            self._cnpg(config.cnpg)
            return
        if config.external is not None:
            ext = config.external
            self.host = ext.host
            self.port = ext.port
            self.peer: Peer = external(ext.cidr, key=f"postgres:{ext.host}")
            self.ca = CaMount("postgres-ca", ext.ca)
            self.sslmode: str | None = ext.sslmode
            if config.exporter:
                self._external_exporter()
            return
        self.port = self.SERVER_PORT
        self.sslmode = None
        self._statefulset()

    def _cnpg(self, cnpg: CnpgConfig) -> None:
        statefulset_host = None
        self.port = self.SERVER_PORT
        self.sslmode = None
        if cnpg.import_from_statefulset:
            # The old server keeps running (and rendered) until the import is done.
            self._statefulset()
            statefulset_host = self.host
            assert self.workload is not None
            old_server = self.workload.peer
        self.cnpg = CnpgCluster(self, "cnpg", stack=self.stack, config=self.config,
                                parameters=cnpg_parameters(self.config), statefulset_host=statefulset_host)
        if cnpg.import_from_statefulset:
            self.stack.network.allow(self.cnpg.instances, old_server, self.SERVER_PORT,
                                     reason="bootstrap.initdb.import from the StatefulSet")
        self.host = self.cnpg.host
        self.port = self.SERVER_PORT
        self.peer = self.cnpg.client_peer
        self.sslmode = self.cnpg.sslmode
        self.ca = CaMount("postgres-ca", self.cnpg.ca) if self.cnpg.ca else None
        # Dumps and restores go to the primary itself, never through PgBouncer.
        self.backup_host = f"{self.cnpg.name}-rw"
        self.backup_peer = self.cnpg.instances
        self.backup_tls: tuple[str, CaMount] = ("verify-full", CaMount("postgres-ca", self.cnpg.server_ca))
        # CNPG's instance manager serves the metrics (scraped as job postgres).
        self.exporter = None

    def _statefulset(self) -> None:
        config, stack = self.config, self.stack
        ready = ["pg_isready", "--host=127.0.0.1", f"--username={config.superuser}", "--dbname=postgres"]
        settings = [arg for key, value in postgres_settings(config).items() for arg in ("-c", f"{key}={value}")]
        server = Container(
            name="postgres",
            image=config.image.ref,
            args=settings,
            env=[
                # The image's initdb creates this superuser (password via
                # --pwfile, so any character works); the roles Job creates
                # the app, backup and monitoring roles.
                env("POSTGRES_USER", config.superuser),
                env("POSTGRES_DB", "postgres"),
                stack.secrets.env("POSTGRES_PASSWORD", "POSTGRES_SUPERUSER_PASSWORD"),
            ],
            ports=[Port(name="postgres", port=self.port)],
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
        containers = [server]
        if self.config.exporter:
            containers.append(self._exporter_container(f"127.0.0.1:{self.port}/{config.database}?sslmode=disable"))
        workload = StatefulSet(
            self, "workload", stack=stack, name="postgres", component="database", version=config.image.tag,
            containers=containers, replicas=1, fs_group=10001,
            # A fast shutdown (SIGINT after the grace period) is still clean; give
            # checkpoints time to finish first.
            termination_grace_seconds=60,
            volume_claims=[("data", config.storage.size, config.storage.class_name)],
        )
        self.workload = workload
        self.exporter = workload if self.config.exporter else None
        self.host = workload.service_name
        self.peer = workload.peer
        if config.disruption_budget:
            k8s.KubePodDisruptionBudget(
                self, "pdb", metadata=workload.meta(),
                spec=k8s.PodDisruptionBudgetSpec(
                    min_available=number(1),
                    selector=k8s.LabelSelector(match_labels=workload.identity.selector())))
        self._roles_job()

    def _exporter_container(self, uri: str) -> Container:
        """postgres_exporter joins DATA_SOURCE_USER/PASS with url.UserPassword
        (escaped), so the password is never part of a rendered URL."""
        config = self.config
        variables = [env("DATA_SOURCE_URI", uri), env("DATA_SOURCE_USER", config.monitor_user),
                     self.stack.secrets.env("DATA_SOURCE_PASS", "POSTGRES_MONITOR_PASSWORD")]
        return Container(
            name="exporter",
            image=config.exporter_image.ref,
            env=variables,
            ports=[Port(name="metrics", port=self.EXPORTER_PORT, in_service=False)],
            probes=Probes(readiness=Probe(tcp=True, port=self.EXPORTER_PORT),
                          liveness=Probe(tcp=True, port=self.EXPORTER_PORT, period_seconds=30)),
            resources=self.stack.profile.monitoring.exporter_resources,
            mounts=[self.ca.mount()] if self.ca else (),
        )

    def _external_exporter(self) -> None:
        config = self.config
        query = f"sslmode={self.sslmode}&sslrootcert={self.ca.path}" if self.ca else "sslmode=disable"
        exporter = Deployment(
            self, "exporter", stack=self.stack, name="postgres-exporter", component="database",
            version=config.exporter_image.tag, replicas=1,
            containers=[self._exporter_container(f"{self.host}:{self.port}/{config.database}?{query}")],
            volumes=self.client_volumes())
        self.stack.network.allow(exporter.peer, self.peer, self.port, reason="postgres exporter reads statistics")
        self.exporter = exporter

    def _roles_job(self) -> None:
        config, stack = self.config, self.stack
        # ${VAR:?} stops on an empty password without printing any value.
        script = (': "${PGPASSWORD:?}" "${POSTGRES_PASSWORD:?}" "${POSTGRES_BACKUP_PASSWORD:?}" '
                  '"${POSTGRES_MONITOR_PASSWORD:?}"\n'
                  "until pg_isready --dbname=postgres --quiet; do sleep 2; done\n"
                  "exec psql --no-psqlrc --quiet --dbname=postgres --file=/etc/postgres-roles/roles.sql\n")
        self.roles_config = k8s.KubeConfigMap(
            self, "roles-config", metadata=stack.identity_meta("postgres-roles", "database", config.image.tag),
            data={"roles.sql": ROLES_SQL})
        container = Container(
            name="roles", image=config.image.ref, command=["sh", "-c", script],
            env=[env("PGHOST", self.host), env("PGPORT", str(self.port)), env("PGUSER", config.superuser),
                 stack.secrets.env("PGPASSWORD", "POSTGRES_SUPERUSER_PASSWORD"),
                 env("APP_USER", config.user), env("BACKUP_USER", config.backup_user),
                 env("MONITOR_USER", config.monitor_user), env("APP_DATABASE", config.database),
                 stack.secrets.env("POSTGRES_PASSWORD"), stack.secrets.env("POSTGRES_BACKUP_PASSWORD"),
                 stack.secrets.env("POSTGRES_MONITOR_PASSWORD")],
            resources=stack.profile.monitoring.exporter_resources,
            mounts=[k8s.VolumeMount(name="roles", mount_path="/etc/postgres-roles", read_only=True)],
        )
        job = Job(
            self, "roles", stack=stack, name="postgres-roles", component="database", version=config.image.tag,
            job_name=f"postgres-roles-{release_suffix(config.image.tag, stack.profile)}",
            annotations=ARGO_SYNC_HOOK, containers=[container],
            volumes=[k8s.Volume(name="roles", config_map=k8s.ConfigMapVolumeSource(name="postgres-roles"))],
            pod_annotations={"checksum/config": stack.checksum(ROLES_SQL)},
            settings=JobSettings(backoff_limit=6, active_deadline_seconds=900, ttl_seconds_after_finished=86400))
        stack.network.allow(job.peer, self.peer, self.port, reason="create the database roles")
        self.roles_job = job

    def client_volumes(self) -> list[k8s.Volume]:
        return [self.ca.volume()] if self.ca else []

    def client_mounts(self) -> list[k8s.VolumeMount]:
        return [self.ca.mount()] if self.ca else []

    def client_env(self) -> list[k8s.EnvVar]:
        """What the app reads (config/env.py database_settings): one value per
        variable, never a URL, so the password may hold any character."""
        c = self.config
        variables = [
            env("DATABASE_HOST", self.host),
            env("DATABASE_PORT", str(self.port)),
            env("DATABASE_NAME", c.database),
            env("DATABASE_USER", c.user),
            self.stack.secrets.env("DATABASE_PASSWORD", "POSTGRES_PASSWORD"),
        ]
        if self.sslmode:
            variables.append(env("DATABASE_SSLMODE", self.sslmode))
        if self.ca:
            variables.append(env("DATABASE_SSLROOTCERT", self.ca.path))
        return variables

    @property
    def backup_target(self) -> tuple[str, Peer, str | None, CaMount | None]:
        """(host, peer, sslmode, CA) the dump jobs connect to."""
        if self.cnpg is not None:
            return self.backup_host, self.backup_peer, self.backup_tls[0], self.backup_tls[1]
        return self.host, self.peer, self.sslmode, self.ca

    def backup_volumes(self) -> list[k8s.Volume]:
        ca = self.backup_target[3]
        return [ca.volume()] if ca else []

    def backup_mounts(self) -> list[k8s.VolumeMount]:
        ca = self.backup_target[3]
        return [ca.mount()] if ca else []

    def libpq_env(self) -> list[k8s.EnvVar]:
        """Standard libpq variables for pg_dump and friends, as the backup role."""
        host, _peer, sslmode, ca = self.backup_target
        variables = [env("PGHOST", host), env("PGPORT", str(self.port)), env("PGUSER", self.config.backup_user),
                     env("PGDATABASE", self.config.database),
                     self.stack.secrets.env("PGPASSWORD", "POSTGRES_BACKUP_PASSWORD")]
        if sslmode:
            variables.append(env("PGSSLMODE", sslmode))
        if ca:
            variables.append(env("PGSSLROOTCERT", ca.path))
        return variables


# The password reaches Valkey through a config file in /tmp (never the
# command line, which /proc shows to every process). Each byte is written as
# a \xHH escape inside double quotes, which the config parser (sdssplitargs)
# decodes, so quotes, backslashes, blanks, newlines and non-ASCII bytes all
# survive. od, tr and sed are in the image (Debian coreutils and sed).
VALKEY_START = r"""set -eu
: "${REDIS_PASSWORD:?}"
umask 077
escaped=$(printf '%s' "$REDIS_PASSWORD" | od -An -v -tx1 | tr -d ' \n' | sed 's/../\\x&/g')
printf 'include /etc/valkey/valkey.conf\nrequirepass "%s"\n' "$escaped" > /tmp/valkey.conf
exec valkey-server /tmp/valkey.conf
"""


CELERY_EXPORTER_ENTRYPOINT = "/app/cli.py"
CELERY_EXPORTER_START = f"""import os, runpy, ssl, sys
from urllib.parse import quote
e = os.environ
tls = e.get("REDIS_TLS") == "true"
user = quote(e.get("REDIS_USERNAME", ""), safe="")
password = quote(e["REDIS_PASSWORD"], safe="")
scheme = "rediss" if tls else "redis"
e["CE_BROKER_URL"] = f"{{scheme}}://{{user}}:{{password}}@{{e['REDIS_HOST']}}:{{e['REDIS_PORT']}}/{{e['REDIS_DB']}}"
args = [f"--broker-ssl-option=ssl_cert_reqs={{int(ssl.CERT_REQUIRED)}}"] if tls else []
if tls and e.get("REDIS_CA"):
    args.append(f"--broker-ssl-option=ssl_ca_certs={{e['REDIS_CA']}}")
sys.argv = ["{CELERY_EXPORTER_ENTRYPOINT}", *args]
sys.path.insert(0, os.path.dirname(sys.argv[0]))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


class Redis(Construct):
    """Valkey, the BSD-licensed Redis fork, speaking the same protocol; or a
    managed Redis/Valkey (mode external)."""

    SERVER_PORT = 6379
    EXPORTER_PORT = 9121

    def __init__(self, scope: Construct, id: str, *, stack: Stack, config: RedisConfig) -> None:
        super().__init__(scope, id)
        self.stack = stack
        self.config = config
        self.workload: Workload | None = None
        self.exporter: Workload | None = None
        self.ca: CaMount | None = None
        if config.external is not None:
            ext = config.external
            self.host = ext.host
            self.port = ext.port
            self.db = ext.db
            self.tls = ext.tls
            self.username = ext.username
            self.ca = CaMount("redis-ca", ext.ca) if ext.ca else None
            self.peer: Peer = external(ext.cidr, key=f"redis:{ext.host}")
            scheme = "rediss" if ext.tls else "redis"
            exporter = self._exporter(f"{scheme}://{ext.host}:{ext.port}", Deployment, "redis-exporter")
            self.stack.network.allow(exporter.peer, self.peer, self.port, reason="redis exporter reads INFO")
            return
        self.port = self.SERVER_PORT
        self.db = 0
        self.tls = False
        self.username = None
        self._statefulset()

    def _statefulset(self) -> None:
        config, stack = self.config, self.stack
        maxmemory = memory_limit_bytes(config.resources) * config.maxmemory_percent // 100
        conf = "\n".join([
            f"port {self.port}",
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
            command=["sh", "-c", VALKEY_START],
            env=[stack.secrets.env("REDIS_PASSWORD")],
            ports=[Port(name="redis", port=self.port)],
            probes=Probes(
                startup=Probe(command=ping, period_seconds=5, failure_threshold=60),
                readiness=Probe(command=ping, period_seconds=10),
                liveness=Probe(command=ping, period_seconds=20, failure_threshold=5),
            ),
            resources=config.resources,
            mounts=[k8s.VolumeMount(name="config", mount_path="/etc/valkey", read_only=True),
                    k8s.VolumeMount(name="data", mount_path="/data")],
        )
        volumes = [k8s.Volume(name="config", config_map=k8s.ConfigMapVolumeSource(name="redis-config"))]
        if not config.persistence:
            volumes.append(k8s.Volume(name="data", empty_dir=k8s.EmptyDirVolumeSource(
                size_limit=quantity(config.storage.size))))
        workload = StatefulSet(
            self, "workload", stack=stack, name="redis", component="cache", version=config.image.tag,
            containers=[server, self._exporter_container(f"redis://127.0.0.1:{self.port}")], volumes=volumes,
            replicas=1, fs_group=10001, termination_grace_seconds=30,
            volume_claims=[("data", config.storage.size, config.storage.class_name)] if config.persistence else (),
            pod_annotations={"checksum/config": stack.checksum(conf + VALKEY_START)},
        )
        self.workload = workload
        self.exporter = workload
        self.host = workload.service_name
        self.peer = workload.peer

    def _exporter_container(self, address: str) -> Container:
        # redis_exporter reads the password from REDIS_PASSWORD as is (no URL).
        variables = [env("REDIS_ADDR", address), self.stack.secrets.env("REDIS_PASSWORD")]
        if self.username:
            variables.append(env("REDIS_USER", self.username))
        if self.ca:
            variables.append(env("REDIS_EXPORTER_TLS_CA_CERT_FILE", self.ca.path))
        return Container(
            name="exporter",
            image=self.config.exporter_image.ref,
            env=variables,
            ports=[Port(name="metrics", port=self.EXPORTER_PORT, in_service=False)],
            probes=Probes(readiness=Probe(tcp=True, port=self.EXPORTER_PORT),
                          liveness=Probe(tcp=True, port=self.EXPORTER_PORT, period_seconds=30)),
            resources=self.stack.profile.monitoring.exporter_resources,
            mounts=self.client_mounts(),
        )

    def _exporter(self, address: str, kind: type[Deployment], name: str) -> Deployment:
        exporter = kind(self, "exporter", stack=self.stack, name=name, component="cache",
                        version=self.config.exporter_image.tag, replicas=1,
                        containers=[self._exporter_container(address)], volumes=self.client_volumes())
        self.exporter = exporter
        return exporter

    @property
    def address(self) -> str:
        """host:port for clients outside the namespace (KEDA's operator)."""
        if self.workload is None:
            return f"{self.host}:{self.port}"
        return f"{self.host}.{self.stack.namespace}.svc:{self.port}"

    def celery_exporter_command(self) -> list[str]:
        """The Celery exporter's start: its image is Python, so the broker URL
        is built there from the separate variables with the password
        percent-encoded (kombu decodes it), then the exporter's own entry
        point (ENTRYPOINT python /app/cli.py) runs in the same process."""
        return ["python", "-c", CELERY_EXPORTER_START]

    def client_volumes(self) -> list[k8s.Volume]:
        return [self.ca.volume()] if self.ca else []

    def client_mounts(self) -> list[k8s.VolumeMount]:
        return [self.ca.mount()] if self.ca else []

    def client_env(self) -> list[k8s.EnvVar]:
        """What the app reads (config/env.py redis_settings): separate values;
        the app percent-encodes the password where it builds the URL."""
        variables = [
            env("REDIS_HOST", self.host),
            env("REDIS_PORT", str(self.port)),
            env("REDIS_DB", str(self.db)),
            self.stack.secrets.env("REDIS_PASSWORD"),
            env("REDIS_TLS", "true" if self.tls else "false"),
        ]
        if self.username:
            variables.append(env("REDIS_USERNAME", self.username))
        if self.ca:
            variables.append(env("REDIS_CA", self.ca.path))
        return variables


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
