"""`Monitoring`: one environment's observability, assembled for its mode.

Collects the scrape targets (the stack's, the Celery exporter, targets
outside the namespace), derives the alert rule groups from them, and hands
both to the parts of the chosen mode. Changes when a mode or a part is added.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from constructs import Construct

from charts.config import MonitoringConfig
from charts.monitoring.alertmanager import ALERTMANAGER_PORT, Alertmanager
from charts.monitoring.celery_exporter import CELERY_EXPORTER_PORT, Broker, celery_exporter
from charts.monitoring.common import dump_yaml
from charts.monitoring.grafana import Grafana
from charts.monitoring.logs import Logs
from charts.monitoring.metrics import SELF_METRICS
from charts.monitoring.operator import OperatorResources
from charts.monitoring.prometheus import Prometheus
from charts.monitoring.rules import AlertSettings, RuleGroup, ScaledWorkers, alert_groups, rules_document
from charts.monitoring.targets import CERT_MANAGER_METRICS_PORT, ScrapeTarget
from charts.network import Peer, pods_in
from charts.workload import Deployment, StatefulSet

if TYPE_CHECKING:
    from charts.stack import Stack


class Monitoring(Construct):
    """Metrics (and optionally logs) for one environment.

    Attributes for wiring: `celery_exporter` (None in mode off),
    `prometheus`, `grafana` (bundled mode), `targets` (all scraped targets,
    the exporter's included), `groups` (the alert rules).
    """

    def __init__(self, scope: Construct, id: str, *, stack: Stack, config: MonitoringConfig,
                 targets: Sequence[ScrapeTarget], broker: Broker, celery_queues: Sequence[str],
                 backup_stale_after_hours: int, postgres_volume_size: str | None = None,
                 ingress_controller: Peer | None = None, autoscaled_workers: Sequence[ScaledWorkers] = ()) -> None:
        super().__init__(scope, id)
        self.stack = stack
        self.config = config
        self.namespace = stack.namespace
        self.celery_exporter: Deployment | None = None
        self.prometheus: StatefulSet | None = None
        self.grafana: Deployment | None = None
        self.loki: StatefulSet | None = None
        self.alloy: Deployment | None = None
        self.alertmanager: StatefulSet | None = None
        self.alertmanager_config_text = ""
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

        self.celery_exporter = celery_exporter(self, "celery-exporter", stack=stack, config=config, broker=broker,
                                               queues=celery_queues)
        self.targets = [
            *targets,
            ScrapeTarget(job="celery-exporter", workload=self.celery_exporter, port=CELERY_EXPORTER_PORT,
                         metrics="celery"),
            *self._outside_targets(ingress_controller),
        ]
        # The operator's Prometheus scrapes only what lives in this namespace:
        # the controller's and cert-manager's own charts ship their monitors.
        scraped = self.targets if config.mode == "bundled" else [t for t in self.targets if t.namespace is None]
        by_list: dict[str, list[tuple[str, str]]] = {}
        for target in scraped:
            by_list.setdefault(target.metrics, []).append((target.job, target.namespace or self.namespace))
        bundled_alertmanager_job = config.alertmanager.mode == "bundled"
        if config.mode == "bundled":
            by_list[SELF_METRICS] = [("prometheus", self.namespace)]
            if bundled_alertmanager_job:
                # Scraped like any target; added below, once it exists (its
                # configuration needs the rule groups for the inhibitions).
                by_list["alertmanager"] = [("alertmanager", self.namespace)]
        settings = AlertSettings.from_config(config, namespace=self.namespace,
                                             backup_stale_after_hours=backup_stale_after_hours,
                                             database_volume_size=postgres_volume_size,
                                             autoscaled_workers=autoscaled_workers)
        self.groups = alert_groups(by_list, settings)
        bundled_alertmanager = None
        if bundled_alertmanager_job:
            bundled_alertmanager = Alertmanager(self, "alertmanager", stack=stack, config=config.alertmanager,
                                                groups=self.groups)
            self.alertmanager = bundled_alertmanager.workload
            self.alertmanager_config_text = bundled_alertmanager.config_text
            target = ScrapeTarget(job="alertmanager", workload=bundled_alertmanager.workload, port=ALERTMANAGER_PORT,
                                  metrics="alertmanager")
            self.targets.append(target)  # `scraped` is this list: bundled mode only
        self.rules_text = dump_yaml(rules_document(self.groups, self.namespace))
        self.metric_lists = set(by_list)

        if config.mode == "bundled":
            self._bundled(scraped, bundled_alertmanager)
        else:
            operator = OperatorResources(self, "operator", stack=stack, config=config, targets=scraped,
                                         groups=self.groups, metric_lists=self.metric_lists)
            self.grafana_dashboards = operator.dashboards

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
        if config.kube_state_metrics_service:
            peer = pods_in(config.kube_state_metrics_namespace, config.kube_state_metrics_pod_labels,
                           key="kube-state-metrics")
            found.append(ScrapeTarget(job="kube-state-metrics", peer=peer,
                                      dns_name=config.kube_state_metrics_service,
                                      port=config.kube_state_metrics_port, metrics="kube-state-metrics"))
        return found

    def _bundled(self, targets: Sequence[ScrapeTarget], alertmanager: Alertmanager | None) -> None:
        config, stack = self.config, self.stack
        prometheus = Prometheus(self, "prometheus", stack=stack, config=config, targets=targets,
                                rules_text=self.rules_text,
                                bundled_alertmanager=alertmanager.dns_name if alertmanager else None)
        # Prometheus -> the bundled Alertmanager (alerts and scrapes, one port)
        # is declared by its scrape target.
        self.prometheus = prometheus.workload
        self.prometheus_config_text = prometheus.config_text
        grafana = Grafana(self, "grafana", stack=stack, config=config, metric_lists=self.metric_lists,
                          prometheus=prometheus.workload.peer)
        self.grafana = grafana.workload
        self.grafana_datasources = grafana.datasources
        self.grafana_dashboards = grafana.dashboards
        if config.loki.enabled:
            logs = Logs(self, "logs", stack=stack, loki=config.loki, grafana=grafana.workload.peer)
            self.loki, self.alloy = logs.loki, logs.alloy
