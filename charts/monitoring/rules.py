"""Alert rules: one generator per metric list, thresholds from the profile.

Changes when an alert is added, removed or retuned. To alert on a new
exporter: commit its metric list (monitoring/metrics/<list>.txt), write a
generator `(selector, settings) -> [Alert]` and register it in `GENERATORS`
under that list; the group appears wherever a target with that list is
scraped, and its expressions are checked against the list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from charts.config import MonitoringConfig
from charts.monitoring.metrics import BUILTIN_METRICS, SELF_METRICS, metric_list, metric_names
from charts.schema import parse_quantity

# "none": the Watchdog, which is routed to the heartbeat, never to people.
Severity = Literal["critical", "warning", "none"]
# Always firing while Prometheus evaluates rules and Alertmanager delivers.
WATCHDOG = "Watchdog"


@dataclass(frozen=True, kw_only=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: Severity
    summary: str
    description: str
    # Extra labels, where one rule exists per item (e.g. per worker group).
    labels: Mapping[str, str] = field(default_factory=dict)

    def render(self, namespace: str) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            # namespace: who the alert is about, also for aggregated expressions.
            "labels": {"severity": self.severity, "namespace": namespace, **self.labels},
            "annotations": {"summary": self.summary, "description": self.description},
        }


@dataclass(frozen=True, kw_only=True)
class RuleGroup:
    name: str
    requires: str  # the metric list whose targets the group watches
    alerts: tuple[Alert, ...]


@dataclass(frozen=True, kw_only=True)
class ScaledWorkers:
    """A worker group with an autoscaler: its pods are worker-<group>-<hash>-<id>."""

    group: str
    queues: tuple[str, ...]
    max_replicas: int


@dataclass(frozen=True, kw_only=True)
class AlertSettings:
    """Thresholds, from the profile (monitoring.*) and the wiring."""

    namespace: str
    api_error_ratio: float = 0.05
    api_latency_p95_seconds: float = 1.0
    queue_backlog: int = 100
    task_failure_ratio: float = 0.1
    heartbeat_task: str = "core.tasks.record_heartbeat"
    heartbeat_window: str = "10m"
    backup_stale_after_hours: int = 26
    database_volume_size: str | None = None  # a quantity, e.g. 10Gi
    database_volume_ratio: float = 0.8
    postgres_connections_ratio: float = 0.8
    redis_memory_ratio: float = 0.9
    certificate_expiry_days: int = 14
    # Alerts are delivered somewhere: add the always-firing Watchdog.
    watchdog: bool = False
    autoscaled_workers: tuple[ScaledWorkers, ...] = ()
    restarts_in_30m: int = 3

    @classmethod
    def from_config(cls, config: MonitoringConfig, *, namespace: str, backup_stale_after_hours: int,
                    database_volume_size: str | None,
                    autoscaled_workers: Sequence[ScaledWorkers] = ()) -> AlertSettings:
        return cls(namespace=namespace, watchdog=config.alertmanager.mode != "off",
                   autoscaled_workers=tuple(autoscaled_workers), restarts_in_30m=config.restarts_in_30m,
                   api_error_ratio=config.api_error_ratio,
                   api_latency_p95_seconds=config.api_latency_p95_seconds, queue_backlog=config.queue_backlog,
                   task_failure_ratio=config.task_failure_ratio, heartbeat_task=config.beat_heartbeat_task,
                   heartbeat_window=config.beat_heartbeat_max_age,
                   backup_stale_after_hours=backup_stale_after_hours,
                   database_volume_size=database_volume_size, database_volume_ratio=config.database_volume_ratio)


def _selector(jobs: Sequence[str], namespace: str) -> str:
    job = f'job="{jobs[0]}"' if len(jobs) == 1 else f'job=~"{"|".join(sorted(jobs))}"'
    return f'{job},namespace="{namespace}"'


def _target_down(name: str, s: str, what: str, for_: str, severity: Severity) -> Alert:
    return Alert(name=name, expr=f"absent(up{{{s}}} == 1)", for_=for_, severity=severity,
                 summary=f"{what}: no target is up",
                 description=f"Prometheus has scraped no {what} target successfully for {for_} "
                             "(pods down, not resolvable by DNS, or not answering on the metrics port).")


def _django(s: str, t: AlertSettings) -> list[Alert]:
    requests = f"django_http_requests_total{{{s}}}"
    return [
        _target_down("ApiDown", s, "API", "2m", "critical"),
        Alert(name="ApiHighErrorRatio", for_="10m", severity="critical",
              expr=(f'sum(rate(django_http_requests_total{{{s},status=~"5.."}}[5m])) / sum(rate({requests}[5m]))'
                    f" > {t.api_error_ratio} and sum(rate({requests}[5m])) > 0.1"),
              summary="API 5xx ratio above {{ $value | humanizePercentage }}",
              description=f"More than {t.api_error_ratio:.0%} of API responses were 5xx over 5 minutes "
                          "(alerting only above 0.1 requests/s)."),
        Alert(name="ApiHighLatencyP95", for_="10m", severity="warning",
              expr=(f"histogram_quantile(0.95, sum by (le) (rate(django_http_request_duration_seconds_bucket"
                    f"{{{s}}}[5m]))) > {t.api_latency_p95_seconds}"),
              summary="API p95 latency is {{ $value | humanizeDuration }}",
              description=f"The 95th percentile of API request duration is above "
                          f"{t.api_latency_p95_seconds}s over 5 minutes."),
    ]


def _celery(s: str, t: AlertSettings) -> list[Alert]:
    exporter_up = f"on() (up{{{s}}} == 1)"
    heartbeat = f'celery_task_succeeded_total{{{s},name="{t.heartbeat_task}"}}'
    failed = f"sum by (name) (increase(celery_task_failed_total{{{s}}}[15m]))"
    succeeded = f"sum by (name) (increase(celery_task_succeeded_total{{{s}}}[15m]))"
    return [
        _target_down("CeleryExporterDown", s, "Celery exporter", "5m", "warning"),
        Alert(name="CeleryWorkersDown", for_="5m", severity="critical",
              expr=f"absent(celery_worker_up{{{s}}} == 1) and {exporter_up}",
              summary="No Celery worker is sending heartbeats",
              description="The Celery exporter is up but sees no live worker (worker heartbeats stop "
                          "counting after the exporter's worker timeout, 5 minutes)."),
        Alert(name="CeleryBeatHeartbeatMissing", for_="5m", severity="critical",
              expr=(f"(sum(increase({heartbeat}[{t.heartbeat_window}])) < 1 or absent({heartbeat}))"
                    f" and {exporter_up}"),
              summary="The beat heartbeat task has not succeeded recently",
              description=f"{t.heartbeat_task} (scheduled by celery beat every minute) has not succeeded "
                          f"for {t.heartbeat_window}: beat is down, or no worker consumes its queue."),
        *(_workers_at_max(s, group) for group in t.autoscaled_workers),
        Alert(name="CeleryQueueBacklog", for_="10m", severity="warning",
              expr=f"max by (queue_name) (celery_queue_length{{{s}}}) > {t.queue_backlog}",
              summary="Celery queue {{ $labels.queue_name }} holds {{ $value }} messages",
              description=f"More than {t.queue_backlog} messages have waited in the queue for 10 minutes: "
                          "workers are too few, stuck or down."),
        # `succeeded or failed * 0`: a task that never succeeds has no success
        # series, and a plain sum would then drop it from the ratio altogether.
        Alert(name="CeleryTaskFailureRatio", for_="10m", severity="warning",
              expr=(f"{failed} / (({succeeded} or {failed} * 0) + {failed}) > {t.task_failure_ratio}"
                    f" and {failed} >= 3"),
              summary="Task {{ $labels.name }} fails {{ $value | humanizePercentage }} of runs",
              description=f"More than {t.task_failure_ratio:.0%} of the task's runs failed over 15 minutes "
                          "(at least 3 failures)."),
    ]


def _postgres(s: str, t: AlertSettings) -> list[Alert]:
    alerts = [
        Alert(name="PostgresDown", for_="2m", severity="critical",
              expr=f"max(pg_up{{{s}}}) < 1 or absent(up{{{s}}} == 1)",
              summary="Postgres is down or unreachable by its exporter",
              description="postgres_exporter reports pg_up 0, or the exporter itself is not scraped."),
        Alert(name="PostgresConnectionsNearMax", for_="10m", severity="warning",
              expr=(f"sum by (instance) (pg_stat_database_numbackends{{{s}}}) / on (instance) "
                    f"max by (instance) (pg_settings_max_connections{{{s}}}) > {t.postgres_connections_ratio}"),
              summary="Postgres uses {{ $value | humanizePercentage }} of max_connections",
              description="New connections will be refused at max_connections (postgres.max_connections)."),
    ]
    if t.database_volume_size:
        limit = int(parse_quantity(t.database_volume_size) * t.database_volume_ratio)
        alerts.append(Alert(
            name="PostgresDatabaseSizeNearVolume", for_="30m", severity="warning",
            expr=f"sum(pg_database_size_bytes{{{s}}}) > {limit}",
            summary="Postgres databases use {{ $value | humanize1024 }}B of the data volume",
            description=f"The databases exceed {t.database_volume_ratio:.0%} of the {t.database_volume_size} "
                        "volume. WAL and other files are not counted (kubelet volume stats are not "
                        "scraped without cluster RBAC): grow the volume (README: Growing a volume)."))
    return alerts


def _cnpg(s: str, t: AlertSettings) -> list[Alert]:
    """The Postgres alerts for a CloudNativePG cluster, from its instance
    manager's metrics (same names, so runbooks stay valid), plus archiving."""
    alerts = [
        Alert(name="PostgresDown", for_="2m", severity="critical",
              expr=f"max(cnpg_collector_up{{{s}}}) < 1 or absent(up{{{s}}} == 1)",
              summary="No CloudNativePG instance reports PostgreSQL up",
              description="cnpg_collector_up is 0 on every instance, or no instance is scraped."),
        Alert(name="PostgresConnectionsNearMax", for_="10m", severity="warning",
              expr=(f"sum by (instance) (cnpg_backends_total{{{s}}}) / on (instance) "
                    f"max by (instance) (cnpg_pg_settings_setting{{{s}, name=\"max_connections\"}}) "
                    f"> {t.postgres_connections_ratio}"),
              summary="Postgres uses {{ $value | humanizePercentage }} of max_connections",
              description="New connections will be refused at max_connections (postgres.max_connections)."),
        Alert(name="PostgresWalArchivingFailing", for_="5m", severity="critical",
              expr=f"sum(increase(cnpg_pg_stat_archiver_failed_count{{{s}}}[15m])) > 0",
              summary="WAL segments fail to reach the archive",
              description="The recovery point grows with every failed segment: check the ObjectStore "
                          "credentials and egress (docs/data-tier.md)."),
        Alert(name="PostgresReplicaLagging", for_="10m", severity="warning",
              expr=f"max(cnpg_pg_replication_lag{{{s}}}) > 300",
              summary="A replica is {{ $value | humanizeDuration }} behind the primary",
              description="A failover now would lose the transactions not yet replayed."),
    ]
    if t.database_volume_size:
        limit = int(parse_quantity(t.database_volume_size) * t.database_volume_ratio)
        alerts.append(Alert(
            name="PostgresDatabaseSizeNearVolume", for_="30m", severity="warning",
            expr=f"max by (instance) (sum by (instance) (cnpg_pg_database_size_bytes{{{s}}})) > {limit}",
            summary="Postgres databases use {{ $value | humanize1024 }}B of the data volume",
            description=f"The databases exceed {t.database_volume_ratio:.0%} of the {t.database_volume_size} "
                        "volume of each instance: grow postgres.storage.size."))
    return alerts


