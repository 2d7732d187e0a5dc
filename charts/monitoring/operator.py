"""Operator mode: PodMonitors and one PrometheusRule for an existing
prometheus-operator (e.g. kube-prometheus-stack), and the dashboards as a
ConfigMap for its Grafana's sidecar.

Changes when the operator's CRDs or its discovery labels change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from constructs import Construct

from charts.config import MonitoringConfig
from charts.labels import api_metadata
from charts.monitoring.common import COMPONENT, identity_meta
from charts.monitoring.grafana import dashboard_files
from charts.monitoring.rules import RuleGroup, rules_document
from charts.monitoring.targets import ScrapeTarget
from charts.network import pods_in
from imports import k8s

if TYPE_CHECKING:
    from charts.stack import Stack


class OperatorResources(Construct):
    """What an operator-managed Prometheus and Grafana pick up.

    Attribute: `dashboards` (file name -> text).
    """

    def __init__(self, scope: Construct, id: str, *, stack: Stack, config: MonitoringConfig,
                 targets: Sequence[ScrapeTarget], groups: Sequence[RuleGroup], metric_lists: set[str]) -> None:
        super().__init__(scope, id)
        namespace = stack.namespace
        # Imported on use: loading a CRD module costs jsii start-up time.
        from imports.com.coreos import monitoring as mon

        operator_labels = dict(config.operator_labels)
        operator_prometheus = pods_in(config.operator_prometheus_namespace, config.operator_prometheus_pod_labels,
                                      key="operator-prometheus")
        for target in targets:
            # Pods of this namespace: ours, or an operator's (CNPG), by their peer's labels.
            version = target.workload.identity.version if target.workload is not None else None
            identity = stack.identity(target.job, COMPONENT, version)
            mon.PodMonitor(
                self, f"pod-monitor-{target.job}",
                metadata=api_metadata(identity, target.job, namespace, extra_labels=operator_labels),
                spec=mon.PodMonitorSpec(
                    selector=mon.PodMonitorSpecSelector(match_labels=dict(target.target_peer.selector)),
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
        document = rules_document(groups, namespace)
        mon.PrometheusRule(
            self, "prometheus-rule",
            metadata=api_metadata(identity, "vibearena-alerts", namespace, extra_labels=operator_labels),
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
        dashboards = dashboard_files(metric_lists, loki=False, namespace=namespace)
        self.dashboards = dashboards
        k8s.KubeConfigMap(self, "grafana-dashboards",
                          metadata=identity_meta(stack, "grafana-dashboards",
                                                       extra_labels=dict(config.operator_dashboard_labels)),
                          data=dashboards)

    # -- logs
