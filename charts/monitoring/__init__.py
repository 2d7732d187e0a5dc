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

Modules, one concern each:

- metrics: the committed metric lists and the PromQL name lexer
- targets: `ScrapeTarget`
- rules: alert rules (`GENERATORS`: one generator per metric list)
- celery_exporter: the Celery exporter Deployment
- prometheus: bundled Prometheus, its config and metrics Services
- grafana: datasources, dashboards, bundled Grafana
- logs: Loki and Alloy
- alertmanager: where alerts go (an existing Alertmanager, or the bundled one)
- operator: PodMonitors, PrometheusRule, dashboards ConfigMap
- construct: `Monitoring`, which assembles the parts for the mode

To monitor a new exporter: commit monitoring/metrics/<list>.txt, add a
`ScrapeTarget` for it in the stack, a generator in rules.GENERATORS and
optionally monitoring/grafana/dashboards/<list>.json.
"""

from charts.monitoring.alertmanager import (
    ALERTMANAGER_PORT,
    Alertmanager,
    alerting_config,
    alertmanager_config,
    allow_alerts,
    inhibit_rules,
)
from charts.monitoring.celery_exporter import CELERY_EXPORTER_PORT, Broker, celery_exporter
from charts.monitoring.common import COMPONENT, dump_yaml, identity_meta
from charts.monitoring.construct import Monitoring
from charts.monitoring.grafana import (
    GRAFANA_DIR,
    GRAFANA_PORT,
    Grafana,
    dashboard_files,
    datasource_files,
    datasource_uids,
)
from charts.monitoring.logs import ALLOY_PORT, LOKI_PORT, Logs, alloy_config, loki_config
from charts.monitoring.metrics import (
    BUILTIN_METRICS,
    METRICS_DIR,
    MONITORING_DIR,
    SELF_METRICS,
    known_metric_lists,
    metric_list,
    metric_names,
)
from charts.monitoring.operator import OperatorResources
from charts.monitoring.prometheus import CONFIG_FILE, PROMETHEUS_PORT, RULES_FILE, Prometheus, prometheus_config
from charts.monitoring.rules import (
    GENERATORS,
    WATCHDOG,
    Alert,
    AlertSettings,
    RuleGroup,
    ScaledWorkers,
    Severity,
    alert_groups,
    rules_document,
)
from charts.monitoring.targets import CERT_MANAGER_METRICS_PORT, ScrapeTarget

__all__ = [
    "ALERTMANAGER_PORT",
    "ALLOY_PORT",
    "BUILTIN_METRICS",
    "CELERY_EXPORTER_PORT",
    "CERT_MANAGER_METRICS_PORT",
    "COMPONENT",
    "CONFIG_FILE",
    "GENERATORS",
    "GRAFANA_DIR",
    "GRAFANA_PORT",
    "LOKI_PORT",
    "METRICS_DIR",
    "MONITORING_DIR",
    "PROMETHEUS_PORT",
    "RULES_FILE",
    "SELF_METRICS",
    "WATCHDOG",
    "Alert",
    "AlertSettings",
    "Alertmanager",
    "Broker",
    "Grafana",
    "Logs",
    "Monitoring",
    "OperatorResources",
    "Prometheus",
    "RuleGroup",
    "ScaledWorkers",
    "ScrapeTarget",
    "Severity",
    "alert_groups",
    "alerting_config",
    "alertmanager_config",
    "allow_alerts",
    "alloy_config",
    "celery_exporter",
    "dashboard_files",
    "datasource_files",
    "datasource_uids",
    "dump_yaml",
    "identity_meta",
    "inhibit_rules",
    "known_metric_lists",
    "loki_config",
    "metric_list",
    "metric_names",
    "prometheus_config",
    "rules_document",
]
