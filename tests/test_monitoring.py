"""Monitoring: promtool on the rendered Prometheus config and rules, alert unit
tests, dashboards against the committed metric lists, and the three modes.

Tests over the rendered envs need Monitoring wired into charts/stack.py
(`StackChart.monitoring`); the others exercise the charts/monitoring package directly.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import cdk8s
import pytest
import yaml

from charts import monitoring as m
from charts.config import resources
from charts.schema import ConfigError
from charts.stack import Stack
from charts.workload import Container, Deployment, Port, Probe, Probes
from tests.support.manifests import ENVS, ROOT, name_of, of_kind, one, pod_templates
from tests.support.render import profile_with, render_with
from tests.support.roots import require_roots, root_runtime
from tests.support.schemas import NEWEST, OLDEST, is_custom, validate_builtin, validate_custom
from tests.support.services import HOST, Runtime

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package `prometheus`; `make test` installs it)")
# The image runs Prometheus 3 (quay.io/prometheus/prometheus:v3.x); this machine's promtool is 2.x.
# Each promtool test also runs with promtool 3 from the forky root of scripts/runtime-roots.sh.
PROMTOOL_RUNTIMES = ["host", pytest.param("forky", marks=pytest.mark.runtime)]
UNIT_TESTS = sorted((ROOT / "tests" / "monitoring").glob("*.test.yaml"))
NAMESPACE = "vibearena-dev"
# The jobs of the standard wiring (charts/stack.py), as the unit tests expect them.
STANDARD_JOBS = {"django": "api", "celery": "celery-exporter", "postgres": "postgres", "redis": "redis",
                 "seaweedfs": "object-store", "backup": "backup", m.SELF_METRICS: "prometheus"}
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LOKI_ON = {"monitoring": {"loki": {"enabled": True, "api_server_cidr": "172.18.0.2/32", "api_server_port": 6443}}}


def standard_groups(**settings: Any) -> list[m.RuleGroup]:
    jobs = {metrics: [(job, NAMESPACE)] for metrics, job in STANDARD_JOBS.items()}
    return m.alert_groups(jobs, m.AlertSettings(namespace=NAMESPACE, **settings))


# The optional targets, scraped when the profile names them; the promtool cases cover their alerts too.
OPTIONAL_JOBS = {"ingress-controller": "ingress-controller", "cert-manager": "cert-manager"}


def unit_test_groups(**settings: Any) -> list[m.RuleGroup]:
    jobs = {metrics: [(job, NAMESPACE)] for metrics, job in {**STANDARD_JOBS, **OPTIONAL_JOBS}.items()}
    return m.alert_groups(jobs, m.AlertSettings(namespace=NAMESPACE, **settings))


@pytest.fixture(params=PROMTOOL_RUNTIMES)
def promtool_in(request) -> Runtime:
    if request.param == "host":
        return HOST
    require_roots()
    return root_runtime(request.param)


def promtool(*args: str, cwd: Path, runtime: Runtime = HOST) -> subprocess.CompletedProcess[str]:
    binary = PROMTOOL if runtime is HOST else runtime.which("promtool")
    assert binary, f"promtool missing in {runtime.name}"
    return subprocess.run(runtime.command([binary, *args]), cwd=cwd, capture_output=True, text=True, timeout=300,
                          check=False)


def test_the_forky_promtool_is_the_images_major(manifests):
    """The Prometheus 3 checks only mean something if that promtool is 3.x, like the rendered image."""
    require_roots()
    image = one(manifests["prod"], "StatefulSet", "prometheus")["spec"]["template"]["spec"]["containers"][0]["image"]
    result = promtool("--version", cwd=ROOT, runtime=root_runtime("forky"))
    version = re.search(r"version (\d+)\.", result.stdout + result.stderr)
    assert version and image.split(":v", 1)[1].split(".")[0] == version.group(1), (image, result.stdout)


def config_map(objects: list[dict[str, Any]], name: str) -> dict[str, str]:
    return one(objects, "ConfigMap", name)["data"]


def monitoring_objects(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "monitoring"]


def container_env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {var["name"]: var for var in container.get("env", [])}


def dashboard_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(datasource uid, query) of every panel target and templating query."""
    found = []
    for panel in board.get("panels", []):
        for target in panel.get("targets", []):
            uid = (target.get("datasource") or panel.get("datasource") or {}).get("uid", "")
            found.append((uid, target.get("expr", "")))
    for variable in board.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query" and isinstance(query, dict) and "query" in query:
            found.append((variable["datasource"]["uid"], query["query"]))
    return found


