"""Strict JSON-schema validation of rendered objects, offline.

Built-in kinds use the Kubernetes schemas that kubernetes-validate ships (the
`-strict` variants reject unknown fields). Custom resources use the
openAPIV3Schema of the pinned CRD files (scripts/crd-pins.txt), found and
verified by scripts/crds.py ($VIBEARENA_CRDS_DIR, ../shared/crds or .cache/crds).
Only pinned files are read, so a test cannot pass on a file a clone lacks.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry, Resource

from scripts import crds

# Oldest and newest Kubernetes minor versions we support (README: "Supported
# Kubernetes versions").
OLDEST, NEWEST = "1.33", "1.37"
SCHEMA_ROOT = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"


@functools.cache
def crds_dir() -> Path:
    """The verified CRD directory; raises crds.CrdsUnavailableError with one line if there is none."""
    return crds.locate()


@functools.cache
def _registry(version: str) -> tuple[Path, Registry]:
    directory = SCHEMA_ROOT / f"v{version}.0-local-strict"
    definitions = json.loads((directory / "_definitions.json").read_text())
    return directory, Resource.from_contents(definitions) @ Registry()


@functools.cache
def _k8s_validator(version: str, kind: str, api_version: str) -> jsonschema.protocols.Validator:
    directory, registry = _registry(version)
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = directory / f"{kind.lower()}-{group_version}.json"
    if not path.exists():
        raise LookupError(f"no Kubernetes {version} schema for {api_version} {kind}")
    schema = json.loads(path.read_text())
    return jsonschema.Draft202012Validator(schema, registry=registry)


@functools.cache
def _crd_index() -> dict[tuple[str, str], dict[str, Any]]:
    """{(apiVersion, kind): openAPIV3Schema} for every pinned CRD file."""
    index: dict[tuple[str, str], dict[str, Any]] = {}
    directory = crds_dir()
    for pin in crds.pins():
        for doc in yaml.safe_load_all((directory / pin.local).read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                if version.get("served"):
                    key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                    index[key] = version["schema"]["openAPIV3Schema"]
    return index


# Custom kinds the charts render whose CRD is not in the shared CRD set yet
# (F5 NGINX Ingress Controller's Policy: config/crd/bases/k8s.nginx.org_policies.yaml
# in nginx/kubernetes-ingress). They are validated when their CRD is present;
# tests/test_admin_edge.py reports a skip when it is not.
UNVENDORED_KINDS = frozenset({("k8s.nginx.org/v1", "Policy")})


def is_custom(obj: dict[str, Any]) -> bool:
    return (obj["apiVersion"], obj["kind"]) in _crd_index() or (obj["apiVersion"], obj["kind"]) in UNVENDORED_KINDS


def has_crd(obj: dict[str, Any]) -> bool:
    return (obj["apiVersion"], obj["kind"]) in _crd_index()


def validate_builtin(obj: dict[str, Any], version: str) -> list[str]:
    validator = _k8s_validator(version, obj["kind"], obj["apiVersion"])
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(obj)]


def validate_custom(obj: dict[str, Any]) -> list[str]:
    schema = _crd_index().get((obj["apiVersion"], obj["kind"]))
    if schema is None and (obj["apiVersion"], obj["kind"]) in UNVENDORED_KINDS:
        return []
    if schema is None:
        raise LookupError(f"no CRD for {obj['apiVersion']} {obj['kind']} among the pinned files "
                          "(add its pin to scripts/crd-pins.txt)")
    # CRD schemas are OpenAPI v3 (draft 4 style); unknown fields are pruned by
    # the API server, so reject them here to catch typos.
    strict = _no_unknown_fields(schema)
    validator = jsonschema.Draft4Validator(strict)
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(obj)]


def _no_unknown_fields(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_no_unknown_fields(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {k: _no_unknown_fields(v) for k, v in schema.items() if not k.startswith("x-kubernetes")}
    if "properties" in result and "additionalProperties" not in result \
            and not schema.get("x-kubernetes-preserve-unknown-fields"):
        result["additionalProperties"] = False
    return result
