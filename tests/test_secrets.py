"""Secrets: referenced, never rendered; example env files in step with the code;
the dev scripts build the Secret and the TLS certificate locally."""

from __future__ import annotations

import base64
import itertools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import main
from charts.secrets import CATALOG
from tests.support.manifests import ENV_DIR, ENVS, ROOT, of_kind, pod_templates

needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl client not installed")


def example_entries(env: str) -> dict[str, str]:
    """{key: the comment line above it} from env/<env>.example.env."""
    lines = (ENV_DIR / f"{env}.example.env").read_text().splitlines()
    entries = {}
    for previous, line in itertools.pairwise(lines):
        if re.match(r"^[A-Z][A-Z0-9_]*=", line):
            entries[line.split("=", 1)[0]] = previous.removeprefix("# ")
    return entries


@pytest.mark.parametrize("env", ENVS)
def test_example_env_lists_every_secret_key_with_its_comment(env):
    entries = example_entries(env)
    assert set(entries) == set(CATALOG), f"env/{env}.example.env keys differ from charts/secrets.py CATALOG"
    for key, comment in entries.items():
        assert comment == CATALOG[key].description, f"env/{env}.example.env: comment of {key} differs"
        assert re.fullmatch(rf"{key}=", next(line for line in (ENV_DIR / f"{env}.example.env").read_text()
                                              .splitlines() if line.startswith(f"{key}="))), \
            f"env/{env}.example.env: {key} must have no value"


@pytest.mark.parametrize("env", ENVS)
def test_workloads_read_credentials_only_through_secret_refs(manifests, stacks, env):
    secret_name = stacks[env].secrets.name
    referenced = set()
    for pod in pod_templates(manifests[env]):
        for container in pod.containers():
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == secret_name, f"{pod.where}: reads Secret {ref['name']}"
                    assert ref["key"] in CATALOG, f"{pod.where}: unknown secret key {ref['key']}"
                    referenced.add(ref["key"])
            assert not container.get("envFrom"), f"{pod.where}: envFrom would expose every key"
        for volume in pod.spec.get("volumes", []):
            if "secret" in volume and volume["secret"]["secretName"] == secret_name:
                items = volume["secret"].get("items")
                assert items, f"{pod.where}: a Secret volume without items would expose every key"
                referenced |= {item["key"] for item in items}
    # KEDA reads the Redis password through a TriggerAuthentication.
    for auth in of_kind(manifests[env], "TriggerAuthentication"):
        for ref in auth["spec"].get("secretTargetRef", []):
            assert ref["name"] == secret_name and ref["key"] in CATALOG, f"TriggerAuthentication: {ref}"
            referenced.add(ref["key"])
    # Custom resources reference keys themselves ({name, key}: CNPG's ObjectStore, externalClusters).
    referenced |= cr_keys(manifests[env], secret_name)
    assert referenced, f"{env}: no secret reference found (the walk is broken)"


def referenced_keys(objects) -> set[str]:
    """Every Secret key the rendered consumers read: env refs, secret volume items, KEDA's TriggerAuthentication."""
    keys = {var["valueFrom"]["secretKeyRef"]["key"] for pod in pod_templates(objects) for c in pod.containers()
            for var in c.get("env", []) if "secretKeyRef" in var.get("valueFrom", {})}
    keys |= {item["key"] for pod in pod_templates(objects) for volume in pod.spec.get("volumes", [])
             if "secret" in volume for item in volume["secret"].get("items", [])
             if item["key"] in CATALOG}  # not the CA bundles of other Secrets (postgres-ca: ca.crt)
    keys |= {ref["key"] for auth in of_kind(objects, "TriggerAuthentication")
             for ref in auth["spec"].get("secretTargetRef", [])}
    return keys | cr_keys(objects, None)


