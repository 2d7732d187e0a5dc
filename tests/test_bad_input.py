"""A corpus of bad profile input, each run through main.py.

Contract for every case (main.py's docstring): exit code 2; stderr is exactly
one line, `error: <file>: <key.path>: <what is wrong> (got <value>)`, naming
the profile file and the key; nothing on stdout; the output directory is
byte-identical afterwards; and the run ends within a time bound (a hang, e.g.
on a FIFO, fails the case instead of blocking the suite).

Cases are built three ways: hand-written cases per class of mistake, cases
generated for every key of a kind found by walking the profile dataclasses
(so a key added later is covered without editing this file), and file-level
cases (FIFO, device, directory, symlink loop, size, encoding).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import pytest
import yaml

import main
from charts.config import Profile, Resources
from tests.support.manifests import ENV_DIR, ROOT

SECONDS_PER_CASE = 30
BASE_ENV = "dev"


class Raw(str):
    """A value written into the YAML file exactly as given (unquoted)."""


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    key: str  # the key path the message must name ("" when the whole file is wrong)
    words: str  # a phrase the message must contain
    text: str | None = None  # the profile's full text (None: `prepare` makes the file)
    prepare: Callable[[Path], None] | None = None  # gets the profile path to create
    secret: str = ""  # must not appear anywhere in the output
    base: str | None = None  # text of env/_base.yaml, which the profile then extends
    blame_base: bool = False  # the message must name env/_base.yaml, not the profile


# --- building profile text -----------------------------------------------------

BASE: dict[str, Any] = yaml.safe_load((ENV_DIR / f"{BASE_ENV}.yaml").read_text())


def _scalar(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    return json.dumps(value)  # JSON is YAML: quoted strings, true/false, null, flow lists/maps


def emit(data: Mapping[str, Any], indent: int = 0) -> list[str]:
    lines = []
    for key, value in data.items():
        pad = " " * indent
        if isinstance(value, dict) and value and not isinstance(value, Raw):
            lines.append(f"{pad}{key}:")
            lines += emit(value, indent + 2)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{pad}{key}:")
            for item in value:
                inner = emit(item, indent + 4)
                lines.append(f"{pad}  - {inner[0].lstrip()}")
                lines += inner[1:]
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return lines


def plain(value: Any) -> Any:
    """A model default as the YAML data that would produce it."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    return value


def with_values(*changes: tuple[tuple[str | int, ...], Any]) -> str:
    """The base profile with each (path, value) set, as YAML text. A section
    the base does not have is filled with the model's defaults first, so only
    the one value changes."""
    data = json.loads(json.dumps(BASE))
    implied = [MODE_OF_SECTION[path[:2]] for path, _value in changes
               if path[:2] in MODE_OF_SECTION]
    for path, value in [*implied, *changes]:
        node: Any = data
        for depth, (part, following) in enumerate(itertools.pairwise(path)):
            if isinstance(part, int):
                if len(node) <= part:  # an empty list in the base: add the model's sample item
                    node.append(json.loads(json.dumps(DEFAULTS[path[:depth + 1]])))
                node = node[part]
                continue
            if part not in node or not isinstance(node[part], (dict, list)):
                default = DEFAULTS.get(path[:depth + 1])
                node[part] = json.loads(json.dumps(default)) if isinstance(default, (dict, list)) else (
                    [] if isinstance(following, int) else {})
            node = node[part]
        if isinstance(path[-1], int) and len(node) <= path[-1]:
            node.append(value)
        else:
            node[path[-1]] = value
    return "\n".join(emit(data)) + "\n"


def dotted(path: tuple[str | int, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def parse_path(key: str) -> tuple[str | int, ...]:
    parts: list[str | int] = []
    for piece in key.split("."):
        name, *indexes = piece.replace("]", "").split("[")
        parts.append(name)
        parts += [int(i) for i in indexes]
    return tuple(parts)


def value_case(case_id: str, key: str, value: Any, words: str, *, blame: str = "",
               extra: tuple[tuple[str, Any], ...] = (), secret: str = "") -> Case:
    changes = [(parse_path(k), v) for k, v in extra] + [(parse_path(key), value)]
    return Case(case_id, blame or key, words, text=with_values(*changes), secret=secret)


# --- keys of each kind, found by walking the model ----------------------------

# A valid instance of each mapping kind whose model default is empty (None or
# an empty list), so cases can reach the keys inside it. A new kind without a
# default fails collection here until it gets a sample.
SAMPLES: dict[str, dict[str, Any]] = {
    "EmailReceiver": {"to": "ops@example.com", "sender": "alerts@example.com", "smarthost": "smtp.example.com:587"},
    "Toleration": {"key": "dedicated", "operator": "Equal", "value": "batch", "effect": "NoSchedule"},
    "PlanAcknowledgement": {"object": "StatefulSet/postgres", "risk": "downtime", "reason": "planned maintenance"},
    "CnpgConfig": {"api_server_cidr": "172.18.0.2/32"},
    "CnpgBackup": {"endpoint": "https://s3.example.com", "bucket": "pg-archive"},
    "ExternalPostgres": {"host": "db.example.com", "cidr": "10.0.0.0/16", "ca": {"name": "db-ca"}},
    "ExternalRedis": {"host": "cache.example.com", "cidr": "10.0.0.0/16"},
    "CaBundle": {"name": "db-ca"},
}
# Sections that exist only in one mode: a case inside one also sets the mode.
MODE_OF_SECTION: dict[tuple[str, ...], tuple[tuple[str, ...], str]] = {
    ("postgres", "cnpg"): (("postgres", "mode"), "cnpg"),
    ("postgres", "external"): (("postgres", "mode"), "external"),
    ("redis", "external"): (("redis", "mode"), "external"),
}


def walk(tp: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], Any, Any]]:
    """(path, type, default) for every key of `tp`, mappings included; a list
    of mappings is walked through its item 0 (the default's, or a sample)."""
    hints = get_type_hints(tp)
    for field in dataclasses.fields(tp):
        if not field.init:
            continue
        hint = hints[field.name]
        if get_origin(hint) in (Union, types.UnionType):
            hint = next(a for a in get_args(hint) if a is not type(None))
        default = field.default if field.default is not dataclasses.MISSING else None
        if field.default_factory is not dataclasses.MISSING:
            try:
                default = field.default_factory()
            except ValueError:  # a default that needs other keys (edge.tls in acme mode needs an e-mail)
                default = None
        here = (*path, field.name)
        if dataclasses.is_dataclass(hint):
            if default is None and hint.__name__ in SAMPLES:
                default = SAMPLES[hint.__name__]
            yield here, hint, default
            yield from walk(hint, here)
        elif get_origin(hint) is tuple and dataclasses.is_dataclass(get_args(hint)[0]):
            item = get_args(hint)[0]
            items = plain(default) or [SAMPLES[item.__name__]]
            yield here, list, items
            yield (*here, 0), item, items[0]
            yield from walk(item, (*here, 0))
        else:
            yield here, hint, default


