"""Is an environment up? Wait for its workloads, then call the API through the Ingress.

    .venv/bin/python scripts/smoke.py --env dev [--timeout 600] [--context CTX]
        [--cacert FILE | --insecure] [--connect-to ADDRESS] [--no-wait] [--no-http]
    .venv/bin/python scripts/smoke.py --env dev --job migrate-dev     # one Job only
    .venv/bin/python scripts/smoke.py --env dev --snapshot recorded.json

1. Waits until every Deployment and StatefulSet in the env's namespace is
   available and every Job has completed (Jobs made by a CronJob are shown,
   not waited for: a failed nightly backup says nothing about this rollout).
   A failed Job or a Deployment past its progress deadline ends the wait at
   once. On failure it prints what is not ready and why: container waiting
   reasons, exit codes, recent events and the last log lines, with personal
   data and credentials masked.
2. Requests the public routes over HTTPS with the env's domain as Host and
   SNI: the API answers JSON, admin and static files are served, the probe
   endpoints are NOT reachable from outside, and plain HTTP redirects to HTTPS.

Namespace, domain and TLS mode come from env/<env>.yaml. For a `.localhost`
domain (kind) the connection goes to 127.0.0.1 unless --connect-to says
otherwise; with the dev CA (edge.tls.mode local-ca) the CA named in
certs/ca-file by scripts/dev-certs.sh (mkcert's or certs/ca.crt) is trusted.
Exit codes: 0 up, 1 not ready or a check failed, 2 bad input or the cluster
cannot be reached.

The decisions (is this available? why is this pod not ready? what to report)
are pure functions over API objects as `kubectl get -o json` shows them, so
tests/test_smoke.py checks them against recorded objects without a cluster.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import socket
import ssl
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent

Obj = dict[str, Any]
State = Literal["ready", "waiting", "failed", "ignored"]
# How many pods, events and log lines one workload gets in a report.
MAX_PODS = 3
MAX_EVENTS = 5
LOG_LINES = 15
# Container waiting reasons that mean "still starting", not "broken".
STARTING = {"ContainerCreating", "PodInitializing"}


# --- workload status -------------------------------------------------------

@dataclass(frozen=True)
class Status:
    kind: str
    name: str
    state: State
    detail: str
    # The pod selector of the workload, to find its pods for a report.
    selector: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"


def _name(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("name", "?"))


def _condition(obj: Obj, kind: str) -> Obj | None:
    for condition in obj.get("status", {}).get("conditions") or []:
        if condition.get("type") == kind:
            return condition
    return None


def _generation_pending(obj: Obj) -> bool:
    generation = obj.get("metadata", {}).get("generation", 0)
    return obj.get("status", {}).get("observedGeneration", 0) < generation


def deployment_status(deployment: Obj) -> Status:
    """The checks of `kubectl rollout status`, as one verdict with a reason."""
    spec, status = deployment.get("spec", {}), deployment.get("status", {})
    name, selector = _name(deployment), spec.get("selector", {})

    def verdict(state: State, detail: str) -> Status:
        return Status("Deployment", name, state, detail, selector)

    wanted = spec.get("replicas", 1)
    if _generation_pending(deployment):
        return verdict("waiting", "the controller has not seen the latest spec yet")
    progressing = _condition(deployment, "Progressing")
    if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
        return verdict("failed", f"rollout stuck: {progressing.get('message', 'progress deadline exceeded')}")
    failure = _condition(deployment, "ReplicaFailure")
    if failure and failure.get("status") == "True":
        # Usually admission (Pod Security, quota): pods are never created.
        return verdict("waiting", f"cannot create pods: {failure.get('reason', '')}: "
                                  f"{_shorten(failure.get('message', ''), 300)}")
    updated = status.get("updatedReplicas", 0)
    total = status.get("replicas", 0)
    available = status.get("availableReplicas", 0)
    if updated < wanted:
        return verdict("waiting", f"rollout in progress: {updated} of {wanted} replicas updated")
    if total > updated:
        return verdict("waiting", f"rollout in progress: {total - updated} old replicas still terminating")
    if available < updated:
        return verdict("waiting", f"{available} of {updated} replicas available")
    return verdict("ready", f"{available}/{wanted} available")


def statefulset_status(statefulset: Obj) -> Status:
    spec, status = statefulset.get("spec", {}), statefulset.get("status", {})
    name, selector = _name(statefulset), spec.get("selector", {})

    def verdict(state: State, detail: str) -> Status:
        return Status("StatefulSet", name, state, detail, selector)

    wanted = spec.get("replicas", 1)
    if _generation_pending(statefulset):
        return verdict("waiting", "the controller has not seen the latest spec yet")
    ready = status.get("readyReplicas", 0)
    if ready < wanted:
        return verdict("waiting", f"{ready} of {wanted} replicas ready")
    strategy = spec.get("updateStrategy", {})
    partition = strategy.get("rollingUpdate", {}).get("partition", 0)
    rolling = strategy.get("type", "RollingUpdate") == "RollingUpdate" and partition == 0
    if rolling and status.get("updateRevision") != status.get("currentRevision"):
        updated = status.get("updatedReplicas", 0)
        return verdict("waiting", f"rolling update: {updated} of {wanted} replicas updated")
    available = status.get("availableReplicas", ready)
    if available < wanted:
        return verdict("waiting", f"{available} of {wanted} replicas available")
    return verdict("ready", f"{ready}/{wanted} ready")


def cronjob_owner(job: Obj) -> str | None:
    for owner in job.get("metadata", {}).get("ownerReferences") or []:
        if owner.get("kind") == "CronJob":
            return str(owner.get("name"))
    return None


def job_status(job: Obj) -> Status:
    spec, status = job.get("spec", {}), job.get("status", {})
    name, selector = _name(job), spec.get("selector", {})

    def verdict(state: State, detail: str) -> Status:
        return Status("Job", name, state, detail, selector)

    failed = next((c for kind in ("Failed", "FailureTarget") if (c := _condition(job, kind))
                   and c.get("status") == "True"), None)
    complete = _condition(job, "Complete")
    outcome = None
    if failed:
        outcome = f"failed: {failed.get('reason', 'Failed')}: {failed.get('message', '')}".rstrip(": ")
    elif complete and complete.get("status") == "True":
        outcome = "completed"
    owner = cronjob_owner(job)
    if owner:
        # Scheduled or on-demand runs (make backup-now) are not part of a rollout.
        note = outcome or "running"
        return verdict("ignored", f"created by CronJob {owner}, {note} (not waited for)")
    if spec.get("suspend"):
        return verdict("ignored", "suspended")
    if failed:
        return verdict("failed", outcome or "failed")
    if outcome:
        return verdict("ready", outcome)
    return verdict("waiting", f"running: {status.get('active', 0)} active, {status.get('succeeded', 0)} "
                              f"succeeded, {status.get('failed', 0)} failed (backoffLimit "
                              f"{spec.get('backoffLimit', 6)})")


@dataclass(frozen=True)
class Snapshot:
    """Everything one poll reads from the namespace."""

    namespace: str
    namespace_exists: bool = True
    deployments: Sequence[Obj] = ()
    statefulsets: Sequence[Obj] = ()
    jobs: Sequence[Obj] = ()
    pods: Sequence[Obj] = ()
    events: Sequence[Obj] = ()


KIND_FIELDS = {"Deployment": "deployments", "StatefulSet": "statefulsets", "Job": "jobs", "Pod": "pods",
               "Event": "events"}


def snapshot_from_list(namespace: str, document: Obj) -> Snapshot:
    """A Snapshot from `kubectl get deploy,sts,job,pod,events -o json` (a List)."""
    fields: dict[str, list[Obj]] = {name: [] for name in KIND_FIELDS.values()}
    for item in document.get("items", []):
        if item.get("kind") in KIND_FIELDS:
            fields[KIND_FIELDS[item["kind"]]].append(item)
    return Snapshot(namespace, **fields)  # type: ignore[arg-type]


def evaluate(snapshot: Snapshot) -> list[Status]:
    statuses = [*(deployment_status(d) for d in snapshot.deployments),
                *(statefulset_status(s) for s in snapshot.statefulsets),
                *(job_status(j) for j in snapshot.jobs)]
    return sorted(statuses, key=lambda s: (s.kind, s.name))


def focus_job(snapshot: Snapshot, name: str) -> Snapshot:
    """Only one Job (make migrate, make createsuperuser): its pods and events."""
    # A Job started by hand from a CronJob is what we wait for here, so its
    # owner (which would make it "not waited for") is dropped from the copy.
    jobs = [{**j, "metadata": {k: v for k, v in j.get("metadata", {}).items() if k != "ownerReferences"}}
            for j in snapshot.jobs if _name(j) == name]
    return Snapshot(snapshot.namespace, snapshot.namespace_exists, jobs=jobs, pods=snapshot.pods,
                    events=snapshot.events)


def overall(snapshot: Snapshot, statuses: Sequence[Status], *, job: str | None = None) -> tuple[State, str]:
    """The verdict for the namespace (or one Job) and, unless ready, why."""
    if not snapshot.namespace_exists:
        return "waiting", f"namespace {snapshot.namespace} does not exist (applied yet?)"
    if job is not None and not snapshot.jobs:
        return "waiting", f"Job {job} does not exist (yet)"
    if job is None and not snapshot.deployments and not snapshot.statefulsets:
        return "waiting", f"no Deployment or StatefulSet in {snapshot.namespace} yet"
    failed = [s for s in statuses if s.state == "failed"]
    if failed:
        return "failed", ", ".join(s.ref for s in failed) + " failed"
    waiting = [s for s in statuses if s.state == "waiting"]
    if waiting:
        return "waiting", f"{len(waiting)} not ready: " + ", ".join(s.ref for s in waiting)
    return "ready", f"{sum(s.state == 'ready' for s in statuses)} workloads ready"


# --- why a pod is not ready ------------------------------------------------

def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions) against labels."""
    if not selector:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        present = key in labels
        if operator == "In" and (not present or labels[key] not in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def pods_of(status: Status, pods: Iterable[Obj]) -> list[Obj]:
    return [p for p in pods if selector_matches(status.selector, p.get("metadata", {}).get("labels") or {})]


def _container_statuses(pod: Obj) -> list[Obj]:
    status = pod.get("status", {})
    return [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]


def _shorten(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def pod_problems(pod: Obj) -> list[str]:
    """Why this pod is not (yet) ready, most telling first; empty if it is fine."""
    status = pod.get("status", {})
    problems: list[str] = []
    scheduled = _condition(pod, "PodScheduled")
    if scheduled and scheduled.get("status") == "False":
        problems.append(f"not scheduled: {scheduled.get('reason', '')}: {_shorten(scheduled.get('message', ''))}")
    for container in _container_statuses(pod):
        name, state = container.get("name", "?"), container.get("state") or {}
        restarts = container.get("restartCount", 0)
        if "waiting" in state:
            waiting = state["waiting"]
            reason = waiting.get("reason", "Waiting")
            message = f": {_shorten(waiting['message'])}" if waiting.get("message") else ""
            if reason not in STARTING or message:
                problems.append(f"{name}: {reason}{message}")
        elif "terminated" in state:
            ended = state["terminated"]
            if ended.get("exitCode", 0) != 0:
                problems.append(f"{name}: exited with code {ended.get('exitCode')} ({ended.get('reason', 'Error')})")
        elif "running" in state and not container.get("ready", False) and pod_phase(pod) == "Running":
            problems.append(f"{name}: running but not ready (its readiness probe fails; see events)")
        last = (container.get("lastState") or {}).get("terminated")
        if restarts and last:
            problems.append(f"{name}: restarted {restarts}x, last run exited with code "
                            f"{last.get('exitCode')} ({last.get('reason', 'Error')})")
    if not problems and status.get("phase") == "Failed":
        problems.append(f"pod failed: {status.get('reason', '')} {_shorten(status.get('message', ''))}".rstrip())
    return problems


def pod_phase(pod: Obj) -> str:
    return str(pod.get("status", {}).get("phase", "Unknown"))


@dataclass(frozen=True)
class LogRequest:
    pod: str
    container: str
    previous: bool


def log_requests(pod: Obj) -> list[LogRequest]:
    """Which container logs explain this pod: the crashed run for a container
    that restarted, the current one for one that exited or is not ready."""
    requests = []
    for container in _container_statuses(pod):
        name, state = container.get("name", "?"), container.get("state") or {}
        crashed = bool(container.get("restartCount", 0) and (container.get("lastState") or {}).get("terminated"))
        crashed = crashed or (state.get("waiting") or {}).get("reason") == "CrashLoopBackOff"
        failed_now = "terminated" in state and state["terminated"].get("exitCode", 0) != 0
        unready = "running" in state and not container.get("ready", False)
        if crashed or failed_now or unready:
            # The crashed run's output explains a restart; the current run's
            # explains an exit or a failing readiness probe.
            requests.append(LogRequest(_name(pod), name, previous=crashed and not failed_now))
    return requests


def _event_time(event: Obj) -> str:
    return str(event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp") or "")


def events_for(status: Status, pods: Sequence[Obj], events: Iterable[Obj]) -> list[str]:
    """Recent events of the workload, its ReplicaSets and the given pods,
    newest last; warnings are what usually explains a stuck rollout."""
    pod_names = {_name(p) for p in pods}

    def concerns(event: Obj) -> bool:
        involved = event.get("involvedObject") or event.get("regarding") or {}
        kind, name = involved.get("kind"), involved.get("name", "")
        if kind == status.kind and name == status.name:
            return True
        # A Deployment's ReplicaSets are "<name>-<pod-template-hash>"; the hash
        # has no dash, so "worker-default-x" is not a ReplicaSet of "worker".
        if kind == "ReplicaSet" and status.kind == "Deployment" and name.rsplit("-", 1)[0] == status.name:
            return True
        return kind == "Pod" and name in pod_names

    chosen = sorted((e for e in events if concerns(e)), key=_event_time)[-MAX_EVENTS:]
    lines = []
    for event in chosen:
        count = event.get("count") or 1
        times = f" (x{count})" if count > 1 else ""
        lines.append(f"{event.get('type', 'Normal')} {event.get('reason', '')}{times}: "
                     f"{_shorten(event.get('message') or event.get('note') or '', 300)}")
    return lines


# --- masking ------------------------------------------------------------------

_MASKS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Credentials inside URLs: postgres://user:secret@host
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@", re.IGNORECASE), r"\1***:***@"),
    (re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE), r"\1 ***"),
    (re.compile(r"(?i)\b([a-z_]*(?:password|passwd|secret|token|api_?key)[a-z_]*)(\"?\s*[:=]\s*\"?)[^\s\"',;&]+"),
     r"\1\2***"),
    # Personal data: e-mail addresses and the host part of IPv4 addresses.
    (re.compile(r"\b[A-Za-z0-9._%+-]+@([A-Za-z0-9.-]+\.[A-Za-z]{2,})\b"), r"***@\1"),
    (re.compile(r"\b((?:25[0-5]|2[0-4]\d|1?\d?\d)\.(?:25[0-5]|2[0-4]\d|1?\d?\d)\.(?:25[0-5]|2[0-4]\d|1?\d?\d))"
                r"\.(?:25[0-5]|2[0-4]\d|1?\d?\d)\b"), r"\1.x"),
)


def mask(text: str) -> str:
    """Masks credentials and personal data before text leaves the cluster
    (terminal, CI logs): the seed's rule for sharing logs."""
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    return text


# --- the report ---------------------------------------------------------------

LABELS: dict[State, str] = {"ready": "ready", "waiting": "NOT READY", "failed": "FAILED", "ignored": "note"}


def report(snapshot: Snapshot, statuses: Sequence[Status], logs: Mapping[LogRequest, str],
           headline: str) -> str:
    """What a developer reads when the stack is not up: each workload's
    verdict, and for the broken ones their pods, events and last log lines."""
    lines = [headline]
    for status in sorted(statuses, key=lambda s: ("failed", "waiting", "ignored", "ready").index(s.state)):
        lines.append(f"  {LABELS[status.state]:<9} {status.ref}: {status.detail}")
        if status.state not in ("waiting", "failed"):
            continue
        pods = pods_of(status, snapshot.pods)
        troubled = [p for p in pods if pod_problems(p)] or pods
        for pod in troubled[:MAX_PODS]:
            lines.append(f"      pod {_name(pod)} ({pod_phase(pod)})")
            lines.extend(f"        - {mask(problem)}" for problem in pod_problems(pod))
            for request in log_requests(pod):
                text = logs.get(request)
                if text is None:
                    continue
                run = "previous run" if request.previous else "current run"
                lines.append(f"        last log lines of {request.container} ({run}):")
                tail = text.rstrip("\n").splitlines()[-LOG_LINES:] or ["(empty)"]
                lines.extend(f"          | {mask(line)}" for line in tail)
        if not pods:
            lines.append("      no pods (see events: quota, admission or Pod Security may block them)")
        events = events_for(status, pods[:MAX_PODS], snapshot.events)
        if events:
            lines.append("      events:")
            lines.extend(f"        {mask(event)}" for event in events)
    return "\n".join(lines)


def logs_to_fetch(snapshot: Snapshot, statuses: Sequence[Status]) -> list[LogRequest]:
    wanted: list[LogRequest] = []
    for status in statuses:
        if status.state in ("waiting", "failed"):
            pods = pods_of(status, snapshot.pods)
            troubled = [p for p in pods if pod_problems(p)] or pods
            for pod in troubled[:MAX_PODS]:
                wanted.extend(log_requests(pod))
    return wanted


# --- waiting ------------------------------------------------------------------

@dataclass(frozen=True)
class WaitResult:
    state: State
    reason: str
    snapshot: Snapshot
    statuses: list[Status]
    elapsed: float

    @property
    def ok(self) -> bool:
        return self.state == "ready"


def wait_for_workloads(fetch: Callable[[], Snapshot], *, timeout: float, interval: float = 5.0,
                       clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                       progress: Callable[[str], None] = lambda _line: None, job: str | None = None) -> WaitResult:
    """Polls until everything (or the one `job`) is ready, something failed
    for good, or the timeout passes. The clock and sleep are parameters so
    tests can fake time."""
    start = clock()
    last_reason = ""
    while True:
        snapshot = fetch() if job is None else focus_job(fetch(), job)
        statuses = evaluate(snapshot)
        state, reason = overall(snapshot, statuses, job=job)
        elapsed = clock() - start
        if state in ("ready", "failed"):
            return WaitResult(state, reason, snapshot, statuses, elapsed)
        if elapsed >= timeout:
            return WaitResult("waiting", f"timed out after {timeout:.0f}s: {reason}", snapshot, statuses, elapsed)
        if reason != last_reason:
            progress(f"waiting ({elapsed:.0f}s): {reason}")
            last_reason = reason
        sleep(max(0.0, min(interval, timeout - elapsed)))


# --- HTTP through the Ingress ------------------------------------------------

@dataclass(frozen=True)
class Check:
    name: str
    path: str
    expect: frozenset[int]
    scheme: Literal["https", "http"] = "https"
    expect_json: bool = False
    redirect_to_https: bool = False


CHECKS = (
    Check("API answers JSON", "/api/", frozenset({200}), expect_json=True),
    Check("admin is served", "/admin/login/", frozenset({200})),
    Check("static files are served", "/static/admin/css/base.css", frozenset({200})),
    # The Ingress routes only /api, /admin and /static: probes stay internal.
    Check("probes are not public", "/readyz", frozenset({404})),
    Check("metrics are not public", "/metrics", frozenset({404})),
    Check("plain HTTP redirects to HTTPS", "/api/", frozenset({301, 302, 307, 308}), scheme="http",
          redirect_to_https=True),
)


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


def check_response(check: Check, response: Response) -> str | None:
    """None if the response is what the check expects, else what is wrong."""
    if response.status not in check.expect:
        snippet = _shorten(response.body.decode("utf-8", "replace"), 160)
        expected = "/".join(str(s) for s in sorted(check.expect))
        return f"got HTTP {response.status}, expected {expected}" + (f": {snippet}" if snippet else "")
    headers = {k.lower(): v for k, v in response.headers.items()}
    if check.expect_json:
        if "json" not in headers.get("content-type", ""):
            return f"expected JSON, got content-type {headers.get('content-type', 'none')!r}"
        try:
            json.loads(response.body)
        except ValueError:
            return "the body is not valid JSON"
    if check.redirect_to_https and not headers.get("location", "").startswith("https://"):
        return f"redirects to {headers.get('location', 'nowhere')!r}, not to https://"
    return None


def connect_address(domain: str, override: str | None) -> str | None:
    """Where to connect; None means ask DNS. `*.localhost` is loopback
    (RFC 6761) even where the system resolver does not say so."""
    if override:
        return override
    if domain == "localhost" or domain.endswith(".localhost"):
        return "127.0.0.1"
    return None


def trust_file(tls_mode: str, cacert: str | None, certs: Path) -> str | None:
    """The extra CA to trust: --cacert, else for a local-CA env the CA that
    signed the dev certificate. scripts/dev-certs.sh names it in certs/ca-file
    (mkcert's rootCA.pem, which Python cannot find in the macOS Keychain, or
    its own certs/ca.crt); certs/ca.crt alone is an older dev-certs run."""
    if cacert:
        return cacert
    if tls_mode != "local-ca":
        return None
    record = certs / "ca-file"
    if record.is_file():
        named = Path(record.read_text().strip())
        if named.is_file():
            return str(named)
    legacy = certs / "ca.crt"
    return str(legacy) if legacy.is_file() else None


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a chosen address with the domain as Host and SNI (curl --resolve)."""

    def __init__(self, host: str, address: str, port: int, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(host, port, context=context, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, address: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


def http_get(domain: str, check: Check, *, address: str | None, context: ssl.SSLContext,
             timeout: float = 10.0, port: int | None = None) -> Response:
    target = address or domain
    connection: http.client.HTTPConnection
    if check.scheme == "https":
        connection = _PinnedHTTPSConnection(domain, target, port or 443, context, timeout)
    else:
        connection = _PinnedHTTPConnection(domain, target, port or 80, timeout)
    try:
        connection.request("GET", check.path, headers={"User-Agent": "vibearena-smoke", "Accept": "*/*"})
        answer = connection.getresponse()
        return Response(answer.status, dict(answer.getheaders()), answer.read(64 * 1024))
    finally:
        connection.close()


def run_checks(get: Callable[[Check], Response], checks: Sequence[Check], *, timeout: float,
               interval: float = 3.0, clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> dict[Check, str | None]:
    """Every check once, repeating the failing ones until they pass or the
    timeout passes: the ingress controller needs a few seconds to pick up new
    endpoints and certificates after the pods are ready."""
    start = clock()
    results: dict[Check, str | None] = {}
    pending = list(checks)
    while True:
        for check in pending:
            try:
                results[check] = check_response(check, get(check))
            except (OSError, http.client.HTTPException) as err:
                results[check] = f"request failed: {err}"
        pending = [c for c in pending if results[c]]
        if not pending or clock() - start >= timeout:
            return {check: results[check] for check in checks}
        sleep(interval)


# --- the cluster (I/O) ----------------------------------------------------------

class Cluster:
    """Reads one namespace through the Kubernetes API as plain JSON objects."""

    def __init__(self, context: str | None) -> None:
        from kubernetes import client, config  # imported here: the pure logic needs no client

        try:
            config.load_kube_config(context=context)
        except config.ConfigException:
            if context:
                raise
            config.load_incluster_config()
        api = client.ApiClient()
        self._core, self._apps, self._batch = client.CoreV1Api(api), client.AppsV1Api(api), client.BatchV1Api(api)
        self._api_exception = client.ApiException

    @staticmethod
    def _items(call: Callable[..., Any], namespace: str) -> list[Obj]:
        response = call(namespace, _preload_content=False, _request_timeout=15)
        return list(json.loads(response.data)["items"])

    def snapshot(self, namespace: str) -> Snapshot:
        try:
            self._core.read_namespace(namespace, _preload_content=False, _request_timeout=15)
        except self._api_exception as err:
            if err.status == 404:
                return Snapshot(namespace, namespace_exists=False)
            raise
        return Snapshot(
            namespace,
            deployments=self._items(self._apps.list_namespaced_deployment, namespace),
            statefulsets=self._items(self._apps.list_namespaced_stateful_set, namespace),
            jobs=self._items(self._batch.list_namespaced_job, namespace),
            pods=self._items(self._core.list_namespaced_pod, namespace),
            events=self._items(self._core.list_namespaced_event, namespace),
        )

    def logs(self, namespace: str, request: LogRequest) -> str:
        try:
            response = self._core.read_namespaced_pod_log(
                request.pod, namespace, container=request.container, previous=request.previous,
                tail_lines=LOG_LINES, _preload_content=False, _request_timeout=15)
            return str(response.data.decode("utf-8", "replace"))
        except self._api_exception as err:
            return f"(logs unavailable: {err.reason})"


# --- command line ---------------------------------------------------------------

def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="smoke.py", description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="dev", help="profile in env/ (default dev)")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the workloads (600)")
    parser.add_argument("--http-timeout", type=float, default=120,
                        help="seconds to retry failing HTTP checks (120)")
    parser.add_argument("--interval", type=float, default=5, help="seconds between polls (5)")
    trust = parser.add_mutually_exclusive_group()
    trust.add_argument("--cacert",
                       help="extra CA certificate to trust (default for local-ca envs: the one in certs/ca-file)")
    trust.add_argument("--insecure", action="store_true", help="do not verify the server certificate")
    parser.add_argument("--connect-to", metavar="ADDRESS",
                        help="connect here instead of resolving the domain (default for *.localhost: 127.0.0.1)")
    parser.add_argument("--no-wait", action="store_true", help="skip waiting for the workloads")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP checks")
    parser.add_argument("--job", metavar="NAME",
                        help="wait for this one Job only (make migrate, createsuperuser, backup-now); "
                             "implies --no-http")
    parser.add_argument("--snapshot", metavar="FILE",
                        help="judge a recorded `kubectl get deploy,sts,job,pod,events -n NS -o json` instead "
                             "of the live cluster (implies --no-http)")
    return parser.parse_args(argv)


def ssl_context(cafile: str | None, insecure: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif cafile:
        context.load_verify_locations(cafile)
    return context


def wait_in_cluster(args: argparse.Namespace, namespace: str) -> tuple[WaitResult, dict[LogRequest, str]]:
    cluster = Cluster(args.context)
    what = f"Job {args.job}" if args.job else "the workloads"
    print(f"smoke: waiting up to {args.timeout:.0f}s for {what} in {namespace}", flush=True)
    result = wait_for_workloads(lambda: cluster.snapshot(namespace), timeout=args.timeout, interval=args.interval,
                                progress=lambda line: print(f"smoke: {line}", flush=True), job=args.job)
    logs = {} if result.ok else {r: cluster.logs(namespace, r)
                                 for r in logs_to_fetch(result.snapshot, result.statuses)}
    return result, logs


def judge_recording(path: Path, namespace: str) -> tuple[WaitResult, dict[LogRequest, str]]:
    """One verdict on a recorded `kubectl get ... -o json`, without a cluster."""
    snapshot = snapshot_from_list(namespace, json.loads(path.read_text(encoding="utf-8")))
    statuses = evaluate(snapshot)
    state, reason = overall(snapshot, statuses)
    return WaitResult(state, reason, snapshot, statuses, 0.0), {}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sys.path.insert(0, str(ROOT))
    from charts.config import ProfileError, load_profile

    try:
        profile = load_profile(ROOT / "env", args.env)
    except ProfileError as err:
        print(f"smoke: {err}", file=sys.stderr)
        return 2
    namespace, domain = profile.namespace, profile.domain

    if args.snapshot:
        try:
            result, logs = judge_recording(Path(args.snapshot), namespace)
        except (OSError, ValueError) as err:
            print(f"smoke: cannot read {args.snapshot}: {err}", file=sys.stderr)
            return 2
    elif not args.no_wait:
        try:
            result, logs = wait_in_cluster(args, namespace)
        except Exception as err:  # the client raises many types; all mean "cannot ask the cluster"
            print(f"smoke: cannot read namespace {namespace} from the cluster: {mask(str(err))}", file=sys.stderr)
            return 2
    if args.snapshot or not args.no_wait:
        if not result.ok:
            print(report(result.snapshot, result.statuses, logs,
                         f"smoke: {namespace} is not up ({result.reason})"), file=sys.stderr)
            return 1
        after = "" if args.snapshot else f" after {result.elapsed:.0f}s"
        print(report(result.snapshot, result.statuses, {}, f"smoke: {namespace}: {result.reason}{after}"))

    if args.no_http or args.snapshot or args.job:
        return 0
    cafile = trust_file(profile.edge.tls.mode, args.cacert, ROOT / "certs")
    context = ssl_context(cafile, args.insecure)
    address = connect_address(domain, args.connect_to)
    via = f" via {address}" if address else ""
    print(f"smoke: checking https://{domain}{via}" + (f" (trusting {cafile})" if cafile else ""), flush=True)
    results = run_checks(lambda check: http_get(domain, check, address=address, context=context),
                         CHECKS, timeout=args.http_timeout)
    for check, problem in results.items():
        url = f"{check.scheme}://{domain}{check.path}"
        print(f"  {'ok' if problem is None else 'FAILED':<6} {check.name}: GET {url}"
              + (f": {mask(problem)}" if problem else ""))
    failed = [c for c, problem in results.items() if problem]
    if failed:
        print(f"smoke: {len(failed)} of {len(results)} HTTP checks failed. A 502 means the API pods are not "
              "serving (see `make logs C=api`); a certificate error means the CA is not trusted "
              "(--cacert FILE; for mkcert: $(mkcert -CAROOT)/rootCA.pem).", file=sys.stderr)
        return 1
    print("smoke: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
