"""Backups: CronJobs that run the scripts in backup/bin from the backup image.

postgres-backup   pg_dump streamed to S3, manifest, retention   (scheduled)
restore-drill     restore the newest dump into a scratch db     (scheduled, optional)
minio-mirror      app bucket -> off-site S3 with history        (scheduled, when off-site is on)
dumps-mirror      dumps bucket -> off-site S3 with history      (scheduled, when off-site is on)
backup-prune      dump retention, the only key that deletes dumps (scheduled, with scoped keys)
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
from charts.storage_keys import BACKUP, MIRROR, PRUNE
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
            # Write dumps, never delete them (charts/storage_keys.py).
            *object_store.key_env(BACKUP, "BACKUP_S3_ACCESS_KEY_ID", "BACKUP_S3_SECRET_ACCESS_KEY"),
        ]
        self.target_env = target
        self.exporter: Deployment | None = None

        self.ensure_bucket = Job(
            self, "ensure-bucket", stack=stack, name="ensure-bucket", component="object-store",
            version=config.image.tag, uid=BACKUP_UID,
            job_name=f"ensure-bucket-{release_suffix(config.image.tag, stack.profile)}",
            annotations=ARGO_SYNC_HOOK, image_pull_secrets=stack.project_pull_secrets,
            containers=[self._container("ensure-bucket", [f"{SCRIPTS}/ensure-bucket", object_store.config.bucket,
                                                           config.bucket], object_store.admin_env())],
            settings=JobSettings(backoff_limit=6, active_deadline_seconds=900, ttl_seconds_after_finished=86400),
        )
        self._uses_store(self.ensure_bucket, "create the buckets")
        if not config.enabled:
            return

        keep = [env("BACKUP_KEEP_MIN", str(config.keep_last)),
                env("BACKUP_RETENTION_DAYS", str(config.max_age_days))]
        # With scoped keys the dumping job cannot delete dumps; retention runs
        # apart, with the one key that may (and may not write).
        separate_retention = object_store.scoped_keys
        self._cronjob("postgres-backup", config.postgres_schedule, [f"{SCRIPTS}/pg-backup"],
                      [*postgres.libpq_env(), *target, *keep,
                       env("BACKUP_APPLY_RETENTION", "false" if separate_retention else "true")], database=True)
        if separate_retention:
            prune_target = [*target[:3], *object_store.key_env(
                PRUNE, "BACKUP_S3_ACCESS_KEY_ID", "BACKUP_S3_SECRET_ACCESS_KEY")]
            self._cronjob("backup-prune", config.prune_schedule, [f"{SCRIPTS}/pg-backup", "--prune-only"],
                          [env("PGDATABASE", postgres.config.database), *prune_target, *keep], database=False)
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
            jobs += ["s3-mirror", "s3-mirror-dumps"]
        return jobs

    def _container(self, name: str, command: list[str], variables: Sequence[k8s.EnvVar],
                   mounts: Sequence[k8s.VolumeMount] = ()) -> Container:
        return Container(name=name, image=self.config.image.ref, command=command, env=list(variables),
                         resources=self.config.resources, mounts=mounts)

    def _cronjob(self, name: str, cron: str | None, command: list[str], variables: Sequence[k8s.EnvVar], *,
                 database: bool) -> CronJob:
        workload = CronJob(
            self, name, stack=self.stack, name=name, component="backup", version=self.config.image.tag,
            # An external server's CA bundle, for PGSSLROOTCERT.
            containers=[self._container(name, command, variables,
                                        self.postgres.backup_mounts() if database else ())], uid=BACKUP_UID,
            volumes=self.postgres.backup_volumes() if database else (),
            image_pull_secrets=self.stack.project_pull_secrets,
            schedule=Schedule(cron=cron, time_zone=self.config.time_zone) if cron else ON_DEMAND,
            suspend=cron is None,
            # One retry: a second failure alerts (backup stale) instead of
            # hammering the database; the deadline bounds a hung transfer.
            settings=JobSettings(backoff_limit=1, active_deadline_seconds=4 * 3600,
                                 ttl_seconds_after_finished=3 * 86400),
        )
        if database:
            self.stack.network.allow(workload.peer, self.postgres.backup_target[1], self.postgres.port,
                                     reason=f"{name} reads/writes")
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
            # Read-only on both buckets (charts/storage_keys.py).
            *store.key_env(MIRROR, "MIRROR_SRC_S3_ACCESS_KEY_ID", "MIRROR_SRC_S3_SECRET_ACCESS_KEY"),
            env("MIRROR_DST_S3_ENDPOINT", offsite.endpoint),
            env("MIRROR_DST_S3_REGION", offsite.region),
            self.stack.secrets.env("MIRROR_DST_S3_ACCESS_KEY_ID", "OFFSITE_S3_ACCESS_KEY_ID"),
            self.stack.secrets.env("MIRROR_DST_S3_SECRET_ACCESS_KEY", "OFFSITE_S3_SECRET_ACCESS_KEY"),
            env("MIRROR_DST_BUCKET", offsite.bucket),
            env("MIRROR_RETENTION_DAYS", str(self.config.max_age_days)),
            *self.target_env,
        ]
        parsed = urlparse(offsite.endpoint)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        # What must survive the cluster: the uploads and the dumps, each under
        # its own prefix (the source bucket's name) in the off-site bucket.
        for name, bucket, job in (("minio-mirror", store.config.bucket, "s3-mirror"),
                                  ("dumps-mirror", self.config.bucket, "s3-mirror-dumps")):
            mirror = self._cronjob(name, self.config.mirror_schedule, [f"{SCRIPTS}/s3-mirror"],
                                   [*variables, env("MIRROR_SRC_BUCKET", bucket), env("MIRROR_JOB_NAME", job)],
                                   database=False)
            self.stack.network.allow(mirror.peer, external(offsite.cidr, key=f"offsite:{parsed.hostname}"), port,
                                     reason=f"off-site copy of {bucket}")