def _redis(s: str, t: AlertSettings) -> list[Alert]:
    return [
        Alert(name="RedisDown", for_="2m", severity="critical",
              expr=f"max(redis_up{{{s}}}) < 1 or absent(up{{{s}}} == 1)",
              summary="Redis (Valkey) is down or unreachable by its exporter",
              description="redis_exporter reports redis_up 0, or the exporter itself is not scraped."),
        Alert(name="RedisMemoryNearMax", for_="10m", severity="warning",
              expr=(f"max by (instance) (redis_memory_used_bytes{{{s}}}) / max by (instance) "
                    f"(redis_memory_max_bytes{{{s}}} > 0) > {t.redis_memory_ratio}"),
              summary="Redis uses {{ $value | humanizePercentage }} of maxmemory",
              description="With maxmemory-policy noeviction, writes (new Celery messages) fail at the limit."),
    ]


def _object_store(s: str, t: AlertSettings) -> list[Alert]:
    return [_target_down("ObjectStoreDown", s, "object store", "5m", "critical")]


def _backup(s: str, t: AlertSettings) -> list[Alert]:
    seconds = t.backup_stale_after_hours * 3600
    return [
        _target_down("BackupExporterDown", s, "backup exporter", "15m", "warning"),
        Alert(name="BackupStale", for_="15m", severity="critical",
              expr=(f"time() - max by (exported_job) (vibearena_backup_last_success_timestamp_seconds{{{s}}})"
                    f" > {seconds}"),
              summary="Backup {{ $labels.exported_job }} last succeeded {{ $value | humanizeDuration }} ago",
              description=f"No successful {{{{ $labels.exported_job }}}} run for more than "
                          f"{t.backup_stale_after_hours} hours (backups.stale_after_hours)."),
        Alert(name="BackupStatusMissing", for_=f"{t.backup_stale_after_hours}h", severity="critical",
              expr=f"max by (exported_job) (vibearena_backup_status_up{{{s}}}) == 0",
              summary="Backup {{ $labels.exported_job }} has no readable status",
              description="The job's status object in the backup bucket is missing or unreadable: it never "
                          "succeeded, or the bucket is unreachable."),
    ]


