"""Helpers to walk rendered manifests (plain dicts) in policy tests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
ENV_DIR = ROOT / "env"
# Rendered environments: bases (_*.yaml) are only inherited.
ENVS = sorted(p.stem for p in ENV_DIR.glob("*.yaml") if not p.stem.startswith("_"))
RECOMMENDED_LABELS = (
    "app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
    "app.kubernetes.io/part-of", "app.kubernetes.io/version", "app.kubernetes.io/managed-by",
)
SELECTOR_LABELS = {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"}
POD_KINDS = ("Deployment", "StatefulSet", "Job", "CronJob", "DaemonSet")


@dataclass(frozen=True)
class PodTemplate:
    owner: dict[str, Any]
    template: dict[str, Any]

    @property
    def where(self) -> str:
        return f"{self.owner['kind']}/{self.owner['metadata']['name']}"

    @property
    def namespace(self) -> str:
        return self.owner["metadata"].get("namespace", "")

    @property
    def labels(self) -> dict[str, str]:
        return self.template.get("metadata", {}).get("labels", {})

    @property
    def spec(self) -> dict[str, Any]:
        return self.template["spec"]

    def containers(self) -> Iterator[dict[str, Any]]:
        yield from self.spec.get("initContainers", [])
        yield from self.spec["containers"]


def name_of(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata'].get('name', '?')}"


def pod_templates(objects: list[dict[str, Any]]) -> list[PodTemplate]:
    found = []
    for obj in objects:
        if obj["kind"] == "CronJob":
            found.append(PodTemplate(obj, obj["spec"]["jobTemplate"]["spec"]["template"]))
        elif obj["kind"] in POD_KINDS:
            found.append(PodTemplate(obj, obj["spec"]["template"]))
    return found


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected exactly one {kind}/{name}, found {len(matches)}"
    return matches[0]


def load_dir(directory: Path) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return objects


def tree_digest(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` with its bytes, to prove a run left it untouched."""
    if not directory.exists():
        return {}
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_KEY_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def label_problems(labels: dict[str, str]) -> list[str]:
    problems = []
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if not (LABEL_KEY_NAME.match(name) and len(name) <= 63) or (prefix and not DNS_SUBDOMAIN.match(prefix)):
            problems.append(f"bad label key {key!r}")
        if len(value) > 63 or not LABEL_VALUE.match(value):
            problems.append(f"bad label value {key}={value!r}")
    return problems
