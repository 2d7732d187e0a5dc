"""postgres.mode cnpg and external, redis.mode external: what each renders,
checked against the pinned CRDs (unknown fields rejected) and against facts
from CloudNativePG v1.30.0 and the Barman Cloud plugin v0.14.0 sources."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.manifests import of_kind, one, pod_templates
from tests.support.render import render_with
from tests.support.schemas import validate_custom

ARCHIVE = {"endpoint": "https://s3.eu-central-1.amazonaws.com", "bucket": "vibearena-wal", "path": "wal/prod"}
CNPG = {"mode": "cnpg", "cnpg": {"api_server_cidr": "10.96.0.1/32", "backup": ARCHIVE}}
# From cloudnative-pg v1.30.0 pkg/postgres/configuration.go FixedConfigurationParameters
# (fixed or blocked: the webhook refuses a Cluster that sets them).
CNPG_FORBIDDEN = {
    "allow_system_table_mods", "archive_cleanup_command", "archive_command", "archive_mode", "bonjour",
    "bonjour_name", "cluster_name", "config_file", "data_directory", "data_sync_retry", "event_source",
    "external_pid_file", "hba_file", "hot_standby", "ident_file", "jit_provider", "listen_addresses",
    "log_destination", "log_directory", "log_file_mode", "log_filename", "log_rotation_age",
    "log_rotation_size", "log_truncate_on_rotation", "logging_collector", "port", "primary_conninfo",
    "primary_slot_name", "promote_trigger_file", "recovery_end_command", "recovery_min_apply_delay",
    "recovery_target", "recovery_target_action", "recovery_target_inclusive", "recovery_target_lsn",
    "recovery_target_name", "recovery_target_time", "recovery_target_timeline", "recovery_target_xid",
    "restart_after_crash", "restore_command", "shared_preload_libraries", "ssl", "ssl_ca_file", "ssl_cert_file",
    "ssl_crl_file", "ssl_dh_params_file", "ssl_ecdh_curve", "ssl_key_file", "ssl_passphrase_command",
    "ssl_passphrase_command_supports_reload", "ssl_prefer_server_ciphers", "stats_temp_directory",
    "synchronized_standby_slots", "synchronous_standby_names", "syslog_facility", "syslog_ident",
    "syslog_sequence_numbers", "syslog_split_messages", "temp_tablespaces", "unix_socket_directories",
    "unix_socket_group", "unix_socket_permissions",
}


def cnpg(**extra: Any) -> dict[str, Any]:
    return {"postgres": {**CNPG, "cnpg": {**CNPG["cnpg"], **extra}}}


def env_vars(obj: dict[str, Any], container: str) -> dict[str, dict[str, Any]]:
    spec = obj["spec"]["template"]["spec"] if obj["kind"] != "CronJob" else \
        obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (found,) = [c for c in spec["containers"] if c["name"] == container]
    return {v["name"]: v for v in found.get("env", [])}


VARIANTS = {
    "plain": cnpg(),
    "pooler": cnpg(pooler={"enabled": True, "pool_mode": "transaction"}),
    "pitr": cnpg(server_name="postgres-2", recovery={"enabled": True, "target_time": "2026-11-30T02:55:00Z"}),
    "import": cnpg(import_from_statefulset=True),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cnpg_objects_validate_against_the_crds(variant):
    _stack, objects = render_with("prod", VARIANTS[variant])
    custom = [o for o in objects if o["apiVersion"].startswith(("postgresql.cnpg.io/", "barmancloud.cnpg.io/"))]
    kinds = {o["kind"] for o in custom}
    assert {"Cluster", "ObjectStore", "ScheduledBackup"} <= kinds, kinds
    assert ("Pooler" in kinds) == (variant == "pooler")
    for obj in custom:
        errors = validate_custom(obj)
        assert not errors, (obj["kind"], errors)


def test_validation_rejects_an_unknown_cluster_field():
    _stack, objects = render_with("prod", VARIANTS["plain"])
    cluster = one(objects, "Cluster", "postgres")
    cluster["spec"]["instanceCount"] = 3
    assert any("instanceCount" in e for e in validate_custom(cluster))


def test_cnpg_cluster_is_spread_budgeted_and_tuned_like_the_statefulset():
    stack, objects = render_with("prod", VARIANTS["plain"])
    assert not [s for s in of_kind(objects, "StatefulSet") if s["metadata"]["name"] == "postgres"]
    assert not [j for j in of_kind(objects, "Job") if j["metadata"]["name"].startswith("postgres-roles")]
    spec = one(objects, "Cluster", "postgres")["spec"]
    assert spec["instances"] == 3
    assert spec["enablePDB"] is True and spec["enableSuperuserAccess"] is False
    assert spec["affinity"] == {"enablePodAntiAffinity": True, "topologyKey": "kubernetes.io/hostname",
                                "podAntiAffinityType": "required"}
    (zone,) = spec["topologySpreadConstraints"]
    assert zone["topologyKey"] == "topology.kubernetes.io/zone"
    assert zone["labelSelector"] == {"matchLabels": {"cnpg.io/cluster": "postgres"}}
    parameters = spec["postgresql"]["parameters"]
    # 25 % / 75 % of the default 1Gi limit, as for the StatefulSet.
    assert parameters["shared_buffers"] == "256MB" and parameters["effective_cache_size"] == "768MB"
    assert parameters["archive_timeout"] == "5min", "the recovery point is bounded by archive_timeout"
    assert not set(parameters) & CNPG_FORBIDDEN, set(parameters) & CNPG_FORBIDDEN
    assert spec["walStorage"]["size"] and spec["storage"]["size"] == stack.profile.postgres.storage.size
    assert spec["bootstrap"]["initdb"]["owner"] == "vibearena"
    roles = {r["name"]: r for r in spec["managed"]["roles"]}
    assert roles["vibearena_backup"]["inRoles"] == ["pg_read_all_data"] and not roles["vibearena_backup"]["superuser"]
    assert roles["vibearena_monitor"]["inRoles"] == ["pg_monitor"]
    (plugin,) = spec["plugins"]
    assert plugin == {"name": "barman-cloud.cloudnative-pg.io", "isWALArchiver": True,
                      "parameters": {"barmanObjectName": "postgres-archive", "serverName": "postgres"}}
    store = one(objects, "ObjectStore", "postgres-archive")["spec"]
    assert store["configuration"]["destinationPath"] == "s3://vibearena-wal/wal/prod"
    assert store["retentionPolicy"] == "30d"
    backup = one(objects, "ScheduledBackup", "postgres-daily")["spec"]
    assert backup["method"] == "plugin" and backup["pluginConfiguration"] == {"name": plugin["name"]}
    assert len(backup["schedule"].split()) == 6, "CNPG schedules have a seconds field"


def test_cnpg_role_secrets_are_basic_auth_from_the_secret_store():
    _stack, objects = render_with("prod", VARIANTS["plain"])
    cluster = one(objects, "Cluster", "postgres")["spec"]
    names = {cluster["bootstrap"]["initdb"]["secret"]["name"]: "vibearena",
             **{r["passwordSecret"]["name"]: r["name"] for r in cluster["managed"]["roles"]}}
    assert not of_kind(objects, "Secret"), "no Secret is rendered"
    for name, username in names.items():
        external = one(objects, "ExternalSecret", name)["spec"]
        template = external["target"]["template"]
        assert template["type"] == "kubernetes.io/basic-auth"
        assert template["data"]["username"] == username
        assert template["metadata"]["labels"] == {"cnpg.io/reload": "true"}
        assert external["data"][0]["remoteRef"]["property"].startswith("POSTGRES_")
        assert not validate_custom(one(objects, "ExternalSecret", name))


def test_app_connects_with_verify_full_to_the_rw_service_or_to_the_pooler():
    _stack, objects = render_with("prod", VARIANTS["plain"])
    api = one(objects, "Deployment", "api")
    variables = env_vars(api, "api")
    assert variables["DATABASE_HOST"]["value"] == "postgres-rw"
    assert variables["DATABASE_SSLMODE"]["value"] == "verify-full"
    volumes = {v["name"]: v for v in api["spec"]["template"]["spec"]["volumes"]}
    assert volumes["postgres-ca"]["secret"]["secretName"] == "postgres-ca"
    assert variables["DATABASE_SSLROOTCERT"]["value"].endswith("/postgres-ca/ca.crt")
    _stack, pooled = render_with("prod", VARIANTS["pooler"])
    pooled_api = one(pooled, "Deployment", "api")
    through_pooler = env_vars(pooled_api, "api")
    assert through_pooler["DATABASE_HOST"]["value"] == "postgres-pooler-rw"
    # PgBouncer presents the Cluster's server certificate (CloudNativePG: the
    # Pooler's clientTLSSecret defaults to it), signed by the same CA. Its names
    # are the -rw/-r/-ro Services plus spec.certificates.serverAltDNSNames, so
    # verify-full holds only if the pooler's host is among those.
    assert through_pooler["DATABASE_SSLMODE"]["value"] == "verify-full"
    assert through_pooler["DATABASE_SSLROOTCERT"]["value"].endswith("/postgres-ca/ca.crt")
    pooled_volumes = {v["name"]: v for v in pooled_api["spec"]["template"]["spec"]["volumes"]}
    assert pooled_volumes["postgres-ca"]["secret"]["secretName"] == "postgres-ca"
    cluster = one(pooled, "Cluster", "postgres")
    names = cluster["spec"]["certificates"]["serverAltDNSNames"]
    assert through_pooler["DATABASE_HOST"]["value"] in names
    (pooler,) = [o for o in pooled if o["kind"] == "Pooler"]
    # CNPG names the Service after the Pooler.
    assert pooler["metadata"]["name"] == through_pooler["DATABASE_HOST"]["value"]
    assert "pgbouncer" not in pooler["spec"] or "clientTLSSecret" not in pooler["spec"]["pgbouncer"]
    # Without a pooler the certificate keeps CNPG's own names only.
    assert "certificates" not in one(objects, "Cluster", "postgres")["spec"]
    # Dumps never go through PgBouncer.
    dump = env_vars(one(pooled, "CronJob", "postgres-backup"), "postgres-backup")
    assert dump["PGHOST"]["value"] == "postgres-rw" and dump["PGSSLMODE"]["value"] == "verify-full"


def test_point_in_time_recovery_bootstraps_from_the_archive_into_a_new_server_name():
    _stack, objects = render_with("prod", VARIANTS["pitr"])
    spec = one(objects, "Cluster", "postgres")["spec"]
    assert spec["bootstrap"] == {"recovery": {"source": "archive",
                                              "recoveryTarget": {"targetTime": "2026-11-30T02:55:00Z"}}}
    (source,) = spec["externalClusters"]
    assert source["plugin"]["parameters"] == {"barmanObjectName": "postgres-archive", "serverName": "postgres"}
    assert spec["plugins"][0]["parameters"]["serverName"] == "postgres-2"


def test_import_keeps_the_statefulset_and_reads_it_as_superuser():
    stack, objects = render_with("prod", VARIANTS["import"])
    one(objects, "StatefulSet", "postgres")
    spec = one(objects, "Cluster", "postgres")["spec"]
    assert spec["bootstrap"]["initdb"]["import"] == {"type": "microservice", "databases": ["vibearena"],
                                                     "source": {"externalCluster": "statefulset"}}
    (source,) = spec["externalClusters"]
    assert source["connectionParameters"]["host"] == "postgres"
    assert source["password"] == {"name": "vibearena-secrets", "key": "POSTGRES_SUPERUSER_PASSWORD"}
    connections = {(c.source.key, c.target.key, c.port) for c in stack.network.connections}
    assert ("postgres-cnpg", "postgres", 5432) in connections  # CNPG instances -> the StatefulSet pod
    external = one(objects, "ExternalSecret", "vibearena-secrets")["spec"]["data"]
    assert "POSTGRES_SUPERUSER_PASSWORD" in {d["remoteRef"]["property"] for d in external}


def test_operator_mode_scrapes_the_instances_with_a_pod_monitor():
    overrides = {**VARIANTS["plain"], "monitoring": {"mode": "operator", "alertmanager": {"mode": "off"}}}
    _stack, objects = render_with("prod", overrides)
    monitor = one(objects, "PodMonitor", "postgres")
    assert monitor["spec"]["selector"] == {"matchLabels": {"cnpg.io/cluster": "postgres"}}
    assert monitor["spec"]["podMetricsEndpoints"][0]["portNumber"] == 9187
    assert not validate_custom(monitor)
    rules = one(objects, "PrometheusRule", "vibearena-alerts")["spec"]["groups"]
    postgres = next(g for g in rules if g["name"] == "postgres")
    alerts = {r["alert"]: r["expr"] for r in postgres["rules"]}
    assert "cnpg_collector_up" in alerts["PostgresDown"] and "PostgresWalArchivingFailing" in alerts
    assert not [e for e in alerts.values() if "pg_up" in e]


def test_bundled_mode_finds_instances_through_a_headless_service():
    _stack, objects = render_with("prod", VARIANTS["plain"])
    service = one(objects, "Service", "postgres-metrics")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"cnpg.io/cluster": "postgres"}
    config = one(objects, "ConfigMap", "prometheus-config")["data"]["prometheus.yml"]
    assert "postgres-metrics.vibearena-prod.svc" in config


def test_external_postgres_has_no_workload_and_keeps_the_dump_jobs():
    _stack, objects = render_with("prod", {"postgres": {"mode": "external", "cnpg": None, "external": {
        "host": "db.example.internal", "cidr": "10.20.0.0/16", "ca": {"name": "db-ca"}}}})
    names = {p.owner["metadata"]["name"] for p in pod_templates(objects)}
    assert "postgres" not in names and not [n for n in names if n.startswith("postgres-roles")]
    assert {"postgres-backup", "restore-drill", "postgres-exporter"} <= names
    assert not of_kind(objects, "Cluster")


def test_cnpg_alerts_fire_in_promtool_cases(tmp_path):
    """The CNPG alert group on synthetic series (tests/monitoring/cnpg/)."""
    import shutil
    import subprocess

    from charts import monitoring as m
    from tests.support.manifests import ROOT

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    groups = m.alert_groups({"cnpg": [("postgres", "vibearena-dev")]}, m.AlertSettings(namespace="vibearena-dev"))
    (tmp_path / m.RULES_FILE).write_text(m.dump_yaml(m.rules_document(groups, "vibearena-dev")))
    shutil.copy(ROOT / "tests" / "monitoring" / "cnpg" / "alerts.test.yaml", tmp_path / "alerts.test.yaml")
    result = subprocess.run([promtool, "test", "rules", "alerts.test.yaml"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
