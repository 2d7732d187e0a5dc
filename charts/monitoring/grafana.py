"""Grafana: the provisioned datasources and dashboards
(monitoring/grafana/), and bundled mode's Grafana Deployment.

Changes when a dashboard or how Grafana runs changes. A dashboard
monitoring/grafana/dashboards/<list>.json is shipped wherever a target with
metric list <list> is scraped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

import yaml
from constructs import Construct

from charts.config import MonitoringConfig
from charts.monitoring.common import COMPONENT, identity_meta
from charts.monitoring.metrics import MONITORING_DIR
from charts.monitoring.prometheus import PROMETHEUS_PORT
from charts.network import Peer
from charts.workload import Container, Deployment, Port, Probe, Probes
from imports import k8s

if TYPE_CHECKING:
    from charts.stack import Stack

GRAFANA_DIR = MONITORING_DIR / "grafana"
GRAFANA_PORT = 3000


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



class Grafana(Construct):
    """Bundled mode's Grafana, reading the bundled Prometheus (and Loki).

    Attributes: `workload`, `datasources` and `dashboards` (file name -> text).
    """

    def __init__(self, scope: Construct, id: str, *, stack: Stack, config: MonitoringConfig,
                 metric_lists: set[str], prometheus: Peer) -> None:
        super().__init__(scope, id)
        loki = config.loki.enabled
        version = config.grafana_image.tag
        datasources = datasource_files(loki=loki)
        dashboards = dashboard_files(metric_lists, loki=loki, namespace=stack.namespace)
        provider = (GRAFANA_DIR / "dashboards.yaml").read_text(encoding="utf-8")
        self.datasources = datasources
        self.dashboards = dashboards
        k8s.KubeConfigMap(self, "grafana-datasources", metadata=identity_meta(stack, "grafana-datasources", version),
                          data=datasources)
        k8s.KubeConfigMap(self, "grafana-dashboard-provider",
                          metadata=identity_meta(stack, "grafana-dashboard-provider", version),
                          data={"vibearena.yaml": provider})
        k8s.KubeConfigMap(self, "grafana-dashboards", metadata=identity_meta(stack, "grafana-dashboards", version),
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
        self.workload = Deployment(
            self, "grafana", stack=stack, name="grafana", component=COMPONENT, version=version,
            containers=[grafana], volumes=[provisioning, dashboards_volume], replicas=1, fs_group=10001,
            scratch_size="512Mi", pod_annotations={"checksum/config": checksum},
        )
        stack.network.allow(self.workload.peer, prometheus, PROMETHEUS_PORT,
                            reason="Grafana queries Prometheus")