def cr_keys(objects, secret_name: str | None) -> set[str]:
    """Keys CloudNativePG objects reference themselves ({name, key} selectors)."""
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("key") in CATALOG and (secret_name is None or node.get("name") == secret_name):
                found.add(node["key"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    for obj in objects:
        if obj["apiVersion"].startswith(("postgresql.cnpg.io/", "barmancloud.cnpg.io/")):
            walk(obj["spec"])
    return found


@pytest.mark.parametrize("env", ["stage", "prod"])
def test_external_secret_provides_exactly_the_referenced_keys(manifests, stacks, env):
    (external,) = [e for e in of_kind(manifests[env], "ExternalSecret")
                   if e["metadata"]["name"] == stacks[env].secrets.name]
    spec = external["spec"]
    assert external["apiVersion"] == "external-secrets.io/v1"
    assert spec["secretStoreRef"] == {"kind": "ClusterSecretStore", "name": stacks[env].profile.secrets.store}
    names = {var["valueFrom"]["secretKeyRef"]["name"] for pod in pod_templates(manifests[env]) for c in pod.containers()
             for var in c.get("env", []) if "secretKeyRef" in var.get("valueFrom", {})}
    assert names == {spec["target"]["name"]}, "every pod reads the Secret this ExternalSecret writes"
    provided = [d["secretKey"] for d in spec["data"]]
    assert len(provided) == len(set(provided))
    assert set(provided) == referenced_keys(manifests[env]), "missing keys break pods; extra keys are dead"
    assert {d["remoteRef"]["key"] for d in spec["data"]} == {stacks[env].profile.secrets.remote_key}
    assert all(d["remoteRef"]["property"] == d["secretKey"] for d in spec["data"])


def test_dev_has_no_external_secret(manifests):
    assert not of_kind(manifests["dev"], "ExternalSecret")


def distinctive_values() -> dict[str, str]:
    # Recognisable, and unlike anything the charts could produce by chance.
    return {key: f"leak-{key.lower().replace('_', '-')}-Zq7Xw9" for key in CATALOG}


def leaked(directory: Path, values: dict[str, str]) -> list[str]:
    found = []
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in values.items()}
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            text = path.read_text()
            found += [f"{path.name}: {key}" for key, value in values.items() if value in text]
            found += [f"{path.name}: {key} (base64)" for key, value in encoded.items() if value in text]
            if re.search(r"^kind: Secret$", text, re.MULTILINE):
                found.append(f"{path.name}: a Secret object")
    return found


def test_no_secret_value_reaches_dist(tmp_path):
    """Render every env beside a .env (and an environment) full of distinctive values."""
    values = distinctive_values()
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    out = tmp_path / "dist"
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), "--out", str(out)], cwd=tmp_path,
                            env={**os.environ, **values}, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert set(ENVS) <= {p.name for p in out.iterdir()}
    assert not leaked(out, values), "secret values rendered into dist/"
    for value in values.values():
        assert value not in result.stdout + result.stderr, "a secret value reached the log"


def test_leak_scan_finds_a_planted_value(tmp_path):
    """Negative case: the scan above must see a value and a Secret if they were there."""
    values = distinctive_values()
    (tmp_path / "00-config.yaml").write_text(
        f"kind: ConfigMap\ndata:\n  x: {values['POSTGRES_PASSWORD']}\n---\nkind: Secret\n")
    found = leaked(tmp_path, values)
    assert "00-config.yaml: POSTGRES_PASSWORD" in found and "00-config.yaml: a Secret object" in found


