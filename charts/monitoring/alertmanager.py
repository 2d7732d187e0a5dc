"""Where the bundled Prometheus sends alerts: an Alertmanager the cluster
already runs (`monitoring.alertmanager`).

Changes when alert delivery changes. Routing, receivers and their secrets
live with that Alertmanager.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from charts.config import AlertmanagerConfig
from charts.network import Peer, pods_in

if TYPE_CHECKING:
    from charts.stack import Stack


def alerting_config(alertmanager: AlertmanagerConfig | None) -> dict[str, Any] | None:
    """The `alerting` block of prometheus.yml, or None when alerts go nowhere."""
    if alertmanager is None or not alertmanager.enabled:
        return None
    return {"alertmanagers": [{"dns_sd_configs": [
        {"names": [alertmanager.dns_name], "type": "A", "port": alertmanager.port}]}]}


def allow_alerts(stack: Stack, prometheus: Peer, alertmanager: AlertmanagerConfig) -> None:
    if alertmanager.enabled:
        stack.network.allow(prometheus, pods_in(alertmanager.namespace, alertmanager.pod_labels, key="alertmanager"),
                            alertmanager.port, reason="Prometheus sends alerts")
