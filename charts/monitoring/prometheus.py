"""Bundled mode's Prometheus: its configuration (scrape jobs found by DNS),
one headless `<workload>-metrics` Service per target of ours, and the
StatefulSet.

Changes when how Prometheus runs or discovers targets changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from constructs import Construct

from charts.config import AlertmanagerConfig, MonitoringConfig
from charts.labels import number
from charts.monitoring.alertmanager import alerting_config, allow_alerts
from charts.monitoring.common import COMPONENT, dump_yaml, identity_meta
from charts.monitoring.targets import ScrapeTarget
from charts.schema import parse_quantity
from charts.workload import Container, Port, Probe, Probes, StatefulSet
from imports import k8s

if TYPE_CHECKING:
    from charts.stack import Stack

PROMETHEUS_PORT = 9090
RULES_FILE = "alerts.yaml"
CONFIG_FILE = "prometheus.yml"


def _namespace_relabel(namespace: str) -> list[dict[str, str]]:
    # A static namespace label, as the operator adds from the pod: the same
    # rules and dashboards then fit both modes.
    return [{"target_label": "namespace", "replacement": namespace}]


def prometheus_config(targets: Sequence[ScrapeTarget], *, namespace: str, scrape_interval: str,
                      alertmanager: AlertmanagerConfig | None = None,
                      bundled_alertmanager: str | None = None) -> dict[str, Any]:
    """`bundled_alertmanager`: the bundled Alertmanager's DNS name (bundled mode)."""
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
    alerting = alerting_config(alertmanager, bundled_dns_name=bundled_alertmanager)
    if alerting is not None:
        document["alerting"] = alerting
    return document


class Prometheus(Construct):
    """The bundled Prometheus and what it needs to scrape `targets`.

    Attributes: `workload` (the StatefulSet), `config_text` (prometheus.yml).
    """

    def __init__(self, scope: Construct, id: str, *, stack: Stack, config: MonitoringConfig,
                 targets: Sequence[ScrapeTarget], rules_text: str, bundled_alertmanager: str | None = None) -> None:
        super().__init__(scope, id)
        self.stack = stack
        self.namespace = stack.namespace
        for target in targets:
            if target.workload is not None:
                self._metrics_service(target)
        config_text = dump_yaml(prometheus_config(targets, namespace=self.namespace,
                                                  scrape_interval=config.scrape_interval,
                                                  alertmanager=config.alertmanager,
                                                  bundled_alertmanager=bundled_alertmanager))
        self.config_text = config_text
        version = config.prometheus_image.tag
        k8s.KubeConfigMap(self, "prometheus-config", metadata=identity_meta(stack, "prometheus-config", version),
                          data={CONFIG_FILE: config_text})
        k8s.KubeConfigMap(self, "prometheus-rules", metadata=identity_meta(stack, "prometheus-rules", version),
                          data={RULES_FILE: rules_text})
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
        self.workload = StatefulSet(
            self, "prometheus", stack=stack, name="prometheus", component=COMPONENT, version=version,
            containers=[prometheus], volumes=[config_volume], replicas=1, fs_group=10001,
            termination_grace_seconds=120,
            volume_claims=[("data", config.storage.size, config.storage.class_name)],
            # Without --web.enable-lifecycle a config change rolls the pod.
            pod_annotations={"checksum/config": stack.checksum(config_text + rules_text)},
        )
        for target in targets:
            stack.network.allow(self.workload.peer, target.target_peer, target.port,
                                reason=f"Prometheus scrapes {target.job}")
        allow_alerts(stack, self.workload.peer, config.alertmanager)

    def _metrics_service(self, target: ScrapeTarget) -> None:
        workload = target.workload
        assert workload is not None
        k8s.KubeService(
            self, f"{target.service_name}-service",
            metadata=identity_meta(self.stack, target.service_name, workload.identity.version),
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