def query_metrics(query: str) -> set[str]:
    # label_values(metric, label) is Grafana's, not PromQL.
    label_values = re.fullmatch(r"\s*label_values\(\s*([A-Za-z_:][\w:]*)\s*,\s*\w+\s*\)\s*", query)
    return {label_values.group(1)} if label_values else m.metric_names(query)


def datasource_refs(node: Any) -> list[str]:
    """Every datasource uid a dashboard refers to, wherever it appears."""
    refs = []
    if isinstance(node, dict):
        source = node.get("datasource")
        if isinstance(source, dict) and "uid" in source:
            refs.append(source["uid"])
        for value in node.values():
            refs += datasource_refs(value)
    elif isinstance(node, list):
        for item in node:
            refs += datasource_refs(item)
    return refs


def check_dashboards(dashboards: dict[str, str], metric_lists: set[str], jobs: set[str], uids: set[str]) -> None:
    exposed = set().union(*(m.metric_list(name) for name in metric_lists)) | m.BUILTIN_METRICS
    for file, text in dashboards.items():
        board = json.loads(text)
        refs = set(datasource_refs(board))
        assert refs <= uids, f"{file}: datasource uids {sorted(refs - uids)} are not provisioned ({sorted(uids)})"
        for uid, query in dashboard_queries(board):
            if uid != "prometheus":
                continue
            unknown = query_metrics(query) - exposed
            assert not unknown, f"{file}: {sorted(unknown)} in {query!r} is exposed by no scrape target"
            named = set(re.findall(r'\bjob="([^"]+)"', query))
            assert named <= jobs, f"{file}: job {sorted(named - jobs)} in {query!r} is not scraped"


@pytest.fixture(scope="module")
def wired(built) -> None:
    assert all(hasattr(chart, "monitoring") for chart, _docs in built.values()), \
        "Monitoring is not wired into charts/stack.py (StackChart.monitoring)"


# --- metric lists and the PromQL lexer ----------------------------------------

@pytest.mark.parametrize("name", m.known_metric_lists())
def test_metric_lists_are_well_formed(name):
    path = m.METRICS_DIR / f"{name}.txt"
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    assert lines and lines[0].startswith("#"), f"{path.name}: start with a comment naming the exporter and version"
    names = [line for line in lines if not line.startswith("#")]
    assert len(names) == len(set(names)), f"{path.name}: duplicate names"
    for metric in names:
        assert METRIC_NAME.fullmatch(metric), f"{path.name}: {metric!r} is not a metric name"
        if metric.endswith("_bucket"):
            base = metric.removesuffix("_bucket")
            assert {f"{base}_sum", f"{base}_count"} <= set(names), f"{path.name}: histogram {base} not expanded"
    assert not set(names) & m.BUILTIN_METRICS, f"{path.name}: lists a series Prometheus itself adds"


def test_metric_name_lexer():
    expr = ('sum by (le, route) (rate(a_bucket{job="api",status=~"5.."}[$__rate_interval])) / on (instance) '
            'group_left(x) b:recorded offset 5m > 0.5 and absent(c == 1) unless time() - d{x="sum(e)"} > 1e3')
    assert m.metric_names(expr) == {"a_bucket", "b:recorded", "c", "d"}
    assert m.metric_names('histogram_quantile(0.95, sum by (le) (rate(x_bucket[5m])))') == {"x_bucket"}
    assert query_metrics("label_values(up, namespace)") == {"up"}


# --- alert rules ------------------------------------------------------------

