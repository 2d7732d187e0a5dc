"""Backups: CronJobs that run the scripts in backup/bin from the backup image.

postgres-backup   pg_dump streamed to S3, manifest, retention   (scheduled)
restore-drill     restore the newest dump into a scratch db     (scheduled, optional)
minio-mirror      app bucket -> off-site S3 with history        (scheduled, when off-site is on)
postgres-restore  restore the newest dump into <db>_restore      (on demand: make restore)
backup-exporter   serves the last-success time of each job to Prometheus
ensure-bucket     creates the app and backup buckets, once per release
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from constructs import Construct

from charts.app import ARGO_SYNC_HOOK, ON_DEMAND, release_suffix
from charts.config import BackupConfig
from charts.data import ObjectStore, Postgres, env
from charts.network import external
from charts.workload import Container, CronJob, Deployment, Job, JobSettings, Port, Probe, Probes, Schedule, Workload
from imports import k8s

if TYPE_CHECKING:
    from charts.stack import Stack

EXPORTER_PORT = 9188
SCRIPTS = "/opt/backup/bin"
# The user backup/Dockerfile creates.
BACKUP_UID = 10002


class Backups(Construct):
    def __init__(self, scope: Construct, id: str, *, stack: Stack, config: BackupConfig,
                 postgres: Postgres, object_store: ObjectStore) -> None:
        super().__init__(scope, id)
        self.stack = stack
        self.config = config
        self.postgres = postgres
        self.object_store = object_store

        # Dumps go to their own bucket on the same S3 endpoint as the app's files.
        target = [
            env("BACKUP_S3_ENDPOINT", object_store.endpoint),
            env("BACKUP_S3_BUCKET", config.bucket),
            env("BACKUP_S3_REGION", object_store.config.region),
            stack.secrets.env("BACKUP_S3_ACCESS_KEY_ID", "MINIO_ROOT_USER"),
            stack.secrets.env("BACKUP_S3_SECRET_ACCESS_KEY", "MINIO_ROOT_PASSWORD"),
        ]
        self.target_env = target
        self.exporter: Deployment | None = None

        self.ensure_bucket = Job(
            self, "ensure-bucket", stack=stack, name="ensure-bucket", component="object-store",
            version=config.image.tag, uid=BACKUP_UID,
            job_name=f"ensure-bucket-{release_suffix(config.image.tag, stack.profile)}",
            annotations=ARGO_SYNC_HOOK, image_pull_secrets=stack.project_pull_secrets,
            containers=[self._container("ensure-bucket", [f"{SCRIPTS}/ensure-bucket", object_store.config.bucket,
                                                           config.bucket], object_store.client_env())],
            settings=JobSettings(backoff_limit=6, active_deadline_seconds=900, ttl_seconds_after_finished=86400),
        )
        self._uses_store(self.ensure_bucket, "create the buckets")
        if not config.enabled:
            return

        keep = [env("BACKUP_KEEP_MIN", str(config.keep_last)),
                env("BACKUP_RETENTION_DAYS", str(config.max_age_days))]
        self._cronjob("postgres-backup", config.postgres_schedule, [f"{SCRIPTS}/pg-backup"],
                      [*postgres.libpq_env(), *target, *keep], database=True)
        if config.restore_drill:
            self._cronjob("restore-drill", config.drill_schedule, [f"{SCRIPTS}/restore-drill"],
                          [*postgres.libpq_env(), *target,
                           env("DRILL_CHECK_SQL", "SELECT count(*) > 0 FROM django_migrations")], database=True)
        self._cronjob("postgres-restore", None, [f"{SCRIPTS}/pg-restore", "--create-db", "latest"],
                      [*postgres.libpq_env(), *target,
                       env("RESTORE_TARGET_DB", f"{postgres.config.database}_restore")], database=True)
        if config.offsite.enabled:
            self._mirror()

        exporter = Container(
            name="exporter", image=config.image.ref, command=[f"{SCRIPTS}/backup-exporter"],
            env=[*target, env("EXPORTER_JOBS", ",".join(self.exported_jobs)),
                 env("EXPORTER_PORT", str(EXPORTER_PORT))],
            ports=[Port(name="metrics", port=EXPORTER_PORT)],
            probes=Probes(readiness=Probe(http_path="/healthz", port=EXPORTER_PORT),
                          liveness=Probe(http_path="/healthz", port=EXPORTER_PORT, period_seconds=30)),
            resources=stack.profile.monitoring.exporter_resources,
        )
        self.exporter = Deployment(
            self, "exporter", stack=stack, name="backup-exporter", component="backup", version=config.image.tag,
            containers=[exporter], replicas=1, uid=BACKUP_UID, image_pull_secrets=stack.project_pull_secrets)
        self._uses_store(self.exporter, "read backup status objects")

    @property
    def exported_jobs(self) -> list[str]:
        jobs = ["postgres"]
        if self.config.restore_drill:
            jobs.append("restore-drill")
        if self.config.offsite.enabled:
            jobs.append("s3-mirror")
        return jobs

    def _container(self, name: str, command: list[str], variables: Sequence[k8s.EnvVar]) -> Container:
        return Container(name=name, image=self.config.image.ref, command=command, env=list(variables),
                         resources=self.config.resources)

    def _cronjob(self, name: str, cron: str | None, command: list[str], variables: Sequence[k8s.EnvVar], *,
                 database: bool) -> CronJob:
        workload = CronJob(
            self, name, stack=self.stack, name=name, component="backup", version=self.config.image.tag,
            containers=[self._container(name, command, variables)], uid=BACKUP_UID,
            image_pull_secrets=self.stack.project_pull_secrets,
            schedule=Schedule(cron=cron, time_zone=self.config.time_zone) if cron else ON_DEMAND,
            suspend=cron is None,
            # One retry: a second failure alerts (backup stale) instead of
            # hammering the database; the deadline bounds a hung transfer.
            settings=JobSettings(backoff_limit=1, active_deadline_seconds=4 * 3600,
                                 ttl_seconds_after_finished=3 * 86400),
        )
        if database:
            self.stack.network.allow(workload.peer, self.postgres.peer, Postgres.PORT, reason=f"{name} reads/writes")
        self._uses_store(workload, name)
        return workload

    def _uses_store(self, workload: Workload, reason: str) -> None:
        self.stack.network.allow(workload.peer, self.object_store.peer, self.object_store.port, reason=reason)

    def _mirror(self) -> None:
        offsite = self.config.offsite
        store = self.object_store
        variables = [
            env("MIRROR_SRC_S3_ENDPOINT", store.endpoint),
            env("MIRROR_SRC_S3_REGION", store.config.region),
            self.stack.secrets.env("MIRROR_SRC_S3_ACCESS_KEY_ID", "MINIO_ROOT_USER"),
            self.stack.secrets.env("MIRROR_SRC_S3_SECRET_ACCESS_KEY", "MINIO_ROOT_PASSWORD"),
            env("MIRROR_SRC_BUCKET", store.config.bucket),
            env("MIRROR_DST_S3_ENDPOINT", offsite.endpoint),
            env("MIRROR_DST_S3_REGION", offsite.region),
            self.stack.secrets.env("MIRROR_DST_S3_ACCESS_KEY_ID", "OFFSITE_S3_ACCESS_KEY_ID"),
            self.stack.secrets.env("MIRROR_DST_S3_SECRET_ACCESS_KEY", "OFFSITE_S3_SECRET_ACCESS_KEY"),
            env("MIRROR_DST_BUCKET", offsite.bucket),
            env("MIRROR_RETENTION_DAYS", str(self.config.max_age_days)),
            *self.target_env,
        ]
        mirror = self._cronjob("minio-mirror", self.config.mirror_schedule, [f"{SCRIPTS}/s3-mirror"], variables,
                               database=False)
        parsed = urlparse(offsite.endpoint)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self.stack.network.allow(mirror.peer, external(offsite.cidr, key=f"offsite:{parsed.hostname}"), port,
                                 reason="off-site copy of the app bucket")