LEAVES = [leaf for leaf in walk(Profile) if leaf[1] is not list]
DEFAULTS = {path: plain(default) for path, hint, default in walk(Profile)
            if (dataclasses.is_dataclass(hint) or hint is list) and default is not None}
# Only keys the base profile can hold without other keys changing meaning.
SKIP = {("api", "image", "tag")}  # dev's api image tag "dev" is valid; covered by hand-written cases


def of_kind(predicate: Callable[[Any], bool]) -> list[tuple[tuple[str | int, ...], Any, Any]]:
    return [(path, hint, default) for path, hint, default in LEAVES if predicate(hint) and path not in SKIP]


def is_mapping(hint: Any) -> bool:
    return get_origin(hint) in (dict, Mapping)


# --- hand-written cases ------------------------------------------------------------

V = value_case
DIGEST = "sha256:" + "ab" * 32
HAND_WRITTEN: list[Case] = [
    # YAML 1.1 implicit types where text is expected: refused, never turned into text.
    V("yaml11-float-tag", "api.image.tag", Raw("1.10"), "put it in quotes"),
    V("yaml11-int-tag", "postgres.image.tag", Raw("18"), "put it in quotes"),
    V("yaml11-sexagesimal", "api.replicas", Raw("1:30"), "base 60"),
    V("yaml11-octal", "api.replicas", Raw("010"), "octal"),
    V("yaml11-hex", "api.replicas", Raw("0x10"), "hex"),
    V("yaml11-underscore", "api.replicas", Raw("1_0"), "'_'"),
    V("yaml11-hex-no-digits", "api.replicas", Raw("0x_"), "hex"),
    V("yaml11-binary", "api.replicas", Raw("0b101"), "octal, hex"),
    V("yaml11-bool-no", "monitoring.mode", Raw("no"), "boolean"),
    V("yaml11-bool-off-string", "backups.time_zone", Raw("off"), "boolean"),
    V("yaml11-bool-yes-for-bool", "edge.hsts", Raw("yes"), "write true or false"),
    V("yaml11-bool-on", "api.dev_reload", Raw("on"), "boolean"),
    V("yaml11-date", "backups.time_zone", Raw("2024-01-01"), "date"),
    V("yaml11-null-for-text", "namespace", Raw("~"), "got nothing"),
    V("yaml11-empty-for-bool", "backups.enabled", Raw(""), "a value is required"),
    V("yaml11-float-for-cpu", "api.resources.cpu", Raw("0.5"), "put it in quotes"),
    V("yaml11-int-for-cpu", "api.resources.cpu_limit", Raw("2"), "put it in quotes"),
    V("yaml-inf", "monitoring.api_error_ratio", Raw(".inf"), "finite"),
    V("yaml-nan", "monitoring.api_latency_p95_seconds", Raw(".nan"), "finite"),
    V("yaml-float-overflow", "monitoring.api_latency_p95_seconds", Raw("1.0e+400"), "finite"),
    V("yaml-huge-int", "api.replicas", Raw("9" * 30), "too large"),
    V("yaml-value-marker", "api.replicas", Raw("="), "put it in quotes"),
    V("yaml-python-tag", "namespace", Raw("!!python/object/apply:os.system [echo]"), "not supported"),
    V("yaml-custom-tag", "namespace", Raw("!Ref vibearena"), "not supported"),
    V("yaml-int-tag-text", "api.replicas", Raw("!!int abc"), "not supported"),
    V("yaml-null-tag", "namespace", Raw("!!null vibearena-dev"), "not supported"),
    V("yaml-binary-tag", "namespace", Raw("!!binary aGVsbG8="), "not supported"),
    V("yaml-tag-credentials", "argocd.repo_url", Raw("!url https://x:ghp_tagsecret@github.com/a/b"), "not supported",
      secret="ghp_tagsecret"),
    # Strings: full match, DNS limits, no IP as the public host.
    V("dns-trailing-newline", "namespace", "vibearena-dev\n", "DNS label"),
    V("dns-uppercase", "namespace", "Vibearena-Dev", "DNS label"),
    V("dns-label-64", "namespace", "a" * 64, "DNS label"),
    V("domain-ip", "domain", Raw("192.168.1.10"), "not an IP address"),
    V("domain-ipv6", "domain", "::1", "not an IP address"),
    V("domain-single-label", "domain", "localhost", "with a dot"),
    V("domain-label-64", "domain", "a" * 64 + ".example.com", "each at most 63"),
    V("domain-254", "domain", ".".join(["a" * 50] * 5) + ".com", "253 in all"),
    V("domain-trailing-dot", "domain", "vibearena.example.com.", "DNS name"),
    V("domain-wildcard", "domain", "*.example.com", "DNS name"),
    V("domain-unicode", "domain", "bücher.example", "DNS name"),
    V("domain-numeric-tld", "domain", "app.123", "top-level domain"),
    V("domain-newline", "domain", "vibearena.localhost\n", "DNS name"),
    V("part-of-too-long", "part_of", "a" * 33, "at most 32"),
    V("storage-class-underscore", "postgres.storage.class_name", "fast_ssd", "DNS name"),
    V("storage-class-empty", "redis.storage.class_name", "", "DNS name"),
    V("ingress-class-empty", "edge.ingress_class", "", "DNS label"),
    V("tls-secret-underscore", "edge.tls.secret_name", "tls_secret", "DNS label"),
    V("metrics-service-underscore", "monitoring.ingress_metrics_service", "nginx_metrics.svc", "DNS name"),
    V("dev-volume-upper", "api.dev_source_volume", "Source", "DNS label"),
    V("settings-module-path", "api.settings_module", "config/settings/dev", "Python module"),
    V("superuser-space", "api.superuser_username", "admin user", "Django username"),
    V("postgres-db-upper", "postgres.database", "Vibearena", "SQL identifier"),
    V("postgres-user-64", "postgres.user", "u" * 64, "SQL identifier"),
    V("heartbeat-task-colon", "monitoring.beat_heartbeat_task", "core.tasks:beat", "dotted task name"),
    # Labels.
    V("labels-empty-selector", "edge.controller_pod_labels", {}, "at least one label"),
    V("labels-empty-dns", "network.dns_pod_labels", {}, "at least one label"),
    V("labels-value-space", "network.dns_pod_labels", {"k8s-app": "kube dns"}, "label value",
      blame="network.dns_pod_labels.k8s-app"),
    V("labels-key-dash", "network.dns_pod_labels", {"-app": "dns"}, "label key", blame="network.dns_pod_labels.-app"),
    V("labels-key-prefix", "monitoring.alertmanager.pod_labels", {"Bad_Prefix/app": "x"}, "prefix",
      blame="monitoring.alertmanager.pod_labels.Bad_Prefix/app"),
    V("labels-value-64", "monitoring.cert_manager_pod_labels", {"app": "x" * 64}, "label value",
      blame="monitoring.cert_manager_pod_labels.app"),
    V("labels-value-number", "edge.controller_pod_labels", {"app": Raw("1")}, "put it in quotes",
      blame="edge.controller_pod_labels.app"),
    V("labels-value-newline", "edge.controller_pod_labels", {"app": "nginx\n"}, "label value",
      blame="edge.controller_pod_labels.app"),
    V("operator-empty-labels", "monitoring.operator_labels", {}, "mode 'operator'",
      extra=(("monitoring.mode", "operator"),)),
    V("operator-empty-dashboard-labels", "monitoring.operator_dashboard_labels", {}, "mode 'operator'",
      extra=(("monitoring.mode", "operator"),)),
    V("operator-empty-prometheus-labels", "monitoring.operator_prometheus_pod_labels", {}, "at least one label"),
    # Images (distribution reference grammar).
    V("image-upper-path", "api.image.repository", "ghcr.io/VibeArena/api", "image repository"),
    V("image-tag-in-repo", "api.image.repository", "ghcr.io/vibearena/api:1.0", "put it in `tag`"),
    V("image-digest-in-repo", "api.image.repository", f"ghcr.io/vibearena/api@{DIGEST}", "put it in `tag`"),
    V("image-empty-repo", "backups.image.repository", "", "image repository"),
    V("image-double-slash", "monitoring.prometheus_image.repository", "quay.io//prometheus", "image repository"),
    V("image-bad-port", "monitoring.grafana_image.repository", "registry:99x/grafana", "image repository"),
    V("image-short-digest", "api.image.tag", "sha256:abc", "image tag"),
    V("image-upper-digest", "api.image.tag", "sha256:" + "AB" * 32, "image tag"),
    V("image-tag-dash", "redis.image.tag", "-9", "image tag"),
    V("image-tag-129", "postgres.exporter_image.tag", "v" * 129, "image tag"),
    V("image-tag-newline", "redis.exporter_image.tag", "v1\n", "image tag"),
    V("image-tag-empty", "api.image.tag", "", "image tag"),
    V("image-tag-missing", "api.image", {"repository": "vibearena/api"}, "is required", blame="api.image.tag"),
    V("image-tag-missing-other", "monitoring.grafana_image", {"repository": "grafana/grafana"}, "is required",
      blame="monitoring.grafana_image.tag"),
    # Celery queues and worker groups.
    V("queue-comma", "worker.groups[0].queues", ["a,b"], "no commas", blame="worker.groups[0].queues[0]"),
    V("queue-space", "worker.groups[0].queues", ["high priority"], "no commas", blame="worker.groups[0].queues[0]"),
    V("queue-empty-name", "worker.groups[0].queues", ["celery", ""], "queue name", blame="worker.groups[0].queues[1]"),
    V("queue-none", "worker.groups[0].queues", [], "at least one queue"),
    V("queue-two-groups", "worker.groups[1]", {"name": "other", "queues": ["celery"]}, "belongs to one group",
      blame="worker.groups[1].queues"),
    V("worker-group-dup", "worker.groups[1]", {"name": "default", "queues": ["other"]}, "unique", blame="worker"),
    V("worker-group-none", "worker.groups", [], "at least one worker group"),
    V("worker-group-long", "worker.groups[0].name", "w" * 57, "at most 56"),
    # E-mail.
    V("email-no-dot", "edge.tls.acme_email", "ops@localhost", "e-mail"),
    V("email-newline", "edge.tls.acme_email", "ops@example.com\n", "e-mail"),
    V("email-two-at", "api.superuser_email", "a@b@example.com", "e-mail"),
    V("email-plain", "api.superuser_email", "admin", "e-mail"),
    V("email-ip", "api.superuser_email", "admin@10.0.0.1", "e-mail"),
    # Quantities and derived minimums.
    V("memory-millibytes", "api.resources.memory", "192m", "did you mean 192Mi"),
    V("quantity-exponent", "api.resources.memory_limit", "1e400000", "exponent"),
    V("quantity-too-big", "postgres.storage.size", "9Ei", "2^63-1"),
    V("quantity-decimals", "api.resources.cpu", "0.0001", "3 decimal places"),
    V("quantity-garbage", "beat.resources.memory", "1Ki1", "not a Kubernetes quantity"),
    V("quantity-space", "beat.resources.cpu", "100 m", "not a Kubernetes quantity"),
    V("quantity-tiny-memory", "backups.resources.memory", "1Ki", "at least 1Mi"),
    V("cpu-limit-below", "api.resources.cpu_limit", "50m", "below the request", blame="api.resources.cpu_limit"),
    V("memory-limit-below", "api.resources.memory_limit", "128Mi", "below the request"),
    V("postgres-memory-floor", "postgres.resources", {"cpu": "100m", "memory": "64Mi", "cpu_limit": "1",
                                                       "memory_limit": "64Mi"}, "Postgres needs",
      blame="postgres.resources.memory_limit"),
    V("postgres-memory-connections", "postgres.max_connections", 500, "max_connections 500",
      blame="postgres.resources.memory_limit"),
    V("redis-maxmemory-small", "redis.resources", {"cpu": "50m", "memory": "16Mi", "cpu_limit": "1",
                                                   "memory_limit": "16Mi"}, "maxmemory",
      blame="redis.resources.memory_limit"),
    V("redis-maxmemory-percent", "redis.maxmemory_percent", 10, "maxmemory", blame="redis.resources.memory_limit",
      extra=(("redis.resources", {"cpu": "50m", "memory": "64Mi", "cpu_limit": "1", "memory_limit": "100Mi"}),)),
    V("prometheus-storage-small", "monitoring.storage.size", "50Mi", "at least 100Mi"),
    # Whole numbers.
    V("int32-replicas", "api.replicas", 2**31, "at most 2147483647"),
    V("int32-hpa-max", "api.autoscaling.max_replicas", 99_999_999_999, "at most 2147483647"),
    V("negative-replicas", "api.replicas", -1, ">= 0"),
    V("hpa-min-over-max", "api.autoscaling", {"enabled": True, "min_replicas": 5, "max_replicas": 2}, "exceeds",
      blame="api.autoscaling.min_replicas"),
    V("int-float", "api.replicas", Raw("1.0"), "whole number"),
    V("int-text", "api.replicas", "2", "whole number"),
    V("int-exponent-text", "edge.hsts_max_age_seconds", Raw("1e10"), "whole number"),
    V("port-zero", "monitoring.ingress_metrics_port", 0, "between 1 and 65535"),
    V("port-big", "monitoring.alertmanager.port", 70000, "between 1 and 65535"),
    V("burst-big", "edge.rate_limit_burst", 10001, "between 0 and 10000"),
    # Numbers with a fraction.
    V("ratio-one", "monitoring.api_error_ratio", 1, "between 0 and 1"),
    V("ratio-negative", "monitoring.database_volume_ratio", -0.5, "between 0 and 1"),
    V("ratio-text", "monitoring.task_failure_ratio", "0.1", "must be a number"),
    # Booleans.
    V("bool-text", "edge.hsts", "true", "true or false"),
    V("bool-number", "argocd.enabled", 1, "true or false"),
    # Choices.
    V("choice-case", "edge.controller", "Traefik", "did you mean 'traefik'"),
    V("choice-typo", "object_store.mode", "externel", "did you mean 'external'"),
    V("choice-space", "edge.tls.mode", "local-ca ", "must be one of"),
    V("choice-list", "object_store.server", ["minio"], "must be one of"),
    V("choice-with-credentials", "object_store.mode", "https://admin:t0psecretvalue@s3.example.com",
      "must be one of", secret="t0psecretvalue"),
    # Cron schedules (robfig/cron ParseStandard, as Kubernetes validates them).
    V("cron-minute-60", "backups.postgres_schedule", "60 2 * * *", "minute"),
    V("cron-hour-24", "backups.postgres_schedule", "15 24 * * *", "hour"),
    V("cron-dom-0", "backups.mirror_schedule", "15 2 0 * *", "day of month"),
    V("cron-month-13", "backups.mirror_schedule", "15 2 * 13 *", "month"),
    V("cron-dow-7", "backups.drill_schedule", "15 2 * * 7", "day of week"),
    V("cron-four-fields", "backups.postgres_schedule", "15 2 * *", "5-field"),
    V("cron-six-fields", "backups.postgres_schedule", "0 15 2 * * *", "5-field"),
    V("cron-step-zero", "backups.postgres_schedule", "*/0 * * * *", "step"),
    V("cron-backwards", "backups.postgres_schedule", "50-10 * * * *", "low to high"),
    V("cron-never", "backups.postgres_schedule", "15 2 30 2 *", "never runs"),
    V("cron-reboot", "backups.drill_schedule", "@reboot", "5-field"),
    V("cron-every", "backups.drill_schedule", "@every 1h", "5-field"),
    V("cron-tz", "backups.postgres_schedule", "CRON_TZ=Europe/Berlin 15 2 * * *", "time_zone"),
    V("cron-bad-name", "backups.postgres_schedule", "15 2 * FOO *", "not a number or a name"),
    V("cron-newline", "backups.postgres_schedule", "15 2 * * *\n", "5-field"),
    V("cron-number", "backups.postgres_schedule", Raw("5"), "put it in quotes"),
    # Time zones.
    V("tz-local", "backups.time_zone", "Local", "Kubernetes refuses Local"),
    V("tz-unknown", "backups.time_zone", "Mars/Olympus_Mons", "IANA time zone"),
    V("tz-case", "backups.time_zone", "europe/berlin", "IANA time zone"),
    V("tz-path", "backups.time_zone", "../../etc/passwd", "IANA time zone"),
    V("tz-newline", "backups.time_zone", "Etc/UTC\n", "IANA time zone"),
    V("tz-empty", "backups.time_zone", "", "IANA time zone"),
    # Durations.
    V("duration-zero", "monitoring.retention", "0d", "at least 1h"),
    V("duration-words", "monitoring.retention", "15 days", "duration"),
    V("duration-overflow", "monitoring.retention", "99999999999y", "292 years"),
    V("duration-order", "monitoring.retention", "30m1h", "duration"),
    V("loki-retention-short", "monitoring.loki.retention", "12h", "at least 1d"),
    V("scrape-zero", "monitoring.scrape_interval", "0s", "at least 1s"),
    V("scrape-hours", "monitoring.scrape_interval", "1h", "one unit of s, m"),
    V("scrape-compound", "monitoring.scrape_interval", "1m30s", "one unit"),
    V("heartbeat-short", "monitoring.beat_heartbeat_max_age", "1m", "at least 2m"),
    V("refresh-zero", "secrets.refresh_interval", "0h", "at least 1s"),
    V("refresh-days", "secrets.refresh_interval", "1d", "one unit of s, m, h"),
    # CIDRs (ipaddress, strict).
    V("cidr-no-prefix", "network.dns_cidrs", ["169.254.20.10"], "canonical", blame="network.dns_cidrs[0]"),
    V("cidr-host-bits", "network.dns_cidrs", ["10.0.0.1/8"], "host bits", blame="network.dns_cidrs[0]"),
    V("cidr-prefix-33", "network.dns_cidrs", ["10.0.0.0/33"], "not a CIDR", blame="network.dns_cidrs[0]"),
    V("cidr-v6-host-bits", "network.dns_cidrs", ["10.0.0.0/8", "fd00::/7"], "host bits",
      blame="network.dns_cidrs[1]"),
    V("cidr-leading-zero", "object_store.external_cidr", "0.0.0.0/00", "canonical"),
    V("cidr-word", "backups.offsite.cidr", "any", "not a CIDR"),
    V("cidr-loki", "monitoring.loki.api_server_cidr", "172.18.0.2", "canonical"),
    # URLs: parsed, and never with credentials (they would land in dist/).
    V("url-credentials", "object_store.external_endpoint", "https://AKIAEXAMPLE:s3cr3tvalue@s3.example.com",
      "credentials", extra=(("object_store.mode", "external"),), secret="s3cr3tvalue"),
    V("url-user-only", "backups.offsite.endpoint", "https://AKIAUSERONLY@s3.example.com", "credentials",
      secret="AKIAUSERONLY"),
    V("url-scheme", "object_store.external_endpoint", "ftp://s3.example.com", "https or http",
      extra=(("object_store.mode", "external"),)),
    V("url-path", "object_store.external_endpoint", "https://s3.example.com/bucket", "must not have a path",
      extra=(("object_store.mode", "external"),)),
    V("url-bad-port", "backups.offsite.endpoint", "https://s3.example.com:99999", "port"),
    V("url-space", "backups.offsite.endpoint", "https://s3 .example.com", "without spaces"),
    V("url-no-scheme", "backups.offsite.endpoint", "s3.example.com", "https or http"),
    V("url-query", "backups.offsite.endpoint", "https://s3.example.com?x=1", "query"),
    V("git-token", "argocd.repo_url", "https://ghp_tokenvalue123@github.com/vibearena/infra.git", "token",
      secret="ghp_tokenvalue123"),
    V("git-token-password", "argocd.repo_url", "https://x-access-token:ghs_secretvalue@github.com/a/b.git",
      "token", secret="ghs_secretvalue"),
    V("git-ssh-password", "argocd.repo_url", "ssh://git:hunter2value@github.com/a/b.git", "password",
      secret="hunter2value"),
    V("git-no-scheme", "argocd.repo_url", "github.com/vibearena/infra", "git URL"),
    V("git-http", "argocd.repo_url", "http://github.com/vibearena/infra.git", "git URL"),
    V("argo-server-http", "argocd.destination_server", "http://kubernetes.default.svc", "https URL"),
    V("argo-server-creds", "argocd.destination_server", "https://admin:pw0rdvalue@k8s.example.com",
      "credentials", secret="pw0rdvalue"),
    V("git-revision-space", "argocd.target_revision", "main branch", "git branch"),
    V("git-revision-dots", "argocd.target_revision", "../main", "git branch"),
    # Other names.
    V("bucket-upper", "object_store.bucket", "My_Bucket", "S3 bucket"),
    V("bucket-ip", "backups.bucket", "192.168.1.1", "S3 bucket"),
    V("bucket-short", "backups.offsite.bucket", "ab", "S3 bucket"),
    V("region-space", "object_store.region", "US East", "region"),
    V("rate-hour", "edge.rate_limit", "10r/h", "10r/s"),
    V("rate-huge", "edge.rate_limit", "99999999r/s", "10r/s"),
    V("body-zero", "edge.body_size", "0", "size"),
    V("body-huge", "edge.body_size", "1000000000g", "size"),
    V("section-upper", "edge.gateway.section_name", "HTTPS", "DNS name"),
    V("secret-store-empty", "secrets.store", "", "DNS name"),
    V("secret-key-space", "secrets.remote_key", "vibearena prod", "letters, digits"),
    # Unknown keys.
    V("unknown-key-top", "namespase", "x", "did you mean 'namespace'"),
    V("unknown-key-unrelated", "monitoring.zzqqxx", "x", "unknown key (allowed: alertmanager, api_error_ratio"),
    V("unknown-key-deep", "worker.groups[0].concurency", 2, "did you mean 'concurrency'"),
    # Very long values: refused quickly (no pathological pattern matching).
    V("long-domain", "domain", "a" * 500_000, "DNS name"),
    V("long-repository", "api.image.repository", "a" * 500_000, "image repository"),
    V("long-repo-url", "argocd.repo_url", "git@github.com:" + "a/" * 250_000, "at most 2048"),
    V("long-cron", "backups.postgres_schedule", "1," * 250_000 + "1 * * * *", "at most 200"),
    V("long-labels", "network.dns_pod_labels", {"k8s-app": "x" * 500_000}, "label value",
      blame="network.dns_pod_labels.k8s-app"),
    # Cross-field rules.
    V("loki-without-cidr", "monitoring.loki.enabled", True, "is required when enabled",
      blame="monitoring.loki.api_server_cidr"),
    V("loki-not-bundled", "monitoring.loki", {"enabled": True, "api_server_cidr": "10.0.0.1/32"}, "mode 'bundled'",
      blame="monitoring.loki.enabled", extra=(("monitoring.mode", "operator"),)),
    V("external-store-no-endpoint", "object_store.mode", "external", "is required when mode is 'external'",
      blame="object_store.external_endpoint"),
    V("acme-no-email", "edge.tls.mode", "acme", "is required", blame="edge.tls.acme_email"),
    V("external-secrets-no-store", "secrets.provider", "external-secrets", "is required", blame="secrets.store"),
    V("grace-below-drain", "api.termination_grace_seconds", 30, "drain_seconds 10"),
    V("drain-above-grace", "api.drain_seconds", 60, "must be at least 90", blame="api.termination_grace_seconds"),
    V("dns-cidrs-repeated", "network.dns_cidrs", ["10.0.0.0/8", "10.0.0.0/8"], "more than once"),
]


