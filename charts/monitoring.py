"""Observability: scrape targets and alert rules, rendered for the chosen mode.

One source, two renderings. The scrape targets (`ScrapeTarget`) and the alert
rules (`alert_groups`) are defined once:

- bundled: our own Prometheus (StatefulSet) and Grafana (Deployment). Targets
  are found by DNS (`dns_sd_configs`, type A) on one headless
  `<workload>-metrics` Service per target, so every pod is scraped and no
  cluster RBAC is needed; promtool can check the config, which it could not
  with `kubernetes_sd_configs` (Debian's build lacks it).
- operator: PodMonitors and one PrometheusRule for an existing
  prometheus-operator (e.g. kube-prometheus-stack), plus the dashboards as a
  ConfigMap for its Grafana sidecar.
- off: nothing.

Every series carries `job` (the target's job name) and `namespace`, in both
modes, so the same rules and dashboards fit either. The Celery exporter is
rendered here (it exists only for monitoring); Loki and Alloy come with
`monitoring.loki.enabled` (bundled mode only). Grafana is reached with
`kubectl -n <namespace> port-forward svc/grafana 3000` and nothing else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import yaml
from constructs import Construct

from charts.config import AlertmanagerConfig, LokiConfig, MonitoringConfig
from charts.labels import api_metadata, metadata, number
from charts.network import Peer, external, pods_in
from charts.schema import dns_label, parse_quantity
from charts.workload import Container, Deployment, Port, Probe, Probes, StatefulSet, Workload
from imports import k8s

if TYPE_CHECKING:
    from charts.stack import Stack

MONITORING_DIR = Path(__file__).resolve().parents[1] / "monitoring"
METRICS_DIR = MONITORING_DIR / "metrics"
GRAFANA_DIR = MONITORING_DIR / "grafana"

COMPONENT = "monitoring"
PROMETHEUS_PORT = 9090
GRAFANA_PORT = 3000
CELERY_EXPORTER_PORT = 9808
LOKI_PORT = 3100
ALLOY_PORT = 12345
CERT_MANAGER_METRICS_PORT = 9402
# Series every scrape produces whatever the exporter, and the alert series.
BUILTIN_METRICS = frozenset({
    "up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
    "scrape_series_added", "ALERTS", "ALERTS_FOR_STATE",
})
# Metric lists that rule groups and dashboards are keyed by.
SELF_METRICS = "prometheus"


# --- metric names -----------------------------------------------------------

_PROMQL_KEYWORDS = frozenset({
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "offset", "inf", "nan", "atan2",
})


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (a small lexer, not a parser:
    enough for the expressions of our rules and dashboards)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _PROMQL_KEYWORDS:
            continue
        names.add(name)
    return names


@cache
def metric_list(name: str) -> frozenset[str]:
    """The committed list of metric names one exporter exposes (monitoring/metrics/<name>.txt)."""
    path = METRICS_DIR / f"{name}.txt"
    if not path.exists():
        raise ValueError(f"no metric list {path.relative_to(MONITORING_DIR.parent)} for exporter {name!r}")
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return frozenset(line for line in lines if line and not line.startswith("#"))


def known_metric_lists() -> list[str]:
    return sorted(p.stem for p in METRICS_DIR.glob("*.txt"))


# --- targets ----------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class ScrapeTarget:
    """One metrics endpoint: a workload of ours, or pods elsewhere reached by DNS.

    `metrics` names the committed list in monitoring/metrics/ of what the
    exporter exposes; rule groups and dashboards exist only for lists some
    target uses. A workload target gets a headless `<workload>-metrics`
    Service; an outside target (`peer` + `dns_name`) must offer one itself.
    """

    job: str
    port: int
    metrics: str
    path: str = "/metrics"
    workload: Workload | None = field(default=None, compare=False)
    peer: Peer | None = None
    dns_name: str | None = None

    def __post_init__(self) -> None:
        try:
            dns_label(self.job)
        except ValueError as err:
            raise ValueError(f"scrape target job: {err}") from None
        if (self.workload is None) == (self.peer is None):
            raise ValueError(f"scrape target {self.job!r}: set exactly one of workload, peer")
        if self.peer is not None and (not self.dns_name or self.peer.namespace is None):
            raise ValueError(f"scrape target {self.job!r}: an outside peer needs its namespace and a dns_name")
        if not 0 < self.port < 65536:
            raise ValueError(f"scrape target {self.job!r}: bad port {self.port}")
        if not self.path.startswith("/"):
            raise ValueError(f"scrape target {self.job!r}: path {self.path!r} must start with /")
        metric_list(self.metrics)
        if self.workload is not None and self.port not in _container_ports(self.workload):
            raise ValueError(f"scrape target {self.job!r}: workload {self.workload.name!r} has no container "
                             f"port {self.port}")

    @property
    def target_peer(self) -> Peer:
        peer = self.workload.peer if self.workload is not None else self.peer
        assert peer is not None  # __post_init__ requires one of them
        return peer

    @property
    def namespace(self) -> str | None:
        """None: our own namespace."""
        return self.peer.namespace if self.peer is not None else None

    @property
    def service_name(self) -> str:
        if self.workload is None:
            raise ValueError(f"scrape target {self.job!r} is not ours")
        return f"{self.workload.name}-metrics"


def _container_ports(workload: Workload) -> set[int]:
    spec = workload.pod_template.spec
    containers = list(spec.containers) if spec is not None else []
    return {int(port.container_port) for c in containers for port in (c.ports or [])}


class Broker(Protocol):
    """What the Celery exporter needs from the broker: charts.data.Redis."""

    PORT: int
    peer: Peer

    def client_env(self) -> list[k8s.EnvVar]: ...


# --- alert rules ------------------------------------------------------------

Severity = Literal["critical", "warning"]


@dataclass(frozen=True, kw_only=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: Severity
    summary: str
    description: str

    def render(self, namespace: str) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            # namespace: who the alert is about, also for aggregated expressions.
            "labels": {"severity": self.severity, "namespace": namespace},
            "annotations": {"summary": self.summary, "description": self.description},
        }


@dataclass(frozen=True, kw_only=True)
class RuleGroup:
    name: str
    requires: str  # the metric list whose targets the group watches
    alerts: tuple[Alert, ...]


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

    @classmethod
    def from_config(cls, config: MonitoringConfig, *, namespace: str, backup_stale_after_hours: int,
                    database_volume_size: str | None) -> AlertSettings:
        return cls(namespace=namespace, api_error_ratio=config.api_error_ratio,
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


def _prometheus(s: str, t: AlertSettings) -> list[Alert]:
    return [Alert(name="PrometheusRuleEvaluationFailures", for_="10m", severity="warning",
                  expr=f"increase(prometheus_rule_evaluation_failures_total{{{s}}}[10m]) > 0",
                  summary="Prometheus fails to evaluate rule group {{ $labels.rule_group }}",
                  description="Alerts of that group cannot fire; check the Prometheus log.")]


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
    "redis": ("redis", _redis),
    "seaweedfs": ("object-store", _object_store),
    "minio": ("object-store", _object_store),
    "backup": ("backups", _backup),
    SELF_METRICS: ("prometheus", _prometheus),
    "ingress-controller": ("ingress-controller", _ingress),
    "cert-manager": ("certificates", _cert_manager),
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


# --- Prometheus configuration -----------------------------------------------

RULES_FILE = "alerts.yaml"
CONFIG_FILE = "prometheus.yml"


def _namespace_relabel(namespace: str) -> list[dict[str, str]]:
    # A static namespace label, as the operator adds from the pod: the same
    # rules and dashboards then fit both modes.
    return [{"target_label": "namespace", "replacement": namespace}]


def prometheus_config(targets: Sequence[ScrapeTarget], *, namespace: str, scrape_interval: str,
                      alertmanager: AlertmanagerConfig | None = None) -> dict[str, Any]:
    scrape_configs: list[dict[str, Any]] = [{
        "job_name": "prometheus",
        "static_configs": [{"targets": [f"localhost:{PROMETHEUS_PORT}"]}],
        "relabel_configs": _namespace_relabel(namespace),
    }]
    for target in targets:
        if target.workload is not None:
            name, series_namespace = f"{target.service_name}.{namespace}.svc", namespace
        else:
            name, series_namespace = target.dns_name or "", target.namespace or namespace
        scrape_configs.append({
            "job_name": target.job,
            "metrics_path": target.path,
            # Type A on a headless Service: one address per pod.
            "dns_sd_configs": [{"names": [name], "type": "A", "port": target.port,
                                "refresh_interval": scrape_interval}],
            "relabel_configs": _namespace_relabel(series_namespace),
        })
    interval_seconds = int(scrape_interval[:-1]) * (60 if scrape_interval.endswith("m") else 1)
    document: dict[str, Any] = {
        # The timeout may not exceed the interval.
        "global": {"scrape_interval": scrape_interval, "scrape_timeout": f"{min(10, interval_seconds)}s",
                   "evaluation_interval": scrape_interval},
        # Relative to the config file: both ConfigMaps land in one directory.
        "rule_files": [RULES_FILE],
        "scrape_configs": scrape_configs,
    }
    if alertmanager is not None and alertmanager.enabled:
        document["alerting"] = {"alertmanagers": [{"dns_sd_configs": [
            {"names": [alertmanager.dns_name], "type": "A", "port": alertmanager.port}]}]}
    return document


def dump_yaml(document: Any) -> str:
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False, width=120, allow_unicode=True)


# --- Grafana files ----------------------------------------------------------

def dashboard_files(metric_lists: set[str], *, loki: bool, namespace: str) -> dict[str, str]:
    """Dashboards whose exporter is scraped: monitoring/grafana/dashboards/<list>.json.

    Their `namespace` variable opens on this env's namespace; left to itself
    Grafana would pick the alphabetically first one Prometheus knows (e.g. the
    ingress controller's), and every panel would be empty.
    """
    files = {}
    for path in sorted((GRAFANA_DIR / "dashboards").glob("*.json")):
        needed = "loki" if path.stem == "logs" else path.stem
        if needed in metric_lists or (needed == "loki" and loki):
            board = json.loads(path.read_text(encoding="utf-8"))
            for variable in board.get("templating", {}).get("list", []):
                if variable.get("name") == "namespace":
                    variable["current"] = {"selected": True, "text": namespace, "value": namespace}
            files[path.name] = json.dumps(board, indent=2, sort_keys=True) + "\n"
    return files


def datasource_files(*, loki: bool) -> dict[str, str]:
    names = ["prometheus.yaml", *(["loki.yaml"] if loki else [])]
    return {name: (GRAFANA_DIR / "datasources" / name).read_text(encoding="utf-8") for name in names}


def datasource_uids(files: Mapping[str, str]) -> set[str]:
    return {ds["uid"] for text in files.values() for ds in yaml.safe_load(text)["datasources"]}


# --- the construct ----------------------------------------------------------

class Monitoring(Construct):
    """Metrics (and optionally logs) for one environment.

    Attributes for wiring: `celery_exporter` (None in mode off),
    `prometheus`, `grafana` (bundled mode), `targets` (all scraped targets,
    the exporter's included), `groups` (the alert rules).
    """

    def __init__(self, scope: Construct, id: str, *, stack: Stack, config: MonitoringConfig,
                 targets: Sequence[ScrapeTarget], broker: Broker, celery_queues: Sequence[str],
                 backup_stale_after_hours: int, postgres_volume_size: str | None = None,
                 ingress_controller: Peer | None = None) -> None:
        super().__init__(scope, id)
        self.stack = stack
        self.config = config
        self.namespace = stack.namespace
        self.celery_exporter: Deployment | None = None
        self.prometheus: StatefulSet | None = None
        self.grafana: Deployment | None = None
        self.loki: StatefulSet | None = None
        self.alloy: Deployment | None = None
        self.targets: list[ScrapeTarget] = []
        self.groups: list[RuleGroup] = []
        self.metric_lists: set[str] = set()
        self.rules_text = ""
        self.prometheus_config_text = ""
        self.grafana_datasources: dict[str, str] = {}
        self.grafana_dashboards: dict[str, str] = {}
        if config.mode == "off":
            return

        jobs = [t.job for t in targets]
        duplicates = sorted({j for j in jobs if jobs.count(j) > 1} | ({"prometheus"} & set(jobs)))
        if duplicates:
            raise ValueError(f"monitoring: job names must be unique and not 'prometheus' ({duplicates})")

        self.celery_exporter = self._celery_exporter(broker, celery_queues)
        self.targets = [
            *targets,
            ScrapeTarget(job="celery-exporter", workload=self.celery_exporter, port=CELERY_EXPORTER_PORT,
                         metrics="celery"),
            *self._outside_targets(ingress_controller),
        ]
        # The operator's Prometheus scrapes only what lives in this namespace:
        # the controller's and cert-manager's own charts ship their monitors.
        scraped = self.targets if config.mode == "bundled" else [t for t in self.targets if t.workload]
        by_list: dict[str, list[tuple[str, str]]] = {}
        for target in scraped:
            by_list.setdefault(target.metrics, []).append((target.job, target.namespace or self.namespace))
        if config.mode == "bundled":
            by_list[SELF_METRICS] = [("prometheus", self.namespace)]
        settings = AlertSettings.from_config(config, namespace=self.namespace,
                                             backup_stale_after_hours=backup_stale_after_hours,
                                             database_volume_size=postgres_volume_size)
        self.groups = alert_groups(by_list, settings)
        self.rules_text = dump_yaml(rules_document(self.groups, self.namespace))
        self.metric_lists = set(by_list)

        if config.mode == "bundled":
            self._bundled(scraped)
            if config.loki.enabled:
                self._loki(config.loki)
        else:
            self._operator(scraped)

    # -- pieces shared by both modes

    def _identity_meta(self, name: str, version: str | None = None,
                       extra_labels: Mapping[str, str] | None = None) -> k8s.ObjectMeta:
        return metadata(self.stack.identity(name, COMPONENT, version), name, self.namespace,
                        extra_labels=extra_labels)

    def _celery_exporter(self, broker: Broker, queues: Sequence[str]) -> Deployment:
        broker_env = broker.client_env()
        if "REDIS_URL" not in {var.name for var in broker_env}:
            raise ValueError("monitoring: the broker's client_env() must define REDIS_URL")
        image = self.config.celery_exporter_image
        container = Container(
            name="celery-exporter",
            image=image.ref,
            # CE_* are the exporter's click options as env vars; the URL is
            # assembled by Kubernetes from the Secret ($(VAR) expansion).
            env=[*broker_env,
                 k8s.EnvVar(name="CE_BROKER_URL", value="$(REDIS_URL)"),
                 k8s.EnvVar(name="CE_PORT", value=str(CELERY_EXPORTER_PORT)),
                 # Queue lengths are reported even while no worker consumes them.
                 k8s.EnvVar(name="CE_QUEUES", value=",".join(queues))],
            ports=[Port(name="metrics", port=CELERY_EXPORTER_PORT, in_service=False)],
            probes=Probes(
                # /health pings the broker; liveness only checks the server, so
                # a broker outage does not restart the exporter in a loop.
                readiness=Probe(http_path="/health", port=CELERY_EXPORTER_PORT, period_seconds=30,
                                timeout_seconds=10),
                liveness=Probe(tcp=True, port=CELERY_EXPORTER_PORT, period_seconds=30, failure_threshold=4),
            ),
            resources=self.config.celery_exporter_resources,
        )
        exporter = Deployment(self, "celery-exporter", stack=self.stack, name="celery-exporter",
                              component=COMPONENT, version=image.tag, containers=[container],
                              # Two exporters would both count every event.
                              replicas=1, recreate=True)
        self.stack.network.allow(exporter.peer, broker.peer, broker.PORT,
                                 reason="Celery exporter reads events and queue lengths")
        return exporter

    def _outside_targets(self, ingress_controller: Peer | None) -> list[ScrapeTarget]:
        config = self.config
        found = []
        if ingress_controller is not None and config.ingress_metrics_port and config.ingress_metrics_service:
            found.append(ScrapeTarget(job="ingress-controller", peer=ingress_controller,
                                      dns_name=config.ingress_metrics_service, port=config.ingress_metrics_port,
                                      metrics="ingress-controller"))
        if config.cert_manager_metrics_service:
            peer = pods_in(config.cert_manager_namespace, config.cert_manager_pod_labels, key="cert-manager")
            found.append(ScrapeTarget(job="cert-manager", peer=peer, dns_name=config.cert_manager_metrics_service,
                                      port=CERT_MANAGER_METRICS_PORT, metrics="cert-manager"))
        return found

    # -- bundled mode

    def _bundled(self, targets: Sequence[ScrapeTarget]) -> None:
        config, stack = self.config, self.stack
        for target in targets:
            if target.workload is not None:
                self._metrics_service(target)
        config_text = dump_yaml(prometheus_config(targets, namespace=self.namespace,
                                                  scrape_interval=config.scrape_interval,
                                                  alertmanager=config.alertmanager))
        self.prometheus_config_text = config_text
        version = config.prometheus_image.tag
        k8s.KubeConfigMap(self, "prometheus-config", metadata=self._identity_meta("prometheus-config", version),
                          data={CONFIG_FILE: config_text})
        k8s.KubeConfigMap(self, "prometheus-rules", metadata=self._identity_meta("prometheus-rules", version),
                          data={RULES_FILE: self.rules_text})
        # Keep 15% of the volume free for compaction and the WAL.
        retention_size = f"{int(parse_quantity(config.storage.size) * 0.85) // 2**20}MB"
        prometheus = Container(
            name="prometheus",
            image=config.prometheus_image.ref,
            args=[f"--config.file=/etc/prometheus/{CONFIG_FILE}", "--storage.tsdb.path=/prometheus",
                  f"--storage.tsdb.retention.time={config.retention}",
                  f"--storage.tsdb.retention.size={retention_size}",
                  f"--web.listen-address=:{PROMETHEUS_PORT}"],
            ports=[Port(name="http", port=PROMETHEUS_PORT)],
            probes=Probes(
                # Replaying a large WAL after a restart takes minutes.
                startup=Probe(http_path="/-/ready", port=PROMETHEUS_PORT, period_seconds=10, failure_threshold=60),
                readiness=Probe(http_path="/-/ready", port=PROMETHEUS_PORT, period_seconds=10),
                liveness=Probe(http_path="/-/healthy", port=PROMETHEUS_PORT, period_seconds=20,
                               failure_threshold=5),
            ),
            resources=config.prometheus_resources,
            mounts=[k8s.VolumeMount(name="config", mount_path="/etc/prometheus", read_only=True),
                    k8s.VolumeMount(name="data", mount_path="/prometheus")],
        )
        # One directory from two ConfigMaps: rule_files stays a relative path.
        config_volume = k8s.Volume(name="config", projected=k8s.ProjectedVolumeSource(sources=[
            k8s.VolumeProjection(config_map=k8s.ConfigMapProjection(name="prometheus-config")),
            k8s.VolumeProjection(config_map=k8s.ConfigMapProjection(name="prometheus-rules")),
        ]))
        self.prometheus = StatefulSet(
            self, "prometheus", stack=stack, name="prometheus", component=COMPONENT, version=version,
            containers=[prometheus], volumes=[config_volume], replicas=1, fs_group=10001,
            termination_grace_seconds=120,
            volume_claims=[("data", config.storage.size, config.storage.class_name)],
            # Without --web.enable-lifecycle a config change rolls the pod.
            pod_annotations={"checksum/config": stack.checksum(config_text + self.rules_text)},
        )
        for target in targets:
            stack.network.allow(self.prometheus.peer, target.target_peer, target.port,
                                reason=f"Prometheus scrapes {target.job}")
        if config.alertmanager.enabled:
            alertmanager = config.alertmanager
            stack.network.allow(self.prometheus.peer,
                                pods_in(alertmanager.namespace, alertmanager.pod_labels, key="alertmanager"),
                                alertmanager.port, reason="Prometheus sends alerts")
        self._grafana()

    def _metrics_service(self, target: ScrapeTarget) -> None:
        workload = target.workload
        assert workload is not None
        k8s.KubeService(
            self, f"{target.service_name}-service",
            metadata=self._identity_meta(target.service_name, workload.identity.version),
            spec=k8s.ServiceSpec(
                type="ClusterIP",
                cluster_ip="None",
                selector=workload.identity.selector(),
                # Scrape pods that fail readiness too: `up` must show them.
                publish_not_ready_addresses=True,
                ports=[k8s.ServicePort(name="metrics", port=target.port, protocol="TCP",
                                       target_port=number(target.port))],
            ),
        )

    def _grafana(self) -> None:
        config, stack = self.config, self.stack
        assert self.prometheus is not None
        loki = config.loki.enabled
        version = config.grafana_image.tag
        datasources = datasource_files(loki=loki)
        dashboards = dashboard_files(self.metric_lists, loki=loki, namespace=self.namespace)
        provider = (GRAFANA_DIR / "dashboards.yaml").read_text(encoding="utf-8")
        self.grafana_datasources = datasources
        self.grafana_dashboards = dashboards
        k8s.KubeConfigMap(self, "grafana-datasources", metadata=self._identity_meta("grafana-datasources", version),
                          data=datasources)
        k8s.KubeConfigMap(self, "grafana-dashboard-provider",
                          metadata=self._identity_meta("grafana-dashboard-provider", version),
                          data={"vibearena.yaml": provider})
        k8s.KubeConfigMap(self, "grafana-dashboards", metadata=self._identity_meta("grafana-dashboards", version),
                          data=dashboards)
        env = [
            k8s.EnvVar(name="GF_SECURITY_ADMIN_USER", value="admin"),
            stack.secrets.env("GF_SECURITY_ADMIN_PASSWORD", "GRAFANA_ADMIN_PASS"),
            k8s.EnvVar(name="GF_AUTH_ANONYMOUS_ENABLED", value="false"),
            k8s.EnvVar(name="GF_USERS_ALLOW_SIGN_UP", value="false"),
            k8s.EnvVar(name="GF_SECURITY_DISABLE_GRAVATAR", value="true"),
            # No egress beyond the cluster: no phoning home, no plugin downloads
            # (the datasources used are bundled in the image).
            k8s.EnvVar(name="GF_ANALYTICS_REPORTING_ENABLED", value="false"),
            k8s.EnvVar(name="GF_ANALYTICS_CHECK_FOR_UPDATES", value="false"),
            k8s.EnvVar(name="GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES", value="false"),
            k8s.EnvVar(name="GF_NEWS_NEWS_FEED_ENABLED", value="false"),
            k8s.EnvVar(name="GF_PLUGINS_PREINSTALL_DISABLED", value="true"),
            # Everything written goes to the emptyDir; the root stays read-only.
            k8s.EnvVar(name="GF_PATHS_DATA", value="/var/lib/grafana"),
            k8s.EnvVar(name="GF_PATHS_LOGS", value="/var/lib/grafana/logs"),
            k8s.EnvVar(name="GF_PATHS_PLUGINS", value="/var/lib/grafana/plugins"),
            k8s.EnvVar(name="GF_PATHS_PROVISIONING", value="/etc/grafana/provisioning"),
            k8s.EnvVar(name="GF_LOG_MODE", value="console"),
            k8s.EnvVar(name="PROMETHEUS_SCRAPE_INTERVAL", value=config.scrape_interval),
        ]
        grafana = Container(
            name="grafana",
            image=config.grafana_image.ref,
            env=env,
            ports=[Port(name="http", port=GRAFANA_PORT)],
            probes=Probes(
                startup=Probe(http_path="/api/health", port=GRAFANA_PORT, period_seconds=5, failure_threshold=60),
                readiness=Probe(http_path="/api/health", port=GRAFANA_PORT, period_seconds=10),
                liveness=Probe(http_path="/api/health", port=GRAFANA_PORT, period_seconds=20, failure_threshold=5),
            ),
            resources=config.grafana_resources,
            # The SQLite database lives in an emptyDir: all state is provisioned,
            # and the admin password is re-read from the Secret on every start.
            writable_paths=("/tmp", "/var/lib/grafana"),
            mounts=[k8s.VolumeMount(name="provisioning", mount_path="/etc/grafana/provisioning", read_only=True),
                    k8s.VolumeMount(name="dashboards", mount_path="/etc/grafana/dashboards", read_only=True)],
        )
        provisioning = k8s.Volume(name="provisioning", projected=k8s.ProjectedVolumeSource(sources=[
            k8s.VolumeProjection(config_map=k8s.ConfigMapProjection(
                name="grafana-datasources",
                items=[k8s.KeyToPath(key=name, path=f"datasources/{name}") for name in sorted(datasources)])),
            k8s.VolumeProjection(config_map=k8s.ConfigMapProjection(
                name="grafana-dashboard-provider",
                items=[k8s.KeyToPath(key="vibearena.yaml", path="dashboards/vibearena.yaml")])),
        ]))
        dashboards_volume = k8s.Volume(name="dashboards",
                                       config_map=k8s.ConfigMapVolumeSource(name="grafana-dashboards"))
        checksum = stack.checksum(json.dumps([datasources, dashboards, provider], sort_keys=True))
        self.grafana = Deployment(
            self, "grafana", stack=stack, name="grafana", component=COMPONENT, version=version,
            containers=[grafana], volumes=[provisioning, dashboards_volume], replicas=1, fs_group=10001,
            scratch_size="512Mi", pod_annotations={"checksum/config": checksum},
        )
        stack.network.allow(self.grafana.peer, self.prometheus.peer, PROMETHEUS_PORT,
                            reason="Grafana queries Prometheus")

    # -- operator mode

    def _operator(self, targets: Sequence[ScrapeTarget]) -> None:
        # Imported on use: loading a CRD module costs jsii start-up time.
        from imports.com.coreos import monitoring as mon

        config, stack = self.config, self.stack
        operator_labels = dict(config.operator_labels)
        operator_prometheus = pods_in(config.operator_prometheus_namespace, config.operator_prometheus_pod_labels,
                                      key="operator-prometheus")
        for target in targets:
            workload = target.workload
            assert workload is not None
            identity = stack.identity(target.job, COMPONENT, workload.identity.version)
            mon.PodMonitor(
                self, f"pod-monitor-{target.job}",
                metadata=api_metadata(identity, target.job, self.namespace, extra_labels=operator_labels),
                spec=mon.PodMonitorSpec(
                    selector=mon.PodMonitorSpecSelector(match_labels=workload.identity.selector()),
                    pod_metrics_endpoints=[mon.PodMonitorSpecPodMetricsEndpoints(
                        port_number=target.port,
                        path=target.path,
                        interval=config.scrape_interval,
                        # The job label the rules select on, as in bundled mode
                        # (the operator's default is <namespace>/<monitor>).
                        relabelings=[mon.PodMonitorSpecPodMetricsEndpointsRelabelings(
                            action=mon.PodMonitorSpecPodMetricsEndpointsRelabelingsAction.REPLACE,
                            target_label="job", replacement=target.job)],
                    )],
                ),
            )
            stack.network.allow(operator_prometheus, target.target_peer, target.port,
                                reason=f"the operator's Prometheus scrapes {target.job}")
        identity = stack.identity("vibearena-alerts", COMPONENT)
        document = rules_document(self.groups, self.namespace)
        mon.PrometheusRule(
            self, "prometheus-rule",
            metadata=api_metadata(identity, "vibearena-alerts", self.namespace, extra_labels=operator_labels),
            spec=mon.PrometheusRuleSpec(groups=[
                mon.PrometheusRuleSpecGroups(name=group["name"], rules=[
                    mon.PrometheusRuleSpecGroupsRules(
                        alert=rule["alert"], expr=mon.PrometheusRuleSpecGroupsRulesExpr.from_string(rule["expr"]),
                        for_=rule["for"], labels=rule["labels"], annotations=rule["annotations"])
                    for rule in group["rules"]])
                for group in document["groups"]]),
        )
        # The cluster's Grafana (kube-prometheus-stack) loads labelled
        # ConfigMaps through its dashboard sidecar; its Prometheus datasource
        # uid is "prometheus" there too.
        dashboards = dashboard_files(self.metric_lists, loki=False, namespace=self.namespace)
        self.grafana_dashboards = dashboards
        k8s.KubeConfigMap(self, "grafana-dashboards",
                          metadata=self._identity_meta("grafana-dashboards",
                                                       extra_labels=dict(config.operator_dashboard_labels)),
                          data=dashboards)

    # -- logs

    def _loki(self, loki: LokiConfig) -> None:
        stack = self.stack
        assert self.grafana is not None
        loki_text = dump_yaml(loki_config(loki))
        k8s.KubeConfigMap(self, "loki-config", metadata=self._identity_meta("loki-config", loki.image.tag),
                          data={"loki.yaml": loki_text})
        server = Container(
            name="loki",
            image=loki.image.ref,
            args=["-config.file=/etc/loki/loki.yaml", "-target=all"],
            ports=[Port(name="http", port=LOKI_PORT)],
            probes=Probes(
                startup=Probe(http_path="/ready", port=LOKI_PORT, period_seconds=10, failure_threshold=30),
                readiness=Probe(http_path="/ready", port=LOKI_PORT, period_seconds=10),
                # /ready also reflects the ring; a busy Loki must not be killed for it.
                liveness=Probe(tcp=True, port=LOKI_PORT, period_seconds=20, failure_threshold=5),
            ),
            resources=loki.resources,
            mounts=[k8s.VolumeMount(name="config", mount_path="/etc/loki", read_only=True),
                    k8s.VolumeMount(name="data", mount_path="/loki")],
        )
        self.loki = loki_server = StatefulSet(
            self, "loki", stack=stack, name="loki", component=COMPONENT, version=loki.image.tag,
            containers=[server], replicas=1, fs_group=10001, termination_grace_seconds=60,
            volumes=[k8s.Volume(name="config", config_map=k8s.ConfigMapVolumeSource(name="loki-config"))],
            volume_claims=[("data", loki.storage.size, loki.storage.class_name)],
            pod_annotations={"checksum/config": stack.checksum(loki_text)},
        )

        alloy_text = alloy_config(self.namespace)
        k8s.KubeConfigMap(self, "alloy-config", metadata=self._identity_meta("alloy-config", loki.alloy_image.tag),
                          data={"config.alloy": alloy_text})
        token_path = "/var/run/secrets/kubernetes.io/serviceaccount"
        agent = Container(
            name="alloy",
            image=loki.alloy_image.ref,
            args=["run", "/etc/alloy/config.alloy", "--storage.path=/var/lib/alloy/data",
                  f"--server.http.listen-addr=0.0.0.0:{ALLOY_PORT}", "--disable-reporting"],
            ports=[Port(name="http", port=ALLOY_PORT, in_service=False)],
            probes=Probes(readiness=Probe(http_path="/-/ready", port=ALLOY_PORT, period_seconds=10),
                          liveness=Probe(http_path="/-/ready", port=ALLOY_PORT, period_seconds=30,
                                         failure_threshold=5)),
            resources=loki.alloy_resources,
            writable_paths=("/tmp", "/var/lib/alloy/data"),
            mounts=[k8s.VolumeMount(name="config", mount_path="/etc/alloy", read_only=True),
                    k8s.VolumeMount(name="api-token", mount_path=token_path, read_only=True)],
        )
        # The only pod with an API token, mounted explicitly (automount stays
        # off everywhere); a short-lived, audience-bound projected token.
        token = k8s.Volume(name="api-token", projected=k8s.ProjectedVolumeSource(sources=[
            k8s.VolumeProjection(service_account_token=k8s.ServiceAccountTokenProjection(
                path="token", expiration_seconds=3600)),
            k8s.VolumeProjection(config_map=k8s.ConfigMapProjection(
                name="kube-root-ca.crt", items=[k8s.KeyToPath(key="ca.crt", path="ca.crt")])),
            k8s.VolumeProjection(downward_api=k8s.DownwardApiProjection(items=[k8s.DownwardApiVolumeFile(
                path="namespace", field_ref=k8s.ObjectFieldSelector(field_path="metadata.namespace"))])),
        ]))
        self.alloy = alloy = Deployment(
            self, "alloy", stack=stack, name="alloy", component=COMPONENT, version=loki.alloy_image.tag,
            containers=[agent], replicas=1, recreate=True,  # two would ship every line twice
            volumes=[k8s.Volume(name="config", config_map=k8s.ConfigMapVolumeSource(name="alloy-config")), token],
            pod_annotations={"checksum/config": stack.checksum(alloy_text)},
        )
        # Read pods and their logs in this namespace, nothing else.
        meta = self._identity_meta("alloy", loki.alloy_image.tag)
        k8s.KubeRole(self, "alloy-role", metadata=meta, rules=[
            k8s.PolicyRule(api_groups=[""], resources=["pods"], verbs=["get", "list", "watch"]),
            k8s.PolicyRule(api_groups=[""], resources=["pods/log"], verbs=["get"]),
        ])
        k8s.KubeRoleBinding(self, "alloy-role-binding", metadata=meta,
                            role_ref=k8s.RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="alloy"),
                            subjects=[k8s.Subject(kind="ServiceAccount", name="alloy", namespace=self.namespace)])

        network = stack.network
        network.allow(alloy.peer, loki_server.peer, LOKI_PORT, reason="Alloy pushes logs")
        network.allow(alloy.peer, external(loki.api_server_cidr or "", key="kube-apiserver"),
                      loki.api_server_port, reason="Alloy tails pod logs through the Kubernetes API")
        network.allow(self.grafana.peer, loki_server.peer, LOKI_PORT, reason="Grafana queries Loki")


def loki_config(loki: LokiConfig) -> dict[str, Any]:
    """Single-binary Loki on its own volume (filesystem storage)."""
    return {
        "auth_enabled": False,
        "server": {"http_listen_port": LOKI_PORT, "log_level": "info"},
        "common": {
            "instance_addr": "127.0.0.1",
            "path_prefix": "/loki",
            "storage": {"filesystem": {"chunks_directory": "/loki/chunks", "rules_directory": "/loki/rules"}},
            "replication_factor": 1,
            "ring": {"kvstore": {"store": "inmemory"}},
        },
        "schema_config": {"configs": [{
            "from": "2024-01-01", "store": "tsdb", "object_store": "filesystem", "schema": "v13",
            "index": {"prefix": "index_", "period": "24h"},
        }]},
        "limits_config": {"retention_period": loki.retention},
        # The compactor applies the retention.
        "compactor": {"working_directory": "/loki/compactor", "retention_enabled": True,
                      "delete_request_store": "filesystem"},
        "query_range": {"results_cache": {"cache": {"embedded_cache": {"enabled": True, "max_size_mb": 50}}}},
        "analytics": {"reporting_enabled": False},
    }


def alloy_config(namespace: str) -> str:
    """Pod logs of this namespace through the Kubernetes API (no hostPath, no DaemonSet)."""
    return f"""\
discovery.kubernetes "pods" {{
  role = "pod"
  namespaces {{
    names = ["{namespace}"]
  }}
}}

discovery.relabel "pods" {{
  targets = discovery.kubernetes.pods.targets
  rule {{
    source_labels = ["__meta_kubernetes_namespace"]
    target_label  = "namespace"
  }}
  rule {{
    source_labels = ["__meta_kubernetes_pod_name"]
    target_label  = "pod"
  }}
  rule {{
    source_labels = ["__meta_kubernetes_pod_container_name"]
    target_label  = "container"
  }}
  rule {{
    source_labels = ["__meta_kubernetes_pod_label_app_kubernetes_io_name"]
    target_label  = "app"
  }}
}}

loki.source.kubernetes "pods" {{
  targets    = discovery.relabel.pods.output
  forward_to = [loki.write.local.receiver]
}}

loki.write "local" {{
  endpoint {{
    url = "http://loki:{LOKI_PORT}/loki/api/v1/push"
  }}
}}
"""
