"""The environment's namespace: Pod Security `restricted` and default limits."""

from __future__ import annotations

from constructs import Construct

from charts.labels import Identity, metadata, quantity
from imports import k8s

POD_SECURITY_LEVEL = "restricted"


class Namespace(Construct):
    def __init__(self, scope: Construct, id: str, *, identity: Identity, name: str) -> None:
        super().__init__(scope, id)
        # enforce, audit and warn at the same level: a pod that warns in dev
        # would be rejected in prod, so the three modes never disagree.
        pod_security = {f"pod-security.kubernetes.io/{mode}": POD_SECURITY_LEVEL
                        for mode in ("enforce", "audit", "warn")}
        pod_security.update({f"pod-security.kubernetes.io/{mode}-version": "latest"
                             for mode in ("enforce", "audit", "warn")})
        self.namespace = k8s.KubeNamespace(
            self, "namespace",
            metadata=metadata(identity, name, None, extra_labels=pod_security),
        )
        # Defaults for any container that forgets its own (ours never do: the
        # workload construct requires them); max keeps a typo from taking a node.
        k8s.KubeLimitRange(
            self, "limit-range",
            metadata=metadata(identity, "default-limits", name),
            spec=k8s.LimitRangeSpec(limits=[k8s.LimitRangeItem(
                type="Container",
                default_request={"cpu": quantity("50m"),
                                 "memory": quantity("64Mi")},
                default={"cpu": quantity("500m"),
                         "memory": quantity("256Mi")},
                max={"cpu": quantity("4"),
                     "memory": quantity("8Gi")},
            )]),
        )
