"""The API under gunicorn (Dockerfile CMD, prod settings, 2 workers)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from prometheus_client.parser import text_string_to_metric_families

from tests.app.harness import MAX_UPLOAD, App, Server, start_server, stop_server
from tests.support.services import S3Server

POD_IP_HOST = "10.244.3.17:8000"


def test_healthz_answers_probe_with_pod_ip_host(api_server: Server) -> None:
    response = api_server.request("GET", "/healthz", headers={"Host": POD_IP_HOST, "X-Forwarded-Proto": ""})
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok"}


def test_readyz_ok_with_pod_ip_host(api_server: Server) -> None:
    response = api_server.request("GET", "/readyz", headers={"Host": POD_IP_HOST, "X-Forwarded-Proto": ""})
    assert response.status_code == 200, response.text
    assert response.json()["checks"] == {"database": "ok", "migrations": "ok", "redis": "ok"}


def test_api_rejects_unknown_host(api_server: Server) -> None:
    response = api_server.request("GET", "/api/", headers={"Host": POD_IP_HOST})
    assert response.status_code == 400, "ALLOWED_HOSTS must still apply outside the probe paths"


def test_plain_http_is_redirected_to_https(api_server: Server) -> None:
    response = api_server.request("GET", "/api/", headers={"X-Forwarded-Proto": "http"})
    assert response.status_code == 301
    assert response.headers["Location"].startswith("https://")


def test_api_index_over_https(api_server: Server) -> None:
    response = api_server.request("GET", "/api/")
    assert response.status_code == 200, response.text
    assert response.json()["max_upload_bytes"] == MAX_UPLOAD
    assert "max-age=" in response.headers.get("Strict-Transport-Security", "")


def test_static_files_served_by_whitenoise(api_server: Server) -> None:
    response = api_server.request("GET", "/static/admin/css/base.css")
    assert response.status_code == 200
    assert "text/css" in response.headers["Content-Type"]


def _bucket_objects(s3: S3Server, bucket: str) -> dict[str, bytes]:
    client = s3.client()
    listing = client.list_objects_v2(Bucket=bucket, Prefix="uploads/").get("Contents", [])
    return {item["Key"]: client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read() for item in listing}


def test_upload_below_limit_lands_in_bucket(api_server: Server, app: App, api_token: str, s3: S3Server) -> None:
    bucket = app.env["MINIO_BUCKET"]
    before = _bucket_objects(s3, bucket)
    content = os.urandom(200 * 1024)
    response = api_server.request(
        "POST", "/api/files/", headers={"Authorization": f"Bearer {api_token}"},
        files={"file": ("photo.jpg", content, "image/jpeg")},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["name"], body["size"], body["content_type"]) == ("photo.jpg", len(content), "image/jpeg")
    new = {key: data for key, data in _bucket_objects(s3, bucket).items() if key not in before}
    assert list(new.values()) == [content], f"expected exactly the uploaded bytes as one new object, got {list(new)}"
    detail = api_server.request("GET", f"/api/files/{body['id']}/", headers={"Authorization": f"Bearer {api_token}"})
    assert detail.status_code == 200 and detail.json()["id"] == body["id"]


def test_upload_above_limit_is_refused_with_413(api_server: Server, app: App, api_token: str, s3: S3Server) -> None:
    bucket = app.env["MINIO_BUCKET"]
    before = _bucket_objects(s3, bucket)
    content = os.urandom(MAX_UPLOAD + 512 * 1024)
    # Must be a clean HTTP answer, not a connection reset while sending.
    response = api_server.request(
        "POST", "/api/files/", headers={"Authorization": f"Bearer {api_token}"},
        files={"file": ("big.bin", content, "application/octet-stream")},
    )
    assert response.status_code == 413, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"] == "payload_too_large"
    assert response.json()["max_bytes"] == MAX_UPLOAD
    assert _bucket_objects(s3, bucket) == before, "a refused upload must not reach the bucket"
    assert api_server.request("GET", "/healthz").status_code == 200


def _scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = server.request("GET", "/metrics").text
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _sum(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(
        value for (sample_name, sample_labels), value in samples.items()
        if sample_name == name and all(item in sample_labels for item in labels.items())
    )


def test_metrics_count_every_request_across_two_workers(api_server: Server) -> None:
    requests_sent = 24
    # Concurrent slow requests keep both workers busy, so both record samples.
    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(pool.map(lambda _: api_server.request("GET", "/slow/?seconds=0.05").status_code,
                                 range(requests_sent)))
    assert statuses == [200] * requests_sent
    pids = {path.name.split("_")[-1].split(".")[0] for path in api_server.metrics_dir.glob("counter_*.db")}
    assert len(pids) >= 2, f"both workers should have served requests, metric files: {pids}"
    # Whichever worker answers the scrape, it must report the sum of all.
    for _ in range(4):
        samples = _scrape(api_server)
        assert _sum(samples, "django_http_requests_total", route="/slow/") == requests_sent
        assert _sum(samples, "django_http_requests_total", route="/slow/", method="GET", status="200") == requests_sent
        assert _sum(samples, "django_http_request_duration_seconds_count", route="/slow/") == requests_sent
        assert _sum(samples, "django_http_request_duration_seconds_sum", route="/slow/") >= 0.05 * requests_sent


def test_metrics_from_a_previous_run_are_discarded_at_start(app: App) -> None:
    # /tmp is an emptyDir that outlives a container restart; old counts must
    # not be added to the new process's.
    stale_dir = app.private_dir("prometheus-stale")
    seed = (
        "from prometheus_client import Counter\n"
        "Counter('django_http_requests_total', 'x', ['method', 'route', 'status'])"
        ".labels('GET', '/stale/', '200').inc(1000)\n"
    )
    subprocess.run(
        [sys.executable, "-c", seed], env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(stale_dir)}, check=True
    )
    assert list(stale_dir.glob("counter_*.db")), "seeding the stale counter failed"
    server = start_server(app, workers=1, env={"PROMETHEUS_MULTIPROC_DIR": str(stale_dir)})
    try:
        samples = _scrape(server)
    finally:
        stop_server(server)
    assert _sum(samples, "django_http_requests_total", route="/stale/") == 0
    assert _sum(samples, "django_http_requests_total", route="/healthz") >= 1


def test_logs_are_json_lines_without_personal_data(api_server: Server, app: App, api_token: str) -> None:
    email = "jane.roe@example.org"
    api_server.request("GET", f"/api/files/?email={email}", headers={"Authorization": f"Bearer {api_token}"})
    api_server.request("GET", "/api/", headers={"Host": "203.0.113.9"})  # logged as DisallowedHost
    # A 404 is logged by django.request with the request attached.
    api_server.request("GET", "/api/nope/?email=jane.roe%40example.org&invite_code=INV-LIVE-7")
    lines = api_server.log_lines()
    records = [json.loads(line) for line in lines]  # every line must be one JSON object
    assert any(record["logger"] == "gunicorn.error" for record in records)
    assert any(record.get("route") == "/api/files/" for record in records)
    text = "\n".join(lines)
    assert any(record.get("request") == "GET /api/nope/" for record in records), "404 not logged by path"
    for value in (api_token, email, "jane.roe", "INV-LIVE-7", "203.0.113.9", app.env["DJANGO_SUPERUSER_PASSWORD"],
                  hashlib.sha256(api_token.encode()).hexdigest()):
        assert value not in text, "personal data or a credential reached the log"