def _workers_at_max(s: str, group: ScaledWorkers) -> Alert:
    # celery-exporter labels celery_worker_up with the part of the worker's
    # node name after '@' (src/exporter.py get_hostname): the pod name.
    pods = f'hostname=~"worker-{group.group}-[a-z0-9]+-[a-z0-9]+"'
    queues = "|".join(sorted(group.queues))
    return Alert(
        name="CeleryWorkersAtMaxReplicas", for_="15m", severity="warning", labels={"worker_group": group.group},
        expr=(f"count(celery_worker_up{{{s},{pods}}} == 1) >= {group.max_replicas}"
              f' and on() sum(deriv(celery_queue_length{{{s},queue_name=~"{queues}"}}[15m])) > 0'),
        summary=f"Worker group {group.group} runs at its maximum of {group.max_replicas} and its queue grows",
        description=f"The autoscaler cannot add workers (max_replicas {group.max_replicas}) while the queues "
                    f"{queues} keep growing: raise worker.groups[{group.group}].autoscaling.max_replicas or "
                    "find the slow task.")


def _prometheus(s: str, t: AlertSettings) -> list[Alert]:
    alerts = [Alert(name="PrometheusRuleEvaluationFailures", for_="10m", severity="warning",
                    expr=f"increase(prometheus_rule_evaluation_failures_total{{{s}}}[10m]) > 0",
                    summary="Prometheus fails to evaluate rule group {{ $labels.rule_group }}",
                    description="Alerts of that group cannot fire; check the Prometheus log.")]
    if t.watchdog:
        alerts.append(Alert(name=WATCHDOG, for_="0s", severity="none", expr="vector(1)",
                            summary="Alerting pipeline heartbeat (always firing)",
                            description="Fires as long as Prometheus evaluates rules and Alertmanager delivers. "
                                        "Routed to an external dead man's switch, which pages when it stops."))
    return alerts


