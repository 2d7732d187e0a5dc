"""Logs (`monitoring.loki`, bundled mode): a single-binary Loki and an Alloy
agent that tails this namespace's pod logs through the Kubernetes API.

Changes when log collection or storage changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from constructs import Construct

from charts.config import LokiConfig
from charts.monitoring.common import COMPONENT, dump_yaml, identity_meta
from charts.network import Peer, external
from charts.workload import Container, Deployment, Port, Probe, Probes, StatefulSet
from imports import k8s

if TYPE_CHECKING:
    from charts.stack import Stack

LOKI_PORT = 3100
ALLOY_PORT = 12345


class Logs(Construct):
    """Loki, Alloy and Alloy's namespace-scoped read access to pod logs.

    Attributes: `loki` (StatefulSet), `alloy` (Deployment).
    """

    def __init__(self, scope: Construct, id: str, *, stack: Stack, loki: LokiConfig, grafana: Peer) -> None:
        super().__init__(scope, id)
        namespace = stack.namespace
        loki_text = dump_yaml(loki_config(loki))
        k8s.KubeConfigMap(self, "loki-config", metadata=identity_meta(stack, "loki-config", loki.image.tag),
                          data={"loki.yaml": loki_text})
        server = Container(
            name="loki",
            image=loki.image.ref,
            args=["-config.file=/etc/loki/loki.yaml", "-target=all"],
            ports=[Port(name="http", port=LOKI_PORT)],
            probes=Probes(
                startup=Probe(http_path="/ready", port=LOKI_PORT, period_seconds=10, failure_threshold=30),
                readiness=Probe(http_path="/ready", port=LOKI_PORT, period_seconds=10),
                # /ready also reflects the ring; a busy Loki must not be killed for it.
                liveness=Probe(tcp=True, port=LOKI_PORT, period_seconds=20, failure_threshold=5),
            ),
            resources=loki.resources,
            mounts=[k8s.VolumeMount(name="config", mount_path="/etc/loki", read_only=True),
                    k8s.VolumeMount(name="data", mount_path="/loki")],
        )
        self.loki = loki_server = StatefulSet(
            self, "loki", stack=stack, name="loki", component=COMPONENT, version=loki.image.tag,
            containers=[server], replicas=1, fs_group=10001, termination_grace_seconds=60,
            volumes=[k8s.Volume(name="config", config_map=k8s.ConfigMapVolumeSource(name="loki-config"))],
            volume_claims=[("data", loki.storage.size, loki.storage.class_name)],
            pod_annotations={"checksum/config": stack.checksum(loki_text)},
        )

        alloy_text = alloy_config(namespace)
        k8s.KubeConfigMap(self, "alloy-config", metadata=identity_meta(stack, "alloy-config", loki.alloy_image.tag),
                          data={"config.alloy": alloy_text})
        token_path = "/var/run/secrets/kubernetes.io/serviceaccount"
        agent = Container(
            name="alloy",
            image=loki.alloy_image.ref,
            args=["run", "/etc/alloy/config.alloy", "--storage.path=/var/lib/alloy/data",
                  f"--server.http.listen-addr=0.0.0.0:{ALLOY_PORT}", "--disable-reporting"],
            ports=[Port(name="http", port=ALLOY_PORT, in_service=False)],
            probes=Probes(readiness=Probe(http_path="/-/ready", port=ALLOY_PORT, period_seconds=10),
                          liveness=Probe(http_path="/-/ready", port=ALLOY_PORT, period_seconds=30,
                                         failure_threshold=5)),
            resources=loki.alloy_resources,
            writable_paths=("/tmp", "/var/lib/alloy/data"),
            mounts=[k8s.VolumeMount(name="config", mount_path="/etc/alloy", read_only=True),
                    k8s.VolumeMount(name="api-token", mount_path=token_path, read_only=True)],
        )
        # The only pod with an API token, mounted explicitly (automount stays
        # off everywhere); a short-lived, audience-bound projected token.
        token = k8s.Volume(name="api-token", projected=k8s.ProjectedVolumeSource(sources=[
            k8s.VolumeProjection(service_account_token=k8s.ServiceAccountTokenProjection(
                path="token", expiration_seconds=3600)),
            k8s.VolumeProjection(config_map=k8s.ConfigMapProjection(
                name="kube-root-ca.crt", items=[k8s.KeyToPath(key="ca.crt", path="ca.crt")])),
            k8s.VolumeProjection(downward_api=k8s.DownwardApiProjection(items=[k8s.DownwardApiVolumeFile(
                path="namespace", field_ref=k8s.ObjectFieldSelector(field_path="metadata.namespace"))])),
        ]))
        self.alloy = alloy = Deployment(
            self, "alloy", stack=stack, name="alloy", component=COMPONENT, version=loki.alloy_image.tag,
            containers=[agent], replicas=1, recreate=True,  # two would ship every line twice
            volumes=[k8s.Volume(name="config", config_map=k8s.ConfigMapVolumeSource(name="alloy-config")), token],
            pod_annotations={"checksum/config": stack.checksum(alloy_text)},
        )
        # Read pods and their logs in this namespace, nothing else.
        meta = identity_meta(stack, "alloy", loki.alloy_image.tag)
        k8s.KubeRole(self, "alloy-role", metadata=meta, rules=[
            k8s.PolicyRule(api_groups=[""], resources=["pods"], verbs=["get", "list", "watch"]),
            k8s.PolicyRule(api_groups=[""], resources=["pods/log"], verbs=["get"]),
        ])
        k8s.KubeRoleBinding(self, "alloy-role-binding", metadata=meta,
                            role_ref=k8s.RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="alloy"),
                            subjects=[k8s.Subject(kind="ServiceAccount", name="alloy", namespace=namespace)])

        network = stack.network
        network.allow(alloy.peer, loki_server.peer, LOKI_PORT, reason="Alloy pushes logs")
        network.allow(alloy.peer, external(loki.api_server_cidr or "", key="kube-apiserver"),
                      loki.api_server_port, reason="Alloy tails pod logs through the Kubernetes API")
        network.allow(grafana, loki_server.peer, LOKI_PORT, reason="Grafana queries Loki")


def loki_config(loki: LokiConfig) -> dict[str, Any]:
    """Single-binary Loki on its own volume (filesystem storage)."""
    return {
        "auth_enabled": False,
        "server": {"http_listen_port": LOKI_PORT, "log_level": "info"},
        "common": {
            "instance_addr": "127.0.0.1",
            "path_prefix": "/loki",
            "storage": {"filesystem": {"chunks_directory": "/loki/chunks", "rules_directory": "/loki/rules"}},
            "replication_factor": 1,
            "ring": {"kvstore": {"store": "inmemory"}},
        },
        "schema_config": {"configs": [{
            "from": "2024-01-01", "store": "tsdb", "object_store": "filesystem", "schema": "v13",
            "index": {"prefix": "index_", "period": "24h"},
        }]},
        "limits_config": {"retention_period": loki.retention},
        # The compactor applies the retention.
        "compactor": {"working_directory": "/loki/compactor", "retention_enabled": True,
                      "delete_request_store": "filesystem"},
        "query_range": {"results_cache": {"cache": {"embedded_cache": {"enabled": True, "max_size_mb": 50}}}},
        "analytics": {"reporting_enabled": False},
    }


def alloy_config(namespace: str) -> str:
    """Pod logs of this namespace through the Kubernetes API (no hostPath, no DaemonSet)."""
    return f"""\
discovery.kubernetes "pods" {{
  role = "pod"
  namespaces {{
    names = ["{namespace}"]
  }}
}}

discovery.relabel "pods" {{
  targets = discovery.kubernetes.pods.targets
  rule {{
    source_labels = ["__meta_kubernetes_namespace"]
    target_label  = "namespace"
  }}
  rule {{
    source_labels = ["__meta_kubernetes_pod_name"]
    target_label  = "pod"
  }}
  rule {{
    source_labels = ["__meta_kubernetes_pod_container_name"]
    target_label  = "container"
  }}
  rule {{
    source_labels = ["__meta_kubernetes_pod_label_app_kubernetes_io_name"]
    target_label  = "app"
  }}
}}

loki.source.kubernetes "pods" {{
  targets    = discovery.relabel.pods.output
  forward_to = [loki.write.local.receiver]
}}

loki.write "local" {{
  endpoint {{
    url = "http://loki:{LOKI_PORT}/loki/api/v1/push"
  }}
}}
"""
