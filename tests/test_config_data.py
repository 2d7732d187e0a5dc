"""Bad values of the data-tier keys (postgres.*, redis.*, the off-site rule):
one line naming the file and the key, exit 2, dist/ untouched."""

from __future__ import annotations

import shutil

import pytest

from tests.support.manifests import ENV_DIR
from tests.test_config import assert_rejected_cleanly, edit, good_dist, workspace  # noqa: F401 (fixtures)

EXTERNAL_PG = ("postgres:\n  mode: external\n  external: {host: db.example.internal, cidr: 10.0.0.0/16, "
               "ca: {name: db-ca}}\n")
EXTERNAL_REDIS = "redis:\n  mode: external\n  external: {host: cache.example.internal, cidr: 10.1.0.0/16}\n"

# (case id, file, old text, new text, key path expected, words expected)
BAD_DATA_PROFILES = [
    ("pg-mode", "stage.yaml", "namespace:", "postgres: {mode: rds}\nnamespace:", "postgres.mode", "must be one of"),
    ("pg-external-missing", "stage.yaml", "namespace:", "postgres: {mode: external}\nnamespace:", "postgres",
     "external: required"),
    ("pg-external-without-mode", "stage.yaml", "namespace:",
     "postgres: {external: {host: db.example.internal, cidr: 10.0.0.0/16, ca: {name: db-ca}}}\nnamespace:",
     "postgres", "only allowed when mode is 'external'"),
    ("pg-host", "stage.yaml", "namespace:", EXTERNAL_PG.replace("db.example.internal", "DB_HOST!") + "namespace:",
     "postgres.external.host", "DNS name"),
    ("pg-cidr", "stage.yaml", "namespace:", EXTERNAL_PG.replace("10.0.0.0/16", "10.0.0.1/16") + "namespace:",
     "postgres.external.cidr", "CIDR"),
    ("pg-port", "stage.yaml", "namespace:", EXTERNAL_PG.replace("cidr:", "port: 70000, cidr:") + "namespace:",
     "postgres.external.port", "between 1 and 65535"),
    ("pg-port-type", "stage.yaml", "namespace:", EXTERNAL_PG.replace("cidr:", "port: '5432x', cidr:") + "namespace:",
     "postgres.external.port", "must be a whole number"),
    ("pg-sslmode", "stage.yaml", "namespace:", EXTERNAL_PG.replace("cidr:", "sslmode: require, cidr:") + "namespace:",
     "postgres.external.sslmode", "verify-full"),
    ("pg-ca-missing", "stage.yaml", "namespace:", EXTERNAL_PG.replace(", ca: {name: db-ca}", "") + "namespace:",
     "postgres.external.ca", "missing"),
    ("pg-ca-kind", "stage.yaml", "namespace:", EXTERNAL_PG.replace("{name: db-ca}", "{name: db-ca, kind: File}")
     + "namespace:", "postgres.external.ca.kind", "must be one of"),
    ("pg-ca-name", "stage.yaml", "namespace:", EXTERNAL_PG.replace("{name: db-ca}", "{name: Db_CA}") + "namespace:",
     "postgres.external.ca.name", "DNS name"),
    ("pg-ca-key", "stage.yaml", "namespace:", EXTERNAL_PG.replace("{name: db-ca}", "{name: db-ca, key: 'a/b'}")
     + "namespace:", "postgres.external.ca.key", "key"),
    ("pg-unknown", "stage.yaml", "namespace:", EXTERNAL_PG.replace("cidr:", "hostname: x, cidr:") + "namespace:",
     "postgres.external.hostname", "unknown key"),
    ("pg-user", "stage.yaml", "namespace:", "postgres: {user: App-User}\nnamespace:", "postgres.user",
     "SQL identifier"),
    ("pg-roles-clash", "stage.yaml", "namespace:", "postgres: {backup_user: vibearena}\nnamespace:", "postgres",
     "must differ"),
    ("pg-exporter-type", "stage.yaml", "namespace:", "postgres: {exporter: sometimes}\nnamespace:",
     "postgres.exporter", "must be true or false"),
    ("redis-mode", "stage.yaml", "namespace:", "redis: {mode: cluster}\nnamespace:", "redis.mode", "must be one of"),
    ("redis-external-missing", "stage.yaml", "namespace:", "redis: {mode: external}\nnamespace:", "redis",
     "external: required"),
    ("redis-db", "stage.yaml", "namespace:", EXTERNAL_REDIS.replace("cidr:", "db: 16, cidr:") + "namespace:",
     "redis.external.db", "between 0 and 15"),
    ("redis-tls-type", "stage.yaml", "namespace:", EXTERNAL_REDIS.replace("cidr:", "tls: 'yes', cidr:")
     + "namespace:", "redis.external.tls", "must be true or false"),
    ("redis-ca-without-tls", "stage.yaml", "namespace:",
     EXTERNAL_REDIS.replace("cidr:", "tls: false, ca: {name: r-ca}, cidr:") + "namespace:", "redis.external",
     "tls is false"),
    ("redis-username", "stage.yaml", "namespace:", EXTERNAL_REDIS.replace("cidr:", "username: 'a b', cidr:")
     + "namespace:", "redis.external.username", "ACL user"),
    ("redis-cidr-missing", "stage.yaml", "namespace:",
     EXTERNAL_REDIS.replace(", cidr: 10.1.0.0/16", "") + "namespace:", "redis.external.cidr", "missing"),
    ("cnpg-missing", "stage.yaml", "namespace:", "postgres: {mode: cnpg}\nnamespace:", "postgres",
     "cnpg: required"),
    ("cnpg-without-mode", "stage.yaml", "namespace:", "postgres: {cnpg: {api_server_cidr: 10.0.0.1/32}}\nnamespace:",
     "postgres", "only allowed when mode is 'cnpg'"),
    ("cnpg-api-server-missing", "prod.yaml", "    api_server_cidr: 172.20.0.1/32\n", "",
     "postgres.cnpg.api_server_cidr", "missing"),
    ("cnpg-api-server-cidr", "prod.yaml", "api_server_cidr: 172.20.0.1/32", "api_server_cidr: 172.20.0.1",
     "postgres.cnpg.api_server_cidr", "CIDR"),
    ("cnpg-instances", "prod.yaml", "  cnpg:\n", "  cnpg:\n    instances: 0\n", "postgres.cnpg.instances",
     "between 1 and 9"),
    ("cnpg-instances-type", "prod.yaml", "  cnpg:\n", "  cnpg:\n    instances: three\n",
     "postgres.cnpg.instances", "must be a whole number"),
    ("cnpg-name", "prod.yaml", "  cnpg:\n", "  cnpg:\n    name: Main_DB\n", "postgres.cnpg.name", "DNS label"),
    ("cnpg-unknown", "prod.yaml", "  cnpg:\n", "  cnpg:\n    replicas: 3\n", "postgres.cnpg.replicas",
     "unknown key"),
    ("cnpg-operator-labels-empty", "prod.yaml", "  cnpg:\n", "  cnpg:\n    operator_pod_labels: {}\n",
     "postgres.cnpg.operator_pod_labels", "at least one label"),
    ("cnpg-backup-endpoint", "prod.yaml", "endpoint: https://s3.eu-central-1.amazonaws.com\n      bucket",
     "endpoint: s3.eu-central-1.amazonaws.com\n      bucket", "postgres.cnpg.backup.endpoint", "http(s) URL"),
    ("cnpg-backup-bucket", "prod.yaml", "bucket: vibearena-prod-wal", "bucket: Vibearena_WAL",
     "postgres.cnpg.backup.bucket", "bucket name"),
    ("cnpg-backup-retention", "prod.yaml", "      path: cnpg/prod\n", "      path: cnpg/prod\n      retention: 30x\n",
     "postgres.cnpg.backup.retention", "30d"),
    ("cnpg-backup-schedule", "prod.yaml", "      path: cnpg/prod\n",
     "      path: cnpg/prod\n      schedule: '0 3 * * *'\n", "postgres.cnpg.backup.schedule", "6-field"),
    ("cnpg-pitr-without-time", "prod.yaml", "  cnpg:\n", "  cnpg:\n    recovery: {enabled: true}\n",
     "postgres.cnpg.recovery", "target_time is required"),
    ("cnpg-pitr-bad-time", "prod.yaml", "  cnpg:\n",
     "  cnpg:\n    recovery: {enabled: true, target_time: 'yesterday 3am'}\n",
     "postgres.cnpg.recovery.target_time", "RFC 3339"),
    ("cnpg-pitr-same-server", "prod.yaml", "  cnpg:\n",
     "  cnpg:\n    recovery: {enabled: true, target_time: '2026-11-30T02:55:00Z'}\n", "postgres.cnpg",
     "server_name must differ"),
    ("cnpg-pitr-and-import", "prod.yaml", "  cnpg:\n",
     "  cnpg:\n    server_name: pg2\n    import_from_statefulset: true\n"
     "    recovery: {enabled: true, target_time: '2026-11-30T02:55:00Z'}\n", "postgres.cnpg", "exclude each other"),
    ("cnpg-pooler-mode", "prod.yaml", "  cnpg:\n", "  cnpg:\n    pooler: {enabled: true, pool_mode: statement}\n",
     "postgres.cnpg.pooler.pool_mode", "must be one of"),
    ("prod-cnpg-without-archive", "prod.yaml",
     "    backup:\n      endpoint: https://s3.eu-central-1.amazonaws.com\n      bucket: vibearena-prod-wal\n"
     "      path: cnpg/prod\n", "", "postgres.cnpg.backup", "must leave the cluster"),
    ("prod-cnpg-archive-in-cluster", "prod.yaml", "endpoint: https://s3.eu-central-1.amazonaws.com\n      bucket",
     "endpoint: http://minio:9000\n      bucket", "postgres.cnpg.backup.endpoint", "outside the cluster"),
    ("prod-backups-stay-inside", "prod.yaml", "    enabled: true\n    endpoint:", "    enabled: false\n    endpoint:",
     "backups.offsite.enabled", "inside the cluster"),
    # Off-cluster storage is reached over TLS in stage and prod.
    ("prod-offsite-plain-http", "prod.yaml", "    endpoint: https://s3.eu-central-1.amazonaws.com\n    region",
     "    endpoint: http://s3.eu-central-1.amazonaws.com\n    region", "backups.offsite.endpoint", "https URL"),
    ("prod-archive-plain-http", "prod.yaml", "endpoint: https://s3.eu-central-1.amazonaws.com\n      bucket",
     "endpoint: http://s3.eu-central-1.amazonaws.com\n      bucket", "postgres.cnpg.backup.endpoint", "https URL"),
    ("stage-object-store-plain-http", "stage.yaml", "secrets:\n",
     "object_store: {mode: external, external_endpoint: 'http://s3.example.net'}\nsecrets:\n",
     "object_store.external_endpoint", "https URL"),
]


@pytest.mark.parametrize(("case", "file", "old", "new", "key", "words"), BAD_DATA_PROFILES,
                         ids=[case[0] for case in BAD_DATA_PROFILES])
def test_bad_data_tier_value_is_rejected_cleanly(workspace, case, file, old, new, key, words):  # noqa: F811
    assert key, f"{case}: every data-tier case names its key"
    assert_rejected_cleanly(workspace, case, file, old, new, key, words)


def test_dev_may_use_plain_http_storage(tmp_path):
    """A laptop's local S3 server is http; only stage and prod need TLS. Loaded
    as the render loads it, with the tier's rules applied."""
    from charts.config import load_profile, storage_over_tls

    env_dir = tmp_path / "env"
    shutil.copytree(ENV_DIR, env_dir)
    edit(env_dir / "dev.yaml", "\nobject_store:\n",
         "\nobject_store:\n  mode: external\n  external_endpoint: http://127.0.0.1:9000\n")
    profile = load_profile(env_dir, "dev")
    assert profile.object_store.external_endpoint == "http://127.0.0.1:9000"
    # The rule would refuse it: dev passes because its tier does not apply it.
    violation = storage_over_tls(profile)
    assert violation is not None and violation[0] == "object_store.external_endpoint", violation