def _alertmanager(s: str, t: AlertSettings) -> list[Alert]:
    return [
        _target_down("AlertmanagerDown", s, "Alertmanager", "5m", "critical"),
        Alert(name="AlertmanagerNotificationsFailing", for_="15m", severity="warning",
              expr=(f"sum by (integration) (rate(alertmanager_notifications_failed_total{{{s}}}[15m]))"
                    f" / sum by (integration) (rate(alertmanager_notifications_total{{{s}}}[15m])) > 0.1"),
              summary="Alertmanager fails {{ $value | humanizePercentage }} of {{ $labels.integration }} sends",
              description="Alerts may not reach anyone: check the receiver's URL or password in the env's Secret "
                          "and the Alertmanager log."),
        Alert(name="AlertmanagerConfigReloadFailed", for_="10m", severity="warning",
              expr=f"max(alertmanager_config_last_reload_successful{{{s}}}) == 0",
              summary="Alertmanager could not load its configuration",
              description="It keeps running on the last good configuration; check its log."),
    ]


def _kube_state(s: str, t: AlertSettings) -> list[Alert]:
    # kube-state-metrics' own `namespace` label arrives as exported_namespace
    # (the scrape sets namespace to where kube-state-metrics runs).
    ours = f'{s},exported_namespace="{t.namespace}"'
    return [Alert(
        name="PodsRestarting", for_="5m", severity="warning",
        expr=(f"sum by (pod, container) (increase(kube_pod_container_status_restarts_total{{{ours}}}[30m]))"
              f" > {t.restarts_in_30m}"),
        summary="Container {{ $labels.container }} of {{ $labels.pod }} keeps restarting",
        description=f"More than {t.restarts_in_30m} restarts in 30 minutes: crash loop, failing liveness probe "
                    "or OOM kill; see `kubectl describe pod` and the previous container's log.")]


