from __future__ import annotations

import hashlib
import uuid

import redis
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings

from core import storage
from core.models import StoredFile
from core.tasks import checksum_file
from core.tests.base import ApiTestCase


class UploadTest(ApiTestCase):
    def test_upload_stores_object_in_bucket_and_row(self) -> None:
        content = b"hello object storage"
        response = self.client.post(
            "/api/files/",
            {"file": SimpleUploadedFile("hello.txt", content, "text/plain")},
            headers=self.auth(),
        )
        self.assertEqual(response.status_code, 201, response.content)
        body = response.json()
        stored = StoredFile.objects.get(pk=body["id"])
        self.assertEqual(stored.owner, self.user)
        self.assertEqual((stored.name, stored.size, stored.content_type),
                         ("hello.txt", len(content), "text/plain"))
        self.assertEqual(storage.open_stream(stored.object_key).read(), content)

    def test_upload_without_token_is_401(self) -> None:
        response = self.client.post(
            "/api/files/", {"file": SimpleUploadedFile("a.txt", b"x")}
        )
        self.assertEqual(response.status_code, 401)
        self.assertIn("Bearer", response["WWW-Authenticate"])
        self.assertFalse(StoredFile.objects.exists())

    def test_upload_with_unknown_token_is_401(self) -> None:
        response = self.client.post(
            "/api/files/", {"file": SimpleUploadedFile("a.txt", b"x")},
            headers=self.auth("not-a-token"),
        )
        self.assertEqual(response.status_code, 401)

    @override_settings(MAX_UPLOAD_SIZE=1024)
    def test_upload_over_limit_is_413_json(self) -> None:
        response = self.client.post(
            "/api/files/",
            {"file": SimpleUploadedFile("big.bin", b"x" * 2048)},
            headers=self.auth(),
        )
        self.assertEqual(response.status_code, 413)
        self.assertEqual(response.json()["error"], "payload_too_large")
        self.assertEqual(response.json()["max_bytes"], 1024)
        self.assertFalse(StoredFile.objects.exists())

    def test_upload_without_file_field_is_400(self) -> None:
        response = self.client.post(
            "/api/files/", {"other": "x"}, headers=self.auth()
        )
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json()["error"], "missing_file")


class FileAccessTest(ApiTestCase):
    def _store(self, owner: object, name: str = "f.txt") -> StoredFile:
        return StoredFile.objects.create(
            owner=owner, object_key=f"uploads/test/{uuid.uuid4().hex}", name=name,
            size=1, content_type="text/plain",
        )

    def test_owner_reads_own_file(self) -> None:
        stored = self._store(self.user)
        response = self.client.get(f"/api/files/{stored.pk}/", headers=self.auth())
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json()["id"], stored.pk)

    def test_other_users_file_is_404(self) -> None:
        other, _ = self.other_user_token()
        stored = self._store(other)
        response = self.client.get(f"/api/files/{stored.pk}/", headers=self.auth())
        self.assertEqual(response.status_code, 404)

    def test_list_shows_only_own_files(self) -> None:
        other, _ = self.other_user_token()
        mine = self._store(self.user, "mine.txt")
        self._store(other, "theirs.txt")
        response = self.client.get("/api/files/", headers=self.auth())
        self.assertEqual([f["id"] for f in response.json()["files"]], [mine.pk])

    def test_wrong_method_is_405_json(self) -> None:
        response = self.client.delete("/api/files/", headers=self.auth())
        self.assertEqual(response.status_code, 405)
        self.assertEqual(response.json()["error"], "method_not_allowed")


class TaskApiTest(ApiTestCase):
    def test_bad_payload_is_400(self) -> None:
        response = self.client.post(
            "/api/tasks/", "not json", content_type="application/json",
            headers=self.auth(),
        )
        self.assertEqual(response.status_code, 400)

    def test_enqueue_for_other_users_file_is_404(self) -> None:
        other, _ = self.other_user_token()
        stored = StoredFile.objects.create(
            owner=other, object_key="uploads/x/1", name="x", size=1, content_type="x"
        )
        response = self.client.post(
            "/api/tasks/", {"file_id": stored.pk}, content_type="application/json",
            headers=self.auth(),
        )
        self.assertEqual(response.status_code, 404)

    def test_task_result_is_only_visible_to_the_file_owner(self) -> None:
        _, other_token = self.other_user_token()
        task_id = str(uuid.uuid4())
        StoredFile.objects.create(
            owner=self.user, object_key="uploads/x/2", name="x", size=1,
            content_type="x", checksum_task_id=task_id,
        )
        self.assertEqual(
            self.client.get(f"/api/tasks/{task_id}/", headers=self.auth()).status_code,
            200,
        )
        self.assertEqual(
            self.client.get(
                f"/api/tasks/{task_id}/", headers=self.auth(other_token)
            ).status_code,
            404,
        )

    def test_enqueue_publishes_to_the_broker(self) -> None:
        stored = StoredFile.objects.create(
            owner=self.user, object_key="uploads/x/3", name="x", size=1, content_type="x"
        )
        broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        queued = broker.llen("celery")
        response = self.client.post(
            "/api/tasks/", {"file_id": stored.pk}, content_type="application/json",
            headers=self.auth(),
        )
        self.assertEqual(response.status_code, 202, response.content)
        stored.refresh_from_db()
        self.assertEqual(stored.checksum_task_id, response.json()["task_id"])
        self.assertEqual(broker.llen("celery"), queued + 1)


class ChecksumTaskTest(ApiTestCase):
    def test_checksum_task_reads_object_and_records_digest(self) -> None:
        content = b"checksum me" * 1000
        key = f"uploads/test/{uuid.uuid4().hex}"
        storage.client().put_object(Bucket=settings.S3_BUCKET, Key=key, Body=content)
        stored = StoredFile.objects.create(
            owner=self.user, object_key=key, name="c.bin", size=len(content),
            content_type="application/octet-stream",
        )
        result = checksum_file(stored.pk)  # runs in-process, no broker
        expected = hashlib.sha256(content).hexdigest()
        self.assertEqual(result, {"file_id": stored.pk, "sha256": expected,
                                  "size": len(content)})
        stored.refresh_from_db()
        self.assertEqual(stored.sha256, expected)
