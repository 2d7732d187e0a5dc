"""Secret references. Secret values are never rendered.

Workloads read credentials through `secretKeyRef`s to one Secret per
environment, whose keys use the seed's variable names. The Secret itself is
created outside the render: by scripts/dev-secrets.sh from a local .env
(provider `existing`), or by External Secrets Operator from the
ExternalSecret rendered here (provider `external-secrets`). Pods cannot read
other keys: they have no service-account token and get only the keys they
reference.
"""

from __future__ import annotations

from dataclasses import dataclass

from constructs import Construct

from charts.config import SecretsConfig
from charts.labels import Identity, api_metadata
from imports import k8s
from imports.io import external_secrets as eso

STORE_KINDS = {
    "ClusterSecretStore": eso.ExternalSecretSpecSecretStoreRefKind.CLUSTER_SECRET_STORE,
    "SecretStore": eso.ExternalSecretSpecSecretStoreRefKind.SECRET_STORE,
}


@dataclass(frozen=True)
class SecretKey:
    key: str
    description: str
    optional: bool = False


# Every key a component may reference, with the one-line comment that
# env/<env>.example.env repeats (tests keep the two in step).
CATALOG: dict[str, SecretKey] = {s.key: s for s in (
    SecretKey("DJANGO_SECRET_KEY", "Django signing key; long and random (50+ characters)."),
    SecretKey("POSTGRES_PASSWORD", "Password of the application database role (owns the app database)."),
    SecretKey("POSTGRES_SUPERUSER_PASSWORD", "Password of the bootstrap superuser of the in-cluster Postgres."),
    SecretKey("POSTGRES_BACKUP_PASSWORD", "Password of the read-only role the dump jobs use (pg_read_all_data)."),
    SecretKey("POSTGRES_MONITOR_PASSWORD", "Password of the metrics exporter's role (pg_monitor)."),
    SecretKey("REDIS_PASSWORD", "Password Redis requires from every client (requirepass)."),
    SecretKey("MINIO_ROOT_USER", "Object store admin access key: the server and the bucket job only."),
    SecretKey("MINIO_ROOT_PASSWORD", "Object store admin secret key (40 characters recommended)."),
    SecretKey("MINIO_ACCESS_KEY", "Object store key of the app: its uploads bucket only."),
    SecretKey("MINIO_SECRET_KEY", "Secret of the app's object store key."),
    SecretKey("BACKUP_S3_ACCESS_KEY_ID", "Object store key of the backup jobs: write dumps, no delete."),
    SecretKey("BACKUP_S3_SECRET_ACCESS_KEY", "Secret of the backup jobs' object store key."),
    SecretKey("BACKUP_PRUNE_S3_ACCESS_KEY_ID", "Object store key of the dump retention job: list and delete dumps."),
    SecretKey("BACKUP_PRUNE_S3_SECRET_ACCESS_KEY", "Secret of the dump retention job's object store key."),
    SecretKey("MIRROR_S3_ACCESS_KEY_ID", "Object store key of the off-site mirror: read uploads and dumps."),
    SecretKey("MIRROR_S3_SECRET_ACCESS_KEY", "Secret of the off-site mirror's object store key."),
    SecretKey("GRAFANA_ADMIN_PASS", "Grafana admin password; never admin/admin."),
    SecretKey("DJANGO_SUPERUSER_PASSWORD", "Password for the first Django superuser (make createsuperuser)."),
    SecretKey("GA_SVC_JSON_BASE64", "Optional: Google Analytics service-account JSON, base64.", optional=True),
    SecretKey("OFFSITE_S3_ACCESS_KEY_ID", "Optional: access key of the off-site backup bucket.", optional=True),
    SecretKey("OFFSITE_S3_SECRET_ACCESS_KEY", "Optional: secret key of the off-site backup bucket.", optional=True),
    SecretKey("ALERTMANAGER_WEBHOOK_URL", "Optional: URL Alertmanager posts alerts to (webhook receiver).",
              optional=True),
    SecretKey("ALERTMANAGER_SLACK_API_URL", "Optional: Slack incoming-webhook URL for alerts.", optional=True),
    SecretKey("ALERTMANAGER_SMTP_PASSWORD", "Optional: password of the SMTP relay alert mail goes through.",
              optional=True),
    SecretKey("ALERTMANAGER_HEARTBEAT_URL", "Optional: dead man's switch URL the Watchdog alert pings.",
              optional=True),
    SecretKey("CNPG_BACKUP_S3_ACCESS_KEY_ID",
              "Optional: access key of the CNPG WAL archive bucket (postgres.mode cnpg).", optional=True),
    SecretKey("CNPG_BACKUP_S3_SECRET_ACCESS_KEY",
              "Optional: secret key of the CNPG WAL archive bucket (postgres.mode cnpg).", optional=True),
)}


