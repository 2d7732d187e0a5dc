"""HSTS has one owner: Django, with the values the chart puts in the API's env.

Producer: charts (DJANGO_HSTS_* from the profile's edge.hsts*) rendered in
dist/<env>/. Consumer: the app's settings module named in the same env,
answering a request through Django's test client. The header must be what
the profile says, and the Ingress must not set one of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.app.harness import APP_DIR, REPO_ROOT

# (env, expected Strict-Transport-Security); values from env/<env>.yaml and
# the defaults in charts/config.py, written out here on purpose.
EXPECTED = [
    ("stage", "max-age=3600; includeSubDomains"),
    ("prod", "max-age=31536000; includeSubDomains"),
]

PROBE = """
import json, django
django.setup()
from django.test import Client
response = Client().get("/api/", secure=True, HTTP_HOST=__import__("os").environ["PROBE_HOST"])
print(json.dumps({"status": response.status_code, "sts": response.headers.get("Strict-Transport-Security")}))
"""


def api_env(env: str) -> dict[str, str]:
    for path in sorted((REPO_ROOT / "dist" / env).glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == "Deployment" and doc["metadata"]["name"] == "api":
                container = doc["spec"]["template"]["spec"]["containers"][0]
                return {v["name"]: v["value"] for v in container["env"] if "value" in v}
    raise AssertionError(f"no api Deployment in dist/{env}")


@pytest.mark.parametrize(("env", "expected"), EXPECTED)
def test_django_sends_the_profiles_hsts(env: str, expected: str) -> None:
    rendered = api_env(env)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "MINIO_"))}
    environ.update(rendered)
    environ.update({
        "PYTHONPATH": str(APP_DIR),
        # Secrets and service URLs are not rendered; placeholders do for a settings load.
        "DJANGO_SECRET_KEY": "hsts-contract-" + "x" * 40,
        "DATABASE_URL": "postgres://u@127.0.0.1:9/db",
        "REDIS_URL": "redis://127.0.0.1:9/0",
        "MINIO_ACCESS_KEY": "k", "MINIO_SECRET_KEY": "s",
        "PROBE_HOST": rendered["ALLOWED_HOSTS"].split(",")[0],
    })
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=APP_DIR, env=environ, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["status"] == 200, answer
    assert answer["sts"] == expected, f"{env}: {answer}"


@pytest.mark.parametrize("env", ["dev", "stage", "prod"])
def test_the_edge_sets_no_hsts_of_its_own(env: str) -> None:
    for path in sorted((REPO_ROOT / "dist" / env).glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == "Ingress":
                annotations = doc["metadata"].get("annotations", {})
                assert not [k for k in annotations if "hsts" in k], f"{env}: {doc['metadata']['name']}"
            if doc and doc["kind"] == "Middleware":
                assert "stsSeconds" not in json.dumps(doc["spec"]), f"{env}: {doc['metadata']['name']}"
