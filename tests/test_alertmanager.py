"""The bundled Alertmanager: its rendered configuration checked by amtool and
run by a real Alertmanager (Debian's prometheus-alertmanager), receivers
reading secrets from files, routes by severity, inhibition, the Watchdog.

Debian ships Alertmanager 0.25; the image is 0.34. 0.25 lacks one setting we
use, the webhook receiver's `url_file` (added in 0.26, present in 0.34:
notify/webhook/config.go `URLFile string yaml:"url_file"`). Only that line is
rewritten to `url:` for the 0.25 tools; `api_url_file` (Slack) and
`auth_password_file` (email) are checked as rendered.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from charts.config import ProfileError, load_profile
from tests.support.manifests import ENV_DIR, ENVS, of_kind, one
from tests.support.render import render_with
from tests.support.services import free_port, terminate, wait_for_port
from tests.test_config import edit

AMTOOL = shutil.which("amtool")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
needs_amtool = pytest.mark.skipif(AMTOOL is None, reason="amtool not installed (Debian prometheus-alertmanager)")
needs_alertmanager = pytest.mark.skipif(ALERTMANAGER is None, reason="Debian prometheus-alertmanager not installed")
# Receiver settings that read a secret from a file, in Alertmanager 0.34
# (config/notifiers.go, notify/webhook/config.go).
FILE_SETTINGS = {"webhook_configs": "url_file", "slack_configs": "api_url_file", "email_configs": "auth_password_file"}
WEBHOOK_URL_FILE = re.compile(r"^(\s*)(- )?url_file: (\S+)$", re.MULTILINE)
NAMESPACE = "vibearena-prod"

MAIL = {"to": "ops@example.com", "sender": "alertmanager@example.com", "smarthost": "smtp.example.net:587",
        "auth_username": "alertmanager"}
ALL_RECEIVERS = {"monitoring": {"alertmanager": {
    "mode": "bundled", "webhook": {"enabled": True}, "heartbeat": True,
    "slack": {"enabled": True, "severities": ["critical"], "channel": "#alerts"}, "email": MAIL}}}


def rendered_config(objects: list[dict[str, Any]]) -> str:
    return one(objects, "ConfigMap", "alertmanager-config")["data"]["alertmanager.yml"]


def for_debian_amtool(text: str, url: str = "http://receiver.invalid/") -> str:
    """The 0.25 form: webhook url_file -> url (the only difference allowed)."""
    rewritten = WEBHOOK_URL_FILE.sub(lambda m: f"{m.group(1)}{m.group(2) or ''}url: {url}", text)
    assert len(rewritten.splitlines()) == len(text.splitlines())
    return rewritten


def amtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert AMTOOL
    return subprocess.run([AMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def all_receivers() -> tuple[Any, list[dict[str, Any]]]:
    return render_with("prod", ALL_RECEIVERS)


# --- rendering ------------------------------------------------------------------

def test_committed_prod_delivers_alerts_and_dev_runs_no_alertmanager(manifests, stacks):
    prod = stacks["prod"].profile.monitoring.alertmanager
    assert prod.mode == "bundled" and prod.destinations("critical") and prod.heartbeat
    assert one(manifests["prod"], "StatefulSet", "alertmanager")["spec"]["template"]["spec"]["containers"][0][
        "image"] == ("quay.io/prometheus/alertmanager:v0.34.0@sha256:"
                     "690c7b525f4367aa91f73e2f91c632206d32e97c6384bdbf2fb7a861b420340d")
    prometheus_config = yaml.safe_load(one(manifests["prod"], "ConfigMap", "prometheus-config")["data"][
        "prometheus.yml"])
    (target,) = prometheus_config["alerting"]["alertmanagers"]
    assert target["dns_sd_configs"] == [{"names": [f"alertmanager.{NAMESPACE}.svc"], "type": "A", "port": 9093}]
    service = one(manifests["prod"], "Service", "alertmanager")
    assert service["spec"]["clusterIP"] == "None", "type A lookups need a headless Service (one address per pod)"
    for env in ENVS:
        if env != "prod":
            assert not [o for o in manifests[env] if o["metadata"]["name"].startswith("alertmanager")], env


def test_receivers_read_every_secret_from_a_mounted_key(all_receivers):
    stack, objects = all_receivers
    config = yaml.safe_load(rendered_config(objects))
    pod = one(objects, "StatefulSet", "alertmanager")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == stack.secrets.name
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    mounted = {f"{mount['mountPath']}/{item['path']}": item["key"] for item in volume["secret"]["items"]}
    used = set()
    for receiver in config["receivers"]:
        for kind, setting in FILE_SETTINGS.items():
            for integration in receiver.get(kind, []):
                secret_settings = {"url", "api_url", "auth_password"} & set(integration)
                assert not secret_settings, f"{receiver['name']}: {secret_settings} would put a secret in the config"
                if setting in integration:
                    assert integration[setting] in mounted, f"{receiver['name']}: {integration[setting]} not mounted"
                    used.add(mounted[integration[setting]])
    assert used == set(mounted.values()), "every mounted key is read by a receiver, nothing more"
    assert used == {"ALERTMANAGER_WEBHOOK_URL", "ALERTMANAGER_SLACK_API_URL", "ALERTMANAGER_SMTP_PASSWORD",
                    "ALERTMANAGER_HEARTBEAT_URL"}
    assert used <= set(stack.secrets.used_keys)
    external = one(objects, "ExternalSecret", stack.secrets.name)
    assert used <= {d["secretKey"] for d in external["spec"]["data"]}


def test_alertmanager_egress_only_to_its_receivers(all_receivers):
    stack, _objects = all_receivers
    out = {(c.target.key, c.port) for c in stack.network.connections if c.source.key == "alertmanager"}
    assert out == {("alert-receivers", 443), ("alert-receivers", 587)}
    (peer,) = {c.target for c in stack.network.connections if c.source.key == "alertmanager"}
    assert set(peer.cidr_except) == {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"}
    inbound = {(c.source.key, c.port) for c in stack.network.connections if c.target.key == "alertmanager"}
    assert inbound == {("prometheus", 9093)}


# --- amtool -------------------------------------------------------------------------

@needs_amtool
@pytest.mark.parametrize("variant", ["committed-prod", "all-receivers"])
def test_amtool_accepts_the_rendered_config(manifests, all_receivers, variant, tmp_path):
    objects = manifests["prod"] if variant == "committed-prod" else all_receivers[1]
    text = rendered_config(objects)
    (tmp_path / "alertmanager.yml").write_text(for_debian_amtool(text))
    result = amtool("check-config", "alertmanager.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_amtool
def test_amtool_rejects_a_broken_config(all_receivers, tmp_path):
    """Negative case: the check is real (a receiver name nobody defines)."""
    text = for_debian_amtool(rendered_config(all_receivers[1])).replace("receiver: warning", "receiver: nobody", 1)
    (tmp_path / "alertmanager.yml").write_text(text)
    assert amtool("check-config", "alertmanager.yml", cwd=tmp_path).returncode != 0


@needs_amtool
@pytest.mark.parametrize(("labels", "receiver"), [
    (["severity=critical", "alertname=ApiDown"], "critical"),
    (["severity=warning", "alertname=CeleryQueueBacklog"], "warning"),
    (["severity=none", "alertname=Watchdog"], "heartbeat"),
    (["alertname=SomethingUnlabelled"], "critical"),
])
def test_amtool_routes_each_severity(manifests, tmp_path, labels, receiver):
    (tmp_path / "alertmanager.yml").write_text(for_debian_amtool(rendered_config(manifests["prod"])))
    result = amtool("config", "routes", "test", "--config.file=alertmanager.yml", f"namespace={NAMESPACE}", *labels,
                    cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == receiver


@needs_amtool
def test_watchdog_goes_nowhere_without_a_heartbeat(tmp_path):
    _stack, objects = render_with("prod", {"monitoring": {"alertmanager": {"heartbeat": False}}})
    (tmp_path / "alertmanager.yml").write_text(for_debian_amtool(rendered_config(objects)))
    result = amtool("config", "routes", "test", "--config.file=alertmanager.yml", "alertname=Watchdog",
                    "severity=none", cwd=tmp_path)
    assert result.stdout.strip() == "null", "the always-firing Watchdog must not page people"


# --- a real Alertmanager --------------------------------------------------------------

class Sink:
    """A local HTTP receiver that records what Alertmanager posts, by path."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                sink.received.append((self.path, json.loads(body or b"{}")))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def texts(self, path: str) -> list[str]:
        return [json.dumps(body) for got, body in self.received if got == path]


