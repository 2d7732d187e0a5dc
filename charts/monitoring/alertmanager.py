"""Where the bundled Prometheus sends alerts (`monitoring.alertmanager.mode`).

- existing: an Alertmanager the cluster already runs; routing and receivers
  live with it.
- bundled: our own Alertmanager (StatefulSet, one replica). Receivers read
  their URLs and the SMTP password from files (Alertmanager's `*_file`
  settings) mounted from keys of the env's Secret, so nothing secret is
  rendered. Routes by severity, grouping, inhibition (a critical alert
  silences the warnings of its rule group), and the always-firing Watchdog
  goes to an external dead man's switch.

Changes when alert delivery changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from constructs import Construct

from charts.config import AlertmanagerConfig, Severity
from charts.monitoring.common import COMPONENT, dump_yaml, identity_meta
from charts.monitoring.rules import WATCHDOG, RuleGroup
from charts.network import Peer, external, pods_in
from charts.workload import Container, Port, Probe, Probes, StatefulSet
from imports import k8s

if TYPE_CHECKING:
    from charts.stack import Stack

ALERTMANAGER_PORT = 9093
CONFIG_FILE = "alertmanager.yml"
CONFIG_DIR = "/etc/alertmanager"
SECRETS_DIR = "/etc/alertmanager-secrets"
# Receiver -> key of the env's Secret holding its URL or password.
SECRET_KEYS = {
    "webhook": "ALERTMANAGER_WEBHOOK_URL",
    "slack": "ALERTMANAGER_SLACK_API_URL",
    "email": "ALERTMANAGER_SMTP_PASSWORD",
    "heartbeat": "ALERTMANAGER_HEARTBEAT_URL",
}
SEVERITIES: tuple[Severity, ...] = ("critical", "warning")
HTTPS_PORT = 443


def alerting_config(alertmanager: AlertmanagerConfig | None, *, bundled_dns_name: str | None = None
                    ) -> dict[str, Any] | None:
    """The `alerting` block of prometheus.yml, or None when alerts go nowhere."""
    if alertmanager is None or alertmanager.mode == "off":
        return None
    if alertmanager.mode == "bundled":
        if not bundled_dns_name:
            raise ValueError("monitoring: a bundled Alertmanager needs its DNS name in the Prometheus config")
        name, port = bundled_dns_name, ALERTMANAGER_PORT
    else:
        name, port = alertmanager.dns_name, alertmanager.port
    return {"alertmanagers": [{"dns_sd_configs": [{"names": [name], "type": "A", "port": port}]}]}


def allow_alerts(stack: Stack, prometheus: Peer, alertmanager: AlertmanagerConfig) -> None:
    """Prometheus -> an existing Alertmanager (the bundled one declares its own)."""
    if alertmanager.mode == "existing":
        stack.network.allow(prometheus, pods_in(alertmanager.namespace, alertmanager.pod_labels, key="alertmanager"),
                            alertmanager.port, reason="Prometheus sends alerts")


def secret_file(key: str) -> str:
    return f"{SECRETS_DIR}/{key}"


def used_secret_keys(config: AlertmanagerConfig) -> list[str]:
    receivers = {name for severity in SEVERITIES for name in config.destinations(severity)}
    if config.email is not None and not config.email.auth_username:
        receivers.discard("email")  # a relay without authentication needs no password
    if config.heartbeat:
        receivers.add("heartbeat")
    return [SECRET_KEYS[name] for name in sorted(receivers)]


def _integrations(config: AlertmanagerConfig, severity: Severity) -> dict[str, Any]:
    receiver: dict[str, Any] = {"name": severity}
    for name in config.destinations(severity):
        if name == "webhook":
            receiver["webhook_configs"] = [{"url_file": secret_file(SECRET_KEYS["webhook"]), "send_resolved": True}]
        elif name == "slack":
            slack: dict[str, Any] = {"api_url_file": secret_file(SECRET_KEYS["slack"]), "send_resolved": True,
                                     "title": '[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }}',
                                     "text": "{{ range .Alerts }}{{ .Annotations.summary }}\n{{ end }}"}
            if config.slack.channel:
                slack["channel"] = config.slack.channel
            receiver["slack_configs"] = [slack]
        elif name == "email":
            email = config.email
            assert email is not None  # destinations() lists it only when set
            mail: dict[str, Any] = {"to": email.to, "from": email.sender, "smarthost": email.smarthost,
                                    "require_tls": email.require_tls, "send_resolved": True}
            if email.auth_username:
                mail["auth_username"] = email.auth_username
                mail["auth_password_file"] = secret_file(SECRET_KEYS["email"])
            receiver["email_configs"] = [mail]
    return receiver


def inhibit_rules(groups: Sequence[RuleGroup]) -> list[dict[str, Any]]:
    """A firing critical alert silences the warnings of its own rule group
    (e.g. CeleryWorkersDown silences CeleryQueueBacklog) in its namespace."""
    rules = []
    for group in groups:
        critical = sorted({a.name for a in group.alerts if a.severity == "critical"})
        warning = sorted({a.name for a in group.alerts if a.severity == "warning"})
        if critical and warning:
            rules.append({
                "source_matchers": ['severity="critical"', f'alertname=~"{"|".join(critical)}"'],
                "target_matchers": ['severity="warning"', f'alertname=~"{"|".join(warning)}"'],
                "equal": ["namespace"],
            })
    return rules


def alertmanager_config(config: AlertmanagerConfig, groups: Sequence[RuleGroup]) -> dict[str, Any]:
    routes: list[dict[str, Any]] = []
    receivers: list[dict[str, Any]] = [{"name": "null"}]
    if config.heartbeat:
        # Sent every heartbeat_interval while the whole chain works; the
        # external service pages when the pings stop.
        routes.append({"receiver": "heartbeat", "matchers": [f'alertname="{WATCHDOG}"'],
                       "group_by": ["alertname"], "group_wait": "0s", "group_interval": config.heartbeat_interval,
                       "repeat_interval": config.heartbeat_interval})
        receivers.append({"name": "heartbeat", "webhook_configs": [
            {"url_file": secret_file(SECRET_KEYS["heartbeat"]), "send_resolved": False}]})
    else:
        routes.append({"receiver": "null", "matchers": [f'alertname="{WATCHDOG}"']})
    repeat = {"critical": config.critical_repeat_interval, "warning": config.warning_repeat_interval}
    for severity in SEVERITIES:
        routes.append({"receiver": severity, "matchers": [f'severity="{severity}"'],
                       "repeat_interval": repeat[severity]})
        receivers.append(_integrations(config, severity))
    return {
        "route": {
            # Alerts without a known severity still reach someone.
            "receiver": "critical",
            "group_by": list(config.group_by),
            "group_wait": config.group_wait,
            "group_interval": config.group_interval,
            "repeat_interval": config.critical_repeat_interval,
            "routes": routes,
        },
        "inhibit_rules": inhibit_rules(groups),
        "receivers": receivers,
    }


class Alertmanager(Construct):
    """The bundled Alertmanager. Attributes: `workload`, `config_text`, `dns_name`."""

    def __init__(self, scope: Construct, id: str, *, stack: Stack, config: AlertmanagerConfig,
                 groups: Sequence[RuleGroup]) -> None:
        super().__init__(scope, id)
        self.config_text = dump_yaml(alertmanager_config(config, groups))
        version = config.image.tag
        k8s.KubeConfigMap(self, "config", metadata=identity_meta(stack, "alertmanager-config", version),
                          data={CONFIG_FILE: self.config_text})
        keys = [stack.secrets.key(key) for key in used_secret_keys(config)]
        server = Container(
            name="alertmanager",
            image=config.image.ref,
            args=[f"--config.file={CONFIG_DIR}/{CONFIG_FILE}", "--storage.path=/alertmanager",
                  f"--web.listen-address=:{ALERTMANAGER_PORT}",
                  # One replica: no gossip mesh (an empty address disables it).
                  "--cluster.listen-address="],
            ports=[Port(name="http", port=ALERTMANAGER_PORT)],
            probes=Probes(
                readiness=Probe(http_path="/-/ready", port=ALERTMANAGER_PORT, period_seconds=10),
                liveness=Probe(http_path="/-/healthy", port=ALERTMANAGER_PORT, period_seconds=20,
                               failure_threshold=5),
            ),
            resources=config.resources,
            mounts=[k8s.VolumeMount(name="config", mount_path=CONFIG_DIR, read_only=True),
                    k8s.VolumeMount(name="data", mount_path="/alertmanager"),
                    *([k8s.VolumeMount(name="receiver-secrets", mount_path=SECRETS_DIR, read_only=True)]
                      if keys else [])],
        )
        volumes = [k8s.Volume(name="config", config_map=k8s.ConfigMapVolumeSource(name="alertmanager-config"))]
        if keys:
            # Only the receivers' keys, each as a file, readable by the pod's group (fsGroup).
            volumes.append(k8s.Volume(name="receiver-secrets", secret=k8s.SecretVolumeSource(
                secret_name=stack.secrets.name, default_mode=0o440,
                items=[k8s.KeyToPath(key=key, path=key) for key in keys])))
        self.workload = StatefulSet(
            self, "alertmanager", stack=stack, name="alertmanager", component=COMPONENT, version=version,
            containers=[server], volumes=volumes, replicas=1, fs_group=10001, termination_grace_seconds=30,
            volume_claims=[("data", config.storage.size, config.storage.class_name)],
            pod_annotations={"checksum/config": stack.checksum(self.config_text)},
        )
        self.dns_name = f"{self.workload.service_name}.{stack.namespace}.svc"
        network = stack.network
        if config.webhook.enabled or config.slack.enabled or config.heartbeat:
            network.allow(self.workload.peer, external("0.0.0.0/0", key="alert-receivers"), HTTPS_PORT,
                          reason="Alertmanager delivers to webhook, Slack and heartbeat URLs")
        if config.email is not None:
            smtp_port = int(config.email.smarthost.rsplit(":", 1)[1])
            if smtp_port != HTTPS_PORT or not (config.webhook.enabled or config.slack.enabled or config.heartbeat):
                network.allow(self.workload.peer, external("0.0.0.0/0", key="alert-receivers"), smtp_port,
                              reason="Alertmanager sends alert mail")
