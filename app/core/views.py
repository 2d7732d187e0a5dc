"""JSON API: uploads to object storage and checksum tasks on Celery."""

from __future__ import annotations

import json
import logging
import uuid

from botocore.exceptions import BotoCoreError, ClientError
from celery.result import AsyncResult
from config.celery import app as celery_app
from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.views.decorators.csrf import csrf_exempt
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError

from core import storage
from core.auth import bearer_user, token_required, unauthorized
from core.models import StoredFile
from core.tasks import checksum_file

logger = logging.getLogger(__name__)

LIST_LIMIT = 50
DRAIN_CHUNK = 64 * 1024


def error(status: int, code: str, detail: str, **extra: object) -> JsonResponse:
    return JsonResponse({"error": code, "detail": detail, **extra}, status=status)


def method_not_allowed(allowed: list[str]) -> JsonResponse:
    response = error(405, "method_not_allowed", "Method not allowed.")
    response["Allow"] = ", ".join(allowed)
    return response


def _discard_body(request: HttpRequest, length: int) -> None:
    """Read and drop an unwanted request body before answering.

    If the worker answers and closes while a reverse proxy (the ingress's
    nginx) is still sending the body, the proxy reports 502 instead of our
    401/413, and some clients see a connection reset. Bodies over twice the
    limit are not drained; the ingress rejects those before they get here.
    """
    if length > 2 * settings.MAX_UPLOAD_SIZE:
        return
    while request.read(DRAIN_CHUNK):
        pass


@csrf_exempt
def index(request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return method_not_allowed(["GET", "HEAD"])
    return JsonResponse(
        {
            "service": "vibearena-api",
            "endpoints": ["/api/files/", "/api/files/<id>/", "/api/tasks/",
                          "/api/tasks/<task_id>/"],
            "max_upload_bytes": settings.MAX_UPLOAD_SIZE,
        }
    )


@csrf_exempt
def files(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        return _upload(request)
    if request.method in ("GET", "HEAD"):
        return _list_files(request)
    return method_not_allowed(["GET", "HEAD", "POST"])


@token_required
def _list_files(request: HttpRequest) -> HttpResponse:
    rows = StoredFile.objects.filter(owner=request.api_user)[:LIST_LIMIT]
    return JsonResponse({"files": [row.as_dict() for row in rows]})


def _upload(request: HttpRequest) -> HttpResponse:
    try:
        length = int(request.META.get("CONTENT_LENGTH") or "")
    except ValueError:
        # Django reads nothing without a Content-Length (chunked bodies).
        return error(411, "length_required", "Content-Length is required.")
    # Checked before authentication and before Django parses the multipart
    # body, so an oversized upload costs no temp-file space.
    if length > settings.MAX_UPLOAD_SIZE:
        _discard_body(request, length)
        return error(
            413,
            "payload_too_large",
            f"Request body is larger than {settings.MAX_UPLOAD_SIZE} bytes.",
            max_bytes=settings.MAX_UPLOAD_SIZE,
        )
    user = bearer_user(request)
    if user is None:
        _discard_body(request, length)
        return unauthorized()
    try:
        upload = request.FILES.get("file")
    except MultiPartParserError:
        return error(400, "bad_multipart", "The multipart body could not be parsed.")
    if upload is None:
        return error(
            400, "missing_file", "Send the file as multipart/form-data field 'file'."
        )
    key = f"uploads/{user.pk}/{uuid.uuid4().hex}"
    try:
        storage.upload(upload, key)
    except (BotoCoreError, ClientError):
        logger.exception("upload to object storage failed")
        return error(503, "storage_unavailable", "Object storage is unavailable.")
    try:
        stored = StoredFile.objects.create(
            owner=user,
            object_key=key,
            name=(upload.name or "upload")[:255],
            size=upload.size or 0,
            content_type=(upload.content_type or "application/octet-stream")[:255],
        )
    except DatabaseError:
        # Without a row the object is unreachable; remove it, then fail.
        try:
            storage.delete(key)
        except (BotoCoreError, ClientError):
            logger.exception("could not remove orphaned object after DB error")
        raise
    logger.info("file stored", extra={"file_id": stored.pk, "size": stored.size})
    return JsonResponse(stored.as_dict(), status=201)


@csrf_exempt
@token_required
def file_detail(request: HttpRequest, pk: int) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return method_not_allowed(["GET", "HEAD"])
    # Other users' files answer 404, not 403: ids must not be probeable.
    stored = StoredFile.objects.filter(owner=request.api_user, pk=pk).first()
    if stored is None:
        return error(404, "not_found", "No such file.")
    return JsonResponse(stored.as_dict())


@csrf_exempt
@token_required
def tasks(request: HttpRequest) -> HttpResponse:
    """POST {"file_id": N} enqueues a SHA-256 computation for that file."""
    if request.method != "POST":
        return method_not_allowed(["POST"])
    try:
        payload = json.loads(request.body or b"{}")
        file_id = int(payload["file_id"])
    except (ValueError, TypeError, KeyError):
        return error(400, "bad_request", 'Send JSON like {"file_id": 1}.')
    stored = StoredFile.objects.filter(owner=request.api_user, pk=file_id).first()
    if stored is None:
        return error(404, "not_found", "No such file.")
    # The id is stored before publishing so the result is only ever visible
    # to the file's owner (see task_detail).
    task_id = str(uuid.uuid4())
    StoredFile.objects.filter(pk=stored.pk).update(checksum_task_id=task_id)
    try:
        checksum_file.apply_async(args=[stored.pk], task_id=task_id)
    except (BrokerError, RedisError):
        StoredFile.objects.filter(pk=stored.pk).update(checksum_task_id="")
        logger.exception("could not enqueue checksum task")
        return error(503, "queue_unavailable", "The task queue is unavailable.")
    return JsonResponse(
        {"task_id": task_id, "state": "PENDING", "file_id": stored.pk}, status=202
    )


@csrf_exempt
@token_required
def task_detail(request: HttpRequest, task_id: uuid.UUID) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return method_not_allowed(["GET", "HEAD"])
    stored = StoredFile.objects.filter(
        owner=request.api_user, checksum_task_id=str(task_id)
    ).first()
    if stored is None:
        return error(404, "not_found", "No such task.")
    result = AsyncResult(str(task_id), app=celery_app)
    try:
        state = result.state
        body: dict[str, object] = {
            "task_id": str(task_id),
            "state": state,
            "file_id": stored.pk,
        }
        if state == "SUCCESS":
            body["result"] = result.result
        elif state == "FAILURE":
            # The exception type is enough for a client; details go to logs.
            body["error"] = type(result.result).__name__
    except RedisError:
        logger.exception("could not read task state")
        return error(503, "result_backend_unavailable", "Task results are unavailable.")
    return JsonResponse(body)