@pytest.fixture
def running_alertmanager(tmp_path) -> Iterator[tuple[str, Sink]]:
    if ALERTMANAGER is None:
        pytest.skip("Debian prometheus-alertmanager not installed")
    sink = Sink()
    _stack, objects = render_with("prod", {"monitoring": {"alertmanager": {
        "mode": "bundled", "webhook": {"enabled": False}, "heartbeat": True, "group_wait": "1s",
        "group_interval": "1s", "heartbeat_interval": "1s",
        "slack": {"enabled": True, "severities": ["critical", "warning"]}}}})
    text = rendered_config(objects)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    # The Slack URL is read from its file, as in the pod (only the directory differs).
    (secrets / "ALERTMANAGER_SLACK_API_URL").write_text(f"{sink.url}/slack")
    text = for_debian_amtool(text, url=f"{sink.url}/heartbeat").replace("/etc/alertmanager-secrets", str(secrets))
    (tmp_path / "alertmanager.yml").write_text(text)
    port = free_port()
    process = subprocess.Popen(
        [ALERTMANAGER, f"--config.file={tmp_path / 'alertmanager.yml'}", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "log").open("wb"))
    try:
        wait_for_port(port, process=process)
        yield f"http://127.0.0.1:{port}", sink
    finally:
        terminate(process)
        sink.server.shutdown()


