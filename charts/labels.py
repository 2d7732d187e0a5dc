"""Recommended labels and object metadata.

Every object carries app.kubernetes.io/{name,instance,component,part-of,
version,managed-by}. Selectors use only name, instance and component, so a
new image version never changes an immutable selector.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cdk8s

from imports import k8s

MANAGED_BY = "cdk8s"


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

    def labels(self) -> dict[str, str]:
        return {
            **self.selector(),
            "app.kubernetes.io/part-of": self.part_of,
            "app.kubernetes.io/version": self.version,
            "app.kubernetes.io/managed-by": MANAGED_BY,
        }


def metadata(identity: Identity, name: str, namespace: str | None, *,
             annotations: Mapping[str, str] | None = None,
             extra_labels: Mapping[str, str] | None = None) -> k8s.ObjectMeta:
    """ObjectMeta with an explicit, stable name; namespace None for cluster objects."""
    return k8s.ObjectMeta(
        name=name,
        namespace=namespace,
        labels={**identity.labels(), **(extra_labels or {})},
        annotations=dict(annotations) if annotations else None,
    )


def api_metadata(identity: Identity, name: str, namespace: str | None, *,
                 annotations: Mapping[str, str] | None = None) -> cdk8s.ApiObjectMetadata:
    """The same metadata for custom resources, whose classes take cdk8s' own type."""
    return cdk8s.ApiObjectMetadata(
        name=name,
        namespace=namespace,
        labels=identity.labels(),
        annotations=dict(annotations) if annotations else None,
    )
