"""A container's environment as the kubelet builds it, from a rendered manifest.

`resolve()` walks the `env` list in order: `value` entries get Kubernetes'
$(VAR) expansion (only variables defined earlier in the list expand, `$$`
is a literal `$`, anything else stays as written), `secretKeyRef` entries
take the value from the given Secret data verbatim (no expansion, as in
Kubernetes). Tests then override only what differs between a pod and this
machine (host names, ports, file paths).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, defined: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return defined[name] if name in defined else match.group(0)

    return _REFERENCE.sub(replace, value)


def resolve(container: Mapping[str, Any], secret: Mapping[str, str], secret_name: str) -> dict[str, str]:
    resolved: dict[str, str] = {}
    for var in container.get("env", []):
        name = var["name"]
        if "value" in var:
            resolved[name] = expand(var["value"], resolved)
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret_name, f"{name} reads Secret {ref['name']}, not {secret_name}"
        if ref["key"] in secret:
            resolved[name] = secret[ref["key"]]
        elif not ref.get("optional"):
            raise KeyError(f"{name}: the Secret has no key {ref['key']} and the reference is not optional")
    return resolved


def pod_container(obj: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The named container of a Deployment, StatefulSet, Job or CronJob."""
    spec = obj["spec"]
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    containers = spec["template"]["spec"]["containers"]
    found = [c for c in containers if c["name"] == name]
    assert found, f"{obj['kind']}/{obj['metadata']['name']} has no container {name}"
    return dict(found[0])
