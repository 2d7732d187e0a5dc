"""scripts/check_digests.py: real skopeo against a local stand-in registry.

No registry is reachable here, so a small server speaks the part of the OCI
distribution API skopeo uses to read a manifest (GET /v2/, GET
/v2/<name>/manifests/<tag or digest>), serving manifests built here the way
registries store them (an OCI image index whose entries name platforms).
The digests workflow runs the same script against the real registries.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import shutil
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.support.manifests import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import check_digests

pytestmark = pytest.mark.skipif(not shutil.which("skopeo"),
                                reason="skopeo not installed (scripts/setup.sh installs it)")

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def image_manifest(seed: str) -> bytes:
    config = json.dumps({"seed": seed}).encode()
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": digest_of(config), "size": len(config)},
                       "layers": []}, indent=3).encode()


def index(*platforms: tuple[str, str, str | None]) -> bytes:
    entries = []
    for os_name, architecture, variant in platforms:
        body = image_manifest(f"{os_name}/{architecture}/{variant}")
        platform = {"architecture": architecture, "os": os_name, **({"variant": variant} if variant else {})}
        entries.append({"mediaType": OCI_MANIFEST, "digest": digest_of(body), "size": len(body),
                        "platform": platform})
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, indent=3).encode()


MULTI = index(("linux", "amd64", None), ("linux", "arm64", "v8"), ("unknown", "unknown", None))
AMD64_ONLY = index(("linux", "amd64", None))
REBUILT = index(("linux", "amd64", None), ("linux", "arm64", "v8"), ("linux", "s390x", None))
SINGLE = image_manifest("linux/amd64 only")


@dataclass
class Registry:
    port: int
    # name -> reference (tag or digest) -> (media type, body)
    manifests: dict[str, dict[str, tuple[str, bytes]]] = field(default_factory=dict)
    # name -> digest -> bytes served instead of the stored ones (a lying registry)
    tampered: dict[str, dict[str, bytes]] = field(default_factory=dict)

    def put(self, name: str, tag: str | None, media_type: str, body: bytes) -> str:
        digest = digest_of(body)
        refs = self.manifests.setdefault(name, {})
        refs[digest] = (media_type, body)
        if tag:
            refs[tag] = (media_type, body)
        return digest

    def repository(self, name: str) -> str:
        return f"127.0.0.1:{self.port}/{name}"


@pytest.fixture
def registry() -> Iterator[Registry]:
    state: dict[str, Registry] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def answer(self, send_body: bool) -> None:
            reg = state["registry"]
            if self.path.rstrip("/") == "/v2":
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            match = re.fullmatch(r"/v2/(.+)/manifests/([^/]+)", self.path)
            found = match and reg.manifests.get(match.group(1), {}).get(match.group(2))
            if not match or not found:
                body = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}).encode()
                self.send_response(404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if send_body:
                    self.wfile.write(body)
                return
            media_type, body = found
            body = reg.tampered.get(match.group(1), {}).get(match.group(2), body)
            self.send_response(200)
            self.send_header("Content-Type", media_type)
            self.send_header("Docker-Content-Digest", digest_of(body))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def do_GET(self) -> None:
            self.answer(True)

        def do_HEAD(self) -> None:
            self.answer(False)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["registry"] = Registry(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state["registry"]
    finally:
        server.shutdown()
        server.server_close()


# The stand-in speaks plain HTTP: skopeo falls back to it only without TLS verification.
INSECURE = ["--tls-verify=false"]


def run_check(registry: Registry, name: str, tag: str, digest: str, *, strict: bool = False) -> tuple[bool, str]:
    pinned = check_digests.Pinned(registry.repository(name), tag, digest)
    return check_digests.check(pinned, check_digests.DEFAULT_PLATFORMS, strict, INSECURE)


def test_a_multi_platform_index_the_tag_still_names_passes(registry):
    digest = registry.put("valkey/valkey", "9.1.1-trixie", OCI_INDEX, MULTI)
    passed, line = run_check(registry, "valkey/valkey", "9.1.1-trixie", digest)
    assert passed and line.startswith("ok: "), line


def test_an_index_without_a_media_type_is_still_an_index(registry):
    """The OCI image spec only recommends mediaType on an index."""
    bare = json.loads(MULTI)
    del bare["mediaType"]
    body = json.dumps(bare).encode()
    digest = registry.put("grafana/grafana", "13.1.3", OCI_INDEX, body)
    passed, line = run_check(registry, "grafana/grafana", "13.1.3", digest)
    assert passed and line.startswith("ok: "), line


def test_a_digest_the_registry_does_not_have_fails(registry):
    registry.put("valkey/valkey", "9.1.1-trixie", OCI_INDEX, MULTI)
    passed, line = run_check(registry, "valkey/valkey", "9.1.1-trixie", digest_of(b"nothing"))
    assert not passed and "does not serve this digest" in line, line


def test_one_platforms_manifest_instead_of_the_index_fails(registry):
    digest = registry.put("grafana/grafana", "13.1.3", OCI_MANIFEST, SINGLE)
    passed, line = run_check(registry, "grafana/grafana", "13.1.3", digest)
    assert not passed and "single-platform manifest" in line, line


def test_an_index_without_arm64_fails(registry):
    digest = registry.put("oliver006/redis_exporter", "v1.89.0", OCI_INDEX, AMD64_ONLY)
    passed, line = run_check(registry, "oliver006/redis_exporter", "v1.89.0", digest)
    assert not passed and "no linux/arm64" in line, line


def test_a_registry_serving_other_bytes_under_the_digest_fails(registry):
    digest = registry.put("chrislusf/seaweedfs", "4.47", OCI_INDEX, MULTI)
    registry.tampered["chrislusf/seaweedfs"] = {digest: REBUILT}
    passed, line = run_check(registry, "chrislusf/seaweedfs", "4.47", digest)
    assert not passed and digest in line, line


def test_a_tag_that_moved_warns_and_fails_only_when_strict(registry):
    pinned = registry.put("quay/prometheus", None, OCI_INDEX, MULTI)
    registry.put("quay/prometheus", "v3.14.0", OCI_INDEX, REBUILT)
    passed, line = run_check(registry, "quay/prometheus", "v3.14.0", pinned)
    assert passed and line.startswith("warning: ") and digest_of(REBUILT) in line, line
    passed, line = run_check(registry, "quay/prometheus", "v3.14.0", pinned, strict=True)
    assert not passed and line.startswith("error: "), line


@pytest.mark.parametrize(("repository", "pulled"), [
    ("valkey/valkey", "docker.io/valkey/valkey"),
    ("postgres", "docker.io/library/postgres"),
    ("quay.io/prometheus/prometheus", "quay.io/prometheus/prometheus"),
    ("ghcr.io/cloudnative-pg/postgresql", "ghcr.io/cloudnative-pg/postgresql"),
    ("localhost:5000/api", "localhost:5000/api"),
    ("localhost/api", "localhost/api"),
])
def test_names_resolve_as_a_container_runtime_resolves_them(repository, pulled):
    assert check_digests.registry_name(repository) == pulled


def test_it_checks_exactly_the_documented_third_party_digests():
    """What the workflow checks in the committed envs is the table of
    docs/image-digests.md (the evidence), and none of the project's own images."""
    doc = (ROOT / "docs" / "image-digests.md").read_text()
    documented = {f"{ref}@{digest}" for ref, digest in
                  re.findall(r"^\| `([^`@]+)` \| `(sha256:[0-9a-f]{64})` \|", doc, re.MULTILINE)}
    checked = {p.ref for p in check_digests.pinned_images(ROOT / "dist", ["dev", "stage", "prod"], ROOT / "env")}
    assert checked == documented
    assert not [ref for ref in checked if "vibearena" in ref]


def test_bad_input_exits_2_naming_the_directory(tmp_path, capsys):
    assert check_digests.main(["--dist", str(tmp_path), "--env", "prod"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'prod'}: no rendered files (make synth)"
