"""The smoke checker's decisions, against recorded API objects (no cluster).

Fixtures in tests/fixtures/smoke/ are `kubectl get deploy,sts,job,pod,events
-o json` Lists written by hand from real outputs: a healthy stack, a crash
loop, an image that cannot be pulled, a failed migration Job and a rollout in
progress (with an unschedulable pod and a Pod Security rejection).
"""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from scripts import smoke
from scripts.smoke import Check, LogRequest, Response, Snapshot, Status

FIXTURES = Path(__file__).parent / "fixtures" / "smoke"


def recorded(name: str, namespace: str = "vibearena-dev") -> Snapshot:
    return smoke.snapshot_from_list(namespace, json.loads((FIXTURES / f"{name}.json").read_text()))


def recorded_logs(name: str) -> dict[LogRequest, str]:
    logs = {}
    for key, text in json.loads((FIXTURES / f"{name}-logs.json").read_text()).items():
        pod, container, *previous = key.split("/")
        logs[LogRequest(pod, container, previous=bool(previous))] = text
    return logs


def status_of(statuses: list[Status], ref: str) -> Status:
    found = [s for s in statuses if s.ref == ref]
    assert len(found) == 1, f"expected one status for {ref}, got {[s.ref for s in statuses]}"
    return found[0]


def pod(snapshot: Snapshot, name: str) -> dict:
    return next(p for p in snapshot.pods if p["metadata"]["name"] == name)


