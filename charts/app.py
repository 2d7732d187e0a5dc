"""The app tier around the API: Celery workers and beat, the migration Job,
and the on-demand superuser Job. All run the API image with other commands."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from constructs import Construct

from charts.api import DevSource
from charts.config import BeatConfig, Image, WorkerGroup
from charts.labels import number
from charts.scaling import cpu_hpa, keda_queue_scaler
from charts.workload import Container, CronJob, Deployment, Job, JobSettings, Probe, Probes, Schedule, StatefulSet
from imports import k8s

if TYPE_CHECKING:
    from charts.data import Redis
    from charts.stack import Stack

# Argo CD runs a Sync hook on every sync and does not count it in the app's
# sync status, so a finished (and TTL-deleted) Job never leaves it OutOfSync.
ARGO_SYNC_HOOK = {
    "argocd.argoproj.io/hook": "Sync",
    "argocd.argoproj.io/hook-delete-policy": "BeforeHookCreation",
}
# A schedule that never fires: the CronJob is a template for `kubectl create
# job --from=cronjob/NAME` (make createsuperuser, make restore).
ON_DEMAND = Schedule(cron="0 0 31 2 *")
LIVENESS = ["python", "-m", "config.liveness"]
BEAT_SCHEDULE = "/tmp/celerybeat-schedule"
# Beat touches this file on every scheduler tick (app/config/celery.py,
# HeartbeatScheduler), and a tick comes at least every BEAT_MAX_LOOP_SECONDS.
BEAT_HEARTBEAT = "/tmp/celery-beat-heartbeat"
BEAT_MAX_LOOP_SECONDS = 60
# Three missed wakes: room for a slow broker publish inside a tick.
BEAT_HEARTBEAT_MAX_AGE = 3 * BEAT_MAX_LOOP_SECONDS


def release_suffix(tag: str, profile: object) -> str:
    """A DNS-safe Job name suffix: the image tag plus a short hash of the
    profile. A Job's pod template is immutable, so any change that could
    alter it (a new tag, a setting) must give the Job a new name, or a plain
    `kubectl apply` fails until the old Job's TTL has passed. The Jobs are
    idempotent (migrate, ensure-bucket), so running one again is harmless."""
    tag_part = re.sub(r"[^a-z0-9-]+", "-", tag.lower()).strip("-")[:36].strip("-") or "unversioned"
    digest = hashlib.sha256(repr(profile).encode()).hexdigest()[:6]
    return f"{tag_part}-{digest}"


class Worker(Construct):
    """One Deployment per queue group, with its autoscaler (none, HPA or KEDA).

    Scale-in never loses work: SIGTERM starts Celery's warm shutdown (no new
    tasks, running ones finish) within a grace period the profile sizes for
    the hard time limit; the app acknowledges late and the broker redelivers
    a task whose worker died (docs/scaling-and-alerts.md).
    """

    def __init__(self, scope: Construct, id: str, *, stack: Stack, image: Image, group: WorkerGroup,
                 app_env: Sequence[k8s.EnvVar], broker: Redis, keda_authentication: str | None,
                 source: DevSource) -> None:
        super().__init__(scope, id)
        name = f"worker-{group.name}"
        check = Probe(command=LIVENESS, period_seconds=30, timeout_seconds=5, failure_threshold=3)
        container = Container(
            name="worker",
            image=image.ref,
            # No gossip/mingle: workers do not need each other's state, and both
            # add broker chatter and start-up delay on every restart.
            command=source.restarting([
                "celery", "--app=config", "--quiet", "worker", "--loglevel=INFO",
                "--without-gossip", "--without-mingle", f"--queues={','.join(group.queues)}",
                f"--hostname={name}@%h",
                f"--concurrency={group.concurrency}", f"--prefetch-multiplier={group.prefetch_multiplier}",
                f"--max-tasks-per-child={group.max_tasks_per_child}"]),
            env=[*app_env,
                 k8s.EnvVar(name="CELERY_WORKER_CONCURRENCY", value=str(group.concurrency)),
                 k8s.EnvVar(name="CELERY_WORKER_PREFETCH_MULTIPLIER", value=str(group.prefetch_multiplier)),
                 k8s.EnvVar(name="CELERY_TASK_TIME_LIMIT", value=str(group.task_time_limit_seconds)),
                 k8s.EnvVar(name="CELERY_TASK_SOFT_TIME_LIMIT", value=str(group.task_soft_time_limit_seconds))],
            # The worker touches a heartbeat file while its consumer loop runs; a
            # hung worker stops touching it and is restarted.
            probes=Probes(startup=Probe(command=LIVENESS, period_seconds=10, failure_threshold=18),
                          readiness=check, liveness=check),
            resources=group.resources,
            mounts=source.mounts,
        )
        # SIGTERM starts Celery's warm shutdown: no new tasks, running ones
        # finish. The grace period covers the hard time limit (profile rule).
        scaling = group.autoscaling
        self.workload = Deployment(
            self, "workload", stack=stack, name=name, component="worker", version=image.tag,
            containers=[container], volumes=source.volumes,
            replicas=group.replicas if scaling.mode == "off" else None,
            termination_grace_seconds=group.termination_grace_seconds,
            max_surge=1, max_unavailable=0,
            placement=group.placement, image_pull_secrets=stack.project_pull_secrets,
        )
        self.peer = self.workload.peer
        if scaling.mode == "hpa":
            assert scaling.cpu_utilization is not None  # WorkerAutoscaling requires it for hpa
            cpu_hpa(self, "hpa", workload=self.workload, min_replicas=scaling.min_replicas,
                    max_replicas=scaling.max_replicas, cpu_utilization=scaling.cpu_utilization)
        elif scaling.mode == "keda":
            if keda_authentication is None:
                raise ValueError(f"worker group {group.name!r}: keda mode needs the Redis TriggerAuthentication")
            keda_queue_scaler(self, "scaled-object", workload=self.workload, queues=group.queues, scaling=scaling,
                              broker=broker, authentication=keda_authentication)
        # A PDB on a single replica would block every node drain.
        if group.disruption_budget and group.smallest_replicas >= 2:
            k8s.KubePodDisruptionBudget(
                self, "pdb", metadata=self.workload.meta(),
                spec=k8s.PodDisruptionBudgetSpec(
                    max_unavailable=number(1),
                    selector=k8s.LabelSelector(match_labels=self.workload.identity.selector())))


class Beat(Construct):
    """Celery beat: at most one at any time.

    A StatefulSet with one replica gives that guarantee where a Deployment
    cannot: the controller creates `beat-0` again only after the old pod is
    gone from the API server, so a pod deleted by hand is replaced after it
    has stopped, and a pod on a lost node is not replaced until the node is
    confirmed dead (or an operator force-deletes it). A Deployment would start
    the replacement at once, next to the terminating pod.
    """

    def __init__(self, scope: Construct, id: str, *, stack: Stack, image: Image, config: BeatConfig,
                 app_env: Sequence[k8s.EnvVar], source: DevSource) -> None:
        super().__init__(scope, id)
        # Not the schedule file: its mtime is a storage detail (Python 3.13's
        # dbm.sqlite3 writes to a WAL and leaves the main file alone).
        ticking = [*LIVENESS, f"--file={BEAT_HEARTBEAT}", f"--max-age={BEAT_HEARTBEAT_MAX_AGE}"]
        heartbeat_fresh = Probe(command=ticking, period_seconds=30, timeout_seconds=5, failure_threshold=3)
        container = Container(
            name="beat",
            image=image.ref,
            command=source.restarting(
                ["celery", "--app=config", "--quiet", "beat", "--loglevel=INFO", f"--schedule={BEAT_SCHEDULE}"]),
            env=[*app_env,
                 k8s.EnvVar(name="CELERY_BEAT_LIVENESS_FILE", value=BEAT_HEARTBEAT),
                 k8s.EnvVar(name="CELERY_BEAT_MAX_LOOP_INTERVAL", value=str(BEAT_MAX_LOOP_SECONDS))],
            probes=Probes(startup=Probe(command=ticking, period_seconds=10, failure_threshold=30),
                          readiness=heartbeat_fresh, liveness=heartbeat_fresh),
            resources=config.resources,
            mounts=source.mounts,
        )
        self.workload = StatefulSet(
            self, "workload", stack=stack, name="beat", component="scheduler", version=image.tag,
            containers=[container], volumes=source.volumes, replicas=1, termination_grace_seconds=30,
            placement=config.placement, image_pull_secrets=stack.project_pull_secrets,
            # beat runs the app image, which changes every release: a broken
            # release must not leave beat-0 stuck on it (OrderedReady would wait
            # for the crash-looping pod). One replica still means one pod name.
            parallel=True,
        )
        self.peer = self.workload.peer


class Migration(Construct):
    """`manage.py migrate` once per release (and per profile change).

    The Job is named after the image tag and a hash of the profile: plain
    `kubectl apply` creates a new Job for a new release or setting instead of
    failing on the old one's immutable template, and the finished Job is
    deleted after a day. Under Argo CD it is
    a Sync hook (see ARGO_SYNC_HOOK), ordered by its sync wave after the data
    services and before the API and workers.
    """

    def __init__(self, scope: Construct, id: str, *, stack: Stack, image: Image,
                 app_env: Sequence[k8s.EnvVar], source: DevSource) -> None:
        super().__init__(scope, id)
        container = Container(
            name="migrate",
            image=image.ref,
            command=["python", "manage.py", "migrate", "--noinput"],
            env=list(app_env),
            resources=stack.profile.api.resources,
            mounts=source.mounts,
        )
        self.job_name = f"migrate-{release_suffix(image.tag, stack.profile)}"
        self.workload = Job(
            self, "workload", stack=stack, name="migrate", component="migration", version=image.tag,
            containers=[container], volumes=source.volumes, job_name=self.job_name, annotations=ARGO_SYNC_HOOK,
            image_pull_secrets=stack.project_pull_secrets,
            settings=JobSettings(backoff_limit=3, active_deadline_seconds=1800, ttl_seconds_after_finished=86400),
        )
        self.peer = self.workload.peer


class Superuser(Construct):
    """Creates (or updates) the first superuser from the Secret, on demand:
    `make createsuperuser` runs `kubectl create job --from=cronjob/createsuperuser`."""

    def __init__(self, scope: Construct, id: str, *, stack: Stack, image: Image,
                 app_env: Sequence[k8s.EnvVar], source: DevSource, username: str, email: str) -> None:
        super().__init__(scope, id)
        container = Container(
            name="createsuperuser",
            image=image.ref,
            command=["python", "manage.py", "ensure_superuser"],
            env=[*app_env,
                 k8s.EnvVar(name="DJANGO_SUPERUSER_USERNAME", value=username),
                 k8s.EnvVar(name="DJANGO_SUPERUSER_EMAIL", value=email),
                 stack.secrets.env("DJANGO_SUPERUSER_PASSWORD")],
            resources=stack.profile.api.resources,
            mounts=source.mounts,
        )
        self.workload = CronJob(
            self, "workload", stack=stack, name="createsuperuser", component="migration", version=image.tag,
            containers=[container], volumes=source.volumes, schedule=ON_DEMAND, suspend=True,
            image_pull_secrets=stack.project_pull_secrets,
            settings=JobSettings(backoff_limit=1, active_deadline_seconds=600, ttl_seconds_after_finished=3600),
        )
        self.peer = self.workload.peer
