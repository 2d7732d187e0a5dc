"""What would applying the new render do? Classify every change before it reaches a cluster.

    .venv/bin/python scripts/plan.py --env prod [--base origin/main] [--context CTX]
        [--ack 'StatefulSet/postgres: growing the volume per the runbook'] [--format text|markdown]

Compares the new render of an env with what is deployed: the committed
dist/<env> at a git ref (default), or a live cluster's objects
(`kubectl get -o yaml`, with --context). Every change falls in one class:

- rejected:     the API server refuses it (an immutable field); the plan prints the remedy
- data-at-risk: something that owns data goes away or shrinks, a bucket or backup target changes
- downtime:     Services lose their pods, replicas drop to 0, the only replica's probes or
                ports change, a Secret key still referenced is no longer provided
- routine:      everything else, summarised per object

Exit codes: 0 routine only (or no change), 3 a change above routine that is
not acknowledged, 2 bad input (env, acknowledgement, profile), 1 git, kubectl
or the render failed.

The engine (`plan`) is a pure function over two lists of manifests, so tests
craft before/after pairs; the CLI below only gathers them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]

REJECTED, DATA, DOWNTIME, ROUTINE = "rejected", "data-at-risk", "downtime", "routine"
RISKS = (REJECTED, DATA, DOWNTIME)
TITLES = {REJECTED: "Rejected by the API server", DATA: "Data at risk", DOWNTIME: "Downtime",
          ROUTINE: "Routine"}

# apps/v1 ValidateStatefulSetUpdate (kubernetes/kubernetes pkg/apis/apps/validation):
# "updates to statefulset spec for fields other than 'replicas', 'ordinals',
# 'template', 'updateStrategy', 'revisionHistoryLimit',
# 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden".
STATEFULSET_MUTABLE = frozenset({"replicas", "ordinals", "template", "updateStrategy", "revisionHistoryLimit",
                                 "persistentVolumeClaimRetentionPolicy", "minReadySeconds"})
# batch/v1 ValidateJobSpecUpdate: selector, completions and the pod template are immutable.
JOB_IMMUTABLE = ("selector", "completions", "template", "completionMode")
# core/v1 PVC update: the spec is immutable after creation except
# resources.requests (grow only) and volumeAttributesClassName.
PVC_MUTABLE = frozenset({"resources", "volumeAttributesClassName"})

Manifest = dict[str, Any]
Key = tuple[str, str, str, str]  # (API group, kind, namespace, name)


@dataclass(frozen=True)
class Finding:
    risk: str
    object: str       # Kind/name, as an acknowledgement names it
    namespace: str
    change: str       # one line: what changes
    remedy: tuple[str, ...] = ()   # shell lines ready to copy, or advice


@dataclass(frozen=True)
class Ack:
    object: str
    reason: str
    risk: str | None = None      # None: every class on this object
    source: str = "command line"

    def covers(self, finding: Finding) -> bool:
        return self.object == finding.object and self.risk in (None, finding.risk)


@dataclass
class Plan:
    findings: list[Finding]
    acks: Sequence[Ack] = ()
    before_label: str = "before"
    after_label: str = "after"
    env: str = ""
    notes: list[str] = field(default_factory=list)

    def ack_for(self, finding: Finding) -> Ack | None:
        if finding.risk == ROUTINE:
            return None
        return next((ack for ack in self.acks if ack.covers(finding)), None)

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.risk != ROUTINE and self.ack_for(f) is None]

    @property
    def unused_acks(self) -> list[Ack]:
        return [a for a in self.acks if not any(a.covers(f) for f in self.findings if f.risk != ROUTINE)]

    @property
    def exit_code(self) -> int:
        return 3 if self.blocking else 0


# --- object identity and structure ---------------------------------------------------------

def key_of(obj: Manifest) -> Key:
    api_version = str(obj.get("apiVersion", ""))
    group = api_version.split("/")[0] if "/" in api_version else ""
    meta = obj.get("metadata", {})
    return group, obj.get("kind", ""), meta.get("namespace", ""), meta.get("name", "")


def label(key: Key) -> str:
    return f"{key[1]}/{key[3]}"


def index(objects: Iterable[Manifest]) -> dict[Key, Manifest]:
    return {key_of(o): o for o in objects if o}


def pod_template(obj: Manifest) -> Manifest | None:
    spec = obj.get("spec", {})
    if obj.get("kind") == "CronJob":
        return spec.get("jobTemplate", {}).get("spec", {}).get("template")
    if obj.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
        return spec.get("template")
    return None


def containers(template: Manifest | None) -> list[Manifest]:
    spec = (template or {}).get("spec", {})
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$")
_FACTORS = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}


def quantity(value: object) -> float | None:
    match = _QUANTITY.match(str(value)) if value is not None else None
    return float(match.group(1)) * _FACTORS[match.group(2) or ""] if match else None


def same(a: object, b: object) -> bool:
    """Equal, counting "1" and 1, or "1Gi" and "1024Mi", as the same quantity."""
    if a == b:
        return True
    if isinstance(a, (str, int, float)) and isinstance(b, (str, int, float)) and not isinstance(a, bool):
        qa, qb = quantity(a), quantity(b)
        return qa is not None and qa == qb
    return False


def _named(items: object) -> bool:
    return isinstance(items, list) and bool(items) and all(isinstance(i, dict) and "name" in i for i in items)


def changes(old: object, new: object, path: str = "") -> Iterator[tuple[str, object, object]]:
    """Leaf differences as (path, old, new); lists of named items are matched by name."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in list(old) + [k for k in new if k not in old]:
            yield from changes(old.get(k), new.get(k), f"{path}.{k}" if path else str(k))
    elif _named(old) and _named(new):
        assert isinstance(old, list) and isinstance(new, list)
        olds, news = {i["name"]: i for i in old}, {i["name"]: i for i in new}
        for name in list(olds) + [n for n in news if n not in olds]:
            yield from changes(olds.get(name), news.get(name), f"{path}[{name}]")
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            yield from changes(a, b, f"{path}[{i}]")
    elif not same(old, new):
        yield path, old, new