# --- YAML-level and file-level cases -----------------------------------------------

def text_case(case_id: str, text: str, key: str, words: str) -> Case:
    return Case(case_id, key, words, text=text)


BASE_TEXT = with_values()
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8))
YAML_CASES = [
    text_case("dup-top", BASE_TEXT + "namespace: other\n", "namespace", "duplicate key"),
    text_case("dup-nested", BASE_TEXT.replace("api:\n", "api:\n  replicas: 3\n", 1), "api.replicas", "duplicate key"),
    text_case("dup-quoted", BASE_TEXT + '"domain": other.example.com\n', "domain", "duplicate key"),
    text_case("multi-doc", BASE_TEXT + "---\nnamespace: second\n", "", "more than one YAML document"),
    text_case("billion-laughs", BASE_TEXT + LAUGHS, "d", "expands to more than"),
    text_case("deep-nesting", BASE_TEXT + "deep: " + "[" * 200 + "]" * 200 + "\n", "deep" + "[0]" * 19, "levels deep"),
    text_case("very-deep-nesting", BASE_TEXT + "deep: " + "{a: " * 50_000 + "}" * 50_000 + "\n", "deep" + ".a" * 19,
              "levels deep"),
    text_case("key-int", BASE_TEXT + "1: x\n", "1", "a key must be text"),
    text_case("key-bool", BASE_TEXT + "yes: x\n", "yes", "a key must be text"),
    text_case("key-null", BASE_TEXT + "~: x\n", "~", "a key must be text"),
    text_case("key-list", BASE_TEXT + "? [a, b]\n: x\n", "", "a key must be text"),
    text_case("key-cyrillic", BASE_TEXT.replace("namespace:", "n\u0430mespace:", 1), "n\\u0430mespace",
              "CYRILLIC SMALL LETTER A"),
    text_case("key-zero-width", BASE_TEXT.replace("domain:", "dom\u200bain:", 1), "dom\\u200bain",
              "ZERO WIDTH SPACE"),
    text_case("key-nbsp", BASE_TEXT.replace("domain:", '"domain\u00a0":', 1), "domain\\xa0", "NO-BREAK SPACE"),
    text_case("key-trailing-space", BASE_TEXT.replace("domain:", '"domain ":', 1), "domain ", "spaces"),
    text_case("key-empty", BASE_TEXT + '"": x\n', "''", "is empty"),
    text_case("alias-undefined", BASE_TEXT + "extra: *nothing\n", "extra", "refers to no anchor"),
    text_case("merge-scalar", BASE_TEXT.replace("api:\n", "api:\n  <<: 1\n", 1), "api", "merge key"),
    text_case("tabs", BASE_TEXT.replace("  replicas", "\treplicas", 1), "", "malformed YAML"),
    text_case("unclosed-flow", "namespace: [vibearena\n", "", "malformed YAML"),
    text_case("colon-in-value", BASE_TEXT.replace("domain: ", "domain: a: ", 1), "", "malformed YAML"),
    text_case("nul-byte", BASE_TEXT + "x: a\x00b\n", "", "malformed YAML"),
    text_case("top-list", "- namespace: x\n", "", "top level must be a mapping"),
    text_case("top-scalar", "vibearena\n", "", "top level must be a mapping"),
    text_case("empty", "", "", "the file is empty"),
    text_case("whitespace", "  \n\n\t\n", "", "the file is empty"),
    text_case("comments-only", "# nothing here\n# at all\n", "", "the file is empty"),
    text_case("document-marker-only", "---\n", "", "the file is empty"),
    text_case("null-document", "~\n", "", "the file is empty"),
]


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _directory(path: Path) -> None:
    path.mkdir()


