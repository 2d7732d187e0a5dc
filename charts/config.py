"""The profile model: everything an environment may set, with safe defaults.

A profile file in env/ holds only its differences from these defaults. The
loader rejects unknown keys, wrong types and invalid values with the file
name and the key path; cross-field and per-environment rules live in
`RULES` at the bottom, in one place.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import yaml

from charts.schema import (
    ConfigError,
    at_least,
    between,
    build,
    check,
    dns_label,
    dns_name,
    matches,
    non_empty,
    parse_quantity,
    positive_quantity,
)

RATE_PATTERN = r"[1-9][0-9]*r/[sm]"
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[a-z]{2,}")
SIZE_PATTERN = r"[1-9][0-9]*[kmg]?"


def frozen_map(**items: str) -> Mapping[str, str]:
    return MappingProxyType(dict(items))


def _raise(message: str) -> None:
    raise ValueError(message)


@dataclass(frozen=True, kw_only=True)
class Image:
    repository: str = check(non_empty)
    tag: str = check(matches(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|sha256:[a-f0-9]{64}",
                             "must be an image tag or sha256:<digest>"), default="")

    @property
    def ref(self) -> str:
        separator = "@" if self.tag.startswith("sha256:") else ":"
        return f"{self.repository}{separator}{self.tag}"

    @property
    def pinned(self) -> bool:
        return bool(self.tag) and self.tag != "latest"


@dataclass(frozen=True, kw_only=True)
class Resources:
    """Requests and limits of one container. Limits are always set."""

    cpu: str = check(positive_quantity)
    memory: str = check(positive_quantity)
    cpu_limit: str = check(positive_quantity)
    memory_limit: str = check(positive_quantity)

    def __post_init__(self) -> None:
        if parse_quantity(self.cpu_limit) < parse_quantity(self.cpu):
            raise ValueError(f"cpu_limit {self.cpu_limit} is below the request {self.cpu}")
        if parse_quantity(self.memory_limit) < parse_quantity(self.memory):
            raise ValueError(f"memory_limit {self.memory_limit} is below the request {self.memory}")


def resources(cpu: str, memory: str, cpu_limit: str, memory_limit: str) -> Resources:
    return Resources(cpu=cpu, memory=memory, cpu_limit=cpu_limit, memory_limit=memory_limit)


@dataclass(frozen=True, kw_only=True)
class Storage:
    size: str = check(positive_quantity, default="1Gi")
    # None keeps the cluster's default StorageClass.
    class_name: str | None = None


@dataclass(frozen=True, kw_only=True)
class Autoscaling:
    enabled: bool = False
    min_replicas: int = check(at_least(1), default=2)
    max_replicas: int = check(at_least(1), default=6)
    cpu_utilization: int = check(between(10, 100), default=70)

    def __post_init__(self) -> None:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} exceeds max_replicas {self.max_replicas}")


@dataclass(frozen=True, kw_only=True)
class ApiConfig:
    image: Image
    replicas: int = check(at_least(0), default=2)
    resources: Resources = field(default_factory=lambda: resources("250m", "384Mi", "1", "512Mi"))
    gunicorn_workers: int = check(between(1, 32), default=2)
    settings_module: str = check(matches(r"[a-z_][a-z0-9_.]*", "must be a Python module path"),
                                 default="config.settings.prod")
    autoscaling: Autoscaling = field(default_factory=Autoscaling)
    disruption_budget: bool = True
    # Dev only: run the auto-reloading server instead of gunicorn.
    dev_reload: bool = False
    termination_grace_seconds: int = check(between(10, 300), default=40)
    # Seconds the pod keeps serving after it is marked for deletion, so the
    # ingress controller and endpoints drop it before SIGTERM.
    drain_seconds: int = check(between(0, 60), default=10)


@dataclass(frozen=True, kw_only=True)
class TlsConfig:
    # local-ca: a script makes a local CA and creates the TLS Secret (dev).
    # acme: cert-manager issues the certificate from Let's Encrypt.
    mode: Literal["local-ca", "acme"] = "acme"
    secret_name: str = check(dns_label, default="vibearena-tls")
    acme_server: Literal["letsencrypt-staging", "letsencrypt"] = "letsencrypt"
    acme_email: str | None = check(lambda v: None if v is None or EMAIL.fullmatch(v) else
                                   _raise(f"must be an email address (got {v!r})"), default=None)

    def __post_init__(self) -> None:
        if self.mode == "acme" and not self.acme_email:
            raise ValueError("acme_email is required when mode is 'acme'")


@dataclass(frozen=True, kw_only=True)
class GatewayConfig:
    """Optional Gateway API rendering of the same routes (an HTTPRoute)."""

    enabled: bool = False
    name: str = check(dns_label, default="public")
    namespace: str = check(dns_label, default="gateway")
    section_name: str | None = None


@dataclass(frozen=True, kw_only=True)
class EdgeConfig:
    # nginx-inc: F5 NGINX Ingress Controller (maintained, default).
    # traefik: Traefik v3 with Middleware resources.
    # ingress-nginx-legacy: the retired kubernetes/ingress-nginx, explicit opt-in only.
    controller: Literal["nginx-inc", "traefik", "ingress-nginx-legacy"] = "nginx-inc"
    ingress_class: str = check(dns_label, default="nginx")
    rate_limit: str = check(matches(RATE_PATTERN, "must look like 10r/s or 600r/m"), default="10r/s")
    rate_limit_burst: int = check(between(0, 10000), default=20)
    body_size: str = check(matches(SIZE_PATTERN, "must be a size like 50m, 512k or 1g"), default="50m")
    hsts: bool = True
    hsts_max_age_seconds: int = check(at_least(0), default=31536000)
    tls: TlsConfig = field(default_factory=TlsConfig)
    # Where the controller's pods run, for the NetworkPolicy that admits them.
    controller_namespace: str = check(dns_label, default="nginx-ingress")
    controller_pod_labels: Mapping[str, str] = field(
        default_factory=lambda: frozen_map(**{"app.kubernetes.io/name": "nginx-ingress"}))
    gateway: GatewayConfig = field(default_factory=GatewayConfig)

    @property
    def body_size_bytes(self) -> int:
        units = {"k": 2**10, "m": 2**20, "g": 2**30}
        suffix = self.body_size[-1]
        return int(self.body_size[:-1]) * units[suffix] if suffix in units else int(self.body_size)

    def __post_init__(self) -> None:
        if not self.controller_pod_labels:
            raise ValueError("controller_pod_labels must name at least one label")


@dataclass(frozen=True, kw_only=True)
class NetworkConfig:
    dns_namespace: str = check(dns_label, default="kube-system")
    dns_pod_labels: Mapping[str, str] = field(default_factory=lambda: frozen_map(**{"k8s-app": "kube-dns"}))


@dataclass(frozen=True, kw_only=True)
class SecretsConfig:
    # existing: the Secret is created outside the render (dev: scripts/dev-secrets.sh).
    # external-secrets: an ExternalSecret pulls it from a ClusterSecretStore.
    provider: Literal["existing", "external-secrets"] = "existing"
    name: str = check(dns_label, default="vibearena-secrets")
    store: str | None = None
    remote_key: str | None = None
    refresh_interval: str = check(matches(r"[0-9]+[smh]", "must be a duration like 1h"), default="1h")

    def __post_init__(self) -> None:
        if self.provider == "external-secrets" and not (self.store and self.remote_key):
            raise ValueError("store and remote_key are required when provider is 'external-secrets'")


@dataclass(frozen=True, kw_only=True)
class Profile:
    """One environment. `name` comes from the file name, not from its content."""

    name: str = field(default="", init=False)
    namespace: str = check(dns_label)
    domain: str = check(dns_name)
    part_of: str = check(dns_label, default="vibearena")
    api: ApiConfig
    edge: EdgeConfig = field(default_factory=EdgeConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    secrets: SecretsConfig = field(default_factory=SecretsConfig)

    @property
    def instance(self) -> str:
        return f"{self.part_of}-{self.name}"

    def images(self) -> dict[str, Image]:
        """Every image in the profile by dotted key path, for pinning rules."""
        found: dict[str, Image] = {}

        def walk(node: object, path: str) -> None:
            if isinstance(node, Image):
                found[path] = node
            elif is_dataclass(node):
                for f in fields(node):
                    walk(getattr(node, f.name), f"{path}.{f.name}" if path else f.name)
            elif isinstance(node, tuple):
                for i, item in enumerate(node):
                    walk(item, f"{path}[{i}]")
        walk(self, "")
        return found


# Rules across fields and per environment. Each returns (key path, message)
# for the first violation, or None.
Rule = Callable[[Profile], "tuple[str, str] | None"]


def images_pinned(profile: Profile) -> tuple[str, str] | None:
    for path, image in profile.images().items():
        if not image.pinned:
            return f"{path}.tag", f"must be pinned in {profile.name} (no empty tag, no 'latest')"
    return None


def api_highly_available(profile: Profile) -> tuple[str, str] | None:
    api = profile.api
    smallest = api.autoscaling.min_replicas if api.autoscaling.enabled else api.replicas
    if smallest < 2:
        key = "api.autoscaling.min_replicas" if api.autoscaling.enabled else "api.replicas"
        return key, f"must be >= 2 in {profile.name} (got {smallest})"
    if not api.disruption_budget:
        return "api.disruption_budget", f"must be true in {profile.name}"
    return None


def no_dev_server(profile: Profile) -> tuple[str, str] | None:
    if profile.api.dev_reload:
        return "api.dev_reload", f"the auto-reloading dev server is not allowed in {profile.name}"
    return None


def real_tls(profile: Profile) -> tuple[str, str] | None:
    if profile.edge.tls.mode != "acme":
        return "edge.tls.mode", f"must be 'acme' in {profile.name} (a local CA is for dev only)"
    return None


def production_acme(profile: Profile) -> tuple[str, str] | None:
    if profile.edge.tls.acme_server != "letsencrypt":
        return "edge.tls.acme_server", f"must be 'letsencrypt' in {profile.name} (staging certificates are not trusted)"
    if not profile.edge.hsts:
        return "edge.hsts", f"must be true in {profile.name}"
    return None


RULES: dict[str, tuple[Rule, ...]] = {
    "dev": (),
    "stage": (images_pinned, no_dev_server, real_tls),
    "prod": (images_pinned, no_dev_server, real_tls, production_acme, api_highly_available),
}


class ProfileError(Exception):
    """A profile cannot be used; the message names the file and the key."""

    def __init__(self, file: Path | str, message: str, key: str = "") -> None:
        location = f"{file}: {key}: " if key else f"{file}: "
        super().__init__(location + message)
        self.file = str(file)
        self.key = key


def known_envs(env_dir: Path) -> list[str]:
    return sorted(p.stem for p in env_dir.glob("*.yaml"))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ProfileError(path, f"cannot read file: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise ProfileError(path, f"cannot read file: not UTF-8 text (byte {err.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ProfileError(path, f"malformed YAML: {where}{problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ProfileError(path, "top level must be a mapping of keys")
    return data


def load_profile(env_dir: Path, name: str) -> Profile:
    if not re.fullmatch(r"[a-z][a-z0-9-]*", name) or name not in RULES:
        raise ProfileError(env_dir / f"{name}.yaml",
                           f"unknown env {name!r} (known: {', '.join(sorted(RULES))})")
    path = env_dir / f"{name}.yaml"
    if not path.exists():
        raise ProfileError(path, "profile file is missing")
    data = _read_yaml(path)
    try:
        profile = build(Profile, data)
    except ConfigError as err:
        raise ProfileError(path, err.message, err.path) from None
    object.__setattr__(profile, "name", name)
    for rule in RULES[name]:
        violation = rule(profile)
        if violation:
            key, message = violation
            raise ProfileError(path, message, key)
    return profile
