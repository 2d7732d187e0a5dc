"""The app's routes plus /slow/, which holds a worker for a given time."""

from __future__ import annotations

import time

from config.urls import urlpatterns as app_urlpatterns
from django.http import HttpRequest, JsonResponse
from django.urls import path


def slow(request: HttpRequest) -> JsonResponse:
    seconds = min(float(request.GET.get("seconds", "1")), 10.0)
    time.sleep(seconds)
    return JsonResponse({"slept": seconds})


urlpatterns = [*app_urlpatterns, path("slow/", slow)]
