"""gunicorn stops gracefully on SIGTERM, within the pod's grace period."""

from __future__ import annotations

import importlib.util
import os
import signal
import threading
import time
from types import ModuleType
from typing import Any
from unittest import mock

import pytest
import requests

from tests.app.harness import APP_DIR, App, start_server

POD_TERMINATION_GRACE_SECONDS = 30


def load_gunicorn_conf(env: dict[str, str]) -> ModuleType:
    spec = importlib.util.spec_from_file_location("gunicorn_conf_under_test", APP_DIR / "gunicorn.conf.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    with mock.patch.dict(os.environ, env, clear=True):
        spec.loader.exec_module(module)
    return module


def test_graceful_timeout_defaults_below_pod_grace_period() -> None:
    conf = load_gunicorn_conf({})
    assert conf.graceful_timeout == 25
    assert conf.graceful_timeout < POD_TERMINATION_GRACE_SECONDS
    assert conf.bind == "0.0.0.0:8000"
    assert conf.workers == 2
    assert conf.wsgi_app == "config.wsgi:application"


def test_gunicorn_settings_follow_env() -> None:
    conf = load_gunicorn_conf({"GUNICORN_WORKERS": "5", "GUNICORN_GRACEFUL_TIMEOUT": "12"})
    assert (conf.workers, conf.graceful_timeout) == (5, 12)


@pytest.mark.slow
def test_sigterm_finishes_in_flight_request_then_exits(app: App) -> None:
    server = start_server(app, workers=1, env={"GUNICORN_GRACEFUL_TIMEOUT": "15"})
    result: dict[str, Any] = {}

    def slow_request() -> None:
        try:
            response = server.request("GET", "/slow/?seconds=3")
            result["status"] = response.status_code
            result["body"] = response.json()
        except requests.RequestException as exc:  # recorded, asserted below
            result["error"] = exc
        result["finished"] = time.monotonic()

    client = threading.Thread(target=slow_request)
    client.start()
    time.sleep(1.0)  # the request is now inside the view's sleep
    sent_at = time.monotonic()
    server.process.send_signal(signal.SIGTERM)

    # New connections are refused while the old request is still running.
    time.sleep(0.5)
    with pytest.raises(requests.ConnectionError):
        requests.get(server.base_url + "/healthz", timeout=2)

    client.join(timeout=20)
    exit_code = server.process.wait(timeout=20)
    assert "error" not in result, f"in-flight request was cut: {result.get('error')}"
    assert result["status"] == 200 and result["body"] == {"slept": 3.0}
    assert float(result["finished"]) - sent_at >= 1.5, "the request should have ended after SIGTERM"
    assert exit_code == 0, server.log.read_text()[-2000:]