def _loop(path: Path) -> None:
    path.symlink_to(path.name)


def _dangling(path: Path) -> None:
    path.symlink_to("missing-target.yaml")


def _device(path: Path) -> None:
    path.symlink_to("/dev/zero")  # reading it would never end


def _too_large(path: Path) -> None:
    path.write_text(BASE_TEXT + "#" * (1 << 20) + "\n")


def _latin1(path: Path) -> None:
    path.write_bytes(BASE_TEXT.replace("vibearena.localhost", "vibeärena.localhost").encode("latin-1"))


def _utf16(path: Path) -> None:
    path.write_bytes(BASE_TEXT.encode("utf-16"))


def base_case(case_id: str, base_text: str, key: str, words: str) -> Case:
    """A mistake in a base profile: the message names the base file."""
    return Case(case_id, key, words, text="extends: _base\n" + BASE_TEXT, base=base_text, blame_base=True)


BASE_FILE_CASES = [
    base_case("base-duplicate-key", "backups:\n  enabled: true\n  enabled: false\n", "backups.enabled",
              "duplicate key"),
    base_case("base-bad-zone", "backups:\n  time_zone: Local\n", "backups.time_zone", "Kubernetes refuses Local"),
    base_case("base-yaml11", "monitoring:\n  retention: 1:30\n", "monitoring.retention", "base 60"),
    base_case("base-empty", "", "", "the file is empty"),
    base_case("base-multi-doc", "backups: {}\n---\nbackups: {}\n", "", "more than one YAML document"),
]