def test_every_alert_has_for_severity_and_summary():
    groups = standard_groups(database_volume_size="10Gi")
    alerts = [a for g in groups for a in g.alerts]
    assert {g.name for g in groups} >= {"api", "celery", "postgres", "redis", "backups"}
    for alert in alerts:
        assert re.fullmatch(r"[0-9]+[smh]", alert.for_), f"{alert.name}: for {alert.for_!r}"
        assert alert.severity in ("critical", "warning"), f"{alert.name}: severity"
        assert alert.summary and alert.description, f"{alert.name}: summary and description"
    names = [a.name for a in alerts]
    assert len(names) == len(set(names)), "alert names must be unique"
    required = {"ApiDown", "ApiHighErrorRatio", "ApiHighLatencyP95", "CeleryWorkersDown", "CeleryBeatHeartbeatMissing",
                "CeleryQueueBacklog", "CeleryTaskFailureRatio", "PostgresDown", "PostgresConnectionsNearMax",
                "PostgresDatabaseSizeNearVolume", "RedisMemoryNearMax", "BackupStale"}
    assert required <= set(names), f"missing alerts: {sorted(required - set(names))}"


def test_rule_groups_follow_the_targets_present():
    groups = m.alert_groups({"django": [("web", NAMESPACE)]}, m.AlertSettings(namespace=NAMESPACE))
    assert [g.name for g in groups] == ["api"]
    assert all('job="web"' in a.expr for a in groups[0].alerts), "rules select the job the target was given"


def test_thresholds_come_from_the_settings():
    rules = {a.name: a.expr for g in standard_groups(backup_stale_after_hours=48, queue_backlog=7) for a in g.alerts}
    assert rules["BackupStale"].endswith(f"> {48 * 3600}")
    assert rules["CeleryQueueBacklog"].endswith("> 7")
    assert "PostgresDatabaseSizeNearVolume" not in rules, "no volume size given, no size alert"


def test_a_rule_naming_an_unlisted_metric_is_rejected(monkeypatch):
    def bad(selector: str, settings: m.AlertSettings) -> list[m.Alert]:
        return [m.Alert(name="Typo", expr=f"redis_memroy_used_bytes{{{selector}}} > 0", for_="5m",
                        severity="warning", summary="s", description="d")]
    monkeypatch.setitem(m.GENERATORS, "redis", ("redis", bad))
    with pytest.raises(ValueError, match="redis_memroy_used_bytes"):
        m.alert_groups({"redis": [("redis", NAMESPACE)]}, m.AlertSettings(namespace=NAMESPACE))


@needs_promtool
def test_promtool_rule_unit_tests(tmp_path, promtool_in):
    """The alerts fire on synthetic series and stay silent on healthy ones."""
    assert UNIT_TESTS, "no tests/monitoring/*.test.yaml"
    rules = m.rules_document(unit_test_groups(database_volume_size="10Gi"), NAMESPACE)
    (tmp_path / m.RULES_FILE).write_text(m.dump_yaml(rules))
    for test in UNIT_TESTS:
        shutil.copy(test, tmp_path / test.name)
    result = promtool("test", "rules", *(t.name for t in UNIT_TESTS), cwd=tmp_path, runtime=promtool_in)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_unit_tests_catch_a_broken_rule(tmp_path, promtool_in):
    """Negative case: with the backlog threshold raised, the backlog test must fail."""
    rules = m.rules_document(unit_test_groups(database_volume_size="10Gi", queue_backlog=1000), NAMESPACE)
    (tmp_path / m.RULES_FILE).write_text(m.dump_yaml(rules))
    for test in UNIT_TESTS:
        shutil.copy(test, tmp_path / test.name)
    result = promtool("test", "rules", *(t.name for t in UNIT_TESTS), cwd=tmp_path, runtime=promtool_in)
    assert result.returncode != 0 and "CeleryQueueBacklog" in result.stdout + result.stderr


# --- dashboards and datasources ---------------------------------------------

def test_dashboards_parse_and_name_only_listed_metrics():
    files = {p.name: p.read_text() for p in sorted((m.GRAFANA_DIR / "dashboards").glob("*.json"))}
    assert files, "no dashboards"
    uids = []
    for file, text in files.items():
        board = json.loads(text)
        uids.append(board["uid"])
        stem = Path(file).stem
        assert stem == "logs" or stem in m.known_metric_lists(), f"{file}: named after no metric list"
        assert board.get("panels"), f"{file}: no panels"
        lists = {stem} if stem != "logs" else set()
        jobs = {job for metrics, job in STANDARD_JOBS.items() if metrics in lists}
        uid_set = {"loki"} if stem == "logs" else {"prometheus"}
        check_dashboards({file: text}, lists, jobs, uid_set)
    assert len(uids) == len(set(uids)), "dashboard uids must be unique"