def run_script(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(ROOT / "scripts" / script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, check=False)


def secret_data(manifest: str) -> dict[str, str]:
    secret = yaml.safe_load(manifest)
    assert secret["kind"] == "Secret"
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


@needs_kubectl
def test_dev_secrets_fills_blanks_and_converges(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("DJANGO_SECRET_KEY=kept-as-given\nPOSTGRES_PASSWORD=\n")
    first = run_script("dev-secrets.sh", "--env-file", str(env_file), "--dry-run", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    data = secret_data(first.stdout)
    assert set(data) == set(CATALOG)
    assert referenced_keys(main.build(ENV_DIR, ["dev"])["dev"][1]) <= set(data), \
        "the dev Secret must hold every key the dev pods read"
    assert data["DJANGO_SECRET_KEY"] == "kept-as-given"
    for key, entry in CATALOG.items():
        if entry.optional:
            assert data[key] == "", f"optional {key} was filled in"
        elif key != "DJANGO_SECRET_KEY":
            assert re.fullmatch(r"[0-9a-f]{64}", data[key]), f"{key} is not a strong random value"
    assert len({data[k] for k, e in CATALOG.items() if not e.optional}) == sum(not e.optional for e in CATALOG.values())
    assert oct(env_file.stat().st_mode)[-3:] == "600"
    for value in data.values():
        if value:
            assert value not in first.stderr, "a secret value was logged"

    second = run_script("dev-secrets.sh", "--env-file", str(env_file), "--dry-run", cwd=tmp_path)
    assert secret_data(second.stdout) == data, "a re-run changed the passwords"


@needs_kubectl
def test_dev_secrets_rejects_unknown_arguments(tmp_path):
    result = run_script("dev-secrets.sh", "--bogus", cwd=tmp_path)
    assert result.returncode == 2 and "unknown argument: --bogus" in result.stderr


@needs_kubectl
@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_dev_certs_signs_the_domain_with_a_local_ca(tmp_path):
    env = {**os.environ, "DEV_CERTS_FORCE_OPENSSL": "1"}
    args = ["bash", str(ROOT / "scripts" / "dev-certs.sh"), "--dir", str(tmp_path), "--domain", "app.localhost",
            "--dry-run"]
    first = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert first.returncode == 0, first.stderr
    secret = yaml.safe_load(first.stdout)
    assert secret["type"] == "kubernetes.io/tls" and secret["metadata"]["name"] == "vibearena-tls"
    cert = tmp_path / "app.localhost.crt"
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "ca.crt"), str(cert)],
                            capture_output=True, text=True, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    text = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-ext", "subjectAltName"],
                          capture_output=True, text=True, check=True).stdout
    assert "DNS:app.localhost" in text and "DNS:*.app.localhost" in text
    ca_before = (tmp_path / "ca.crt").read_bytes()
    second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert second.returncode == 0 and (tmp_path / "ca.crt").read_bytes() == ca_before, "the CA was replaced"