FILE_CASES = [
    Case("file-fifo", "", "named pipe", prepare=_fifo),
    Case("file-directory", "", "a directory", prepare=_directory),
    Case("file-symlink-loop", "", "symbolic link loop", prepare=_loop),
    Case("file-dangling-symlink", "", "missing file", prepare=_dangling),
    Case("file-device", "", "a device", prepare=_device),
    Case("file-too-large", "", "at most 1048576", prepare=_too_large),
    Case("file-latin1", "", "not UTF-8", prepare=_latin1),
    Case("file-utf16", "", "not UTF-8", prepare=_utf16),
]


# --- cases generated for every key of a kind ----------------------------------------

def generated_cases() -> list[Case]:
    cases: list[Case] = []
    bad_quantities = [("unit", "12Q", "not a Kubernetes quantity"), ("exponent", "1e99", "exponent"),
                      ("negative", "-1", ""), ("zero", "0", ""), ("decimals", "0.0001", "3 decimal places"),
                      ("unquoted", Raw("0.5"), "put it in quotes"), ("newline", "1\n", "not a Kubernetes quantity")]
    for path, hint, default in LEAVES:
        if hint is not Resources:
            continue
        for name in ("cpu", "memory", "cpu_limit", "memory_limit"):
            key = dotted((*path, name))
            extra = [("millibytes", "512m", "whole bytes")] if name.startswith("memory") else []
            for label, value, words in bad_quantities + extra:
                # The whole mapping is written, so the other three fields are valid.
                resources = {**plain(default), name: value}
                cases.append(Case(f"quantity-{key}-{label}", key, words, text=with_values((path, resources))))
    for path, _hint, default in of_kind(lambda h: h is str):
        if isinstance(default, str) and default:
            key = dotted(path)
            cases.append(Case(f"newline-{key}", key, "", text=with_values((path, default + "\n"))))
            cases.append(Case(f"number-{key}", key, "put it in quotes", text=with_values((path, Raw("1.10")))))
    for path, _hint, _default in of_kind(lambda h: h is int):
        key = dotted(path)
        cases.append(Case(f"int32-{key}", key, "", text=with_values((path, 2**31))))
        cases.append(Case(f"fraction-{key}", key, "whole number", text=with_values((path, Raw("1.5")))))
        cases.append(Case(f"octal-{key}", key, "octal", text=with_values((path, Raw("017")))))
    for path, _hint, _default in of_kind(lambda h: h is bool):
        key = dotted(path)
        cases.append(Case(f"bool-yes-{key}", key, "boolean", text=with_values((path, Raw("yes")))))
        cases.append(Case(f"bool-text-{key}", key, "true or false", text=with_values((path, "false"))))
    for path, _hint, _default in of_kind(lambda h: h is float):
        key = dotted(path)
        cases.append(Case(f"nan-{key}", key, "finite", text=with_values((path, Raw(".nan")))))
    for path, _hint, _default in of_kind(lambda h: get_origin(h) is Literal):
        key = dotted(path)
        cases.append(Case(f"choice-{key}", key, "must be one of", text=with_values((path, "WRONG"))))
    for path, _hint, _default in of_kind(is_mapping):
        key = dotted(path)
        cases.append(Case(f"label-{key}", f"{key}.bad key", "label key", text=with_values((path, {"bad key": "x"}))))
    for path, _hint, _default in LEAVES:
        if isinstance(path[-1], str) and len(path[-1]) > 3:
            name = path[-1]
            middle = len(name) // 2
            misspelt = name[:middle] + name[middle + 1:]  # one letter dropped
            key = dotted((*path[:-1], misspelt))
            cases.append(Case(f"typo-{key}", key, f"did you mean {name!r}",
                              text=with_values(((*path[:-1], misspelt), "x"))))
    return cases


