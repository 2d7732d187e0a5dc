"""Passwords with any character, through the rendered environment, against
real PostgreSQL and Redis; and the database roles the roles Job creates.

Every password below holds `@:/?#%&+ '"\\`, a `$(VAR)` that Kubernetes must
not expand, and non-ASCII characters. The Redis server runs the rendered
Valkey start command and config; the roles are created by the rendered roles
Job script and SQL; each client runs with the env list of its rendered
container, resolved like the kubelet does (tests/support/kube_env.py), with
only host names, ports and file paths changed for this machine.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from charts.data import CELERY_EXPORTER_ENTRYPOINT
from charts.secrets import CATALOG
from tests.app.harness import BIN_DIR, App, app_account, base_env
from tests.backup.helpers import BIN_DIR as BACKUP_BIN
from tests.support import services
from tests.support.kube_env import pod_container, resolve
from tests.support.manifests import of_kind, one

ENV = "stage"  # statefulset Postgres and Valkey, prod settings module
SECRET_NAME = "vibearena-secrets"
SPECIAL = "@:/?#%&+ '\"\\ $(HOME) ünïcödé €"
SECRET = {
    # Every catalogued key has some value; the ones under test follow.
    **{key: f"test-{key.lower()}" for key in CATALOG},
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "POSTGRES_PASSWORD": "app " + SPECIAL,
    "POSTGRES_SUPERUSER_PASSWORD": "su " + SPECIAL,
    "POSTGRES_BACKUP_PASSWORD": "bk " + SPECIAL,
    "POSTGRES_MONITOR_PASSWORD": "mon " + SPECIAL,
    "REDIS_PASSWORD": " rd " + SPECIAL + " ",
    "MINIO_ROOT_USER": "test-access-key",
    "MINIO_ROOT_PASSWORD": "test-secret-key",
    "DJANGO_SUPERUSER_PASSWORD": secrets.token_urlsafe(18),
    "GRAFANA_ADMIN_PASS": secrets.token_urlsafe(18),
}
CI = bool(os.environ.get("CI"))


@dataclass
class Tier:
    objects: list[dict[str, Any]]
    pg: services.PostgresServer
    redis_port: int
    app: App

    def env_of(self, kind: str, name: str, container: str, **overrides: str) -> dict[str, str]:
        obj = self._find(kind, name)
        resolved = resolve(pod_container(obj, container), SECRET, SECRET_NAME)
        local = {"postgres": "127.0.0.1", "redis": "127.0.0.1"}
        for key in ("DATABASE_HOST", "PGHOST", "REDIS_HOST"):
            if key in resolved:
                resolved[key] = local[resolved[key]]
        for key in ("DATABASE_PORT", "PGPORT"):
            if key in resolved:
                resolved[key] = str(self.pg.port)
        if "REDIS_PORT" in resolved:
            resolved["REDIS_PORT"] = str(self.redis_port)
        resolved.update(overrides)
        return resolved

    def _find(self, kind: str, name: str) -> dict[str, Any]:
        if kind == "Job":
            (job,) = [j for j in of_kind(self.objects, "Job") if j["metadata"]["name"].startswith(name + "-")]
            return job
        return one(self.objects, kind, name)

    def connect(self, user: str, password: str, dbname: str) -> Any:
        import psycopg
        return psycopg.connect(host="127.0.0.1", port=self.pg.port, user=user, password=password, dbname=dbname,
                               connect_timeout=5, autocommit=True)


def start_valkey(objects: list[dict[str, Any]], tmp: Path) -> tuple[subprocess.Popen[str], int]:
    """The rendered Valkey config and start command, run by redis-server."""
    redis_server = services.need(services.find_redis_server)
    conf = one(objects, "ConfigMap", "redis-config")["data"]["valkey.conf"]
    command = pod_container(one(objects, "StatefulSet", "redis"), "redis")["command"]
    assert command[:2] == ["sh", "-c"]
    port = services.free_port()
    (tmp / "data").mkdir()
    (tmp / "valkey.conf").write_text(conf.replace("dir /data", f"dir {tmp / 'data'}")
                                     .replace("port 6379", f"port {port}").replace("bind 0.0.0.0", "bind 127.0.0.1"))
    script = (command[2].replace("/etc/valkey/valkey.conf", str(tmp / "valkey.conf"))
              .replace("/tmp/valkey.conf", str(tmp / "generated.conf")).replace("valkey-server", redis_server))
    process = subprocess.Popen(["sh", "-c", script], env={"PATH": os.environ["PATH"],
                                                          "REDIS_PASSWORD": SECRET["REDIS_PASSWORD"]},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    services.wait_for_port(port, process=process)
    return process, port


def run_roles_job(tier: Tier, tmp: Path) -> subprocess.CompletedProcess[str]:
    job = tier._find("Job", "postgres-roles")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    sql = one(tier.objects, "ConfigMap", "postgres-roles")["data"]["roles.sql"]
    (tmp / "roles.sql").write_text(sql)
    script = container["command"][2].replace("/etc/postgres-roles/roles.sql", str(tmp / "roles.sql"))
    variables = tier.env_of("Job", "postgres-roles", "roles")
    variables["PATH"] = f"{tier.pg.bin_dir}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(["sh", "-c", script], env=variables, capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.fixture(scope="module")
def tier(manifests: dict[str, list[dict[str, Any]]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tier]:
    objects = manifests[ENV]
    superuser = pod_container(one(objects, "StatefulSet", "postgres"), "postgres")
    superuser_name = next(v["value"] for v in superuser["env"] if v["name"] == "POSTGRES_USER")
    manager = services.postgres_server()
    pg = services.need(manager.__enter__)
    valkey = None
    account = app_account()
    tmp = services.make_temp_dir("pwtest-", account)
    try:
        assert pg.user == superuser_name, "the test server's superuser differs from the rendered POSTGRES_USER"
        # The superuser's password as the image's initdb would set it.
        subprocess.run([str(pg.bin_dir / "psql"), "-X", "-v", "ON_ERROR_STOP=1", "--dbname=postgres"],
                       input="\\getenv pw NEW_PASSWORD\nALTER ROLE postgres PASSWORD :'pw';\n",
                       env={**os.environ, **pg.env(), "NEW_PASSWORD": SECRET["POSTGRES_SUPERUSER_PASSWORD"]},
                       check=True, capture_output=True, text=True)
        pg.password = SECRET["POSTGRES_SUPERUSER_PASSWORD"]
        valkey, redis_port = start_valkey(objects, tmp_path_factory.mktemp("valkey"))
        app = App(env=base_env(tmp), account=account, tmp=tmp)
        tier = Tier(objects=objects, pg=pg, redis_port=redis_port, app=app)
        result = run_roles_job(tier, tmp_path_factory.mktemp("roles"))
        assert result.returncode == 0, f"roles Job failed:\n{result.stdout}\n{result.stderr}"
        # Idempotent: a second run (next release) changes nothing and succeeds.
        again = run_roles_job(tier, tmp_path_factory.mktemp("roles"))
        assert again.returncode == 0, f"second roles Job run failed:\n{again.stderr}"
        yield tier
    finally:
        if valkey is not None:
            services.terminate(valkey)
        manager.__exit__(None, None, None)
        shutil.rmtree(tmp, ignore_errors=True)


def test_no_password_is_rendered_into_a_url_or_file(manifests):
    for env, objects in manifests.items():
        text = json.dumps(objects)
        for marker in (":$(POSTGRES_PASSWORD)@", ":$(REDIS_PASSWORD)@", "DATABASE_URL", "REDIS_URL"):
            assert marker not in text, f"{env}: {marker} is rendered"


def test_migrations_run_as_the_app_role(tier):
    variables = tier.env_of("Job", "migrate", "migrate")
    assert variables["DATABASE_USER"] == "vibearena" and variables["DATABASE_PASSWORD"] == SECRET["POSTGRES_PASSWORD"]
    result = tier.app.manage("migrate", "--noinput", env=variables)
    assert result.returncode == 0, result.stderr[-3000:]
    with tier.connect("vibearena", SECRET["POSTGRES_PASSWORD"], "vibearena") as conn:
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'django_migrations'").fetchone()
    assert owner == ("vibearena",), "migrations did not run as the app role"


def test_api_readiness_reaches_database_and_redis(tier):
    test_migrations_run_as_the_app_role(tier)
    variables = tier.env_of("Deployment", "api", "api")
    code = "import json; from config.probes import run_checks; print(json.dumps(run_checks()))"
    result = tier.app.manage("shell", "-c", code, env=variables)
    assert result.returncode == 0, result.stderr[-3000:]
    checks = json.loads(result.stdout.strip().splitlines()[-1])
    assert checks == {"database": "ok", "migrations": "ok", "redis": "ok"}, checks


def test_worker_and_beat_round_trip_through_broker_and_results(tier):
    test_migrations_run_as_the_app_role(tier)
    heartbeat = tier.app.private_dir("worker") / "alive"
    worker_env = tier.env_of("Deployment", "worker-default", "worker", CELERY_LIVENESS_FILE=str(heartbeat))
    worker_cmd = pod_container(one(tier.objects, "Deployment", "worker-default"), "worker")["command"]
    worker, log = tier.app.start([str(BIN_DIR / worker_cmd[0]), *worker_cmd[1:]], name="worker", env=worker_env)
    beat = None
    try:
        deadline = time.monotonic() + 60
        while not heartbeat.exists():
            assert worker.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        # A result through the result backend: the API process sends, the worker answers.
        api_env = tier.env_of("Deployment", "api", "api")
        code = ("from config.celery import app; "
                "print(app.send_task('celery.accumulate', args=[41, 'ü'], kwargs={'index': 1}).get(timeout=30))")
        result = tier.app.manage("shell", "-c", code, env=api_env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip().splitlines()[-1] == "ü"
        # Beat sends its heartbeat task through the broker; the worker records it.
        beat_dir = tier.app.private_dir("beat")
        beat_env = tier.env_of("StatefulSet", "beat", "beat", CELERY_HEARTBEAT_INTERVAL="1")
        beat_cmd = pod_container(one(tier.objects, "StatefulSet", "beat"), "beat")["command"]
        beat_cmd = [c.replace("/tmp/celerybeat-schedule", str(beat_dir / "schedule")) for c in beat_cmd]
        beat, beat_log = tier.app.start([str(BIN_DIR / beat_cmd[0]), *beat_cmd[1:]], name="beat", env=beat_env)
        deadline = time.monotonic() + 60
        with tier.connect("vibearena", SECRET["POSTGRES_PASSWORD"], "vibearena") as conn:
            while not conn.execute("SELECT 1 FROM core_heartbeat WHERE name = 'beat'").fetchone():
                assert beat.poll() is None, beat_log.read_text()[-3000:]
                assert time.monotonic() < deadline, f"no heartbeat:\n{beat_log.read_text()[-2000:]}"
                time.sleep(0.5)
    finally:
        for process in (beat, worker):
            if process is not None:
                services.terminate(process, timeout=30)


def test_backup_jobs_dump_and_drill_as_the_backup_role(tier):
    test_migrations_run_as_the_app_role(tier)
    with services.s3_server() as s3:
        s3.client().create_bucket(Bucket="dumps")
        target = {"BACKUP_S3_ENDPOINT": s3.endpoint, "BACKUP_S3_BUCKET": "dumps",
                  "BACKUP_S3_ACCESS_KEY_ID": s3.access_key, "BACKUP_S3_SECRET_ACCESS_KEY": s3.secret_key,
                  "PATH": os.pathsep.join([str(BACKUP_BIN), str(tier.pg.bin_dir), os.environ["PATH"]])}
        base = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        for name, script in (("postgres-backup", "pg-backup"), ("restore-drill", "restore-drill")):
            variables = tier.env_of("CronJob", name, name, **target)
            assert variables["PGUSER"] == "vibearena_backup"
            result = subprocess.run([str(BACKUP_BIN / script)], env={**base, **variables}, capture_output=True,
                                    text=True, timeout=300, check=False)
            assert result.returncode == 0, f"{script}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"


def test_exporters_authenticate_with_their_rendered_variables(tier):
    import redis

    pg_exporter = tier.env_of("StatefulSet", "postgres", "exporter")
    with tier.connect(pg_exporter["DATA_SOURCE_USER"], pg_exporter["DATA_SOURCE_PASS"], "vibearena") as conn:
        assert conn.execute("SELECT pg_has_role(current_user, 'pg_monitor', 'member')").fetchone() == (True,)
    redis_exporter = tier.env_of("StatefulSet", "redis", "exporter")
    client = redis.Redis(host="127.0.0.1", port=tier.redis_port, password=redis_exporter["REDIS_PASSWORD"])
    assert client.ping()
    # The Celery exporter's start command, with its entry point replaced by a
    # script that connects with the URL the command built.
    celery_env = tier.env_of("Deployment", "celery-exporter", "celery-exporter")
    command = pod_container(one(tier.objects, "Deployment", "celery-exporter"), "celery-exporter")["command"]
    fake = tier.app.private_dir("exporter") / "cli.py"
    fake.write_text("import os, sys, kombu\n"
                    "kombu.Connection(os.environ['CE_BROKER_URL']).ensure_connection(max_retries=1)\n"
                    "print('connected', sys.argv[1:])\n")
    fake.chmod(0o644)
    script = command[2].replace(CELERY_EXPORTER_ENTRYPOINT, str(fake))
    result = subprocess.run([sys.executable, "-c", script], env={"PATH": os.environ["PATH"], **celery_env},
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and result.stdout.startswith("connected []"), result.stderr[-2000:]


def test_the_app_role_is_confined(tier):
    import psycopg

    tier.pg.psql("CREATE DATABASE other_team")
    tier.pg.psql("CREATE TABLE private (secret text); INSERT INTO private VALUES ('x')", dbname="other_team")
    app = ("vibearena", SECRET["POSTGRES_PASSWORD"])
    with tier.connect(*app, "vibearena") as conn:
        flags = conn.execute("SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
                             "WHERE rolname = current_user").fetchone()
        assert flags == (False, False, False), flags
        owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'vibearena'").fetchone()
        assert owner == ("vibearena",)
        for sql in ("CREATE ROLE intruder", "COPY (SELECT 1) TO PROGRAM 'true'", "CREATE DATABASE sidecar",
                    "ALTER ROLE vibearena SUPERUSER"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
        # Migrations can change the schema: the app role owns its database.
        conn.execute("CREATE TABLE scratch (id int)")
        conn.execute("DROP TABLE scratch")
    with tier.connect(*app, "other_team") as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM private")
    backup = ("vibearena_backup", SECRET["POSTGRES_BACKUP_PASSWORD"])
    with tier.connect(*backup, "vibearena") as conn:
        conn.execute("CREATE TEMP TABLE t (id int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE public.written_by_backup (id int)")
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
    monitor = ("vibearena_monitor", SECRET["POSTGRES_MONITOR_PASSWORD"])
    with tier.connect(*monitor, "other_team") as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM private")


def test_valkey_keeps_the_password_off_its_command_line(tier):
    out = subprocess.run(["ps", "-eo", "args="], capture_output=True, text=True, check=True).stdout
    assert tier.redis_port and SECRET["REDIS_PASSWORD"].strip() not in out