@dataclass(frozen=True)
class BasicAuth:
    """A kubernetes.io/basic-auth Secret derived from one key of the env's
    Secret (CloudNativePG reads role passwords only from such Secrets)."""

    name: str
    username: str
    password_key: str


class SecretRefs:
    """Hands out references to keys of the environment's Secret and records them."""

    def __init__(self, config: SecretsConfig) -> None:
        self.config = config
        self._used: set[str] = set()
        self._basic_auth: list[BasicAuth] = []

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def used_keys(self) -> list[str]:
        return sorted(self._used)

    def key(self, key: str) -> str:
        """A key of the Secret that something outside env vars reads (a
        mounted file, a KEDA TriggerAuthentication); recorded like env()."""
        if key not in CATALOG:
            raise KeyError(f"secret key {key!r} is not in charts/secrets.py CATALOG")
        self._used.add(key)
        return key

    def env(self, variable: str, key: str | None = None) -> k8s.EnvVar:
        """An env var filled from the Secret's `key` (default: the same name)."""
        key = key or variable
        entry = CATALOG.get(key)
        if entry is None:
            raise KeyError(f"secret key {key!r} is not in charts/secrets.py CATALOG")
        self._used.add(key)
        return k8s.EnvVar(name=variable, value_from=k8s.EnvVarSource(
            secret_key_ref=k8s.SecretKeySelector(name=self.name, key=key, optional=entry.optional or None)))

    def selector(self, key: str) -> tuple[str, str]:
        """(Secret name, key) for a CR field that references a key itself."""
        if key not in CATALOG:
            raise KeyError(f"secret key {key!r} is not in charts/secrets.py CATALOG")
        self._used.add(key)
        return self.name, key

    def basic_auth(self, name: str, username: str, password_key: str) -> str:
        """Name of a basic-auth Secret {username, password=<password_key>}.
        Rendered as an ExternalSecret with provider external-secrets; with
        provider existing it is created like the env's Secret (docs/data-tier.md)."""
        if password_key not in CATALOG:
            raise KeyError(f"secret key {password_key!r} is not in charts/secrets.py CATALOG")
        self._basic_auth.append(BasicAuth(name, username, password_key))
        return name

    @property
    def basic_auth_secrets(self) -> tuple[BasicAuth, ...]:
        return tuple(self._basic_auth)

    def render(self, scope: Construct, identity: Identity, namespace: str) -> None:
        """The ExternalSecret for provider external-secrets; nothing otherwise.

        The remote entry must hold every referenced key; optional ones may be
        empty strings there (a missing property fails the whole sync).
        """
        if self.config.provider != "external-secrets":
            return
        store = eso.ExternalSecretSpecSecretStoreRef(kind=STORE_KINDS[self.config.store_kind],
                                                     name=self.config.store or "")

        def entry(secret_key: str, remote_property: str) -> eso.ExternalSecretSpecData:
            # One property of the env's remote entry.
            return eso.ExternalSecretSpecData(secret_key=secret_key, remote_ref=eso.ExternalSecretSpecDataRemoteRef(
                key=self.config.remote_key or "", property=remote_property))

        data = [entry(key, key) for key in self.used_keys]
        eso.ExternalSecret(
            scope, "external-secret",
            metadata=api_metadata(identity, self.name, namespace),
            spec=eso.ExternalSecretSpec(
                refresh_interval=self.config.refresh_interval,
                secret_store_ref=store,
                target=eso.ExternalSecretSpecTarget(
                    name=self.name,
                    creation_policy=eso.ExternalSecretSpecTargetCreationPolicy.OWNER),
                data=data,
            ),
        )
        for secret in self._basic_auth:
            eso.ExternalSecret(
                scope, f"external-secret-{secret.name}",
                metadata=api_metadata(identity, secret.name, namespace),
                spec=eso.ExternalSecretSpec(
                    refresh_interval=self.config.refresh_interval,
                    secret_store_ref=store,
                    target=eso.ExternalSecretSpecTarget(
                        name=secret.name,
                        creation_policy=eso.ExternalSecretSpecTargetCreationPolicy.OWNER,
                        template=eso.ExternalSecretSpecTargetTemplate(
                            type="kubernetes.io/basic-auth",
                            # CNPG applies a changed password at once for labelled Secrets.
                            metadata=eso.ExternalSecretSpecTargetTemplateMetadata(
                                labels={"cnpg.io/reload": "true"}),
                            data={"username": secret.username, "password": "{{ .password }}"})),
                    data=[entry("password", secret.password_key)],
                ),
            )