CASES = HAND_WRITTEN + YAML_CASES + FILE_CASES + BASE_FILE_CASES + generated_cases()


def test_corpus_is_large_and_ids_unique():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    assert len(HAND_WRITTEN) + len(YAML_CASES) + len(FILE_CASES) + len(BASE_FILE_CASES) >= 120
    assert len(CASES) >= 400


# --- running a case ---------------------------------------------------------------

class HangError(Exception):
    pass


@contextlib.contextmanager
def time_bound(seconds: int) -> Iterator[None]:
    def expired(_signum: int, _frame: object) -> None:
        raise HangError(f"no answer within {seconds}s")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every entry under `directory`: files with their bytes, directories as None."""
    return {str(p.relative_to(directory)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(directory.rglob("*"))}


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Path, Path]:
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    out = tmp_path / "dist"
    (out / BASE_ENV).mkdir(parents=True)
    (out / BASE_ENV / "00-config.yaml").write_text("# the previous render\n")
    return env_dir, out


def run_in_process(*args: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), time_bound(SECONDS_PER_CASE):
        code = main.main(list(args))
    return code, stdout.getvalue(), stderr.getvalue()


def assert_refused(code: int, stdout: str, stderr: str, *, file: Path | str, key: str, words: str,
                   secret: str = "") -> None:
    lines = stderr.splitlines()
    assert code == 2, f"exit {code}, stderr: {stderr}"
    assert len(lines) == 1, f"expected one line, got {len(lines)}: {stderr}"
    assert stdout == ""
    line = lines[0]
    assert line.startswith(f"error: {file}: "), f"file {file} not named first: {line}"
    if key:
        assert line.startswith(f"error: {file}: {key}: "), f"key {key!r} not named: {line}"
    assert words in line, f"{words!r} not in: {line}"
    assert "Traceback" not in stderr
    for python_word in ("NoneType", "MappingProxyType", "'str'", "<class", " str ", " int ", "tuple"):
        assert python_word not in line, f"Python type name {python_word!r} in: {line}"
    assert len(line) < 600, f"message too long ({len(line)})"
    if secret:
        assert secret not in stderr + stdout, "a credential was echoed"


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_refused_in_one_line(workspace, case: Case):
    env_dir, out = workspace
    profile = env_dir / f"{BASE_ENV}.yaml"
    if case.text is not None:
        profile.write_text(case.text, encoding="utf-8")
    else:
        assert case.prepare is not None
        case.prepare(profile)
    if case.base is not None:
        (env_dir / "_base.yaml").write_text(case.base, encoding="utf-8")
    before = snapshot(out)
    code, stdout, stderr = run_in_process("--env-dir", str(env_dir), "--out", str(out), "--env", BASE_ENV)
    blamed = env_dir / "_base.yaml" if case.blame_base else profile
    assert_refused(code, stdout, stderr, file=blamed, key=case.key, words=case.words, secret=case.secret)
    assert snapshot(out) == before, "the output directory changed after a refused run"


def test_base_profile_of_the_corpus_loads():
    """Control: without its one change, each case's profile is valid, so the
    refusal above is caused by the change alone."""
    from charts.config import ProfileError, load_profile

    env_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"bad-input-control-{os.getpid()}"
    env_dir.mkdir(exist_ok=True)
    try:
        (env_dir / f"{BASE_ENV}.yaml").write_text(BASE_TEXT)
        try:
            load_profile(env_dir, BASE_ENV)
        except ProfileError as err:
            pytest.fail(f"the corpus base profile does not load: {err}")
    finally:
        shutil.rmtree(env_dir)


@pytest.mark.parametrize(("path", "default"), [(p, d) for p, _h, d in of_kind(lambda h: h is str)
                                               if isinstance(d, str) and d],
                         ids=[dotted(p) for p, _h, d in of_kind(lambda h: h is str) if isinstance(d, str) and d])
def test_every_text_default_is_accepted_when_written_out(tmp_path, path, default):
    """Control for the newline cases: the same value without the newline loads."""
    from charts.config import load_profile

    (tmp_path / f"{BASE_ENV}.yaml").write_text(with_values((path, default)))
    load_profile(tmp_path, BASE_ENV)


# --- through the real command line ----------------------------------------------------

def run_main(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, check=False, **kwargs)


@pytest.mark.parametrize("case", [c for c in CASES if c.id in ("file-fifo", "billion-laughs", "yaml11-float-tag",
                                                                "git-token", "very-deep-nesting")],
                         ids=lambda c: c.id)
def test_bad_input_through_the_command_line(workspace, case: Case):
    env_dir, out = workspace
    profile = env_dir / f"{BASE_ENV}.yaml"
    if case.text is not None:
        profile.write_text(case.text)
    else:
        assert case.prepare is not None
        case.prepare(profile)
    before = snapshot(out)
    result = run_main("--env-dir", str(env_dir), "--out", str(out), "--env", BASE_ENV)
    assert_refused(result.returncode, result.stdout, result.stderr, file=profile, key=case.key, words=case.words,
                   secret=case.secret)
    assert snapshot(out) == before


def _copy_env(env_dir: Path) -> None:
    env_dir.mkdir(parents=True, exist_ok=True)
    for profile in ENV_DIR.glob("*.yaml"):
        shutil.copy(profile, env_dir / profile.name)


@pytest.mark.parametrize(("args", "words"), [
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["--env"], "expected one argument"),
    (["--out"], "expected one argument"),
])
def test_bad_arguments_give_one_line(workspace, args, words):
    env_dir, out = workspace
    before = snapshot(out)
    code, stdout, stderr = run_in_process("--env-dir", str(env_dir), "--out", str(out), *args)
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1 and stderr.startswith("error: arguments: ") and words in stderr, stderr
    assert snapshot(out) == before


def test_bad_argument_through_the_command_line_is_one_line():
    result = run_main("--frobnicate")
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: arguments: unrecognized arguments: --frobnicate"
                                          " (see main.py --help)"]


def test_env_dir_that_is_a_file(tmp_path):
    not_a_dir = tmp_path / "env"
    not_a_dir.write_text("namespace: x\n")
    code, _stdout, stderr = run_in_process("--env-dir", str(not_a_dir), "--out", str(tmp_path / "dist"))
    assert code == 2 and stderr == f"error: {not_a_dir}: --env-dir is not a directory\n"
    assert not (tmp_path / "dist").exists()


@pytest.mark.parametrize(("make_out", "words"), [
    (lambda tmp: tmp / "file.txt", "is a file, not a directory"),
    (lambda tmp: tmp / "file.txt" / "dist", "which is a file"),
    (lambda tmp: Path("/"), "file system root"),
    (lambda tmp: tmp / "loop", "cannot be resolved"),
])
def test_unusable_output_dir(tmp_path, make_out, words):
    env_dir = tmp_path / "env"
    _copy_env(env_dir)
    (tmp_path / "file.txt").write_text("keep me\n")
    (tmp_path / "loop").symlink_to("loop")
    out = make_out(tmp_path)
    before = snapshot(tmp_path)
    code, stdout, stderr = run_in_process("--env-dir", str(env_dir), "--out", str(out), "--env", "dev")
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1 and stderr.startswith(f"error: {out}: --out ") and words in stderr, stderr
    assert snapshot(tmp_path) == before


def test_output_dir_that_would_overwrite_the_profiles(tmp_path):
    """--out X with a profile directory X/dev: writing dist X/dev would replace the profiles."""
    env_dir = tmp_path / "dev"
    _copy_env(env_dir)
    before = snapshot(tmp_path)
    code, _stdout, stderr = run_in_process("--env-dir", str(env_dir), "--out", str(tmp_path), "--env", "dev")
    assert code == 2 and "would overwrite the profile directory" in stderr and stderr.count("\n") == 1, stderr
    assert snapshot(tmp_path) == before


def test_read_only_output_dir(tmp_path):
    """A directory nothing can be created in. Root ignores permission bits, so
    as root the directory is made immutable instead (chattr +i)."""
    env_dir = tmp_path / "env"
    _copy_env(env_dir)
    out = tmp_path / "dist"
    out.mkdir()
    (out / "keep.txt").write_text("previous\n")
    before = snapshot(out)
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(out)], capture_output=True, check=False).returncode != 0:
            pytest.skip("running as root on a file system without chattr +i")
    else:
        out.chmod(0o555)
    try:
        code, stdout, stderr = run_in_process("--env-dir", str(env_dir), "--out", str(out), "--env", "dev")
    finally:
        subprocess.run(["chattr", "-i", str(out)], capture_output=True, check=False)
        out.chmod(0o755)
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1 and stderr.startswith(f"error: {out}: --out is not writable ("), stderr
    assert snapshot(out) == before


def test_env_given_twice_renders_once(tmp_path):
    env_dir = tmp_path / "env"
    _copy_env(env_dir)
    out = tmp_path / "dist"
    code, stdout, stderr = run_in_process("--env-dir", str(env_dir), "--out", str(out), "--env", "dev",
                                          "--env", "dev")
    assert code == 0, stderr
    assert stdout.count("rendered ") == 1 and stdout.startswith("rendered ") and "/dev" in stdout, stdout
    assert sorted(p.name for p in out.iterdir()) == ["dev"]
