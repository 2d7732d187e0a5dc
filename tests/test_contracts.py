"""Producer/consumer contracts, with the consumer's own source as the truth.

- the app: the environment variables app/ reads (parsed with ast from its
  source) against what the charts give each app process;
- exporters: the credentials and address of the server each one watches;
- loopback: an address a container reaches on 127.0.0.1 is a port of a
  container in the same pod;
- scraping: each Prometheus target port is the workload's metrics port;
- backups: the variables each script in backup/bin reads (parsed from the
  script) against the CronJob, and the values against the profile.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.manifests import ENVS, ROOT, of_kind, one, pod_templates
from tests.support.render import render_with

APP = ROOT / "app"
BACKUP_BIN = ROOT / "backup" / "bin"
Obj = dict[str, Any]


# --- reading the consumers' source ---------------------------------------------------------------

def _module_strings(tree: ast.Module) -> dict[str, str]:
    """Module-level NAME = "STRING" constants (e.g. ENV_VAR = "GA_SVC_JSON_BASE64")."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value.value
    return found


ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


def _first_arg_name(call: ast.Call, constants: dict[str, str]) -> str | None:
    if not call.args:
        return None
    arg = call.args[0]
    value = arg.value if isinstance(arg, ast.Constant) else constants.get(arg.id) if isinstance(arg, ast.Name) else None
    return value if isinstance(value, str) and ENV_NAME.match(value) else None


def _call_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        owner = func.value
        prefix = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
        return f"{prefix}.{func.attr}"
    return func.id if isinstance(func, ast.Name) else ""


