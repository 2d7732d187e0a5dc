"""External (managed) Postgres and Redis over TLS, through the rendered
environment: a real PostgreSQL with `ssl=on` and a real redis-server with
`--tls-port`, both with certificates from a CA this test makes. The app
connects with verify-full through its settings; a wrong CA or a host name
the certificate does not name fails.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from charts.data import CELERY_EXPORTER_ENTRYPOINT, ROLES_SQL
from charts.secrets import CATALOG
from tests.app.harness import BIN_DIR, App, app_account, base_env
from tests.support import services
from tests.support.kube_env import pod_container, resolve
from tests.support.manifests import of_kind, one
from tests.support.render import render_with

SECRET = {
    # Every catalogued key has some value; the ones under test follow.
    **{key: f"test-{key.lower()}" for key in CATALOG},
    "DJANGO_SECRET_KEY": "x" * 60,
    "POSTGRES_PASSWORD": "ext @:/?#%&+ '\"\\ ü€",
    "POSTGRES_BACKUP_PASSWORD": "bk @:/?#%&+ '\"\\ ñ",
    "POSTGRES_MONITOR_PASSWORD": "mon @:/?#%&+ '\"\\ ø",
    "REDIS_PASSWORD": "tls @:/?#%&+ '\"\\ é",
    "MINIO_ROOT_USER": "k",
    "MINIO_ROOT_PASSWORD": "s",
    "DJANGO_SUPERUSER_PASSWORD": "p" * 20,
    "GRAFANA_ADMIN_PASS": "g" * 20,
}
CI = bool(os.environ.get("CI"))


def make_ca(directory: Path, name: str) -> tuple[Any, Any, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    path = directory / f"{name}.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def make_server_cert(directory: Path, ca_key: Any, ca_cert: Any, dns: str) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            # The name only: connecting by address must fail verify-full.
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def valkey_quoted(value: str) -> str:
    return '"' + "".join(f"\\x{byte:02x}" for byte in value.encode()) + '"'


@dataclass
class External:
    objects: list[dict[str, Any]]
    ca: Path
    wrong_ca: Path
    pg: services.PostgresServer
    app: App

    def env_of(self, kind: str, name: str, container: str, **overrides: str) -> dict[str, str]:
        if kind == "Job":
            (obj,) = [j for j in of_kind(self.objects, "Job") if j["metadata"]["name"].startswith(name + "-")]
        else:
            obj = one(self.objects, kind, name)
        resolved = resolve(pod_container(obj, container), SECRET, "vibearena-secrets")
        # Only the mount path of the CA differs from a pod.
        for key in ("DATABASE_SSLROOTCERT", "REDIS_CA", "PGSSLROOTCERT"):
            if key in resolved:
                assert resolved[key].startswith("/etc/vibearena/ca/"), resolved[key]
                resolved[key] = str(self.ca)
        resolved.update(overrides)
        return resolved


@pytest.fixture(scope="module")
def external(tmp_path_factory: pytest.TempPathFactory) -> Iterator[External]:
    redis_server = services.need(services.find_redis_server)
    certs = tmp_path_factory.mktemp("certs")
    certs.chmod(0o755)
    ca_key, ca_cert, ca_path = make_ca(certs, "test-ca")
    _, _, wrong_ca = make_ca(certs, "other-ca")
    manager = services.postgres_server()
    pg = services.need(manager.__enter__)
    redis_process = None
    account = app_account()
    tmp = services.make_temp_dir("exttest-", account)
    try:
        # Postgres with TLS: its key must belong to the server's account.
        pg_cert, pg_key = make_server_cert(pg.base_dir, ca_key, ca_cert, "localhost")
        pg.account.own(pg_cert)
        pg.account.own(pg_key)
        pg.stop()
        with (pg.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(f"ssl = on\nssl_cert_file = '{pg_cert}'\nssl_key_file = '{pg_key}'\n")
        pg.start()
        # What an admin runs once on a managed server (docs/data-tier.md).
        subprocess.run([str(pg.bin_dir / "psql"), "-X", "--dbname=postgres"], input=ROLES_SQL,
                       env={**os.environ, **pg.env(), "APP_USER": "vibearena", "BACKUP_USER": "vibearena_backup",
                            "MONITOR_USER": "vibearena_monitor", "APP_DATABASE": "vibearena",
                            "POSTGRES_PASSWORD": SECRET["POSTGRES_PASSWORD"],
                            "POSTGRES_BACKUP_PASSWORD": SECRET["POSTGRES_BACKUP_PASSWORD"],
                            "POSTGRES_MONITOR_PASSWORD": SECRET["POSTGRES_MONITOR_PASSWORD"]},
                       check=True, capture_output=True, text=True)
        # Redis with TLS only (no plaintext port).
        redis_dir = tmp_path_factory.mktemp("redis-tls")
        r_cert, r_key = make_server_cert(redis_dir, ca_key, ca_cert, "localhost")
        redis_port = services.free_port()
        (redis_dir / "redis.conf").write_text(
            f"port 0\ntls-port {redis_port}\nbind 127.0.0.1\ntls-cert-file {r_cert}\ntls-key-file {r_key}\n"
            f"tls-ca-cert-file {ca_path}\ntls-auth-clients no\ndir {redis_dir}\nsave \"\"\n"
            f"requirepass {valkey_quoted(SECRET['REDIS_PASSWORD'])}\n")
        redis_process = subprocess.Popen([redis_server, str(redis_dir / "redis.conf")], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
        services.wait_for_port(redis_port, process=redis_process)
        _stack, objects = render_with("stage", {
            "postgres": {"mode": "external", "external": {
                "host": "localhost", "port": pg.port, "cidr": "127.0.0.1/32", "ca": {"name": "db-ca"}}},
            "redis": {"mode": "external", "external": {
                "host": "localhost", "port": redis_port, "cidr": "127.0.0.1/32",
                "ca": {"kind": "Secret", "name": "redis-ca", "key": "ca.pem"}}},
        })
        app = App(env=base_env(tmp), account=account, tmp=tmp)
        yield External(objects=objects, ca=ca_path, wrong_ca=wrong_ca, pg=pg, app=app)
    finally:
        if redis_process is not None:
            services.terminate(redis_process)
        manager.__exit__(None, None, None)
        shutil.rmtree(tmp, ignore_errors=True)


def readiness(ext: External, **overrides: str) -> dict[str, str]:
    variables = ext.env_of("Deployment", "api", "api", **overrides)
    code = "import json; from config.probes import run_checks; print(json.dumps(run_checks()))"
    result = ext.app.manage("shell", "-c", code, env=variables)
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def migrate(ext: External) -> None:
    result = ext.app.manage("migrate", "--noinput", env=ext.env_of("Job", "migrate", "migrate"))
    assert result.returncode == 0, result.stderr[-3000:]


def test_rendered_app_env_asks_for_verify_full_and_tls(external):
    variables = external.env_of("Deployment", "api", "api")
    assert variables["DATABASE_SSLMODE"] == "verify-full"
    assert variables["REDIS_TLS"] == "true"
    assert not [s for s in of_kind(external.objects, "StatefulSet") if s["metadata"]["name"] in ("postgres", "redis")]


def test_app_connects_with_verify_full_and_rediss(external):
    migrate(external)
    assert readiness(external) == {"database": "ok", "migrations": "ok", "redis": "ok"}


def test_a_wrong_ca_fails_both_connections(external):
    checks = readiness(external, DATABASE_SSLROOTCERT=str(external.wrong_ca), REDIS_CA=str(external.wrong_ca))
    assert checks["database"].startswith("failed") and checks["redis"].startswith("failed"), checks


def test_a_host_name_outside_the_certificate_fails(external):
    checks = readiness(external, DATABASE_HOST="127.0.0.1", REDIS_HOST="127.0.0.1")
    assert checks["database"].startswith("failed") and checks["redis"].startswith("failed"), checks


def test_celery_round_trips_a_task_over_tls(external):
    migrate(external)
    alive = external.app.private_dir("worker") / "alive"
    command = pod_container(one(external.objects, "Deployment", "worker-default"), "worker")["command"]
    worker, log = external.app.start([str(BIN_DIR / command[0]), *command[1:]], name="worker",
                                     env=external.env_of("Deployment", "worker-default", "worker",
                                                         CELERY_LIVENESS_FILE=str(alive)))
    try:
        deadline = time.monotonic() + 60
        while not alive.exists():
            assert worker.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        code = ("from config.celery import app; "
                "print(app.send_task('celery.accumulate', args=[1, 'tls'], kwargs={'index': 1}).get(timeout=30))")
        result = external.app.manage("shell", "-c", code, env=external.env_of("Deployment", "api", "api"))
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip().splitlines()[-1] == "tls"
    finally:
        services.terminate(worker, timeout=30)


def test_backup_role_dumps_over_verify_full(external):
    variables = external.env_of("CronJob", "postgres-backup", "postgres-backup")
    assert variables["PGSSLMODE"] == "verify-full" and variables["PGUSER"] == "vibearena_backup"
    result = subprocess.run([str(external.pg.bin_dir / "pg_dump"), "--format=custom", "--no-sync", "--file=/dev/null"],
                            env={"PATH": os.environ["PATH"], "HOME": "/nonexistent", **variables},
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    wrong = subprocess.run([str(external.pg.bin_dir / "pg_dump"), "--format=custom", "--no-sync", "--file=/dev/null"],
                           env={"PATH": os.environ["PATH"], "HOME": "/nonexistent", **variables,
                                "PGSSLROOTCERT": str(external.wrong_ca)},
                           capture_output=True, text=True, timeout=120, check=False)
    assert wrong.returncode != 0 and "certificate verify failed" in wrong.stderr, wrong.stderr


def test_exporters_reach_the_tls_servers(external):
    import psycopg
    import redis

    pg_env = external.env_of("Deployment", "postgres-exporter", "exporter")
    host_port, query = pg_env["DATA_SOURCE_URI"].split("?", 1)
    assert dict(part.split("=", 1) for part in query.split("&"))["sslmode"] == "verify-full"
    with psycopg.connect(f"postgresql://{host_port}", user=pg_env["DATA_SOURCE_USER"],
                         password=pg_env["DATA_SOURCE_PASS"], sslmode="verify-full", sslrootcert=str(external.ca),
                         connect_timeout=5) as conn:
        assert conn.execute("SELECT pg_has_role(current_user, 'pg_monitor', 'member')").fetchone() == (True,)
    redis_env = external.env_of("Deployment", "redis-exporter", "exporter")
    assert redis_env["REDIS_ADDR"].startswith("rediss://localhost:")
    port = int(redis_env["REDIS_ADDR"].rsplit(":", 1)[1])
    client = redis.Redis(host="localhost", port=port, password=redis_env["REDIS_PASSWORD"], ssl=True,
                         ssl_ca_certs=str(external.ca), ssl_cert_reqs="required")
    assert client.ping()
    # The Celery exporter's command: the URL and --broker-ssl-option values it
    # builds, used as the exporter does (src/exporter.py: int() for numbers).
    celery_env = external.env_of("Deployment", "celery-exporter", "celery-exporter")
    fake = external.app.private_dir("exporter") / "cli.py"
    fake.write_text(
        "import os, sys, kombu\n"
        "ssl = {}\n"
        "for arg in sys.argv[1:]:\n"
        "    k, v = arg.split('=', 1)[1].split('=', 1)\n"
        "    ssl[k] = int(v) if v.isnumeric() else v\n"
        "kombu.Connection(os.environ['CE_BROKER_URL'], ssl=ssl).ensure_connection(max_retries=1)\n"
        "print('connected', sorted(ssl))\n")
    command = pod_container(one(external.objects, "Deployment", "celery-exporter"), "celery-exporter")["command"]
    result = subprocess.run([sys.executable, "-c", command[2].replace(CELERY_EXPORTER_ENTRYPOINT, str(fake))],
                            env={"PATH": os.environ["PATH"], **celery_env}, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "connected ['ssl_ca_certs', 'ssl_cert_reqs']"