def differs(old: object, new: object) -> bool:
    return next(changes(old, new), None) is not None


def project(live: object, desired: object) -> object:
    """The part of a live object that the desired manifest sets.

    A live object carries status, server defaults and fields other managers
    own; only what the render states can change on apply, so the rest is
    dropped before comparing. Named list items (containers, ports, env) are
    matched by name; live items the render no longer has are kept (apply
    removes them)."""
    if isinstance(live, dict) and isinstance(desired, dict):
        return {k: project(live[k], desired[k]) for k in desired if k in live}
    if _named(live) and _named(desired):
        assert isinstance(live, list) and isinstance(desired, list)
        wanted = {i["name"]: i for i in desired}
        return [project(i, wanted[i["name"]]) if i["name"] in wanted else i for i in live]
    if isinstance(live, list) and isinstance(desired, list) and len(live) == len(desired):
        return [project(a, b) for a, b in zip(live, desired, strict=True)]
    return live


def short(value: object, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- the checks ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Context:
    before: dict[Key, Manifest]
    after: dict[Key, Manifest]
    apply_command: str

    def finding(self, risk: str, key: Key, change: str, remedy: Sequence[str] = ()) -> Finding:
        return Finding(risk=risk, object=label(key), namespace=key[2], change=change, remedy=tuple(remedy))


def _replicas(obj: Manifest) -> int:
    value = obj.get("spec", {}).get("replicas", 1)
    return value if isinstance(value, int) else 1


def _claim_names(sts: Manifest, template: str) -> list[str]:
    name = sts["metadata"]["name"]
    return [f"{template}-{name}-{i}" for i in range(max(_replicas(sts), 1))]


def _storage(claim_spec: Manifest) -> object:
    return claim_spec.get("resources", {}).get("requests", {}).get("storage")


def _orphan_delete(ctx: Context, key: Key) -> list[str]:
    return [f"kubectl -n {key[2]} delete statefulset {key[3]} --cascade=orphan   # the pods keep running",
            f"{ctx.apply_command}   # the new StatefulSet adopts the running pods"]


def _statefulset(ctx: Context, key: Key, old: Manifest, new: Manifest) -> Iterator[Finding]:
    old_spec, new_spec = old.get("spec", {}), new.get("spec", {})
    for name in sorted((set(old_spec) | set(new_spec)) - STATEFULSET_MUTABLE):
        if not differs(old_spec.get(name), new_spec.get(name)):
            continue
        if name == "volumeClaimTemplates":
            yield from _claim_templates(ctx, key, old_spec.get(name) or [], new_spec.get(name) or [], new)
            continue
        remedy = _orphan_delete(ctx, key)
        if name == "selector":
            remedy.append(f"kubectl -n {key[2]} delete pod <each old pod of {key[3]}>   # one at a time, once "
                          "the new StatefulSet is ready: the old pods do not match its selector")
        yield ctx.finding(REJECTED, key, f"spec.{name} {short(old_spec.get(name))} -> {short(new_spec.get(name))}: "
                          "immutable on a StatefulSet", remedy)


def _claim_templates(ctx: Context, key: Key, old: list[Manifest], new: list[Manifest],
                     sts: Manifest) -> Iterator[Finding]:
    ns = key[2]
    olds = {t.get("metadata", {}).get("name", ""): t for t in old}
    news = {t.get("metadata", {}).get("name", ""): t for t in new}
    for name in sorted(set(olds) | set(news)):
        before, after = olds.get(name), news.get(name)
        where = f"spec.volumeClaimTemplates[{name}]"
        if before is None or after is None:
            verb = "added" if before is None else "removed"
            yield ctx.finding(REJECTED, key, f"{where} {verb}: claim templates are immutable on a StatefulSet",
                              _orphan_delete(ctx, key))
            if after is None:
                claims = ", ".join(_claim_names(sts, name))
                yield ctx.finding(DATA, key, f"{where} removed: the pods stop mounting {claims}")
            continue
        old_spec, new_spec = before.get("spec", {}), after.get("spec", {})
        old_size, new_size = _storage(old_spec), _storage(new_spec)
        grown = shrunk = False
        if not same(old_size, new_size):
            q_old, q_new = quantity(old_size), quantity(new_size)
            grown = q_old is not None and q_new is not None and q_new > q_old
            shrunk = not grown
        if grown:
            patch = json.dumps({"spec": {"resources": {"requests": {"storage": new_size}}}}, separators=(",", ":"))
            steps = [f"kubectl -n {ns} patch pvc {claim} -p '{patch}'" for claim in _claim_names(sts, name)]
            steps += _orphan_delete(ctx, key)
            yield ctx.finding(REJECTED, key, f"{where} storage {old_size} -> {new_size}: claim templates are "
                              "immutable; grow the claims, then recreate the StatefulSet without its pods "
                              "(the StorageClass must allow volume expansion)", steps)
        elif shrunk:
            yield ctx.finding(REJECTED, key, f"{where} storage {old_size} -> {new_size}: claim templates are "
                              "immutable and a volume cannot shrink",
                              ["not possible in place: back up, create a smaller claim, restore into it "
                               "(backup/README.md), or keep the current size"])
            yield ctx.finding(DATA, key, f"{where} storage decrease {old_size} -> {new_size}")
        old_class, new_class = old_spec.get("storageClassName"), new_spec.get("storageClassName")
        if old_class != new_class:
            yield ctx.finding(REJECTED, key, f"{where} storageClassName {old_class} -> {new_class}: a claim "
                              "keeps its class for life",
                              ["migrate the data: back up, delete the StatefulSet and its claims "
                               f"({', '.join(_claim_names(sts, name))}), apply, restore (backup/README.md)"])
        rest_old = {**before, "spec": {k: v for k, v in old_spec.items() if k not in ("resources", "storageClassName")}}
        rest_new = {**after, "spec": {k: v for k, v in new_spec.items() if k not in ("resources", "storageClassName")}}
        if differs(rest_old, rest_new) or (differs(old_spec.get("resources"), new_spec.get("resources"))
                                           and not grown and not shrunk):
            fields = ", ".join(sorted({p for p, _a, _b in changes(rest_old, rest_new)} |
                                      ({"spec.resources"} if not (grown or shrunk) and
                                       differs(old_spec.get("resources"), new_spec.get("resources")) else set())))
            yield ctx.finding(REJECTED, key, f"{where} {fields} changed: claim templates are immutable "
                              "(existing claims keep their old metadata and spec)", _orphan_delete(ctx, key))


def _deployment(ctx: Context, key: Key, old: Manifest, new: Manifest) -> Iterator[Finding]:
    old_sel, new_sel = old.get("spec", {}).get("selector"), new.get("spec", {}).get("selector")
    if differs(old_sel, new_sel):
        ns, name = key[2], key[3]
        labels = ",".join(f"{k}={v}" for k, v in sorted((old_sel or {}).get("matchLabels", {}).items()))
        yield ctx.finding(REJECTED, key, f"spec.selector {short(old_sel)} -> {short(new_sel)}: immutable on a "
                          "Deployment", [
                              f"kubectl -n {ns} delete deployment {name} --cascade=orphan   # old pods keep serving",
                              ctx.apply_command,
                              f"kubectl -n {ns} rollout status deployment {name}",
                              f"kubectl -n {ns} delete replicaset -l '{labels}'   # the old pods, once the new "
                              "ones are ready"])


def _job(ctx: Context, key: Key, old: Manifest, new: Manifest) -> Iterator[Finding]:
    old_spec, new_spec = old.get("spec", {}), new.get("spec", {})
    fields = [f for f in JOB_IMMUTABLE if differs(old_spec.get(f), new_spec.get(f))]
    if fields:
        yield ctx.finding(REJECTED, key, f"spec.{', spec.'.join(fields)} changed under the same Job name: "
                          "immutable on a Job", [f"kubectl -n {key[2]} delete job {key[3]}   # a finished Job "
                                                 "only holds its logs", ctx.apply_command])


def _service(ctx: Context, key: Key, old: Manifest, new: Manifest) -> Iterator[Finding]:
    old_ip, new_ip = old.get("spec", {}).get("clusterIP"), new.get("spec", {}).get("clusterIP")
    if old_ip != new_ip and not (old.get("spec", {}).get("type") == "ExternalName"
                                 or new.get("spec", {}).get("type") == "ExternalName"):
        note = (" (left out, the API server keeps the old value)" if new_ip is None else "")
        yield ctx.finding(REJECTED, key, f"spec.clusterIP {old_ip} -> {new_ip}: immutable on a Service{note}",
                          [f"kubectl -n {key[2]} delete service {key[3]}   # clients fail until it is back",
                           ctx.apply_command])


def _pvc(ctx: Context, key: Key, old: Manifest, new: Manifest) -> Iterator[Finding]:
    old_spec, new_spec = old.get("spec", {}), new.get("spec", {})
    old_size, new_size = _storage(old_spec), _storage(new_spec)
    q_old, q_new = quantity(old_size), quantity(new_size)
    if not same(old_size, new_size) and (q_old is None or q_new is None or q_new < q_old):
        yield ctx.finding(REJECTED, key, f"spec.resources.requests.storage {old_size} -> {new_size}: a claim "
                          "cannot shrink", ["not possible in place: back up, delete the claim, apply, restore"])
        yield ctx.finding(DATA, key, f"storage decrease {old_size} -> {new_size}")
    for name in sorted((set(old_spec) | set(new_spec)) - PVC_MUTABLE):
        if differs(old_spec.get(name), new_spec.get(name)):
            yield ctx.finding(REJECTED, key, f"spec.{name} {short(old_spec.get(name))} -> "
                              f"{short(new_spec.get(name))}: a claim's spec is immutable after creation "
                              "except its storage request", [
                                  "migrate the data: back up, delete the claim (and the pods using it), "
                                  "apply, restore"])


IMMUTABLE_CHECKS: dict[tuple[str, str], Callable[[Context, Key, Manifest, Manifest], Iterator[Finding]]] = {
    ("apps", "StatefulSet"): _statefulset,
    ("apps", "Deployment"): _deployment,
    ("batch", "Job"): _job,
    ("", "Service"): _service,
    ("", "PersistentVolumeClaim"): _pvc,
}

CNPG = "postgresql.cnpg.io"
BARMAN = "barmancloud.cnpg.io"


def owns_data(key: Key, obj: Manifest) -> str | None:
    """Why deleting this object loses data, or None."""
    group, kind = key[0], key[1]
    if kind == "Namespace" and group == "":
        return "deleting a namespace deletes every object and claim in it"
    if kind == "PersistentVolumeClaim" and group == "":
        return "its volume is deleted with it (reclaim policy Delete, the default for dynamic volumes)"
    if kind == "StatefulSet" and obj.get("spec", {}).get("volumeClaimTemplates"):
        return "its claims are orphaned or, with a whenDeleted: Delete policy, deleted"
    if group == CNPG and kind == "Cluster":
        return "CloudNativePG deletes the database's volumes with the Cluster"
    if group == CNPG and kind == "ScheduledBackup":
        return "a backup schedule goes away"
    if group == BARMAN and kind == "ObjectStore":
        return "the backup target (bucket settings) goes away"
    if _is_backup_cronjob(obj):
        return "a backup schedule goes away"
    return None


def _is_backup_cronjob(obj: Manifest) -> bool:
    return (obj.get("kind") == "CronJob"
            and obj.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/component") == "backup"
            and not obj.get("spec", {}).get("suspend", False))


def _env_values(obj: Manifest) -> dict[str, object]:
    found: dict[str, object] = {}
    for container in containers(pod_template(obj)):
        for item in container.get("env", []):
            found[item["name"]] = item.get("value", item.get("valueFrom"))
    return found


def _data_settings(ctx: Context, key: Key, old: Manifest, new: Manifest) -> Iterator[Finding]:
    """Bucket and off-site settings, backup schedules, CNPG storage and backup targets."""
    old_env, new_env = _env_values(old), _env_values(new)
    for name in sorted(set(old_env) | set(new_env)):
        bucket_or_target = name.endswith("BUCKET") or name.startswith("MIRROR_DST_")
        if bucket_or_target and name in old_env and differs(old_env.get(name), new_env.get(name)):
            yield ctx.finding(DATA, key, f"env {name} {short(old_env[name])} -> {short(new_env.get(name))}: "
                              "data written so far stays at the old location")
    if _is_backup_cronjob(old) and not _is_backup_cronjob(new):
        yield ctx.finding(DATA, key, "backup schedule suspended or no longer a backup job")
    if key[0] == CNPG and key[1] == "Cluster":
        for part in ("storage", "walStorage"):
            old_size = old.get("spec", {}).get(part, {}).get("size")
            new_size = new.get("spec", {}).get(part, {}).get("size")
            q_old, q_new = quantity(old_size), quantity(new_size)
            if q_old is not None and (q_new is None or q_new < q_old):
                yield ctx.finding(DATA, key, f"spec.{part}.size decrease {old_size} -> {new_size}")
        for path, a, b in changes(old.get("spec", {}).get("backup"), new.get("spec", {}).get("backup"), "spec.backup"):
            if a is not None:
                yield ctx.finding(DATA, key, f"{path} {short(a)} -> {short(b)}: the backup target changes")
        old_plugins = old.get("spec", {}).get("plugins")
        if old_plugins and differs(old_plugins, new.get("spec", {}).get("plugins")):
            yield ctx.finding(DATA, key, "spec.plugins changed: the WAL archive and backup target change")
    if key[0] == BARMAN and key[1] == "ObjectStore":
        old_conf = old.get("spec", {}).get("configuration", {})
        new_conf = new.get("spec", {}).get("configuration", {})
        for name in ("destinationPath", "endpointURL"):
            if old_conf.get(name) != new_conf.get(name):
                yield ctx.finding(DATA, key, f"spec.configuration.{name} {old_conf.get(name)} -> "
                                  f"{new_conf.get(name)}: backups so far stay at the old target")
    if key[0] == CNPG and key[1] == "ScheduledBackup" and new.get("spec", {}).get("suspend") \
            and not old.get("spec", {}).get("suspend"):
        yield ctx.finding(DATA, key, "backup schedule suspended")


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _pods_selected(objects: Mapping[Key, Manifest], service_key: Key, selector: Mapping[str, str]) -> list[str]:
    return [label(k) for k, o in objects.items()
            if k[2] == service_key[2] and o.get("kind") != "CronJob" and o.get("kind") != "Job"
            and _selects(selector, (pod_template(o) or {}).get("metadata", {}).get("labels", {}))]


def _downtime(ctx: Context, key: Key, old: Manifest, new: Manifest) -> Iterator[Finding]:
    kind = key[1]
    if kind in ("Deployment", "StatefulSet"):
        old_n, new_n = _replicas(old), _replicas(new)
        if old_n > 0 and new_n == 0:
            yield ctx.finding(DOWNTIME, key, f"replicas {old_n} -> 0")
        elif old_n == 1 and new_n == 1 and not _autoscaled(ctx.after, key):
            yield from _only_replica(ctx, key, old, new)


def _autoscaled(objects: Mapping[Key, Manifest], key: Key) -> bool:
    for k, o in objects.items():
        target = o.get("spec", {}).get("scaleTargetRef", {})
        if k[1] in ("HorizontalPodAutoscaler", "ScaledObject") and k[2] == key[2] \
                and target.get("name") == key[3] and target.get("kind", "Deployment") == key[1] \
                and int(o["spec"].get("minReplicas", o["spec"].get("minReplicaCount", 1))) > 1:
            return True
    return False


def _only_replica(ctx: Context, key: Key, old: Manifest, new: Manifest) -> Iterator[Finding]:
    olds = {c["name"]: c for c in containers(pod_template(old))}
    for container in containers(pod_template(new)):
        before = olds.get(container["name"])
        if before is None:
            continue
        changed = [part for part in ("ports", "readinessProbe", "livenessProbe", "startupProbe")
                   if differs(before.get(part), container.get(part))]
        if changed:
            yield ctx.finding(DOWNTIME, key, f"container {container['name']}: {', '.join(changed)} changed on the "
                              "only replica: a wrong probe or port takes the single pod out of service")


def _provided_keys(objects: Mapping[Key, Manifest]) -> dict[tuple[str, str], set[str] | None]:
    """Secret (namespace, name) -> keys the render provides; None when unknown (dataFrom)."""
    provided: dict[tuple[str, str], set[str] | None] = {}
    for k, o in objects.items():
        if k[1] == "ExternalSecret":
            spec = o.get("spec", {})
            name = spec.get("target", {}).get("name") or k[3]
            keys = None if spec.get("dataFrom") or spec.get("target", {}).get("template") else \
                {d["secretKey"] for d in spec.get("data", [])}
            provided[(k[2], name)] = keys
        elif k[1] == "Secret" and k[0] == "":
            provided[(k[2], k[3])] = set(o.get("data", {})) | set(o.get("stringData", {}))
    return provided


def secret_references(obj: Manifest) -> Iterator[tuple[str, str]]:
    """(Secret name, key) pairs a pod template needs, leaving out optional ones."""
    template = pod_template(obj) or {}
    for container in containers(template):
        for item in container.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref and not ref.get("optional"):
                yield ref["name"], ref["key"]
    for volume in template.get("spec", {}).get("volumes", []):
        secret = volume.get("secret")
        if secret and not secret.get("optional"):
            for item in secret.get("items", []):
                yield secret["secretName"], item["key"]


def _missing_secret_keys(ctx: Context) -> Iterator[Finding]:
    provided = _provided_keys(ctx.after)
    before_provided = _provided_keys(ctx.before)
    for key, obj in ctx.after.items():
        for secret, item in sorted(set(secret_references(obj))):
            keys = provided.get((key[2], secret), before_provided.get((key[2], secret)))
            if (key[2], secret) not in provided:
                if (key[2], secret) in before_provided:
                    yield ctx.finding(DOWNTIME, key, f"Secret {secret} is no longer provided but key {item} "
                                      "is still referenced")
                continue
            if keys is not None and item not in keys:
                yield ctx.finding(DOWNTIME, key, f"Secret {secret} key {item} is referenced but not provided "
                                  "(pods fail with CreateContainerConfigError)")


def _service_selection(ctx: Context) -> Iterator[Finding]:
    for key, new in ctx.after.items():
        if key[1] != "Service" or key[0] != "":
            continue
        selector = new.get("spec", {}).get("selector") or {}
        if not selector or _pods_selected(ctx.after, key, selector):
            continue
        old = ctx.before.get(key)
        old_selector = (old or {}).get("spec", {}).get("selector") or {}
        if old is not None and _pods_selected(ctx.before, key, old_selector):
            yield ctx.finding(DOWNTIME, key, f"selector {short(selector)} matches no pod of the new render "
                              "(it did before): the Service loses its endpoints")


_RESOURCE_PATH = re.compile(r"containers\[(?P<container>[^\]]+)\]\.resources\.(?P<what>\w+\.[\w.-]+)$")


def _summary(key: Key, old: Manifest | None, new: Manifest | None, limit: int = 4) -> str:
    if old is None:
        return "new"
    if new is None:
        return "removed"
    parts: list[str] = []
    rest: list[str] = []
    old_images = {c["name"]: c.get("image") for c in containers(pod_template(old))}
    for container in containers(pod_template(new)):
        before = old_images.get(container["name"])
        if before and before != container.get("image"):
            parts.append(f"image {container['name']}: {before} -> {container.get('image')}")
    for path, a, b in changes(old, new):
        if path.endswith(".image") and ".containers[" in path:
            continue
        resource = _RESOURCE_PATH.search(path)
        if resource:
            parts.append(f"resources {resource['container']}: {resource['what']} {short(a, 20)} -> {short(b, 20)}")
        elif key[1] in ("ConfigMap", "Secret") and path.startswith(("data.", "stringData.")):
            rest.append(f"{path} {'added' if a is None else 'removed' if b is None else 'changed'}")
        elif a is None or b is None:
            rest.append(f"{path} {'added' if a is None else 'removed'}")
        else:
            rest.append(f"{path} {short(a, 30)} -> {short(b, 30)}")
    shown = parts + rest
    more = max(len(shown) - limit, 0)
    return "; ".join(shown[:limit]) + (f"; {more} more field(s)" if more else "")


def plan(before: Sequence[Manifest], after: Sequence[Manifest], *,
         apply_command: str = "kubectl apply --server-side -f dist/<env>/") -> list[Finding]:
    """Every finding for going from `before` to `after` (lists of manifests)."""
    ctx = Context(before=index(before), after=index(after), apply_command=apply_command)
    findings: list[Finding] = []
    added = [k for k in ctx.after if k not in ctx.before]
    for key, old in ctx.before.items():
        new = ctx.after.get(key)
        if new is None:
            reason = owns_data(key, old)
            if reason:
                twin = [label(k) for k in added if k[:3] == key[:3]]
                renamed = f" (renamed to {', '.join(twin)}?)" if twin else ""
                findings.append(ctx.finding(DATA, key, f"deleted{renamed}: {reason}"))
            continue
        if not differs(old, new):
            continue
        check = IMMUTABLE_CHECKS.get((key[0], key[1]))
        if check:
            findings.extend(check(ctx, key, old, new))
        findings.extend(_data_settings(ctx, key, old, new))
        findings.extend(_downtime(ctx, key, old, new))
    findings.extend(_service_selection(ctx))
    findings.extend(_missing_secret_keys(ctx))
    # Every changed object also gets its summary (an image bump next to a
    # rejected volume change is still news); deletions already flagged do not.
    flagged = {(f.object, f.namespace) for f in findings}
    for key in [*ctx.before, *added]:
        was, now = ctx.before.get(key), ctx.after.get(key)
        if (was is not None and now is not None and not differs(was, now)) \
                or (now is None and (label(key), key[2]) in flagged):
            continue
        findings.append(ctx.finding(ROUTINE, key, _summary(key, was, now)))
    order = {risk: i for i, risk in enumerate((*RISKS, ROUTINE))}
    unique = list(dict.fromkeys(findings))
    return sorted(unique, key=lambda f: (order[f.risk], f.namespace, f.object))


# --- acknowledgements ----------------------------------------------------------------------

ACK_PATTERN = re.compile(r"^\s*(?P<object>[A-Za-z][A-Za-z0-9]*/[a-z0-9][a-z0-9.-]*)(@(?P<risk>[a-z-]+))?\s*:"
                         r"(?P<reason>.*)$")


class BadInputError(Exception):
    """Input the user must fix (exit 2)."""


def parse_acks(text: str, source: str = "ACK") -> list[Ack]:
    """'Kind/name[@risk]: reason' entries separated by ';' or new lines."""
    acks = []
    for entry in re.split(r"[;\n]", text):
        if not entry.strip():
            continue
        match = ACK_PATTERN.match(entry)
        if not match:
            raise BadInputError(f"{source}: acknowledgement must look like 'Kind/name: reason' (got {entry.strip()!r})")
        risk, reason = match.group("risk"), match.group("reason").strip()
        if risk is not None and risk not in RISKS:
            raise BadInputError(f"{source}: class must be one of {', '.join(RISKS)} (got {risk!r})")
        if not reason:
            raise BadInputError(f"{source}: {match.group('object')}: a reason is required (got '')")
        acks.append(Ack(object=match.group("object"), risk=risk, reason=reason, source=source))
    return acks


# --- output ----------------------------------------------------------------------------------

def render_text(result: Plan) -> str:
    lines = [f"plan for {result.env}: {result.before_label} -> {result.after_label}", *result.notes]
    if not result.findings:
        lines.append("no changes")
    for risk in (*RISKS, ROUTINE):
        found = [f for f in result.findings if f.risk == risk]
        if not found:
            continue
        lines.append("")
        lines.append(f"{TITLES[risk].upper()} ({len(found)})")
        for finding in found:
            ack = result.ack_for(finding)
            lines.append(f"  {finding.object}: {finding.change}")
            if ack:
                lines.append(f"    acknowledged ({ack.source}): {ack.reason}")
            if finding.remedy:
                lines.append("    remedy:")
                lines.extend(f"      {step}" for step in finding.remedy)
    lines += ["", *(f"warning: acknowledgement matches nothing in this plan: {a.object} ({a.source}): {a.reason}"
                    for a in result.unused_acks)]
    lines.append(_verdict(result))
    return "\n".join(line for i, line in enumerate(lines) if line or (i and lines[i - 1])) + "\n"


def _verdict(result: Plan) -> str:
    if result.blocking:
        return (f"result: {len(result.blocking)} change(s) above routine not acknowledged (exit 3); "
                "fix the render or acknowledge with ACK='Kind/name: reason'")
    risky = sum(1 for f in result.findings if f.risk != ROUTINE)
    if risky:
        return f"result: {risky} change(s) above routine, all acknowledged"
    return "result: routine changes only" if result.findings else "result: no changes"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def render_markdown(result: Plan) -> str:
    icon = "🛑" if result.blocking else "✅"
    out = [f"### {icon} make plan: `{result.env}`", "",
           f"`{result.before_label}` → `{result.after_label}`", ""]
    out += [f"> {note}" for note in result.notes] + ([""] if result.notes else [])
    if not result.findings:
        out.append("No changes.")
    for risk in RISKS:
        found = [f for f in result.findings if f.risk == risk]
        if not found:
            continue
        out += [f"#### {TITLES[risk]} ({len(found)})", "", "| object | change | acknowledged |", "| --- | --- | --- |"]
        for finding in found:
            ack = result.ack_for(finding)
            out.append(f"| `{finding.object}` | {_md(finding.change)} | {_md(ack.reason) if ack else '**no**'} |")
        remedies = [f for f in found if f.remedy]
        for finding in remedies:
            out += ["", f"Remedy for `{finding.object}`:", "", "```sh", *finding.remedy, "```"]
        out.append("")
    routine = [f for f in result.findings if f.risk == ROUTINE]
    if routine:
        out += [f"<details><summary>Routine ({len(routine)})</summary>", ""]
        out += [f"- `{f.object}`: {_md(f.change)}" for f in routine]
        out += ["", "</details>", ""]
    out += [f"> ⚠️ acknowledgement matches nothing: `{a.object}` ({a.source})" for a in result.unused_acks]
    out.append(f"**{_verdict(result).removeprefix('result: ')}**")
    return "\n".join(out) + "\n"


# --- gathering the two sides (CLI) -------------------------------------------------------------

def load_documents(texts: Iterable[str]) -> list[Manifest]:
    objects: list[Manifest] = []
    for text in texts:
        for doc in yaml.safe_load_all(text):
            if isinstance(doc, dict) and doc.get("kind") == "List":
                objects.extend(doc.get("items") or [])
            elif isinstance(doc, dict):
                objects.append(doc)
    return objects


def git(*args: str, repo: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)


def resolve_base(base: str, repo: Path = ROOT) -> tuple[str, str | None]:
    """(ref to use, note when it is not the one asked for)."""
    for candidate in dict.fromkeys([base, "origin/main", "main", "HEAD"]):
        if git("rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}", repo=repo).returncode == 0:
            note = None if candidate == base else f"note: {base} does not exist here; comparing with {candidate}"
            return candidate, note
    raise RuntimeError(f"no git ref to compare with ({base}, origin/main, main, HEAD)")


def committed_render(ref: str, env: str, repo: Path = ROOT) -> list[Manifest] | None:
    listing = git("ls-tree", "--name-only", ref, f"dist/{env}/", repo=repo)
    if listing.returncode != 0:
        raise RuntimeError(f"git ls-tree {ref}: {listing.stderr.strip()}")
    paths = [p for p in listing.stdout.split() if p.endswith(".yaml")]
    if not paths:
        return None
    texts = []
    for path in paths:
        shown = git("show", f"{ref}:{path}", repo=repo)
        if shown.returncode != 0:
            raise RuntimeError(f"git show {ref}:{path}: {shown.stderr.strip()}")
        texts.append(shown.stdout)
    return load_documents(texts)


def new_render(env: str, env_dir: Path) -> list[Manifest]:
    with tempfile.TemporaryDirectory(prefix="plan-") as tmp:
        result = subprocess.run([sys.executable, "-O", str(ROOT / "main.py"), "--env", env, "--out", tmp,
                                 "--env-dir", str(env_dir)],
                                cwd=ROOT, capture_output=True, text=True, check=False)
        if result.returncode == 2:
            raise BadInputError(result.stderr.strip().splitlines()[0].removeprefix("error: "))
        if result.returncode != 0:
            raise RuntimeError(f"render failed: {result.stderr.strip()}")
        return load_documents(p.read_text(encoding="utf-8") for p in sorted(Path(tmp, env).glob("*.yaml")))


# Kinds read from a cluster besides the render's own: the ones that own data.
DATA_KINDS = (("", "PersistentVolumeClaim"), ("apps", "StatefulSet"), (CNPG, "Cluster"),
              (CNPG, "ScheduledBackup"), (BARMAN, "ObjectStore"), ("batch", "CronJob"))


def kubectl_get(context: str, group: str, kind: str, namespace: str | None) -> list[Manifest]:
    resource = kind.lower() + (f".{group}" if group else "")
    command = ["kubectl", "--context", context, "get", resource, "-o", "yaml"]
    command += ["-n", namespace] if namespace else []
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        if "doesn't have a resource type" in result.stderr:
            return []   # the CRD is not installed: nothing of that kind is deployed
        raise RuntimeError(f"{shlex.join(command)}: {result.stderr.strip()}")
    return load_documents([result.stdout])


def live_objects(context: str, namespace: str, instance: str, desired: Sequence[Manifest],
                 get: Callable[[str, str, str, str | None], list[Manifest]] = kubectl_get) -> list[Manifest]:
    """The live objects the render manages, projected onto what the render sets."""
    wanted = index(desired)
    kinds = dict.fromkeys([(k[0], k[1], bool(k[2])) for k in wanted] +
                          [(g, k, True) for g, k in DATA_KINDS])
    claim_prefixes = tuple(f"{t['metadata']['name']}-{o['metadata']['name']}-"
                           for o in desired if o.get("kind") == "StatefulSet"
                           for t in o.get("spec", {}).get("volumeClaimTemplates", []))
    found: list[Manifest] = []
    for group, kind, namespaced in kinds:
        for obj in get(context, group, kind, namespace if namespaced else None):
            obj.setdefault("apiVersion", f"{group}/v1" if group else "v1")
            obj.setdefault("kind", kind)
            key = key_of(obj)
            meta = obj.get("metadata", {})
            if key in wanted:
                projected = project(obj, wanted[key])
                assert isinstance(projected, dict)
                found.append(projected)
                continue
            owned = meta.get("labels", {}).get("app.kubernetes.io/instance") == instance
            claim_of_statefulset = kind == "PersistentVolumeClaim" and meta.get("name", "").startswith(claim_prefixes)
            if owned and not meta.get("ownerReferences") and not claim_of_statefulset:
                found.append(obj)
    return found


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="plan.py", description=__doc__.splitlines()[0])
    parser.add_argument("--env", required=True)
    parser.add_argument("--base", default="origin/main", help="git ref whose dist/<env> is deployed")
    parser.add_argument("--base-dir", type=Path, help="compare with the manifests in this directory instead of git")
    parser.add_argument("--context", default="", help="compare with this kubectl context's live objects instead")
    parser.add_argument("--ack", action="append", default=[], help="'Kind/name[@class]: reason' (repeatable)")
    parser.add_argument("--format", choices=("text", "markdown"), default="text")
    parser.add_argument("--env-dir", type=Path, default=ROOT / "env")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    from charts.config import ProfileError, load_profile

    try:
        try:
            profile = load_profile(args.env_dir, args.env)
        except ProfileError as err:
            raise BadInputError(str(err)) from None
        acks = [Ack(object=a.object, risk=a.risk, reason=a.reason, source=f"env/{args.env}.yaml")
                for a in profile.plan.acknowledge]
        for text in args.ack:
            acks += parse_acks(text)
        after = new_render(args.env, args.env_dir)
        notes: list[str] = []
        if args.base_dir:
            before = load_documents(p.read_text(encoding="utf-8") for p in sorted(args.base_dir.glob("*.yaml")))
            before_label = str(args.base_dir)
        elif args.context:
            before = live_objects(args.context, profile.namespace, profile.instance, after)
            before_label = f"live objects in context {args.context}"
        else:
            ref, note = resolve_base(args.base)
            notes += [note] if note else []
            committed = committed_render(ref, args.env)
            if committed is None:
                notes.append(f"note: dist/{args.env} does not exist at {ref}: every object is new")
            before = committed or []
            before_label = f"dist/{args.env} at {ref}"
    except BadInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    findings = plan(before, after, apply_command=f"kubectl apply --server-side -f dist/{args.env}/")
    result = Plan(findings=findings, acks=acks, before_label=before_label,
                  after_label="new render", env=args.env, notes=notes)
    print(render_markdown(result) if args.format == "markdown" else render_text(result), end="")
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