def post_alerts(base: str, alerts: list[dict[str, str]]) -> None:
    body = [{"labels": labels, "annotations": {"summary": labels["alertname"]}} for labels in alerts]
    response = requests.post(f"{base}/api/v2/alerts", json=body, timeout=10)
    assert response.status_code == 200, response.text


def wait_until(condition: Any, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.3)
    return False


@needs_alertmanager
def test_real_alertmanager_routes_inhibits_and_pings_the_heartbeat(running_alertmanager):
    base, sink = running_alertmanager
    post_alerts(base, [
        {"alertname": "Watchdog", "severity": "none", "namespace": NAMESPACE},
        {"alertname": "CeleryWorkersDown", "severity": "critical", "namespace": NAMESPACE},
        # Inhibited: same rule group and namespace as the critical one.
        {"alertname": "CeleryQueueBacklog", "severity": "warning", "namespace": NAMESPACE, "queue_name": "celery"},
        # Not inhibited: another namespace.
        {"alertname": "CeleryQueueBacklog", "severity": "warning", "namespace": "elsewhere", "queue_name": "celery"},
    ])
    assert wait_until(lambda: any("Watchdog" in t for t in sink.texts("/heartbeat"))), sink.received
    assert wait_until(lambda: any("CeleryWorkersDown" in t for t in sink.texts("/slack"))), sink.received
    assert wait_until(lambda: any("elsewhere" in t for t in sink.texts("/slack"))), sink.received
    state = {(a["labels"]["alertname"], a["labels"]["namespace"]): a["status"]
             for a in requests.get(f"{base}/api/v2/alerts", timeout=10).json()}
    inhibited = state[("CeleryQueueBacklog", NAMESPACE)]
    assert inhibited["state"] == "suppressed" and inhibited["inhibitedBy"], inhibited
    assert state[("CeleryQueueBacklog", "elsewhere")]["state"] == "active"
    slack = sink.texts("/slack")
    assert not any("Watchdog" in t for t in slack), "the Watchdog must not reach people"
    assert not [t for t in slack if "CeleryQueueBacklog" in t and NAMESPACE in t and "elsewhere" not in t]


# --- bad input --------------------------------------------------------------------------

BAD = [
    ("prod.yaml", "    mode: bundled", "    mode: 'off'", "monitoring.alertmanager.mode", "must be 'bundled' or"),
    ("prod.yaml", "    webhook: {enabled: true}", "    webhook: {enabled: false}", "monitoring.alertmanager",
     "must deliver critical alerts"),
    ("prod.yaml", "    webhook: {enabled: true}", "    webhook: {enabled: true, severities: [warning]}",
     "monitoring.alertmanager", "must deliver critical alerts"),
    ("prod.yaml", "    mode: bundled", "    mode: bundled\n    slack: {enabled: true, channel: 'bad channel!'}",
     "monitoring.alertmanager.slack.channel", "Slack channel"),
    ("prod.yaml", "    mode: bundled", "    mode: bundled\n    email: {to: ops, sender: a@example.com, "
     "smarthost: 'smtp:25'}", "monitoring.alertmanager.email.to", "e-mail address"),
    ("prod.yaml", "    mode: bundled", "    mode: bundled\n    email: {to: o@example.com, sender: a@example.com, "
     "smarthost: smtp.example.com}", "monitoring.alertmanager.email.smarthost", "host:port"),
    ("prod.yaml", "    mode: bundled", "    mode: bundled\n    group_wait: soon", "monitoring.alertmanager.group_wait",
     "duration"),
    ("prod.yaml", "    mode: bundled", "    mode: bundled\n    group_by: ['bad-label']",
     "monitoring.alertmanager.group_by[0]", "label name"),
    ("prod.yaml", "    webhook: {enabled: true}", "    webhook: {enabled: true, severities: [info]}",
     "monitoring.alertmanager.webhook.severities[0]", "must be one of"),
    ("prod.yaml", "monitoring:\n", "monitoring:\n  mode: operator\n", "monitoring.alertmanager.mode",
     "needs mode 'bundled'"),
    ("prod.yaml", "monitoring:\n", "monitoring:\n  kube_state_metrics_service: 'Kube State'\n",
     "monitoring.kube_state_metrics_service", "DNS name"),
]


