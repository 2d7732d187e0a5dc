from __future__ import annotations

from config import probes
from django.test import TestCase, override_settings


class ProbeTest(TestCase):
    def test_healthz_answers_any_host(self) -> None:
        # Kubelet probes use the pod IP as Host, which ALLOWED_HOSTS rejects.
        response = self.client.get("/healthz", headers={"Host": "10.244.1.7:8000"})
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(), {"status": "ok"})

    def test_other_paths_still_validate_host(self) -> None:
        response = self.client.get("/api/", headers={"Host": "10.244.1.7:8000"})
        self.assertEqual(response.status_code, 400)

    def test_readyz_ok_with_database_redis_and_migrations(self) -> None:
        response = self.client.get("/readyz", headers={"Host": "10.244.1.7:8000"})
        self.assertEqual(response.status_code, 200, response.content)
        self.assertEqual(
            response.json()["checks"],
            {"database": "ok", "migrations": "ok", "redis": "ok"},
        )

    def test_readyz_names_unreachable_redis(self) -> None:
        with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
            response = self.client.get("/readyz")
        self.assertEqual(response.status_code, 503)
        body = response.json()
        self.assertEqual(body["status"], "unavailable")
        self.assertEqual(body["failed"], ["redis"])
        self.assertEqual(body["checks"]["database"], "ok")

    def test_metrics_counts_requests_by_route(self) -> None:
        self.client.get("/api/")
        text = self.client.get("/metrics").content.decode()
        self.assertIn(
            'django_http_requests_total{method="GET",route="/api/",status="200"}', text
        )
        self.assertIn("django_http_request_duration_seconds_bucket", text)

    def test_redis_targets_are_deduplicated(self) -> None:
        self.assertEqual(list(probes._redis_targets()), ["redis"])