class FakeClock:
    """Time that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# --- verdicts per workload -----------------------------------------------------

def test_healthy_stack_is_ready_and_a_failed_cronjob_run_is_only_a_note() -> None:
    snapshot = recorded("healthy")
    statuses = smoke.evaluate(snapshot)
    state, reason = smoke.overall(snapshot, statuses)
    assert state == "ready", reason
    assert status_of(statuses, "Deployment/api").detail == "1/1 available"
    assert status_of(statuses, "StatefulSet/postgres").state == "ready"
    assert status_of(statuses, "Job/migrate-dev").detail == "completed"
    backup = status_of(statuses, "Job/postgres-backup-29405655")
    assert backup.state == "ignored", "a CronJob's run must not block a rollout"
    assert "CronJob postgres-backup" in backup.detail and "BackoffLimitExceeded" in backup.detail


def test_crash_loop_is_waiting_and_explained() -> None:
    snapshot = recorded("crashloop")
    api = status_of(smoke.evaluate(snapshot), "Deployment/api")
    assert (api.state, api.detail) == ("waiting", "0 of 1 replicas available")
    problems = smoke.pod_problems(pod(snapshot, "api-6d8f7b9c5d-x2kqp"))
    assert problems[0].startswith("api: CrashLoopBackOff: back-off 1m20s restarting failed container"), problems
    assert "api: restarted 4x, last run exited with code 1 (Error)" in problems
    # The crashed run's output is what explains a crash loop.
    assert smoke.log_requests(pod(snapshot, "api-6d8f7b9c5d-x2kqp")) == [
        LogRequest("api-6d8f7b9c5d-x2kqp", "api", previous=True)]


def test_image_pull_failure_during_a_rollout() -> None:
    snapshot = recorded("imagepull")
    worker = status_of(smoke.evaluate(snapshot), "Deployment/worker-default")
    assert worker.state == "waiting"
    assert worker.detail == "rollout in progress: 1 old replicas still terminating"
    stuck = pod(snapshot, "worker-default-59d7c8b6f4-z7c4d")
    problems = smoke.pod_problems(stuck)
    assert len(problems) == 1 and problems[0].startswith("worker: ImagePullBackOff: Back-off pulling image"), problems
    assert smoke.log_requests(stuck) == [], "a container that never started has no logs to fetch"
    assert smoke.pod_problems(pod(snapshot, "worker-default-7f9b8c6d5e-pq8wn")) == []


def test_failed_job_is_terminal() -> None:
    snapshot = recorded("job-failed")
    statuses = smoke.evaluate(snapshot)
    job = status_of(statuses, "Job/migrate-dev")
    assert job.state == "failed"
    assert job.detail == "failed: BackoffLimitExceeded: Job has reached the specified backoff limit"
    assert smoke.overall(snapshot, statuses) == ("failed", "Job/migrate-dev failed")
    failed_pod = pod(snapshot, "migrate-dev-k2j7h")
    assert smoke.pod_problems(failed_pod) == ["migrate: exited with code 1 (Error)"]
    assert smoke.log_requests(failed_pod) == [LogRequest("migrate-dev-k2j7h", "migrate", previous=False)]
    unready = smoke.pod_problems(pod(snapshot, "api-7c6d5f8b9d-m5r8t"))
    assert unready == ["api: running but not ready (its readiness probe fails; see events)"]


def test_rollout_in_progress() -> None:
    snapshot = recorded("rollout", "vibearena-stage")
    statuses = smoke.evaluate(snapshot)
    assert status_of(statuses, "Deployment/api").detail == "rollout in progress: 1 of 2 replicas updated"
    worker = status_of(statuses, "Deployment/worker-default")
    assert worker.state == "waiting"
    assert worker.detail.startswith('cannot create pods: FailedCreate: pods "worker-default-6c8b7d9f5e-" is forbidden: '
                                    'violates PodSecurity "restricted:latest"'), worker.detail
    assert status_of(statuses, "StatefulSet/redis").detail == "rolling update: 0 of 1 replicas updated"
    assert status_of(statuses, "Job/ensure-bucket-0-2-0").detail == (
        "running: 1 active, 0 succeeded, 1 failed (backoffLimit 6)")
    problems = smoke.pod_problems(pod(snapshot, "api-5f7d9c8b6a-h6v2x"))
    assert problems == ["not scheduled: Unschedulable: 0/3 nodes are available: 3 Insufficient cpu. preemption: "
                        "0/3 nodes are available: 3 No preemption victims found for incoming pod."]
    # A container still being created is not a problem yet.
    assert smoke.pod_problems(pod(snapshot, "ensure-bucket-0-2-0-w4k8p")) == []
    state, reason = smoke.overall(snapshot, statuses)
    assert state == "waiting" and reason.startswith("4 not ready:"), reason


@pytest.mark.parametrize(("status", "expected"), [
    ({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1},
     ("waiting", "the controller")),
    ({"observedGeneration": 2, "conditions": [{"type": "Progressing", "status": "False",
                                               "reason": "ProgressDeadlineExceeded",
                                               "message": "ReplicaSet \"api-1\" has timed out progressing."}]},
     ("failed", "rollout stuck: ReplicaSet \"api-1\" has timed out progressing.")),
])
def test_deployment_generation_and_deadline(status: dict, expected: tuple[str, str]) -> None:
    deployment = {"kind": "Deployment", "metadata": {"name": "api", "generation": 2}, "spec": {"replicas": 1},
                  "status": status}
    verdict = smoke.deployment_status(deployment)
    assert (verdict.state, verdict.detail[: len(expected[1])]) == expected


def test_scaled_to_zero_is_ready() -> None:
    verdict = smoke.deployment_status({"metadata": {"name": "worker-bulk"}, "spec": {"replicas": 0}, "status": {}})
    assert verdict.state == "ready", verdict


def test_suspended_job_is_ignored() -> None:
    verdict = smoke.job_status({"metadata": {"name": "paused"}, "spec": {"suspend": True}, "status": {}})
    assert (verdict.state, verdict.detail) == ("ignored", "suspended")


def test_missing_namespace_and_empty_namespace_wait() -> None:
    assert smoke.overall(Snapshot("vibearena-dev", namespace_exists=False), []) == (
        "waiting", "namespace vibearena-dev does not exist (applied yet?)")
    assert smoke.overall(Snapshot("vibearena-dev"), [])[0] == "waiting"


@pytest.mark.parametrize(("selector", "labels", "matches"), [
    ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
    ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
    ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "api"]}]}, {"tier": "api"}, True),
    ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["web"]}]}, {"tier": "web"}, False),
    ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, {}, False),
    ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, {}, True),
    ({}, {"a": "1"}, False),
])
def test_selector_matches(selector: dict, labels: dict, matches: bool) -> None:
    assert smoke.selector_matches(selector, labels) is matches


# --- events and masking --------------------------------------------------------

def test_events_come_from_the_deployments_own_replicasets_only() -> None:
    snapshot = recorded("rollout", "vibearena-stage")
    worker = status_of(smoke.evaluate(snapshot), "Deployment/worker-default")
    events = smoke.events_for(worker, [], snapshot.events)
    assert len(events) == 1, events
    assert events[0].startswith("Warning FailedCreate (x17): Error creating: pods")
    assert events[0].endswith("must set securityContext.allowPrivilegeEscalation=false)"), "the cause is not cut"


def test_mask_hides_credentials_and_personal_data() -> None:
    text = recorded_logs("crashloop")[LogRequest("api-6d8f7b9c5d-x2kqp", "api", previous=True)]
    masked = smoke.mask(text)
    for secret in ("s3cr3t-Pa55", "alice@", "203.0.113.7", "9f8e7d6c5b4a39281706f5e4d3c2b1a0", "eyJhbGciOiJIUzI1NiJ9"):
        assert secret not in masked, f"{secret!r} leaked into: {masked}"
    assert "postgres://***:***@postgres:5432/vibearena" in masked
    assert "***@example.com" in masked and "203.0.113.x" in masked
    assert "DJANGO_SECRET_KEY=***" in masked and "Bearer ***" in masked
    assert "OperationalError" in masked, "masking must keep the useful part"


# --- the report ----------------------------------------------------------------

def test_report_for_a_crash_loop_names_the_cause() -> None:
    snapshot = recorded("crashloop")
    statuses = smoke.evaluate(snapshot)
    wanted = smoke.logs_to_fetch(snapshot, statuses)
    assert wanted == [LogRequest("api-6d8f7b9c5d-x2kqp", "api", previous=True)]
    text = smoke.report(snapshot, statuses, recorded_logs("crashloop"), "smoke: vibearena-dev is not up")
    lines = text.splitlines()
    assert lines[0] == "smoke: vibearena-dev is not up"
    assert lines[1] == "  NOT READY Deployment/api: 0 of 1 replicas available", "broken workloads come first"
    assert "      pod api-6d8f7b9c5d-x2kqp (Running)" in lines
    assert any("Warning BackOff (x12): Back-off restarting failed container api" in line for line in lines)
    assert "        last log lines of api (previous run):" in lines
    assert any("OperationalError: cannot connect to postgres://***:***@postgres" in line for line in lines)
    assert "s3cr3t" not in text
    assert "  ready     StatefulSet/postgres: 1/1 ready" in lines
    assert "Started container postgres" not in text, "healthy workloads get no event noise"


def test_report_for_a_failed_migration_shows_its_log() -> None:
    snapshot = recorded("job-failed")
    statuses = smoke.evaluate(snapshot)
    logs = recorded_logs("job-failed")
    assert set(smoke.logs_to_fetch(snapshot, statuses)) == set(logs)
    text = smoke.report(snapshot, statuses, logs, "headline")
    assert text.splitlines()[1].startswith("  FAILED    Job/migrate-dev: failed: BackoffLimitExceeded")
    assert "password authentication failed" in text
    assert '"10.96.41.x"' in text, "IPv4 addresses are masked"
    assert "Warning Unhealthy (x21): Readiness probe failed: HTTP probe failed with statuscode: 503" in text
    assert "not ready: 3 unapplied migrations" in text


def test_report_for_a_deployment_without_pods_points_at_admission() -> None:
    snapshot = recorded("rollout", "vibearena-stage")
    text = smoke.report(snapshot, smoke.evaluate(snapshot), {}, "headline")
    assert "no pods (see events: quota, admission or Pod Security may block them)" in text
    assert "another Deployment" not in text


# --- waiting with a fake clock ---------------------------------------------------

def test_wait_times_out_with_a_report_of_what_is_stuck() -> None:
    clock = FakeClock()
    snapshot = recorded("crashloop")
    fetches: list[float] = []
    progress: list[str] = []

    def fetch() -> Snapshot:
        fetches.append(clock())
        return snapshot

    result = smoke.wait_for_workloads(fetch, timeout=30, interval=5, clock=clock, sleep=clock.sleep,
                                      progress=progress.append)
    assert not result.ok
    assert result.state == "waiting"
    assert result.reason == "timed out after 30s: 1 not ready: Deployment/api"
    assert fetches == [1000.0 + 5 * i for i in range(7)], "polls every interval until the deadline"
    assert clock.sleeps == [5.0] * 6
    assert progress == ["waiting (0s): 1 not ready: Deployment/api"], "progress is printed when it changes"
    text = smoke.report(result.snapshot, result.statuses, {}, f"smoke: not up ({result.reason})")
    assert "CrashLoopBackOff" in text


def test_wait_sleeps_no_longer_than_the_time_left() -> None:
    clock = FakeClock()
    result = smoke.wait_for_workloads(lambda: recorded("crashloop"), timeout=12, interval=5, clock=clock,
                                      sleep=clock.sleep)
    assert clock.sleeps == [5.0, 5.0, 2.0] and result.elapsed == 12


def test_wait_ends_when_the_rollout_finishes() -> None:
    clock = FakeClock()
    sequence = iter([Snapshot("vibearena-dev", namespace_exists=False), recorded("rollout"), recorded("healthy")])
    progress: list[str] = []
    result = smoke.wait_for_workloads(lambda: next(sequence), timeout=600, interval=5, clock=clock,
                                      sleep=clock.sleep, progress=progress.append)
    assert result.ok and result.elapsed == 10
    assert [line.split(":")[0] for line in progress] == ["waiting (0s)", "waiting (5s)"]


def test_wait_stops_at_once_on_a_failed_job() -> None:
    clock = FakeClock()
    result = smoke.wait_for_workloads(lambda: recorded("job-failed"), timeout=600, clock=clock, sleep=clock.sleep)
    assert result.state == "failed" and clock.sleeps == [], "a failed Job will not recover by waiting"


def test_waiting_for_one_job_counts_a_cronjob_run_started_by_hand() -> None:
    clock = FakeClock()
    healthy = recorded("healthy")
    # make backup-now: a Job from the CronJob; this one failed.
    result = smoke.wait_for_workloads(lambda: healthy, timeout=60, clock=clock, sleep=clock.sleep,
                                      job="postgres-backup-29405655")
    assert (result.state, result.reason) == ("failed", "Job/postgres-backup-29405655 failed")
    assert smoke.cronjob_owner(healthy.jobs[1]), "the recording itself is left as it was"
    result = smoke.wait_for_workloads(lambda: healthy, timeout=60, clock=clock, sleep=clock.sleep, job="migrate-dev")
    assert result.ok and [s.ref for s in result.statuses] == ["Job/migrate-dev"]
    result = smoke.wait_for_workloads(lambda: healthy, timeout=10, interval=5, clock=clock, sleep=clock.sleep,
                                      job="createsuperuser-1764230400")
    assert result.reason == "timed out after 10s: Job createsuperuser-1764230400 does not exist (yet)"


# --- HTTP checks -----------------------------------------------------------------

API = smoke.CHECKS[0]
REDIRECT = next(c for c in smoke.CHECKS if c.scheme == "http")


@pytest.mark.parametrize(("check", "response", "problem"), [
    (API, Response(200, {"Content-Type": "application/json"}, b'{"service": "vibearena-api"}'), None),
    (API, Response(502, {"Content-Type": "text/html"}, b"<html>502 Bad Gateway</html>"),
     "got HTTP 502, expected 200: <html>502 Bad Gateway</html>"),
    (API, Response(200, {"Content-Type": "text/html"}, b"<html></html>"),
     "expected JSON, got content-type 'text/html'"),
    (API, Response(200, {"content-type": "application/json"}, b"{not json"), "the body is not valid JSON"),
    (REDIRECT, Response(301, {"Location": "https://vibearena.localhost/api/"}, b""), None),
    (REDIRECT, Response(301, {"Location": "http://vibearena.localhost/api/"}, b""),
     "redirects to 'http://vibearena.localhost/api/', not to https://"),
    (REDIRECT, Response(200, {}, b""), "got HTTP 200, expected 301/302/307/308"),
])
def test_check_response(check: Check, response: Response, problem: str | None) -> None:
    assert smoke.check_response(check, response) == problem


def test_probes_must_not_be_public() -> None:
    probes = next(c for c in smoke.CHECKS if c.path == "/readyz")
    assert smoke.check_response(probes, Response(404, {}, b"")) is None
    assert smoke.check_response(probes, Response(200, {}, b"ok")) == "got HTTP 200, expected 404: ok"


def test_failing_checks_are_retried_until_they_pass() -> None:
    clock = FakeClock()
    answers = {API.path: iter([Response(502, {}, b"bad gateway"), Response(503, {}, b""),
                               Response(200, {"Content-Type": "application/json"}, b"{}")])}
    calls: list[str] = []

    def get(check: Check) -> Response:
        calls.append(check.path)
        if check is API:
            return next(answers[API.path])
        raise ConnectionRefusedError("connection refused")

    results = smoke.run_checks(get, [API], timeout=60, interval=3, clock=clock, sleep=clock.sleep)
    assert results == {API: None} and calls == ["/api/"] * 3 and clock.sleeps == [3, 3]
    results = smoke.run_checks(get, [REDIRECT], timeout=6, interval=3, clock=clock, sleep=clock.sleep)
    assert results == {REDIRECT: "request failed: connection refused"}


@pytest.mark.parametrize(("domain", "override", "address"), [
    ("vibearena.localhost", None, "127.0.0.1"),
    ("localhost", None, "127.0.0.1"),
    ("stage.vibearena.example.com", None, None),
    ("stage.vibearena.example.com", "192.0.2.10", "192.0.2.10"),
])
def test_connect_address(domain: str, override: str | None, address: str | None) -> None:
    assert smoke.connect_address(domain, override) == address


def test_trust_file(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    assert smoke.trust_file("local-ca", None, certs) is None, "no dev CA yet: system trust only"
    (certs / "ca.crt").write_text("pem")
    assert smoke.trust_file("local-ca", None, certs) == str(certs / "ca.crt"), "an older dev-certs run"
    # mkcert signed the current certificate: its root wins over a stale openssl CA.
    mkcert_root = tmp_path / "mkcert" / "rootCA.pem"
    mkcert_root.parent.mkdir()
    mkcert_root.write_text("pem")
    (certs / "ca-file").write_text(f"{mkcert_root}\n")
    assert smoke.trust_file("local-ca", None, certs) == str(mkcert_root)
    mkcert_root.unlink()
    assert smoke.trust_file("local-ca", None, certs) == str(certs / "ca.crt"), "a recorded CA that is gone"
    assert smoke.trust_file("acme", None, certs) is None, "a public certificate needs no dev CA"
    assert smoke.trust_file("acme", "/x/ca.pem", certs) == "/x/ca.pem"
    assert smoke.trust_file("local-ca", "/x/ca.pem", certs) == "/x/ca.pem", "--cacert always wins"


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path, list[dict[str, str]]]]:
    """An HTTPS server on loopback with a certificate for vibearena.localhost
    only, to prove the checker sends the domain as Host and SNI while
    connecting to another address (like curl --resolve)."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=vibearena.localhost", "-addext", "subjectAltName=DNS:vibearena.localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    seen: list[dict[str, str]] = []
    server_names: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({"host": self.headers["Host"], "path": self.path, "sni": server_names[-1]})
            body = b'{"service": "vibearena-api"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _sock, name, _context: server_names.append(name or "")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], cert, seen
    server.shutdown()
    server.server_close()