def _ingress(s: str, t: AlertSettings) -> list[Alert]:
    return [_target_down("IngressControllerMetricsDown", s, "ingress controller", "10m", "warning")]


def _cert_manager(s: str, t: AlertSettings) -> list[Alert]:
    ours = f'{s},exported_namespace="{t.namespace}"'
    return [
        Alert(name="CertificateExpiringSoon", for_="1h", severity="warning",
              expr=(f"min by (name) (certmanager_certificate_expiration_timestamp_seconds{{{ours}}}) - time()"
                    f" < {t.certificate_expiry_days * 86400}"),
              summary="Certificate {{ $labels.name }} expires in {{ $value | humanizeDuration }}",
              description=f"cert-manager renews 30 days before expiry; less than {t.certificate_expiry_days} "
                          "days left means renewal keeps failing."),
        Alert(name="CertificateNotReady", for_="30m", severity="warning",
              expr=f'max by (name) (certmanager_certificate_ready_status{{{ours},condition="False"}}) == 1',
              summary="Certificate {{ $labels.name }} is not ready",
              description="cert-manager cannot issue or renew it; see `kubectl describe certificate`."),
    ]


GENERATORS = {
    "django": ("api", _django),
    "celery": ("celery", _celery),
    "postgres": ("postgres", _postgres),
    "cnpg": ("postgres", _cnpg),
    "redis": ("redis", _redis),
    "seaweedfs": ("object-store", _object_store),
    "minio": ("object-store", _object_store),
    "backup": ("backups", _backup),
    SELF_METRICS: ("prometheus", _prometheus),
    "ingress-controller": ("ingress-controller", _ingress),
    "cert-manager": ("certificates", _cert_manager),
    "alertmanager": ("alertmanager", _alertmanager),
    "kube-state-metrics": ("kubernetes", _kube_state),
}


def alert_groups(targets: Mapping[str, Sequence[tuple[str, str]]], settings: AlertSettings) -> list[RuleGroup]:
    """The rule groups for the metric lists present.

    `targets`: metric list -> [(job, namespace of its series)]. Each group
    selects its series by those jobs and namespace, and names only metrics
    of its list (checked here).
    """
    groups = []
    for requires, (group_name, generate) in GENERATORS.items():
        present = targets.get(requires)
        if not present:
            continue
        namespaces = {namespace for _job, namespace in present}
        if len(namespaces) != 1:
            raise ValueError(f"metric list {requires!r}: targets span namespaces {sorted(namespaces)}")
        selector = _selector([job for job, _ns in present], namespaces.pop())
        alerts = tuple(generate(selector, settings))
        allowed = metric_list(requires) | BUILTIN_METRICS
        for alert in alerts:
            unknown = metric_names(alert.expr) - allowed
            if unknown:
                raise ValueError(f"alert {alert.name}: {sorted(unknown)} not in monitoring/metrics/{requires}.txt")
        groups.append(RuleGroup(name=group_name, requires=requires, alerts=alerts))
    return groups


def rules_document(groups: Sequence[RuleGroup], namespace: str) -> dict[str, Any]:
    """The Prometheus rule file; PrometheusRule.spec has the same shape."""
    return {"groups": [{"name": group.name, "rules": [a.render(namespace) for a in group.alerts]}
                       for group in groups]}