@needs_kubectl
@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_dev_secrets_never_puts_a_value_on_a_command_line(tmp_path):
    """Every external command the script runs is a logging wrapper (PATH holds
    nothing else), so any argv that carried a value would be in the log."""
    wrappers = tmp_path / "bin"
    wrappers.mkdir()
    argv_log = tmp_path / "argv.log"
    for tool in ("kubectl", "openssl", "sed", "grep", "cut", "tr", "tail", "head", "mktemp", "chmod", "cp", "mv",
                 "rm", "dirname", "cat"):
        real = shutil.which(tool)
        assert real, f"{tool} not found"
        wrapper = wrappers / tool
        wrapper.write_text(f'#!{shutil.which("bash")}\nprintf "%s " "$0" "$@" >>"{argv_log}"\n'
                           f'printf "\\n" >>"{argv_log}"\nexec {real} "$@"\n')
        wrapper.chmod(0o755)
    env_file = tmp_path / ".env"
    env_file.write_text("DJANGO_SECRET_KEY=given-secret-value-123\nPOSTGRES_PASSWORD=\n# a comment\n")
    result = subprocess.run([shutil.which("bash") or "bash", str(ROOT / "scripts" / "dev-secrets.sh"),
                             "--env-file", str(env_file), "--dry-run"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60, check=False, env={"PATH": str(wrappers), "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    data = secret_data(result.stdout)
    calls = argv_log.read_text()
    assert "openssl rand" in calls and "kubectl create secret" in calls, "the wrappers did not see the tools run"
    for key, value in data.items():
        if value:
            assert value not in calls, f"{key}'s value appeared on a command line"
    written = env_file.read_text()
    assert f"POSTGRES_PASSWORD={data['POSTGRES_PASSWORD']}\n" in written
    assert "# a comment\n" in written and written.count("POSTGRES_PASSWORD=") == 1
    assert oct(env_file.stat().st_mode)[-3:] == "600"


def test_committed_envs_read_secrets_through_stores_of_their_own():
    from charts.config import secret_stores_apart
    from tests.support.render import profile_with

    profiles = [profile_with(env, {}) for env in ENVS]
    assert secret_stores_apart(profiles) is None
    stores = {p.name: (p.secrets.store_kind, p.secrets.store) for p in profiles if p.name in ("stage", "prod")}
    assert stores["stage"] != stores["prod"]


@pytest.mark.parametrize(("overrides", "key"), [
    ({"secrets": {"store": "vibearena-prod"}}, "secrets.store"),
    ({"secrets": {"store_kind": "SecretStore", "store": "vibearena-prod", "remote_key": "vibearena/prod"}},
     "secrets.remote_key"),
])
def test_stage_sharing_prods_store_or_entry_is_refused(overrides, key):
    from charts.config import secret_stores_apart
    from tests.support.render import profile_with

    if overrides["secrets"].get("store_kind") == "SecretStore":
        prod = profile_with("prod", {"secrets": {"store_kind": "SecretStore"}})
    else:
        prod = profile_with("prod", {})
    found = secret_stores_apart([prod, profile_with("stage", overrides)])
    assert found is not None and found[:2] == ("stage", key), found


def test_namespaced_secret_store_is_rendered_as_such():
    from tests.support.render import render_with

    _stack, objects = render_with("prod", {"secrets": {"store_kind": "SecretStore"}})
    externals = [o for o in objects if o["kind"] == "ExternalSecret"]
    assert externals, "no ExternalSecret rendered"
    for external in externals:  # the env's Secret and CNPG's basic-auth role Secrets
        assert external["spec"]["secretStoreRef"] == {"kind": "SecretStore", "name": "vibearena-prod"}


# A stand-in for mkcert with its CLI (-CAROOT; -cert-file F -key-file K names...):
# a CA in $FAKE_CAROOT signs the leaf, as mkcert does with its local CA.
FAKE_MKCERT = r"""#!/usr/bin/env bash
set -euo pipefail
root=$FAKE_CAROOT
if [[ "$1" == -CAROOT ]]; then echo "$root"; exit 0; fi
[[ "$1" == -cert-file && "$3" == -key-file ]] || exit 64
cert=$2 key=$4; shift 4
if [[ ! -s "$root/rootCA.pem" ]]; then
  openssl req -x509 -newkey rsa:2048 -sha256 -days 30 -nodes -keyout "$root/rootCA-key.pem" \
    -out "$root/rootCA.pem" -subj "/O=mkcert development CA" -addext "basicConstraints=critical,CA:TRUE" 2>/dev/null
fi
sans=$(printf 'DNS:%s,' "$@")
openssl req -newkey rsa:2048 -nodes -keyout "$key" -out "$cert.csr" -subj "/O=mkcert development cert" 2>/dev/null
openssl x509 -req -in "$cert.csr" -CA "$root/rootCA.pem" -CAkey "$root/rootCA-key.pem" -CAcreateserial \
  -days 30 -extfile <(printf 'subjectAltName=%s\n' "${sans%,}") -out "$cert" 2>/dev/null
rm -f "$cert.csr"
"""


@needs_kubectl
@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_smoke_trusts_the_ca_that_signed_the_dev_certificate(tmp_path):
    """mkcert's CA lives in the macOS Keychain, which Python's OpenSSL does not
    read: the smoke check must be given $(mkcert -CAROOT)/rootCA.pem, also when
    an older openssl run left certs/ca.crt behind."""
    from scripts import smoke

    certs, caroot, bin_dir = tmp_path / "certs", tmp_path / "caroot", tmp_path / "bin"
    for d in (certs, caroot, bin_dir):
        d.mkdir()
    args = ["bash", str(ROOT / "scripts" / "dev-certs.sh"), "--dir", str(certs), "--domain", "app.localhost",
            "--dry-run"]
    openssl_run = subprocess.run(args, env={**os.environ, "DEV_CERTS_FORCE_OPENSSL": "1"},
                                 capture_output=True, text=True, timeout=60, check=False)
    assert openssl_run.returncode == 0, openssl_run.stderr
    assert smoke.trust_file("local-ca", None, certs) == str(certs / "ca.crt")

    (bin_dir / "mkcert").write_text(FAKE_MKCERT)
    (bin_dir / "mkcert").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_CAROOT": str(caroot)}
    env.pop("DEV_CERTS_FORCE_OPENSSL", None)
    mkcert_run = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert mkcert_run.returncode == 0, mkcert_run.stderr
    trusted = smoke.trust_file("local-ca", None, certs)
    assert trusted == str(caroot / "rootCA.pem")
    leaf = str(certs / "app.localhost.crt")

    def verifies(ca: str) -> bool:
        return subprocess.run(["openssl", "verify", "-CAfile", ca, leaf], capture_output=True,
                              check=False).returncode == 0

    assert verifies(trusted), "the trusted CA signed the served certificate"
    assert not verifies(str(certs / "ca.crt")), "the stale openssl CA would fail the TLS check"