def test_datasources_provisioned_with_stable_uids():
    files = m.datasource_files(loki=True)
    assert m.datasource_uids(files) == {"prometheus", "loki"}
    prometheus = yaml.safe_load(files["prometheus.yaml"])["datasources"][0]
    assert prometheus["url"] == f"http://prometheus:{m.PROMETHEUS_PORT}" and prometheus["isDefault"] is True
    assert yaml.safe_load(files["loki.yaml"])["datasources"][0]["url"] == f"http://loki:{m.LOKI_PORT}"


# --- ScrapeTarget -----------------------------------------------------------

@pytest.fixture(scope="module")
def workload():
    chart = cdk8s.Chart(cdk8s.App(), "scratch")
    stack = Stack(profile_with("dev", {}))
    container = Container(name="app", image="example/app:1", resources=resources("10m", "16Mi", "10m", "16Mi"),
                          ports=[Port(name="metrics", port=9100, in_service=False)],
                          probes=Probes(readiness=Probe(tcp=True, port=9100), liveness=Probe(tcp=True, port=9100)))
    return Deployment(chart, "app", stack=stack, name="app", component="web", version="1", containers=[container],
                      replicas=1)


def test_scrape_target_checks_its_fields(workload):
    target = m.ScrapeTarget(job="app", workload=workload, port=9100, metrics="django")
    assert target.service_name == "app-metrics"
    bad = [
        (dict(job="app", workload=workload, port=9999, metrics="django"), "no container port 9999"),
        (dict(job="app", workload=workload, port=9100, metrics="nope"), "no metric list"),
        (dict(job="app", port=9100, metrics="django"), "exactly one of workload, peer"),
        (dict(job="app", workload=workload, port=9100, metrics="django", path="metrics"), "must start with /"),
        (dict(job="Bad_Job", workload=workload, port=9100, metrics="django"), "DNS label"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ValueError, match=message):
            m.ScrapeTarget(**kwargs)


# --- the rendered envs (bundled mode) ---------------------------------------

@needs_promtool
@pytest.mark.parametrize("env", ENVS)
def test_promtool_checks_the_rendered_config_and_rules(manifests, wired, env, tmp_path, promtool_in):
    config = config_map(manifests[env], "prometheus-config")[m.CONFIG_FILE]
    rules = config_map(manifests[env], "prometheus-rules")[m.RULES_FILE]
    # The two ConfigMaps share one directory in the pod (a projected volume).
    (tmp_path / m.CONFIG_FILE).write_text(config)
    (tmp_path / m.RULES_FILE).write_text(rules)
    assert yaml.safe_load(config)["rule_files"] == [m.RULES_FILE]
    result = promtool("check", "config", m.CONFIG_FILE, cwd=tmp_path, runtime=promtool_in)
    assert result.returncode == 0, f"{env}: {result.stdout}{result.stderr}"
    result = promtool("check", "rules", m.RULES_FILE, cwd=tmp_path, runtime=promtool_in)
    assert result.returncode == 0, f"{env}: {result.stdout}{result.stderr}"


@pytest.mark.parametrize("env", ENVS)
def test_each_target_is_a_headless_service_prometheus_may_reach(manifests, stacks, wired, env):
    objects, stack = manifests[env], stacks[env]
    config = yaml.safe_load(config_map(objects, "prometheus-config")[m.CONFIG_FILE])
    services = {s["metadata"]["name"]: s for s in of_kind(objects, "Service")}
    connections = {(c.source.key, c.target.key, c.port) for c in stack.network.connections}
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"prometheus", "api", "celery-exporter"} <= set(jobs), f"{env}: scraped jobs {sorted(jobs)}"
    for job in jobs.values():
        for sd in job.get("dns_sd_configs", []):
            assert sd["type"] == "A", f"{env} {job['job_name']}: one address per pod needs type A"
            (name,) = sd["names"]
            service_name, namespace = name.split(".")[:2]
            if namespace != stack.namespace:
                continue
            service = services[service_name]
            assert service["spec"]["clusterIP"] == "None", f"{env}: {service_name} must be headless"
            assert service["spec"].get("publishNotReadyAddresses") is True, f"{env}: {service_name}"
            assert [p["port"] for p in service["spec"]["ports"]] == [sd["port"]], f"{env}: {service_name} port"
            selector = service["spec"]["selector"]
            if "cnpg.io/cluster" in selector:  # CloudNativePG's instances, created by its operator
                assert one(objects, "Cluster", selector["cnpg.io/cluster"])
                continue
            pods = [p for p in pod_templates(objects) if selector.items() <= p.labels.items()]
            assert pods, f"{env}: {service_name} selects no pod"
            target = pods[0].labels["app.kubernetes.io/name"]
            assert ("prometheus", target, sd["port"]) in connections, \
                f"{env}: prometheus -> {target}:{sd['port']} is not declared"


