"""What every part of the monitoring package shares: the component name its
objects are labelled with, metadata for supporting objects, and YAML output."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import yaml

from charts.labels import metadata
from imports import k8s

if TYPE_CHECKING:
    from charts.stack import Stack

COMPONENT = "monitoring"


def identity_meta(stack: Stack, name: str, version: str | None = None,
                  extra_labels: Mapping[str, str] | None = None) -> k8s.ObjectMeta:
    """Metadata for a monitoring object (ConfigMap, Role...) named `name`."""
    return metadata(stack.identity(name, COMPONENT, version), name, stack.namespace, extra_labels=extra_labels)


def dump_yaml(document: Any) -> str:
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False, width=120, allow_unicode=True)
