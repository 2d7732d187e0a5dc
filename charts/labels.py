"""Recommended labels and object metadata.

Every object carries app.kubernetes.io/{name,instance,component,part-of,
version,managed-by}. Selectors use only name, instance and component, so a
new image version never changes an immutable selector.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

import cdk8s

from imports import k8s

MANAGED_BY = "cdk8s"
SYNC_WAVE = "argocd.argoproj.io/sync-wave"
# Argo CD sync waves by component: namespace and config first, data services
# before the migration hook, the app after it (README: "Argo CD").
SYNC_WAVES = {
    "gitops": -4, "config": -3, "database": -2, "cache": -2, "object-store": -2, "migration": -1,
    "web": 0, "worker": 0, "scheduler": 0, "backup": 0, "monitoring": 0, "edge": 1,
}


def annotations_for(identity: Identity, extra: Mapping[str, str] | None) -> dict[str, str]:
    return {SYNC_WAVE: str(SYNC_WAVES.get(identity.component, 0)), **(extra or {})}


def label_value(text: str) -> str:
    """A valid label value (<= 63 characters of [A-Za-z0-9_.-], alphanumeric at
    both ends) for an image tag: a digest becomes sha256-<first 12 hex>."""
    if text.startswith("sha256:"):
        text = "sha256-" + text.removeprefix("sha256:")[:12]
    text = re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", text) or "unversioned"


# Quantity and IntOrString are jsii objects: each construction is a round trip
# to the Node process. They are immutable, so one per distinct value will do.
@functools.cache
def quantity(value: str) -> k8s.Quantity:
    return k8s.Quantity.from_string(value)


@functools.cache
def number(value: int) -> k8s.IntOrString:
    return k8s.IntOrString.from_number(value)


@functools.cache
def named_port(value: str) -> k8s.IntOrString:
    return k8s.IntOrString.from_string(value)


@dataclass(frozen=True)
class Identity:
    """Who an object belongs to: the workload name and its role."""

    name: str
    component: str
    instance: str
    part_of: str
    version: str

    def selector(self) -> dict[str, str]:
        return {
            "app.kubernetes.io/name": self.name,
            "app.kubernetes.io/instance": self.instance,
            "app.kubernetes.io/component": self.component,
        }

    def claim_labels(self) -> dict[str, str]:
        """Labels for PVCs a StatefulSet creates from its claim templates.

        Without `app.kubernetes.io/instance`: its value is the Argo CD
        Application's name, and under label tracking Argo CD would take these
        PVCs (no owner references, not in git) for its own and prune them.
        """
        return {
            "app.kubernetes.io/name": self.name,
            "app.kubernetes.io/component": self.component,
            "app.kubernetes.io/part-of": self.part_of,
        }

    def labels(self) -> dict[str, str]:
        return {
            **self.selector(),
            "app.kubernetes.io/part-of": self.part_of,
            "app.kubernetes.io/version": label_value(self.version),
            "app.kubernetes.io/managed-by": MANAGED_BY,
        }


def metadata(identity: Identity, name: str, namespace: str | None, *,
             annotations: Mapping[str, str] | None = None,
             extra_labels: Mapping[str, str] | None = None) -> k8s.ObjectMeta:
    """ObjectMeta with an explicit, stable name; namespace None for cluster objects.
    Every top-level object gets its Argo CD sync wave from its component."""
    return k8s.ObjectMeta(
        name=name,
        namespace=namespace,
        labels={**identity.labels(), **(extra_labels or {})},
        annotations=annotations_for(identity, annotations),
    )


def api_metadata(identity: Identity, name: str, namespace: str | None, *,
                 annotations: Mapping[str, str] | None = None,
                 extra_labels: Mapping[str, str] | None = None) -> cdk8s.ApiObjectMetadata:
    """The same metadata for custom resources, whose classes take cdk8s' own type."""
    return cdk8s.ApiObjectMetadata(
        name=name,
        namespace=namespace,
        labels={**identity.labels(), **(extra_labels or {})},
        annotations=annotations_for(identity, annotations),
    )
