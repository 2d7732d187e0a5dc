"""postgres.mode cnpg: a CloudNativePG Cluster with continuous WAL archiving
through the Barman Cloud plugin (docs/decisions/038-cloudnativepg.md).

Rendered as plain API objects (like the ApplicationSet): the spec is a
handful of fields, every one checked against the pinned CRDs in the tests
with unknown fields rejected, and the typed CNPG module would add seconds to
every render. What CloudNativePG creates itself and clients rely on:
the Services `<name>-rw`/`-ro`/`-r`, the pod label `cnpg.io/cluster`, the CA
Secret `<name>-ca` (key ca.crt), the metrics port 9187 (`metrics`), the
status port 8000 and one PodDisruptionBudget per cluster (enablePDB).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import cdk8s
from constructs import Construct

from charts.config import CaBundle, CnpgConfig, PostgresConfig
from charts.labels import api_metadata, metadata, named_port
from charts.network import Peer, external, pods_in
from imports import k8s

if TYPE_CHECKING:
    from charts.stack import Stack

PLUGIN = "barman-cloud.cloudnative-pg.io"
CLUSTER_LABEL = "cnpg.io/cluster"
POOLER_LABEL = "cnpg.io/poolerName"
POSTGRES_PORT = 5432
STATUS_PORT = 8000
METRICS_PORT = 9187
POOLER_METRICS_PORT = 9127
# The StatefulSet's Service, the source of bootstrap.initdb.import.
STATEFULSET_SOURCE = "statefulset"


class CnpgCluster(Construct):
    """The Cluster, its ObjectStore and ScheduledBackup, an optional Pooler,
    the basic-auth Secrets of its roles and the connections CNPG needs."""

    def __init__(self, scope: Construct, id: str, *, stack: Stack, config: PostgresConfig,
                 parameters: dict[str, str], statefulset_host: str | None) -> None:
        super().__init__(scope, id)
        assert config.cnpg is not None
        cnpg: CnpgConfig = config.cnpg
        self.stack = stack
        self.config = config
        self.cnpg = cnpg
        self.name = cnpg.name
        identity = stack.identity(cnpg.name, "database", cnpg.image.tag)
        self.identity = identity
        self.instances = Peer(key=f"{cnpg.name}-cnpg", selector=((CLUSTER_LABEL, cnpg.name),))
        network = stack.network
        operator = pods_in(cnpg.operator_namespace, cnpg.operator_pod_labels, key="cnpg-operator")
        api_server = external(cnpg.api_server_cidr, key="kube-apiserver")
        network.allow(operator, self.instances, STATUS_PORT, reason="CNPG operator reads instance status")
        network.allow(operator, self.instances, POSTGRES_PORT, reason="CNPG operator manages PostgreSQL")
        network.allow(self.instances, self.instances, POSTGRES_PORT, reason="streaming replication")
        network.allow(self.instances, self.instances, STATUS_PORT, reason="instance managers talk to each other")
        network.allow(self.instances, api_server, cnpg.api_server_port,
                      reason="CNPG instance manager watches its Cluster")

        secrets = stack.secrets
        app_secret = secrets.basic_auth(f"{cnpg.name}-role-{config.user.replace('_', '-')}", config.user,
                                        "POSTGRES_PASSWORD")
        backup_secret = secrets.basic_auth(f"{cnpg.name}-role-{config.backup_user.replace('_', '-')}",
                                           config.backup_user, "POSTGRES_BACKUP_PASSWORD")
        monitor_secret = secrets.basic_auth(f"{cnpg.name}-role-{config.monitor_user.replace('_', '-')}",
                                            config.monitor_user, "POSTGRES_MONITOR_PASSWORD")
        store_name = f"{cnpg.name}-archive"
        resources = config.resources
        spec: dict[str, Any] = {
            "instances": cnpg.instances,
            "imageName": cnpg.image.ref,
            "enableSuperuserAccess": False,
            "enablePDB": True,
            "postgresql": {"parameters": parameters},
            "storage": _storage(config.storage.size, config.storage.class_name),
            "walStorage": _storage(cnpg.wal_storage.size, cnpg.wal_storage.class_name),
            "resources": {"requests": {"cpu": resources.cpu, "memory": resources.memory},
                          "limits": {"cpu": resources.cpu_limit, "memory": resources.memory_limit}},
            # One instance per node (a node loss takes one replica), spread over zones where there are any.
            "affinity": {"enablePodAntiAffinity": True, "topologyKey": "kubernetes.io/hostname",
                         "podAntiAffinityType": "required"},
            "topologySpreadConstraints": [{
                "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {CLUSTER_LABEL: cnpg.name}}}],
            "managed": {"roles": [
                {"name": config.backup_user, "ensure": "present", "login": True, "superuser": False,
                 "createdb": True, "inRoles": ["pg_read_all_data"], "passwordSecret": {"name": backup_secret}},
                {"name": config.monitor_user, "ensure": "present", "login": True, "superuser": False,
                 "inRoles": ["pg_monitor"], "passwordSecret": {"name": monitor_secret}},
            ]},
        }
        external_clusters: list[dict[str, Any]] = []
        if cnpg.recovery.enabled:
            spec["bootstrap"] = {"recovery": {"source": "archive",
                                              "recoveryTarget": {"targetTime": cnpg.recovery.target_time}}}
            external_clusters.append({"name": "archive", "plugin": {"name": PLUGIN, "parameters": {
                "barmanObjectName": store_name, "serverName": cnpg.recovery.source_server_name}}})
        else:
            initdb: dict[str, Any] = {"database": config.database, "owner": config.user,
                                      "secret": {"name": app_secret}}
            if cnpg.import_from_statefulset:
                if statefulset_host is None:
                    raise ValueError("cnpg import needs the StatefulSet rendered")
                secret_name, key = secrets.selector("POSTGRES_SUPERUSER_PASSWORD")
                initdb["import"] = {"type": "microservice", "databases": [config.database],
                                    "source": {"externalCluster": STATEFULSET_SOURCE}}
                external_clusters.append({
                    "name": STATEFULSET_SOURCE,
                    "connectionParameters": {"host": statefulset_host, "port": str(POSTGRES_PORT),
                                             "user": config.superuser, "dbname": "postgres",
                                             "sslmode": "disable"},
                    "password": {"name": secret_name, "key": key}})
            spec["bootstrap"] = {"initdb": initdb}
        if external_clusters:
            spec["externalClusters"] = external_clusters
        if cnpg.backup is not None:
            spec["plugins"] = [{"name": PLUGIN, "isWALArchiver": True,
                                "parameters": {"barmanObjectName": store_name, "serverName": cnpg.server_name}}]
            self._object_store(store_name, identity)
        if cnpg.pooler.enabled:
            # PgBouncer presents the Cluster's server certificate (Pooler
            # clientTLSSecret defaults to it), whose names are the -rw/-r/-ro
            # Services plus these: so clients verify the pooler's name too.
            pooler = self.pooler_name
            spec["certificates"] = {"serverAltDNSNames": [pooler, f"{pooler}.{stack.namespace}",
                                                          f"{pooler}.{stack.namespace}.svc"]}
        self.cluster = _api_object(self, "cluster", "postgresql.cnpg.io/v1", "Cluster",
                                   api_metadata(identity, cnpg.name, stack.namespace), spec)
        # A headless Service over the instances' metrics port: the bundled
        # Prometheus finds each pod by DNS, as for our own workloads.
        self.metrics_service = f"{cnpg.name}-metrics"
        k8s.KubeService(self, "metrics-service", metadata=metadata(identity, self.metrics_service, stack.namespace),
                        # Not-ready instances are scraped too: their metrics say why.
                        spec=k8s.ServiceSpec(type="ClusterIP", cluster_ip="None", publish_not_ready_addresses=True,
                                             selector={CLUSTER_LABEL: cnpg.name},
                                             ports=[k8s.ServicePort(name="metrics", port=METRICS_PORT,
                                                                    target_port=named_port("metrics"),
                                                                    protocol="TCP")]))
        # Clients: the read-write Service, or the pooler in front of it.
        self.host = f"{cnpg.name}-rw"
        self.client_peer: Peer = self.instances
        # The server certificate CNPG issues names the -rw Service.
        self.server_ca = CaBundle(kind="Secret", name=f"{cnpg.name}-ca", key="ca.crt")
        self.ca: CaBundle | None = self.server_ca
        self.sslmode = "verify-full"
        if cnpg.pooler.enabled:
            self._pooler(identity, api_server)

    def _object_store(self, name: str, identity: Any) -> None:
        cnpg, stack = self.cnpg, self.stack
        backup = cnpg.backup
        assert backup is not None
        secret_name, access_key = stack.secrets.selector("CNPG_BACKUP_S3_ACCESS_KEY_ID")
        _, secret_key = stack.secrets.selector("CNPG_BACKUP_S3_SECRET_ACCESS_KEY")
        _api_object(self, "object-store", "barmancloud.cnpg.io/v1", "ObjectStore",
                    api_metadata(identity, name, stack.namespace), {
                        "configuration": {
                            "destinationPath": f"s3://{backup.bucket}/{backup.path}",
                            "endpointURL": backup.endpoint.rstrip("/"),
                            "s3Credentials": {"accessKeyId": {"name": secret_name, "key": access_key},
                                              "secretAccessKey": {"name": secret_name, "key": secret_key}},
                            "wal": {"compression": "gzip"},
                            "data": {"compression": "gzip"},
                        },
                        "retentionPolicy": backup.retention,
                    })
        _api_object(self, "scheduled-backup", "postgresql.cnpg.io/v1", "ScheduledBackup",
                    api_metadata(identity, f"{cnpg.name}-daily", stack.namespace), {
                        "schedule": backup.schedule,
                        "cluster": {"name": cnpg.name},
                        "method": "plugin",
                        "pluginConfiguration": {"name": PLUGIN},
                        "backupOwnerReference": "self",
                        # A base backup right away: PITR needs one before any target time.
                        "immediate": True,
                    })
        parsed = urlparse(backup.endpoint)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        stack.network.allow(self.instances, external(backup.cidr, key=f"cnpg-archive:{parsed.hostname}"), port,
                            reason="WAL archive and base backups (Barman Cloud plugin)")

    @property
    def pooler_name(self) -> str:
        """The Pooler, and the Service CNPG creates for it under the same name."""
        return f"{self.cnpg.name}-pooler-rw"

    def _pooler(self, identity: Any, api_server: Peer) -> None:
        cnpg, stack = self.cnpg, self.stack
        pooler = cnpg.pooler
        name = self.pooler_name
        resources = pooler.resources
        _api_object(self, "pooler", "postgresql.cnpg.io/v1", "Pooler", api_metadata(identity, name, stack.namespace), {
            "cluster": {"name": cnpg.name},
            "instances": pooler.instances,
            "type": "rw",
            "pgbouncer": {"poolMode": pooler.pool_mode},
            "template": {"spec": {"containers": [{
                "name": "pgbouncer", "image": pooler.image.ref,
                "resources": {"requests": {"cpu": resources.cpu, "memory": resources.memory},
                              "limits": {"cpu": resources.cpu_limit, "memory": resources.memory_limit}}}]}},
        })
        peer = Peer(key=name, selector=((POOLER_LABEL, name),))
        stack.network.allow(peer, self.instances, POSTGRES_PORT, reason="PgBouncer to the primary")
        stack.network.allow(peer, api_server, self.cnpg.api_server_port, reason="PgBouncer instance manager")
        self.host = name
        self.client_peer = peer
        # Verified like the -rw Service: same CA, and the certificate names
        # the pooler (serverAltDNSNames above). CloudNativePG v1.30.0 source:
        # api/v1/pooler_funcs.go GetClientTLSSecretNameOrDefault,
        # internal/controller/cluster_pki.go ensureServerLeafCertificate.


def _storage(size: str, class_name: str | None) -> dict[str, Any]:
    storage: dict[str, Any] = {"size": size}
    if class_name:
        storage["storageClass"] = class_name
    return storage


def _api_object(scope: Construct, id: str, api_version: str, kind: str, meta: cdk8s.ApiObjectMetadata,
                spec: dict[str, Any]) -> cdk8s.ApiObject:
    obj = cdk8s.ApiObject(scope, id, api_version=api_version, kind=kind, metadata=meta)
    obj.add_json_patch(cdk8s.JsonPatch.add("/spec", spec))
    return obj