@cache
def reads_by_file() -> dict[str, dict[str, set[str]]]:
    """{file: {reader (env.required, os.environ.get, _int ...): {VARIABLE}}} for app/ outside tests."""
    result: dict[str, dict[str, set[str]]] = {}
    for path in sorted(APP.rglob("*.py")):
        if "tests" in path.parts or path.name.startswith("test"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        constants = _module_strings(tree)
        reads: dict[str, set[str]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = _first_arg_name(node, constants)
                if name:
                    reads.setdefault(_call_name(node), set()).add(name)
            elif isinstance(node, ast.Subscript) and _is_os_environ(node.value):
                key = node.slice
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    reads.setdefault("os.environ[]", set()).add(key.value)
        result[str(path.relative_to(APP))] = reads
    return result


def _is_os_environ(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ"


REQUIRED_READERS = {"env.required", "env.required_list"}


def settings_requirements(module: str) -> tuple[set[str], list[tuple[set[str], set[str]]]]:
    """(always required, [(if-branch required, else-branch required)]) for a settings module and base."""
    always: set[str] = set()
    either: list[tuple[set[str], set[str]]] = []
    files = [APP / "config" / "settings" / "base.py", APP / Path(*module.split(".")).with_suffix(".py")]
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.If):
                either.append((_required_in(node.body), _required_in(node.orelse)))
            else:
                always |= _required_in([node])
    return always, either


def _required_in(nodes: list[ast.stmt]) -> set[str]:
    found = set()
    for statement in nodes:
        for node in ast.walk(statement):
            if isinstance(node, ast.Call) and _call_name(node) in REQUIRED_READERS:
                name = _first_arg_name(node, {})
                if name:
                    found.add(name)
    return found


def app_reads(*, gunicorn: bool) -> set[str]:
    """Every variable some module of the app process reads; gunicorn.conf.py only under gunicorn."""
    return {name for file, reads in reads_by_file().items() if gunicorn or file != "gunicorn.conf.py"
            for names in reads.values() for name in names}


# Read by code that is not in app/, each with where it is documented.
FRAMEWORK_READS = {
    "DJANGO_SETTINGS_MODULE",  # Django itself (django.conf), and manage.py/wsgi.py/celery.py set a default
}
# Given to every app process for people who `kubectl exec ... env`; no code reads them.
INFORMATIONAL = {"ENV", "DOMAIN"}
APP_PROCESSES = ("Deployment/api", "Deployment/worker-default", "StatefulSet/beat", "CronJob/createsuperuser")


def app_containers(objects: list[Obj]) -> Iterator[tuple[str, Obj]]:
    for pod in pod_templates(objects):
        for container in pod.spec["containers"]:
            env = {v["name"] for v in container.get("env", [])}
            if "DJANGO_SETTINGS_MODULE" in env:
                yield pod.where, container


def env_of(container: Obj) -> dict[str, Obj]:
    return {v["name"]: v for v in container.get("env", [])}


def value_of(container: Obj, name: str) -> str | None:
    return env_of(container).get(name, {}).get("value")


@pytest.mark.parametrize("env", ENVS)
def test_every_app_process_is_found(manifests, env):
    names = {"Job/migrate" if where.startswith("Job/migrate-") else where
             for where, _c in app_containers(manifests[env])}
    assert set(APP_PROCESSES) | {"Job/migrate"} <= names


@pytest.mark.parametrize("env", ENVS)
def test_app_processes_get_every_variable_the_settings_require(manifests, env):
    for where, container in app_containers(manifests[env]):
        given = set(env_of(container))
        module = value_of(container, "DJANGO_SETTINGS_MODULE")
        assert module, f"{where}: DJANGO_SETTINGS_MODULE must be a literal"
        always, either = settings_requirements(module)
        assert always <= given, f"{env} {where}: settings require {sorted(always - given)}"
        for if_branch, else_branch in either:
            assert if_branch <= given or else_branch <= given, \
                f"{env} {where}: settings require {sorted(if_branch)} or {sorted(else_branch)}"


@pytest.mark.parametrize("env", ENVS)
def test_app_processes_get_no_variable_the_app_does_not_read(manifests, env):
    for where, container in app_containers(manifests[env]):
        command = " ".join(container.get("command", []) + container.get("args", []))
        read = app_reads(gunicorn="gunicorn" in command) | FRAMEWORK_READS | INFORMATIONAL
        values = " ".join(str(v.get("value", "")) for v in container.get("env", []))
        composed = set(re.findall(r"\$\(([A-Z0-9_]+)\)", values))  # $(VAR) expansion by the kubelet
        unread = set(env_of(container)) - read - composed
        assert not unread, f"{env} {where}: nothing in app/ reads {sorted(unread)}"


def _truth_sets() -> dict[str, set[str]]:
    tree = ast.parse((APP / "config" / "env.py").read_text())
    sets = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Set):
            sets[node.targets[0].id] = {e.value for e in node.value.elts}  # type: ignore[attr-defined]
    return sets


@pytest.mark.parametrize("env", ENVS)
def test_typed_variables_parse_the_way_the_app_reads_them(manifests, env):
    reads = reads_by_file()
    typed = {reader: {n for file in reads.values() for n in file.get(reader, set())}
             for reader in ("env.as_int", "env.as_bool", "_int", "env.as_size")}
    truth = _truth_sets()
    for where, container in app_containers(manifests[env]):
        for name, var in env_of(container).items():
            value = var.get("value")
            if value is None:
                continue
            if name in typed["env.as_int"] | typed["_int"]:
                assert re.fullmatch(r"-?[0-9]+", value), f"{env} {where}: {name}={value!r} is not an integer"
            if name in typed["env.as_bool"]:
                assert value.lower() in truth["_TRUE"] | truth["_FALSE"], f"{env} {where}: {name}={value!r}"
            if name in typed["env.as_size"]:
                assert re.fullmatch(r"\s*\d+\s*[kmgKMG]?[bB]?\s*", value), f"{env} {where}: {name}={value!r}"


def test_the_source_reader_finds_what_the_settings_read():
    """The parser above is itself checked on names it must find."""
    everything = app_reads(gunicorn=True)
    assert {"DJANGO_SECRET_KEY", "DATABASE_URL", "REDIS_URL", "MINIO_ENDPOINT", "GUNICORN_WORKERS",
            "GA_SVC_JSON_BASE64", "DJANGO_SUPERUSER_PASSWORD"} <= everything
    assert "GUNICORN_WORKERS" not in app_reads(gunicorn=False)
    always, either = settings_requirements("config.settings.prod")
    # DATABASE_URL/REDIS_URL or the separate DATABASE_*/REDIS_* variables (config/env.py).
    assert {"DJANGO_SECRET_KEY", "MINIO_ENDPOINT", "ALLOWED_HOSTS"} <= always
    assert ({"MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"}, {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}) in either


def test_a_variable_the_app_stopped_reading_is_caught(manifests):
    objects = [dict(o) for o in manifests["prod"]]
    api = one(objects, "Deployment", "api")
    container = api["spec"]["template"]["spec"]["containers"][0]
    extra = {**container, "env": [*container["env"], {"name": "DJANGO_DEBUGG", "value": "1"}]}
    read = app_reads(gunicorn=True) | FRAMEWORK_READS | INFORMATIONAL
    assert "DJANGO_DEBUGG" in set(env_of(extra)) - read


# --- exporters watch their own server with its credentials --------------------------------------

def containers_of(objects: list[Obj], kind: str, name: str) -> dict[str, Obj]:
    workload = one(objects, kind, name)
    return {c["name"]: c for c in workload["spec"]["template"]["spec"]["containers"]}


def secret_ref(container: Obj, name: str) -> tuple[str, str]:
    ref = env_of(container)[name]["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


@pytest.mark.parametrize("env", ENVS)
def test_the_postgres_exporter_logs_in_as_the_monitor_role(manifests, env):
    """The sidecar exporter logs in as the pg_monitor role the roles Job creates
    from the same Secret key (docs/decisions/041); prod runs CNPG (no sidecar)."""
    if not [s for s in of_kind(manifests[env], "StatefulSet") if s["metadata"]["name"] == "postgres"]:
        assert one(manifests[env], "Cluster", "postgres"), f"{env}: neither a StatefulSet nor a CNPG Cluster"
        return
    pod = containers_of(manifests[env], "StatefulSet", "postgres")
    server, exporter = pod["postgres"], pod["exporter"]
    (job,) = [j for j in of_kind(manifests[env], "Job") if j["metadata"]["name"].startswith("postgres-roles-")]
    (roles,) = job["spec"]["template"]["spec"]["containers"]
    assert value_of(exporter, "DATA_SOURCE_USER") == value_of(roles, "MONITOR_USER")
    assert secret_ref(exporter, "DATA_SOURCE_PASS") == secret_ref(roles, "POSTGRES_MONITOR_PASSWORD")
    uri = value_of(exporter, "DATA_SOURCE_URI") or ""
    match = re.fullmatch(r"127\.0\.0\.1:(\d+)/([^?]+)(\?.*)?", uri)
    assert match, f"{env}: DATA_SOURCE_URI {uri!r}"
    assert int(match.group(1)) in {p["containerPort"] for p in server["ports"]}
    assert match.group(2) == value_of(roles, "APP_DATABASE")


@pytest.mark.parametrize("env", ENVS)
def test_the_redis_exporters_use_the_server_password(manifests, env):
    objects = manifests[env]
    pod = containers_of(objects, "StatefulSet", "redis")
    server = pod["redis"]
    # The server takes its password from REDIS_PASSWORD (requirepass in its start command).
    assert "requirepass" in " ".join(server["command"]) and "$REDIS_PASSWORD" in " ".join(server["command"])
    assert secret_ref(pod["exporter"], "REDIS_PASSWORD") == secret_ref(server, "REDIS_PASSWORD")
    celery_exporter = containers_of(objects, "Deployment", "celery-exporter")["celery-exporter"]
    assert secret_ref(celery_exporter, "REDIS_PASSWORD") == secret_ref(server, "REDIS_PASSWORD")
    for where, container in app_containers(objects):
        assert secret_ref(container, "REDIS_PASSWORD") == secret_ref(server, "REDIS_PASSWORD"), where
    # KEDA reads queue lengths from the same server with the same password.
    for auth in of_kind(objects, "TriggerAuthentication"):
        refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
        assert refs["password"] == secret_ref(server, "REDIS_PASSWORD")
    redis_port = {p["name"]: p["port"] for p in one(objects, "Service", "redis")["spec"]["ports"]}["redis"]
    for scaled in of_kind(objects, "ScaledObject"):
        for trigger in scaled["spec"]["triggers"]:
            if trigger["type"] == "redis":
                host, port = trigger["metadata"]["address"].rsplit(":", 1)
                assert host.split(".")[0] == "redis" and int(port) == redis_port, trigger["metadata"]["address"]


# Which key pairs (Secret keys) each object-store client holds, written out
# here (docs/security.md): only the server and the bucket Job hold the admin
# key; the mirrors read with the mirror key and record their runs with the
# backup key, which the backup exporter reads.
ADMIN_KEYS = ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD")
APP_KEYS = ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY")
BACKUP_KEYS = ("BACKUP_S3_ACCESS_KEY_ID", "BACKUP_S3_SECRET_ACCESS_KEY")
S3_KEYS_OF_WORKLOAD = {
    "ensure-bucket": {ADMIN_KEYS},
    **{name: {APP_KEYS} for name in ("api", "worker-default", "beat", "migrate", "createsuperuser")},
    **{name: {BACKUP_KEYS} for name in ("postgres-backup", "postgres-restore", "restore-drill", "backup-exporter")},
    "backup-prune": {("BACKUP_PRUNE_S3_ACCESS_KEY_ID", "BACKUP_PRUNE_S3_SECRET_ACCESS_KEY")},
    **{name: {("MIRROR_S3_ACCESS_KEY_ID", "MIRROR_S3_SECRET_ACCESS_KEY"), BACKUP_KEYS}
       for name in ("minio-mirror", "dumps-mirror")},
}
# Environment variable pairs through which a container is given an in-cluster S3 key.
S3_KEY_VARS = (("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"), ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"),
               ("BACKUP_S3_ACCESS_KEY_ID", "BACKUP_S3_SECRET_ACCESS_KEY"),
               ("MIRROR_SRC_S3_ACCESS_KEY_ID", "MIRROR_SRC_S3_SECRET_ACCESS_KEY"))
SERVER_LOADS = (("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), *S3_KEY_VARS,
                ("BACKUP_PRUNE_S3_ACCESS_KEY_ID", "BACKUP_PRUNE_S3_SECRET_ACCESS_KEY"),
                ("MIRROR_S3_ACCESS_KEY_ID", "MIRROR_S3_SECRET_ACCESS_KEY"))


def held_pairs(container: Obj, variables: tuple[tuple[str, str], ...]) -> set[tuple[tuple[str, str], ...]]:
    names = set(env_of(container))
    return {(secret_ref(container, a), secret_ref(container, b)) for a, b in variables if a in names}


@pytest.mark.parametrize("env", ENVS)
def test_object_store_clients_hold_their_own_scoped_key(manifests, env):
    """Each client holds exactly its role's key pairs, and the in-cluster
    server knows them: as its admin key or among the identities it loads."""
    objects = manifests[env]
    servers = [s for s in of_kind(objects, "StatefulSet") if s["metadata"]["name"] == "minio"]
    known: set[tuple[tuple[str, str], ...]] = set()
    if servers:
        spec = servers[0]["spec"]["template"]["spec"]
        for container in (*spec.get("initContainers", []), *spec["containers"]):
            known |= held_pairs(container, SERVER_LOADS)
        (server,) = containers_of(objects, "StatefulSet", "minio").values()
        admin = held_pairs(server, (("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),))
        assert {tuple(key for _name, key in pair) for pair in admin} == {ADMIN_KEYS}
    clients = 0
    for pod in pod_templates(objects):
        name = pod.labels["app.kubernetes.io/name"]
        if name == "minio":
            continue  # the server itself: its identities loader reads every scoped key
        pairs = set().union(*(held_pairs(c, S3_KEY_VARS) for c in pod.containers()))
        if not pairs:
            continue
        clients += 1
        held = {tuple(key for _name, key in pair) for pair in pairs}
        assert held == S3_KEYS_OF_WORKLOAD.get(name), (pod.where, held)
        if servers:
            assert pairs <= known, f"{pod.where}: the object store does not know {sorted(pairs - known)}"
    assert clients, "no object-store client found"


# --- loopback addresses and scrape targets -----------------------------------------------------

LOOPBACK = re.compile(r"(?:127\.0\.0\.1|localhost|\[::1\]):(\d+)")


@pytest.mark.parametrize("env", ENVS)
def test_every_loopback_address_is_a_port_in_the_same_pod(manifests, env):
    checked = 0
    for pod in pod_templates(manifests[env]):
        ports = {p["containerPort"] for c in pod.containers() for p in c.get("ports", [])}
        for container in pod.containers():
            texts = [str(v.get("value", "")) for v in container.get("env", [])]
            texts += [str(a) for a in container.get("command", []) + container.get("args", [])]
            for text in texts:
                for port in LOOPBACK.findall(text):
                    checked += 1
                    assert int(port) in ports, f"{env} {pod.where}/{container['name']}: {text!r} -> no such port"
    sidecars = 2 if any(s["metadata"]["name"] == "postgres" for s in of_kind(manifests[env], "StatefulSet")) else 1
    assert checked >= sidecars, "the postgres (StatefulSet only) and redis exporters reach their server on loopback"


# The app serves /metrics on its HTTP port (ProbeMiddleware, app/config/urls.py);
# every other workload has a port named "metrics".
# Alertmanager serves /metrics on its web port (--web.listen-address).
METRICS_PORT_NAME = {"api": "http", "alertmanager": "http"}


@pytest.mark.parametrize("env", ENVS)
def test_every_scrape_target_is_the_workloads_metrics_port(manifests, stacks, env):
    objects = manifests[env]
    config = yaml.safe_load(one(objects, "ConfigMap", "prometheus-config")["data"]["prometheus.yml"])
    services = {s["metadata"]["name"]: s for s in of_kind(objects, "Service")}
    targets = 0
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                service_name, namespace = name.split(".")[:2]
                if namespace != stacks[env].namespace:
                    continue  # outside the env (the ingress controller's metrics)
                service = services[service_name]
                selector = service["spec"]["selector"]
                if "cnpg.io/cluster" in selector:  # instances CloudNativePG creates from the Cluster
                    assert one(objects, "Cluster", selector["cnpg.io/cluster"])
                    continue
                pods = [p for p in pod_templates(objects) if selector.items() <= p.labels.items()]
                assert pods, f"{env} job {job['job_name']}: {name} selects no pod"
                for pod in pods:
                    workload = pod.labels["app.kubernetes.io/name"]
                    wanted = METRICS_PORT_NAME.get(workload, "metrics")
                    ports = [p for c in pod.spec["containers"] for p in c.get("ports", []) if p.get("name") == wanted]
                    assert [p["containerPort"] for p in ports] == [sd["port"]], \
                        f"{env} job {job['job_name']}: port {sd['port']} is not {workload}'s {wanted} port"
                    targets += 1
    assert targets >= 6


LISTEN_SETTINGS = {
    # container: (where it is told its port, ...); exporters without a setting use
    # their upstream default (postgres_exporter :9187, redis_exporter :9121).
    "celery-exporter": ("env", "CE_PORT"),
    "exporter@backup-exporter": ("env", "EXPORTER_PORT"),
}


@pytest.mark.parametrize("env", ENVS)
def test_exporters_listen_on_their_declared_metrics_port(manifests, env):
    objects = manifests[env]
    for container_key, (_source, variable) in LISTEN_SETTINGS.items():
        name, _, workload = container_key.partition("@")
        container = containers_of(objects, "Deployment", workload or name)[name]
        (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == "metrics"]
        assert value_of(container, variable) == str(port)
    server = containers_of(objects, "StatefulSet", "minio")["minio"]
    (metrics,) = [p["containerPort"] for p in server["ports"] if p["name"] == "metrics"]
    assert f"-metricsPort={metrics}" in server["command"]


# --- backup scripts and their CronJobs -----------------------------------------------------------

# libpq reads these itself (PGSSLROOTCERT: the CA of an external or CNPG server).
LIBPQ = {"PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGSSLMODE", "PGSSLROOTCERT", "PGCONNECT_TIMEOUT"}


def _without_usage(text: str) -> str:
    # The usage text documents names; only code counts as reading them.
    return _code_lines(re.sub(r"<<\s*'?EOF'?\n.*?\nEOF\n", "", text, flags=re.DOTALL))


def _code_lines(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


@cache
def script_reads(script: str) -> tuple[set[str], set[str]]:
    """(every variable the script or lib.sh reads, the ones it requires) from the script's code."""
    code = _without_usage((BACKUP_BIN / script).read_text())
    if "lib.sh" in code:
        code += _without_usage((BACKUP_BIN / "lib.sh").read_text())
    names = set(re.findall(r"\$\{?!?([A-Z][A-Z0-9_]+)", code))
    names |= set(re.findall(r"\b(?:require_uint|require_name|require_prefix|require_bucket)\s+\w+\s+([A-Z][A-Z0-9_]+)",
                            code))
    # s3_remote NAME ENDPOINT_VAR KEY_VAR SECRET_VAR REGION_VAR PROVIDER_VAR
    for args in re.findall(r"\bs3_remote\s+\w+((?:\s+\\?\s*[A-Z][A-Z0-9_]+)+)", code):
        names |= set(re.findall(r"[A-Z][A-Z0-9_]+", args))
    own = _code_lines((BACKUP_BIN / script).read_text())
    required: set[str] = set()
    for line in re.findall(r"^\s*require_env\s+([A-Z0-9_ ]+)$", own, flags=re.MULTILINE):
        required |= set(line.split())
    for args in re.findall(r"\bs3_remote\s+\w+\s+\\?\s*([A-Z][A-Z0-9_]+)\s+\\?\s*([A-Z][A-Z0-9_]+)\s+\\?\s*"
                           r"([A-Z][A-Z0-9_]+)", own):
        required |= set(args)
    if re.search(r"^\s*backup_remote\b", own, flags=re.MULTILINE):
        # lib.sh backup_remote: require_env BACKUP_S3_BUCKET, then s3_remote backup ENDPOINT KEY SECRET ...
        required |= {"BACKUP_S3_BUCKET", "BACKUP_S3_ENDPOINT", "BACKUP_S3_ACCESS_KEY_ID", "BACKUP_S3_SECRET_ACCESS_KEY"}
    return names, required


def job_name(script: str, container: Obj) -> str:
    code = (BACKUP_BIN / script).read_text()
    (variable, default) = re.search(r"require_name job (\w+) (\S+)", code).groups()  # type: ignore[union-attr]
    return value_of(container, variable) or default


def backup_containers(objects: list[Obj]) -> Iterator[tuple[str, str, Obj]]:
    for pod in pod_templates(objects):
        for container in pod.containers():
            command = container.get("command") or []
            if command and command[0].startswith("/opt/backup/bin/"):
                yield pod.where, command[0].rsplit("/", 1)[1], container


def test_the_script_reader_finds_known_variables():
    names, required = script_reads("pg-backup")
    assert {"BACKUP_KEEP_MIN", "BACKUP_RETENTION_DAYS", "BACKUP_S3_ENDPOINT", "BACKUP_S3_BUCKET"} <= names
    assert {"PGDATABASE", "BACKUP_S3_BUCKET", "BACKUP_S3_ENDPOINT", "BACKUP_S3_ACCESS_KEY_ID"} <= required
    assert "BACKUP_KEEP_MIN" not in required
    _names, restore_required = script_reads("pg-restore")
    assert "RESTORE_TARGET_DB" in restore_required


OFFSITE = {"backups": {"offsite": {"enabled": True}}}


@pytest.fixture(scope="module")
def backup_renders(manifests) -> dict[str, list[Obj]]:
    return {**manifests, "prod+offsite": render_with("prod", OFFSITE)[1]}


@pytest.mark.parametrize("case", [*ENVS, "prod+offsite"])
def test_backup_jobs_get_what_their_script_requires_and_nothing_it_ignores(backup_renders, case):
    seen = set()
    for where, script, container in backup_containers(backup_renders[case]):
        if script == "backup-exporter":
            continue  # Python: checked against its own source below
        names, required = script_reads(script)
        given = set(env_of(container))
        assert required <= given, f"{case} {where}: {script} requires {sorted(required - given)}"
        unread = given - names - LIBPQ
        assert not unread, f"{case} {where}: {script} never reads {sorted(unread)}"
        seen.add(script)
    assert {"pg-backup", "pg-restore", "restore-drill", "ensure-bucket"} <= seen


def exporter_reads() -> set[str]:
    tree = ast.parse((ROOT / "backup" / "exporter" / "backup_exporter.py").read_text())
    return {n.args[0].value for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and n.func.attr == "get" and n.args and isinstance(n.args[0], ast.Constant)
            and isinstance(n.args[0].value, str) and ENV_NAME.match(n.args[0].value)}


@pytest.mark.parametrize("case", [*ENVS, "prod+offsite"])
def test_the_backup_exporter_watches_exactly_the_scheduled_jobs(backup_renders, case):
    objects = backup_renders[case]
    (exporter,) = [c for _w, script, c in backup_containers(objects) if script == "backup-exporter"]
    wrapper_reads, wrapper_requires = script_reads("backup-exporter")
    unread = set(env_of(exporter)) - exporter_reads() - wrapper_reads
    assert not unread, f"the exporter is given {sorted(unread)} and never reads them"
    assert wrapper_requires <= set(env_of(exporter))
    scheduled = {job_name(script, container) for where, script, container in backup_containers(objects)
                 if where.startswith("CronJob/") and not one(objects, "CronJob", where.split("/")[1])["spec"]
                 .get("suspend") and script in ("pg-backup", "restore-drill", "s3-mirror")}
    watched = set((value_of(exporter, "EXPORTER_JOBS") or "").split(","))
    assert watched == scheduled, f"{case}: the exporter watches {sorted(watched)}, the CronJobs write {scheduled}"
    if case == "prod+offsite":
        assert "s3-mirror" in watched


@pytest.mark.parametrize("case", [*ENVS, "prod+offsite"])
def test_backup_values_equal_the_profile(backup_renders, stacks, case):
    env = case.split("+")[0]
    profile = stacks[env].profile
    objects = backup_renders[case]
    backups = {script: container for _w, script, container in backup_containers(objects)}
    dump = backups["pg-backup"]
    assert value_of(dump, "BACKUP_RETENTION_DAYS") == str(profile.backups.max_age_days)
    assert value_of(dump, "BACKUP_KEEP_MIN") == str(profile.backups.keep_last)
    assert value_of(dump, "PGDATABASE") == profile.postgres.database
    assert value_of(dump, "BACKUP_S3_BUCKET") == profile.backups.bucket
    restore = backups["pg-restore"]
    assert value_of(restore, "RESTORE_TARGET_DB") not in (None, "", profile.postgres.database), \
        "the manual restore must never target the live database"
    drill = backups["restore-drill"]
    drill_db = value_of(drill, "DRILL_DB") or re.search(  # type: ignore[union-attr]
        r"require_name drill_db DRILL_DB (\S+)", (BACKUP_BIN / "restore-drill").read_text()).group(1)
    assert drill_db != profile.postgres.database, "the drill must restore into a scratch database"
    if "s3-mirror" in backups:
        mirror = backups["s3-mirror"]
        assert value_of(mirror, "MIRROR_RETENTION_DAYS") == str(profile.backups.max_age_days)
        assert value_of(mirror, "MIRROR_DST_BUCKET") == profile.backups.offsite.bucket


def test_backup_values_follow_a_changed_profile():
    _stack, objects = render_with("prod", {"backups": {"keep_last": 3, "max_age_days": 9},
                                           "postgres": {"database": "shop"}})
    backups = {script: c for _w, script, c in backup_containers(objects)}
    assert value_of(backups["pg-backup"], "BACKUP_KEEP_MIN") == "3"
    assert value_of(backups["pg-backup"], "BACKUP_RETENTION_DAYS") == "9"
    assert value_of(backups["pg-restore"], "RESTORE_TARGET_DB") not in ("shop", None)
