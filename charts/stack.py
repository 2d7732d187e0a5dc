"""One environment's stack: wires the components of a profile together.

Components connect by reference (`api.peer`, `api.workload.service_name`),
and declare their connections and secret references as they are built; the
NetworkPolicies and the ExternalSecret are rendered last, from those tables.
"""

from __future__ import annotations

import cdk8s
from constructs import Construct

from charts.api import Api
from charts.config import Profile
from charts.edge import Edge
from charts.labels import Identity
from charts.namespace import Namespace
from charts.network import Network, pods_in
from charts.secrets import SecretRefs
from imports import k8s


class Stack:
    """What every component of one environment needs to know."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.namespace = profile.namespace
        # The release version labels config objects; workloads use their image tag.
        self.version = profile.api.image.tag or "unversioned"
        self.network = Network(dns=pods_in(profile.network.dns_namespace, profile.network.dns_pod_labels,
                                           key="dns"))
        self.secrets = SecretRefs(profile.secrets)

    def identity(self, name: str, component: str, version: str | None = None) -> Identity:
        return Identity(name=name, component=component, instance=self.profile.instance,
                        part_of=self.profile.part_of, version=version or self.version)


class StackChart(cdk8s.Chart):
    def __init__(self, scope: Construct, id: str, *, profile: Profile) -> None:
        super().__init__(scope, id, disable_resource_name_hashes=True)
        stack = Stack(profile)
        self.stack = stack
        config_identity = stack.identity("config", "config")
        Namespace(self, "namespace", identity=config_identity, name=stack.namespace)

        app_env = [
            k8s.EnvVar(name="ENV", value=profile.name),
            k8s.EnvVar(name="DOMAIN", value=profile.domain),
            k8s.EnvVar(name="DJANGO_SETTINGS_MODULE", value=profile.api.settings_module),
            k8s.EnvVar(name="ALLOWED_HOSTS", value=profile.domain),
            k8s.EnvVar(name="MAX_UPLOAD_SIZE", value=str(profile.edge.body_size_bytes)),
            stack.secrets.env("DJANGO_SECRET_KEY"),
        ]
        self.api = Api(self, "api", stack=stack, config=profile.api, app_env=app_env)
        self.edge = Edge(self, "edge", stack=stack, config=profile.edge, domain=profile.domain,
                         backend_service=self.api.workload.service_name, backend_port=self.api.port,
                         backend=self.api.peer)

        stack.network.render(self, config_identity, stack.namespace)
        stack.secrets.render(self, config_identity, stack.namespace)