@pytest.mark.parametrize("env", ENVS)
def test_prometheus_statefulset(manifests, stacks, wired, env):
    config = stacks[env].profile.monitoring
    statefulset = one(manifests[env], "StatefulSet", "prometheus")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert container["image"] == config.prometheus_image.ref
    assert f"--storage.tsdb.retention.time={config.retention}" in container["args"]
    assert any(a.startswith("--storage.tsdb.retention.size=") for a in container["args"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == config.storage.size
    mounts = {v["mountPath"]: v["name"] for v in container["volumeMounts"]}
    assert mounts["/prometheus"] == claim["metadata"]["name"] and "/tmp" in mounts, f"{env}: writable paths"
    assert "checksum/config" in statefulset["spec"]["template"]["metadata"]["annotations"]


@pytest.mark.parametrize("env", ENVS)
def test_grafana_is_locked_down(manifests, stacks, wired, env):
    stack = stacks[env]
    deployment = one(manifests[env], "Deployment", "grafana")
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["image"] == stack.profile.monitoring.grafana_image.ref
    variables = container_env(container)
    password = variables["GF_SECURITY_ADMIN_PASSWORD"]
    assert "value" not in password, f"{env}: the Grafana password must come from the Secret"
    assert password["valueFrom"]["secretKeyRef"] == {"name": stack.secrets.name, "key": "GRAFANA_ADMIN_PASS"}
    assert variables["GF_SECURITY_ADMIN_USER"]["value"] == "admin"
    assert variables["GF_AUTH_ANONYMOUS_ENABLED"]["value"] == "false"
    assert variables["GF_USERS_ALLOW_SIGN_UP"]["value"] == "false"
    data_path = variables["GF_PATHS_DATA"]["value"]
    mount = next(v for v in container["volumeMounts"] if v["mountPath"] == data_path)
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert "emptyDir" in volume or "persistentVolumeClaim" in volume, f"{env}: Grafana data must be writable"
    service = one(manifests[env], "Service", "grafana")
    assert service["spec"]["type"] == "ClusterIP", f"{env}: Grafana is reached by port-forward only"
    assert not of_kind(manifests[env], "Ingress") or all(
        p["backend"]["service"]["name"] != "grafana"
        for i in of_kind(manifests[env], "Ingress") for r in i["spec"]["rules"] for p in r["http"]["paths"])
    connections = {(c.source.key, c.target.key, c.port) for c in stack.network.connections}
    assert ("grafana", "prometheus", m.PROMETHEUS_PORT) in connections


@pytest.mark.parametrize("env", ENVS)
def test_provisioned_dashboards_use_scraped_metrics_and_datasources(manifests, wired, env):
    objects = manifests[env]
    config = yaml.safe_load(config_map(objects, "prometheus-config")[m.CONFIG_FILE])
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    dashboards = config_map(objects, "grafana-dashboards")
    datasources = config_map(objects, "grafana-datasources")
    lists = {metrics for metrics, job in STANDARD_JOBS.items() if job in jobs}
    assert {"django.json", "celery.json", "prometheus.json"} <= set(dashboards), f"{env}: {sorted(dashboards)}"
    check_dashboards(dashboards, lists, jobs, m.datasource_uids(datasources))


@pytest.mark.parametrize("env", ENVS)
def test_celery_exporter_gets_the_broker_url_without_a_literal_password(manifests, stacks, wired, env):
    deployment = one(manifests[env], "Deployment", "celery-exporter")
    assert deployment["spec"]["replicas"] == 1
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == stacks[env].profile.monitoring.celery_exporter_image.ref
    variables = container_env(container)
    assert "secretKeyRef" in variables["REDIS_PASSWORD"]["valueFrom"]
    # No URL with the password is rendered; the start command builds it
    # (tests/test_passwords.py runs that command against a real Redis).
    assert "CE_BROKER_URL" not in variables and "REDIS_URL" not in variables
    assert container["command"][:2] == ["python", "-c"] and "CE_BROKER_URL" in container["command"][2]
    assert {"REDIS_HOST", "REDIS_PORT", "REDIS_DB", "REDIS_TLS"} <= set(variables)
    assert [p["containerPort"] for p in container["ports"]] == [m.CELERY_EXPORTER_PORT]
    connections = {(c.source.key, c.target.key, c.port) for c in stacks[env].network.connections}
    assert ("celery-exporter", "redis", 6379) in connections


# --- operator, off, loki ----------------------------------------------------

@pytest.fixture(scope="module")
def operator_render(wired):
    return render_with("stage", {"monitoring": {"mode": "operator"}})


def test_operator_mode_renders_valid_monitors_and_the_same_rules(operator_render, manifests):
    stack, objects = operator_render
    monitors, rules = of_kind(objects, "PodMonitor"), of_kind(objects, "PrometheusRule")
    assert monitors and len(rules) == 1
    for obj in (*monitors, *rules):
        errors = validate_custom(obj)
        assert not errors, f"{name_of(obj)}: {errors}"
        for key, value in stack.profile.monitoring.operator_labels.items():
            assert obj["metadata"]["labels"].get(key) == value, f"{name_of(obj)}: operator label {key}"
    kinds = {name_of(o) for o in objects}
    for absent in ("StatefulSet/prometheus", "Deployment/grafana", "ConfigMap/prometheus-config"):
        assert absent not in kinds, f"operator mode renders {absent}"

    bundled = yaml.safe_load(config_map(manifests["stage"], "prometheus-rules")[m.RULES_FILE])["groups"]
    expected = [g for g in bundled if g["name"] != "prometheus"]  # the bundled server's own alerts
    assert rules[0]["spec"]["groups"] == expected, "operator rules differ from the bundled rules"

    jobs = {}
    for monitor in monitors:
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        (relabel,) = endpoint["relabelings"]
        assert relabel["targetLabel"] == "job"
        jobs[relabel["replacement"]] = endpoint["portNumber"]
    bundled_config = yaml.safe_load(config_map(manifests["stage"], "prometheus-config")[m.CONFIG_FILE])
    bundled_jobs = {j["job_name"]: j["dns_sd_configs"][0]["port"] for j in bundled_config["scrape_configs"]
                    if "dns_sd_configs" in j}
    assert jobs == bundled_jobs, "operator mode scrapes other targets than bundled mode"

    config = stack.profile.monitoring
    connections = {(c.source.key, c.target.key, c.port) for c in stack.network.connections}
    operator = [c for c in stack.network.connections if c.source.key == "operator-prometheus"]
    assert {c.port for c in operator} == set(jobs.values())
    assert all(c.source.namespace == config.operator_prometheus_namespace for c in operator)
    assert ("celery-exporter", "redis", 6379) in connections

    dashboards = one(objects, "ConfigMap", "grafana-dashboards")
    assert dashboards["metadata"]["labels"].items() >= dict(config.operator_dashboard_labels).items()
    assert "prometheus.json" not in dashboards["data"]
    check_dashboards(dashboards["data"], {k for k, v in STANDARD_JOBS.items() if v in jobs}, set(jobs),
                     {"prometheus"})


def test_mode_off_renders_nothing(wired):
    stack, objects = render_with("dev", {"monitoring": {"mode": "off"}})
    assert not monitoring_objects(objects), \
        f"mode off renders {[name_of(o) for o in monitoring_objects(objects)]}"
    assert not [o for o in objects if o["metadata"]["name"].endswith("-metrics")]
    keys = {key for c in stack.network.connections for key in (c.source.key, c.target.key)}
    assert not keys & {"prometheus", "grafana", "celery-exporter", "operator-prometheus"}
    assert "GRAFANA_ADMIN_PASS" not in stack.secrets.used_keys


@pytest.fixture(scope="module")
def loki_render(wired):
    return render_with("dev", LOKI_ON)


def test_loki_and_alloy(loki_render):
    stack, objects = loki_render
    loki = one(objects, "StatefulSet", "loki")
    assert loki["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == \
        stack.profile.monitoring.loki.storage.size
    loki_config = yaml.safe_load(config_map(objects, "loki-config")["loki.yaml"])
    assert loki_config["limits_config"]["retention_period"] == stack.profile.monitoring.loki.retention
    assert loki_config["compactor"]["retention_enabled"] is True
    assert loki_config["common"]["storage"]["filesystem"]

    alloy = one(objects, "Deployment", "alloy")
    spec = alloy["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False, "the token is mounted explicitly, not automatically"
    assert not any("hostPath" in v for v in spec["volumes"])
    assert "loki.source.kubernetes" in config_map(objects, "alloy-config")["config.alloy"]
    role = one(objects, "Role", "alloy")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    ]
    binding = one(objects, "RoleBinding", "alloy")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "alloy", "namespace": stack.namespace}]
    assert not of_kind(objects, "ClusterRole") and not of_kind(objects, "ClusterRoleBinding")
    tokens = [p.where for p in pod_templates(objects)
              for v in p.spec.get("volumes", []) for s in v.get("projected", {}).get("sources", [])
              if "serviceAccountToken" in s]
    assert tokens == ["Deployment/alloy"], f"API tokens mounted in {tokens}"

    connections = {(c.source.key, c.target.key, c.port) for c in stack.network.connections}
    assert {("alloy", "loki", m.LOKI_PORT), ("grafana", "loki", m.LOKI_PORT),
            ("alloy", "kube-apiserver", 6443)} <= connections
    assert m.datasource_uids(config_map(objects, "grafana-datasources")) == {"prometheus", "loki"}
    assert "logs.json" in config_map(objects, "grafana-dashboards")


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
def test_non_default_modes_validate_strictly(operator_render, loki_render, version):
    """The default envs do not render these objects, so test_schema does not see them."""
    for _stack, objects in (operator_render, loki_render):
        for obj in objects:
            errors = validate_custom(obj) if is_custom(obj) else validate_builtin(obj, version)
            assert not errors, f"{name_of(obj)} against {version}: {errors}"


def test_loki_needs_bundled_mode_and_an_api_server_address():
    with pytest.raises(ConfigError, match="bundled"):
        profile_with("dev", {"monitoring": {"mode": "operator", **LOKI_ON["monitoring"]}})
    with pytest.raises(ConfigError, match="api_server_cidr"):
        profile_with("dev", {"monitoring": {"loki": {"enabled": True}}})


def test_non_default_modes_allow_exactly_the_declared_connections(operator_render, loki_render):
    """test_network's check, for the modes the default envs do not render."""
    from tests.test_network import Endpoint, allowed, declared, universe

    for stack, objects in (operator_render, loki_render):
        config = stack.profile.monitoring
        endpoints = universe(objects, stack.profile)
        if config.mode == "operator":
            endpoints.append(Endpoint("operator-prometheus", config.operator_prometheus_namespace,
                                      tuple(sorted(config.operator_prometheus_pod_labels.items()))))
        computed = allowed(objects, endpoints, stack.namespace)
        # universe() names ipBlock destinations by their CIDR, declared() by the peer key.
        by_cidr = {c.target.key: f"cidr:{c.target.cidr}" for c in stack.network.connections if c.target.cidr}
        expected = {(s, by_cidr.get(t, t), port, proto) for s, t, port, proto in declared(stack, endpoints)}
        assert computed == expected, f"{config.mode}: missing {sorted(expected - computed)}; " \
                                     f"extra {sorted(computed - expected)}"


@pytest.mark.parametrize("env", ENVS)
def test_dashboards_open_on_the_env_namespace(manifests, stacks, env):
    """Otherwise Grafana picks the first namespace Prometheus knows (e.g. the
    ingress controller's) and every panel is empty."""
    (config_map,) = [o for o in manifests[env] if o["kind"] == "ConfigMap"
                     and o["metadata"]["name"] == "grafana-dashboards"]
    for file, text in config_map["data"].items():
        variables = [v for v in json.loads(text)["templating"]["list"] if v["name"] == "namespace"]
        for variable in variables:
            assert variable["current"]["value"] == stacks[env].namespace, f"{env}: {file}"


@needs_promtool
def test_alerts_go_to_an_alertmanager_when_configured(tmp_path, promtool_in):
    off = render_with("stage", {})[1]
    assert "alerting" not in yaml.safe_load(config_map(off, "prometheus-config")[m.CONFIG_FILE])
    stack, objects = render_with("prod", {"monitoring": {"alertmanager": {
        "mode": "existing", "dns_name": "alertmanager-operated.monitoring.svc.cluster.local"}}})
    config = config_map(objects, "prometheus-config")[m.CONFIG_FILE]
    (tmp_path / m.CONFIG_FILE).write_text(config)
    (tmp_path / m.RULES_FILE).write_text(config_map(objects, "prometheus-rules")[m.RULES_FILE])
    result = promtool("check", "config", m.CONFIG_FILE, cwd=tmp_path, runtime=promtool_in)
    assert result.returncode == 0, result.stdout + result.stderr
    (alertmanager,) = yaml.safe_load(config)["alerting"]["alertmanagers"]
    assert alertmanager["dns_sd_configs"] == [{"names": ["alertmanager-operated.monitoring.svc.cluster.local"],
                                               "type": "A", "port": 9093}]
    assert ("prometheus", "alertmanager", 9093) in {(c.source.key, c.target.key, c.port)
                                                    for c in stack.network.connections}


def unit_test_coverage() -> tuple[set[str], set[str]]:
    """(alerts some promtool case expects to fire, alerts some case expects silent
    without firing them anywhere in that case)."""
    fires: set[str] = set()
    silent: set[str] = set()
    # Every case file: tests/monitoring/*.test.yaml here, scaling/ in tests/test_alertmanager.py.
    for path in sorted((ROOT / "tests" / "monitoring").rglob("*.test.yaml")):
        for case in yaml.safe_load(path.read_text())["tests"]:
            checks = case.get("alert_rule_test", [])
            firing = {c["alertname"] for c in checks if c.get("exp_alerts")}
            fires |= firing
            silent |= {c["alertname"] for c in checks if not c.get("exp_alerts")} - firing
    return fires, silent


def test_every_alert_fires_in_a_promtool_case_and_stays_silent_when_healthy():
    """test_promtool_rule_unit_tests runs the cases; this makes sure each alert has both kinds."""
    fires, silent = unit_test_coverage()
    # "minio" renders the same alerts as "seaweedfs" (another server behind the same job).
    everything = {metrics: [(metrics, NAMESPACE)] for metrics in m.GENERATORS}
    for alert in (a.name for g in m.alert_groups(everything, m.AlertSettings(namespace=NAMESPACE,
                                                                             database_volume_size="10Gi"))
                  for a in g.alerts):
        assert alert in fires, f"{alert}: no promtool case fires it (tests/monitoring/**/*.test.yaml)"
        assert alert in silent, f"{alert}: no promtool case shows it silent on healthy series"


@pytest.mark.parametrize("env", ENVS)
def test_celery_exporter_reconnects_instead_of_exiting(manifests, env):
    """danihodovic/celery-exporter v0.12.2 re-raises the first broker error
    unless --retry-interval (CE_RETRY_INTERVAL) is above 0 (src/exporter.py:
    `if self.retry_interval == 0: raise e`), so without it a Redis restart
    crash-loops the exporter. tests/test_celery_exporter_upstream.py shows it
    on the real exporter where its source is available."""
    exporters = [t for t in pod_templates(manifests[env]) if t.where.endswith("celery-exporter")]
    if not exporters:
        pytest.skip(f"{env} renders no Celery exporter")
    (template,) = exporters
    (container,) = template.containers()
    values = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert values.get("CE_RETRY_INTERVAL", "0").isdigit() and int(values.get("CE_RETRY_INTERVAL", "0")) > 0, values
