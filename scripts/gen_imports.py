"""Generate imports/ (typed cdk8s classes) without network access.

`cdk8s import k8s` downloads its schema from GitHub. We feed cdk8s-cli's own
importer the Kubernetes JSON schema that the PyPI package kubernetes-validate
ships, converted to the draft-04 "definitions" layout the importer expects.
CRD classes come from the upstream CRD files (located by --crds-dir, default
$VIBEARENA_CRDS_DIR, ../shared/crds or .cache/crds); `cdk8s import` reads local files.

The output is deterministic: running this twice gives the same bytes
(tests/test_imports.py checks the committed tree against imports/SOURCE.json).

Usage: python scripts/gen_imports.py [--k8s-version 1.33.0] [--crds-dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import kubernetes_validate
from kubernetes_validate.version import __version__ as kubernetes_validate_version

ROOT = Path(__file__).resolve().parent.parent
IMPORTS = ROOT / "imports"
DEFAULT_K8S_VERSION = "1.33.0"

# Built-in API group versions that get typed classes. The stable groups a
# workload chart uses; admin, alpha and beta APIs are left out, which makes
# the k8s module 40 % smaller and every render ~0.25 s faster (its jsii
# assembly loads on each run). Add a group here and run `make imports`.
K8S_API_VERSIONS = (
    "core/v1", "apps/v1", "batch/v1", "autoscaling/v2", "policy/v1", "networking.k8s.io/v1",
    "rbac.authorization.k8s.io/v1", "storage.k8s.io/v1", "scheduling.k8s.io/v1", "discovery.k8s.io/v1",
)

# CRD files by API group, relative to the CRD directory. One cdk8s module per
# group, so files of the same group are imported together.
CRD_GROUPS: dict[str, list[str]] = {
    "cert-manager.io": ["cert-manager/cert-manager.io_clusterissuers.yaml"],
    "external-secrets.io": ["external-secrets/external-secrets.io_externalsecrets.yaml"],
    "gateway.networking.k8s.io": ["gateway-api/gateway.networking.k8s.io_httproutes.yaml"],
    "traefik.io": ["traefik/traefik.io_middlewares.yaml"],
    "monitoring.coreos.com": [
        "prometheus-operator/monitoring.coreos.com_servicemonitors.yaml",
        "prometheus-operator/monitoring.coreos.com_podmonitors.yaml",
        "prometheus-operator/monitoring.coreos.com_prometheusrules.yaml",
    ],
    "argoproj.io": [
        "argo-cd/application-crd.yaml",
        "argo-cd/appproject-crd.yaml",
        # No ApplicationSet: its CRD repeats the whole Application spec per
        # generator and made this module's load 4x slower (0.46 s -> 2.0 s) on
        # every synth. Previews render it as a plain ApiObject, validated
        # against the CRD in the tests.
    ],
    "postgresql.cnpg.io": [
        "cloudnative-pg/postgresql.cnpg.io_clusters.yaml",
        "cloudnative-pg/postgresql.cnpg.io_scheduledbackups.yaml",
        "cloudnative-pg/postgresql.cnpg.io_poolers.yaml",
    ],
    "barmancloud.cnpg.io": ["cnpg-plugin-barman-cloud/barmancloud.cnpg.io_objectstores.yaml"],
    "keda.sh": [
        "keda/keda.sh_scaledobjects.yaml",
        "keda/keda.sh_triggerauthentications.yaml",
    ],
}


def default_crds_dir() -> Path:
    """Where scripts/crds.py looks: $VIBEARENA_CRDS_DIR, ../shared/crds, else .cache/crds."""
    configured = os.environ.get("VIBEARENA_CRDS_DIR")
    if configured:
        return Path(configured)
    shared = ROOT.parent / "shared" / "crds"
    return shared if shared.is_dir() else ROOT / ".cache" / "crds"


def k8s_schema_path(version: str) -> Path:
    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    path = base / f"v{version}-local" / "_definitions.json"
    if not path.is_file():
        available = sorted(p.name for p in base.iterdir() if p.name.endswith("-local"))
        raise SystemExit(f"gen_imports: no schema for Kubernetes {version} in kubernetes-validate "
                         f"(available: {', '.join(available)})")
    return path


def to_draft4(node: object) -> object:
    """Rewrite the 2020-12 schema into what json2jsii (cdk8s' generator) reads.

    kubernetes-validate marks optional fields as `type: [T, "null"]` and keeps
    definitions under `$defs`; the importer wants a single `type` and
    `#/definitions/` references.
    """
    if isinstance(node, list):
        return [to_draft4(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted: dict[str, object] = {}
    for key, value in node.items():
        if key == "type" and isinstance(value, list):
            types = [t for t in value if t != "null"]
            converted[key] = types[0] if len(types) == 1 else types
        elif key == "$ref" and isinstance(value, str):
            converted[key] = value.replace("#/$defs/", "#/definitions/")
        else:
            converted[key] = to_draft4(value)
    return converted


def api_version_of(node: dict[str, Any]) -> str | None:
    """"group/version" of a top-level API object; None for a plain type (kept:
    the importer generates only the types the kept objects reach)."""
    kinds = node.get("x-kubernetes-group-version-kind")
    if not kinds or "metadata" not in node.get("properties", {}):
        return None
    return f"{kinds[0]['group'] or 'core'}/{kinds[0]['version']}"


def run(cmd: list[str]) -> None:
    # The importer prints progress on stdout; keep it out of the way unless it fails.
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"gen_imports: command failed: {' '.join(cmd)}")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def generate(k8s_version: str, crds_dir: Path, outdir: Path) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        schema = json.loads(k8s_schema_path(k8s_version).read_text())
        definitions = Path(tmp) / "_definitions.json"
        wanted = {name: node for name, node in schema["$defs"].items() if api_version_of(node) in (
            None, *K8S_API_VERSIONS)}
        definitions.write_text(json.dumps({"definitions": to_draft4(wanted)}, sort_keys=True))
        run(["node", "scripts/import-k8s.js", str(definitions), k8s_version, str(outdir)])

        crd_sources: dict[str, str] = {}
        for group, files in CRD_GROUPS.items():
            bundle = Path(tmp) / f"{group}.yaml"
            parts = []
            for relative in files:
                path = crds_dir / relative
                if not path.is_file():
                    raise SystemExit(f"gen_imports: CRD file not found: {path} "
                                     "(set --crds-dir or VIBEARENA_CRDS_DIR; scripts/fetch_crds.sh downloads them)")
                crd_sources[relative] = sha256(path)
                parts.append(path.read_text())
            bundle.write_text("\n---\n".join(parts))
            run(["npx", "--no-install", "cdk8s", "import", "--no-check-upgrade", "--no-save",
                 "--language", "python", "--output", str(outdir), str(bundle)])
    return {
        "kubernetes": k8s_version,
        "kubernetes_api_versions": list(K8S_API_VERSIONS),
        "kubernetes_validate": kubernetes_validate_version,
        "crds": crd_sources,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k8s-version", default=DEFAULT_K8S_VERSION)
    parser.add_argument("--crds-dir", type=Path, default=default_crds_dir())
    parser.add_argument("--outdir", type=Path, default=IMPORTS,
                        help="where to write (default imports/; tests use a temp dir)")
    args = parser.parse_args()
    outdir = args.outdir.resolve()

    staging = Path(tempfile.mkdtemp(prefix=".imports-", dir=outdir.parent))
    try:
        source = generate(args.k8s_version, args.crds_dir.resolve(), staging)
        (staging / "SOURCE.json").write_text(json.dumps(source, indent=2, sort_keys=True) + "\n")
        # Swap in one step so a failed run keeps the previous imports.
        if outdir.exists():
            shutil.rmtree(outdir)
        staging.rename(outdir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"{outdir} generated for Kubernetes {args.k8s_version}")


if __name__ == "__main__":
    main()