@pytest.mark.parametrize(("file", "old", "new", "key", "words"), BAD, ids=[f"{b[3]}-{b[4][:16]}" for b in BAD])
def test_bad_alerting_input_names_the_key(tmp_path, file, old, new, key, words):
    env_dir = tmp_path / "env"
    shutil.copytree(ENV_DIR, env_dir)
    path = env_dir / file
    text = path.read_text()
    assert old in text, f"{file} does not contain {old!r}"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ProfileError) as caught:
        load_profile(env_dir, file.removesuffix(".yaml"))
    message = str(caught.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert words in message, message


def test_monitoring_off_needs_no_alert_destination(tmp_path):
    env_dir = tmp_path / "env"
    shutil.copytree(ENV_DIR, env_dir)
    edit(env_dir / "prod.yaml", "\n  alertmanager:\n    mode: bundled",
         "\n  mode: 'off'\n  alertmanager:\n    mode: 'off'")
    assert load_profile(env_dir, "prod").monitoring.mode == "off"


def test_keda_and_alertmanager_stay_off_in_dev(manifests):
    assert not of_kind(manifests["dev"], "ScaledObject")
    assert not [o for o in manifests["dev"] if o["metadata"]["name"] == "alertmanager-config"]


# --- promtool rule tests for the new alerts -------------------------------------------

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package `prometheus`)")
RULE_TESTS = Path(__file__).resolve().parent / "monitoring" / "scaling" / "alerts.test.yaml"


def scaling_rules(max_replicas: int = 3) -> str:
    from charts import monitoring as m

    namespace = "vibearena-dev"
    jobs = {"celery": [("celery-exporter", namespace)], "alertmanager": [("alertmanager", namespace)],
            "kube-state-metrics": [("kube-state-metrics", "kube-system")], m.SELF_METRICS: [("prometheus", namespace)]}
    settings = m.AlertSettings(namespace=namespace, watchdog=True, restarts_in_30m=3, autoscaled_workers=(
        m.ScaledWorkers(group="default", queues=("celery",), max_replicas=max_replicas),))
    return m.dump_yaml(m.rules_document(m.alert_groups(jobs, settings), namespace))


def promtool_test(rules: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL
    (tmp_path / "alerts.yaml").write_text(rules)
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    return subprocess.run([PROMTOOL, "test", "rules", RULE_TESTS.name], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, check=False)


@needs_promtool
def test_new_alerts_fire_and_stay_silent(tmp_path):
    result = promtool_test(scaling_rules(), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_new_alert_tests_catch_a_wrong_maximum(tmp_path):
    """Negative case: with room for a fourth worker the at-maximum case must fail."""
    result = promtool_test(scaling_rules(max_replicas=4), tmp_path)
    assert result.returncode != 0 and "CeleryWorkersAtMaxReplicas" in result.stdout + result.stderr


@needs_promtool
def test_rendered_prod_rules_include_the_new_alerts(manifests, tmp_path):
    rules = yaml.safe_load(one(manifests["prod"], "ConfigMap", "prometheus-rules")["data"]["alerts.yaml"])
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {"Watchdog", "CeleryWorkersAtMaxReplicas", "AlertmanagerDown", "AlertmanagerNotificationsFailing"} <= names
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(rules))
    assert PROMTOOL
    result = subprocess.run([PROMTOOL, "check", "rules", "alerts.yaml"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mail_without_authentication_mounts_no_password():
    mail = {key: value for key, value in MAIL.items() if key != "auth_username"}
    stack, objects = render_with("prod", {"monitoring": {"alertmanager": {"email": mail}}})
    pod = one(objects, "StatefulSet", "alertmanager")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert {i["key"] for i in volume["secret"]["items"]} == {"ALERTMANAGER_WEBHOOK_URL", "ALERTMANAGER_HEARTBEAT_URL"}
    config = yaml.safe_load(rendered_config(objects))
    (critical,) = [r for r in config["receivers"] if r["name"] == "critical"]
    (email,) = critical["email_configs"]
    assert "auth_password_file" not in email and email["to"] == MAIL["to"]
    assert "ALERTMANAGER_SMTP_PASSWORD" not in stack.secrets.used_keys