def test_https_request_uses_the_domain_for_host_and_certificate(tls_server) -> None:
    port, cert, seen = tls_server
    context = smoke.ssl_context(str(cert), insecure=False)
    response = smoke.http_get("vibearena.localhost", API, address="127.0.0.1", context=context, port=port)
    assert smoke.check_response(API, response) is None
    # Host carries the port only because this test server is not on 443.
    assert seen[-1] == {"host": f"vibearena.localhost:{port}", "path": "/api/", "sni": "vibearena.localhost"}
    # Without the dev CA the certificate is rejected, not silently accepted.
    with pytest.raises(ssl.SSLCertVerificationError):
        smoke.http_get("vibearena.localhost", API, address="127.0.0.1", context=smoke.ssl_context(None, False),
                       port=port)
    insecure = smoke.http_get("vibearena.localhost", API, address="127.0.0.1",
                              context=smoke.ssl_context(None, insecure=True), port=port)
    assert insecure.status == 200


# --- the command line on recordings ---------------------------------------------

def test_cli_judges_a_recording(capsys: pytest.CaptureFixture[str]) -> None:
    assert smoke.main(["--env", "dev", "--snapshot", str(FIXTURES / "healthy.json")]) == 0
    out = capsys.readouterr().out
    assert "smoke: vibearena-dev: 5 workloads ready\n" in out and "note      Job/postgres-backup" in out
    assert smoke.main(["--env", "dev", "--snapshot", str(FIXTURES / "crashloop.json")]) == 1
    err = capsys.readouterr().err
    assert "smoke: vibearena-dev is not up (1 not ready: Deployment/api)" in err and "CrashLoopBackOff" in err


def test_cli_rejects_an_unknown_env(capsys: pytest.CaptureFixture[str]) -> None:
    assert smoke.main(["--env", "qa", "--no-wait", "--no-http"]) == 2
    assert "qa.yaml: profile file is missing" in capsys.readouterr().err
