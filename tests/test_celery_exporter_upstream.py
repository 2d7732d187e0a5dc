"""The real Celery exporter against our rules, dashboards and chart.

celery-exporter/Dockerfile builds danihodovic/celery-exporter from its source
at EXPORTER_COMMIT with celery-exporter/requirements.lock. These tests run that
source, from a checkout named by $CELERY_EXPORTER_SOURCE (it must be at the
Dockerfile's commit; .github/workflows/ci.yml clones it), in a venv of the lock
(pip --require-hashes --only-binary=:all:, cached in .cache/celery-exporter/ by
the lock's hash) on the image's Python: the trixie root's python3 where the
runtime roots are usable, else $CELERY_EXPORTER_PYTHON, else this interpreter
if its version is the image's.

The exporter is started as dist/stage renders Deployment celery-exporter: its
`python -c` wrapper (REDIS_* -> CE_BROKER_URL) and env, with /app/cli.py
replaced by a copy of the image's /app (cli.py, src/ without its tests) and the
Redis address, password and CE_PORT pointed at a test Valkey (forky root) or
redis-server. A real Celery worker runs dist/stage's worker-default command
line with a stand-in for the app's Celery module (the app's task names, the
rendered CELERY_WORKER_SEND_TASK_EVENTS); the tests' own producer sends task
events as task_send_sent_event does.

Checked: /health; every name of monitoring/metrics/celery.txt has series, and
what the exporter exposes beyond the list is named in the list's header; the
labels the rendered rules and the celery dashboard group and match by exist
on those series; queue lengths for CE_QUEUES without a consumer; the
heartbeat task's success counter; the worker's hostname label against the
rules' pod pattern; worker-offline; no readiness with a wrong broker password;
a broker outage survived (the chart's CE_RETRY_INTERVAL: without it, v0.12.2
exits on the first broker error).
That the rules name only listed metrics is checked where they are made
(charts/monitoring/rules.py alert_groups, covered by tests/test_monitoring.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from charts.data import CELERY_EXPORTER_ENTRYPOINT
from charts.monitoring.metrics import METRICS_DIR, metric_list, metric_names
from tests.support import services
from tests.support.roots import REPO, root_runtime, roots_problem
from tests.support.services import Account, Runtime

SOURCE_VARIABLE = "CELERY_EXPORTER_SOURCE"
PYTHON_VARIABLE = "CELERY_EXPORTER_PYTHON"
EXPORTER_DIR = REPO / "celery-exporter"
DOCKERFILE = EXPORTER_DIR / "Dockerfile"
LOCK = EXPORTER_DIR / "requirements.lock"
CACHE = REPO / ".cache" / "celery-exporter"
DIST = REPO / "dist"
STAGE = DIST / "stage"
CELERY_LIST = METRICS_DIR / "celery.txt"
SYSTEM_PATH = ":".join(services.SYSTEM_PATH)
# The pod name a Deployment's pod gets (<deployment>-<pod-template-hash>-<suffix>): the
# worker's %h in the cluster, and what the exporter labels its series with.
POD_SUFFIX = "-7d9c6b5f4-x2k8q"
# A task of the stand-in worker that raises.
FAILING_TASK = "standin.tasks.explode"
# Labels Prometheus adds when it scrapes (job) or relabels (namespace).
TARGET_LABELS = {"job", "namespace", "instance"}


def dockerfile_arg(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)\s*$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, f"{DOCKERFILE.relative_to(REPO)}: no ARG {name}=<default>"
    return match.group(1)


def image_python() -> str:
    """major.minor of the image's Python (the runtime stage's FROM python:X.Y.Z-slim)."""
    versions = re.findall(r"^FROM python:(\d+\.\d+)\.\d+-slim\b", DOCKERFILE.read_text(), re.MULTILINE)
    assert versions, f"{DOCKERFILE.relative_to(REPO)}: no FROM python:X.Y.Z-slim"
    return versions[-1]


if not os.environ.get(SOURCE_VARIABLE):
    pytest.skip(f"needs upstream celery-exporter source: set {SOURCE_VARIABLE} to a clone of "
                f"github.com/danihodovic/celery-exporter at {dockerfile_arg('EXPORTER_COMMIT')} "
                "(celery-exporter/Dockerfile EXPORTER_COMMIT); .github/workflows/ci.yml does",
                allow_module_level=True)

pytestmark = [pytest.mark.runtime, pytest.mark.slow]


def unavailable(reason: str) -> None:
    """Skip here; in CI, where the setup provides everything, fail."""
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


# --- the source and its venv -------------------------------------------------------


@pytest.fixture(scope="module")
def source() -> Path:
    path = Path(os.environ[SOURCE_VARIABLE]).resolve()
    expected = dockerfile_arg("EXPORTER_COMMIT")
    head = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=False)
    if head.returncode != 0 or head.stdout.strip() != expected:
        pytest.fail(f"{SOURCE_VARIABLE}={path} is at {head.stdout.strip() or head.stderr.strip()!r}, not at "
                    f"{expected} (celery-exporter/Dockerfile EXPORTER_COMMIT): git -C {path} checkout {expected}",
                    pytrace=False)
    missing = [name for name in ("cli.py", "src/exporter.py", "LICENSE.md") if not (path / name).is_file()]
    assert not missing, f"{path}: no {missing}; not a celery-exporter checkout"
    return path


@dataclass(frozen=True)
class Interpreter:
    runtime: Runtime
    python: str  # a path inside runtime
    version: str
    origin: str

    def key(self) -> str:
        where = self.runtime.name if self.runtime.root else "host-" + hashlib.sha256(
            os.path.realpath(self.python).encode()).hexdigest()[:8]
        return f"{where}-py{self.version}"


def python_version(runtime: Runtime, python: str) -> str | None:
    result = subprocess.run(runtime.command([python, "-c", "import platform; print(platform.python_version())"]),
                            capture_output=True, text=True, timeout=60, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


@pytest.fixture(scope="module")
def interpreter() -> Interpreter:
    """The image's Python: the trixie root's, $CELERY_EXPORTER_PYTHON or this one."""
    wanted = image_python()
    candidates: list[tuple[Runtime, str, str]] = []
    if roots_problem() is None:
        candidates.append((root_runtime("trixie"), "/usr/bin/python3", "the trixie root's python3"))
    if os.environ.get(PYTHON_VARIABLE):
        candidates.append((services.HOST, os.environ[PYTHON_VARIABLE], f"${PYTHON_VARIABLE}"))
    candidates.append((services.HOST, sys.executable, "the tests' interpreter"))
    seen = []
    for runtime, python, origin in candidates:
        version = python_version(runtime, python)
        seen.append(f"{origin} {python}: {version or 'does not run'}")
        if version and version.rsplit(".", 1)[0] == wanted:
            return Interpreter(runtime, python, version, origin)
        if origin.startswith("$"):
            pytest.fail(f"{PYTHON_VARIABLE}={python} is Python {version}, the image's is {wanted}", pytrace=False)
    unavailable(f"needs Python {wanted} (the image's) for the exporter: runtime roots "
                f"({roots_problem() or 'usable'}), or set {PYTHON_VARIABLE}; found {'; '.join(seen)}")
    raise AssertionError("unreachable")


def lock_pins() -> dict[str, str]:
    return {normalized(m[1]): m[2] for m in re.finditer(r"(?m)^([A-Za-z0-9][A-Za-z0-9_.-]*)==(\S+)", LOCK.read_text())}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def venv(interpreter: Interpreter) -> Path:
    """A venv of requirements.lock for `interpreter`, built once per lock and interpreter."""
    digest = hashlib.sha256(LOCK.read_bytes()).hexdigest()[:16]
    path = CACHE / f"venv-{interpreter.key()}-{digest}"
    complete = path / ".complete"
    CACHE.mkdir(parents=True, exist_ok=True)
    # pytest-xdist may run this module's tests in two workers: one builds, the other waits.
    with (CACHE / f"{path.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not complete.exists():
            shutil.rmtree(path, ignore_errors=True)
            env = dict(os.environ)
            # The roots trust this machine's CA bundle (copied there when built), not their own.
            bundle = "/etc/host-ca-bundle.crt"
            if interpreter.runtime.root is not None and interpreter.runtime.path(bundle).is_file():
                env.update(SSL_CERT_FILE=bundle, PIP_CERT=bundle)
            pip = [str(path / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
            for step in ([interpreter.python, "-m", "venv", str(path)],
                         [*pip, "--require-hashes", "--only-binary=:all:", "--requirement", str(LOCK)]):
                result = subprocess.run(interpreter.runtime.command(step), capture_output=True, text=True, env=env,
                                        timeout=900, check=False)
                assert result.returncode == 0, (f"{' '.join(step[:4])} ... failed ({interpreter.origin}):\n"
                                                f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
            complete.write_text(f"{interpreter.origin} {interpreter.version}\n")
            # Venvs of an older lock for this interpreter.
            for stale in CACHE.glob(f"venv-{interpreter.key()}-*"):
                if stale.is_dir() and stale != path:
                    shutil.rmtree(stale, ignore_errors=True)
    return path


def app_copy(source: Path, into: Path) -> Path:
    """What the image's /app holds (celery-exporter/Dockerfile: cli.py, src/ less its tests, LICENSE.md)."""
    app = into / "app"
    app.mkdir()
    shutil.copy2(source / "cli.py", app / "cli.py")
    shutil.copy2(source / "LICENSE.md", app / "LICENSE.md")
    shutil.copytree(source / "src", app / "src", ignore=shutil.ignore_patterns("test_*.py", "__pycache__"))
    for path in [app, *app.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return app


# --- the rendered specs and rules --------------------------------------------------


def rendered_container(file: str, name: str) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((STAGE / file).read_text()) if d]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name]
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return dict(next((c for c in containers if c["name"] == name), containers[0]))


def rendered_env(container: dict[str, Any], secrets: dict[str, str], overrides: dict[str, str], *,
                 other_secrets: bool = False) -> dict[str, str]:
    """The container's env, secretKeyRefs from `secrets`; another required one is an error
    unless `other_secrets` (left out: the stand-in worker reads only REDIS_*)."""
    env: dict[str, str] = {}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif entry["valueFrom"]["secretKeyRef"]["key"] in secrets:
            env[entry["name"]] = secrets[entry["valueFrom"]["secretKeyRef"]["key"]]
        else:
            assert other_secrets or entry["valueFrom"]["secretKeyRef"].get("optional"), f"no test value for {entry}"
    return {**env, **overrides}


def celery_expressions(env: str = "*") -> list[str]:
    """The rendered alert expressions (dist/<env>) and celery dashboard queries naming a celery_ metric."""
    exprs: list[str] = []
    for path in sorted(DIST.glob(f"{env}/*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            groups: list[dict[str, Any]] = []
            if doc.get("kind") == "PrometheusRule":
                groups = doc["spec"]["groups"]
            elif doc.get("kind") == "ConfigMap":
                for key, text in (doc.get("data") or {}).items():
                    if key.endswith((".yaml", ".yml")) and "celery_" in text:
                        groups += (yaml.safe_load(text) or {}).get("groups", [])
                    elif key == "celery.json":
                        exprs += dashboard_exprs(json.loads(text))
            exprs += [rule["expr"] for group in groups for rule in group.get("rules", []) if "expr" in rule]
    return sorted({e for e in exprs if "celery_" in e})


def dashboard_exprs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for value in node.values() for e in dashboard_exprs(value)]
    if isinstance(node, list):
        return [e for item in node for e in dashboard_exprs(item)]
    return []


AGGREGATION = re.compile(r"\b(?:sum|min|max|avg|count|group|stddev|stdvar|topk|bottomk|quantile)\s*"
                         r"(?:\b(by|without)\s*\(([^()]*)\)\s*)?\(")


def closing(text: str, start: int) -> int:
    """The index of the parenthesis closing the one at `start`."""
    depth = 0
    for index in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[index], 0)
        if depth == 0:
            return index
    raise ValueError(f"unbalanced parentheses in {text!r}")


def label_uses(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, label names) pairs an expression relies on: the labels of each selector's
    matchers, and the `by (...)` labels of every aggregation over the metric."""
    uses = []
    for match in re.finditer(r"\b(celery_[A-Za-z0-9_]+)\s*\{([^{}]*)\}", expr):
        names = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", match.group(2)))
        uses.append((match.group(1), names))
    for match in AGGREGATION.finditer(expr):
        end = closing(expr, match.end() - 1)
        labels = match.group(2) if match.group(1) == "by" else None
        after = re.match(r"\s*by\s*\(([^()]*)\)", expr[end + 1:])
        if after:
            labels = after.group(1)
        if labels is None:
            continue
        names = {label.strip() for label in labels.split(",") if label.strip()}
        uses += [(metric, names) for metric in metric_names(expr[match.end():end]) if metric.startswith("celery_")]
    return uses


def heartbeat_task() -> str:
    pattern = r'celery_task_succeeded_total\{[^}]*\bname="([^"]+)"'
    names = {name for expr in celery_expressions(STAGE.name) for name in re.findall(pattern, expr)}
    assert len(names) == 1, f"dist/stage's rules should name one heartbeat task: {names}"
    return names.pop()


def worker_pod_patterns() -> set[str]:
    return {m for e in celery_expressions() for m in re.findall(r'celery_worker_up\{[^}]*\bhostname=~"([^"]+)"', e)}


# --- running it --------------------------------------------------------------------


@dataclass
class Scrape:
    text: str
    samples: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Scrape:
        from prometheus_client.parser import text_string_to_metric_families

        scrape = cls(text)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                scrape.samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
        return scrape

    def value(self, metric: str, /, **labels: str) -> float | None:
        """The sum of the series with these labels (as the rules sum them), None without any."""
        values = [v for found, v in self.samples.get(metric, []) if labels.items() <= found.items()]
        return sum(values) if values else None

    def labels(self, name: str) -> set[str]:
        return {label for found, _v in self.samples.get(name, []) for label in found}

    def families(self) -> set[str]:
        """Metric names the exposition declares (# TYPE), with or without series."""
        return set(re.findall(r"^# TYPE (\S+) ", self.text, re.MULTILINE))


@dataclass
class Process:
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@dataclass
class Exporter(Process):
    port: int = 0

    def get(self, path: str, timeout: float = 20) -> Any:
        import requests

        return requests.get(f"http://127.0.0.1:{self.port}{path}", timeout=timeout)

    def scrape(self) -> Scrape:
        response = self.get("/metrics")
        assert response.status_code == 200, f"/metrics: {response.status_code}\n{self.tail()}"
        return Scrape.parse(response.text)


@dataclass
class Setup:
    interpreter: Interpreter
    venv: Path
    app: Path
    account: Account
    base: Path
    # Where the worker runs: the trixie root's venv (the app's pins on the image's Python)
    # with the exporter there, else the tests' own venv (the same pins).
    worker_runtime: Runtime
    worker_bin: str


def start(runtime: Runtime, args: list[str], *, env: dict[str, str], cwd: Path, log: Path,
          account: Account) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(runtime.command(args, account), env=env, cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def start_exporter(setup: Setup, redis: services.RedisServer, *, password: str, name: str,
                   extra_env: dict[str, str] | None = None) -> Exporter:
    """dist/stage's celery-exporter container: its command and env, /app/cli.py being the copy of upstream."""
    container = rendered_container("10-monitoring.yaml", "celery-exporter")
    command = list(container["command"])
    assert command[:2] == ["python", "-c"] and CELERY_EXPORTER_ENTRYPOINT in command[2], command
    command[2] = command[2].replace(CELERY_EXPORTER_ENTRYPOINT, str(setup.app / "cli.py"))
    port = services.free_port()
    env = rendered_env(container, {"REDIS_PASSWORD": password},
                       {"REDIS_HOST": redis.host, "REDIS_PORT": str(redis.port), "CE_PORT": str(port)})
    # The image's ENV (celery-exporter/Dockerfile): its venv first on PATH; HOME a private temp dir.
    env.update(PATH=f"{setup.venv}/bin:{SYSTEM_PATH}", HOME=str(setup.base), PYTHONUNBUFFERED="1",
               PYTHONDONTWRITEBYTECODE="1", LC_ALL="C.UTF-8", **(extra_env or {}))
    log = setup.base / f"{name}.log"
    popen = start(setup.interpreter.runtime, command, env=env, cwd=setup.app, log=log, account=setup.account)
    return Exporter(popen, log, port)


def wait_for(condition: Callable[[], Any], timeout: float, message: Callable[[], str], interval: float = 0.5) -> Any:
    """condition()'s first true result; its errors count as false until the deadline."""
    deadline = time.monotonic() + timeout
    error: Exception | None = None
    while True:
        try:
            result = condition()
            if result:
                return result
        except Exception as caught:
            error = caught
        assert time.monotonic() < deadline, f"{message()}\nlast error: {error!r}"
        time.sleep(interval)


def health(exporter: Exporter) -> Any:
    assert exporter.popen.poll() is None, f"the exporter exited with {exporter.popen.returncode}:\n{exporter.tail()}"
    return exporter.get("/health")


@contextlib.contextmanager
def stopping(process: subprocess.Popen[bytes]) -> Iterator[None]:
    try:
        yield
    finally:
        services.terminate(process)


@pytest.fixture(scope="module")
def setup(source: Path, interpreter: Interpreter, venv: Path) -> Iterator[Setup]:
    worker_runtime, worker_bin = ((root_runtime("trixie"), "/opt/venv/bin") if interpreter.runtime.root is not None
                                  else (services.HOST, str(Path(sys.executable).parent)))
    account = process_account([(interpreter.runtime, f"{venv}/bin/python"), (worker_runtime, f"{worker_bin}/python")])
    base = services.make_temp_dir("celery-exporter-", account)
    try:
        yield Setup(interpreter, venv, app_copy(source, base), account, base, worker_runtime, worker_bin)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def process_account(pythons: list[tuple[Runtime, str]]) -> Account:
    """The unprivileged account (as root: nobody, like the image's own user) if it can run
    these interpreters; else the current user (a Python under /root is not readable by nobody)."""
    account = services.unprivileged_account()
    for runtime, python in pythons:
        probe = subprocess.run(runtime.command([python, "-c", "pass"], account), capture_output=True, timeout=60,
                               check=False)
        if probe.returncode != 0:
            entry = pwd.getpwuid(os.geteuid())
            return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)
    return account


@pytest.fixture(scope="module")
def redis_runtime() -> Runtime:
    """Valkey 9 of the forky root, as the other runtime tests use; else this machine's redis-server."""
    return root_runtime("forky") if roots_problem() is None else services.default_runtime()


def broker(runtime: Runtime) -> contextlib.AbstractContextManager[services.RedisServer]:
    try:
        services.find_redis_server(runtime)
    except services.MissingBinaryError as error:
        unavailable(str(error))
    return services.redis_server(runtime=runtime)


STANDIN_APP = '''"""Stand-in for the app's Celery module (app/config/celery.py): its broker
settings from REDIS_* and CELERY_WORKER_SEND_TASK_EVENTS as
app/config/settings/base.py reads them, and tasks with the app's names."""
import os
from urllib.parse import quote

from celery import Celery

e = os.environ
app = Celery("standin", broker=f"redis://:{quote(e['REDIS_PASSWORD'], safe='')}@{e['REDIS_HOST']}:"
                               f"{e['REDIS_PORT']}/{e['REDIS_DB']}")
app.conf.worker_send_task_events = e.get("CELERY_WORKER_SEND_TASK_EVENTS", "").lower() in {"1", "true", "yes", "on"}
app.conf.worker_hijack_root_logger = False


@app.task(name=HEARTBEAT, ignore_result=True)
def heartbeat():
    return None


@app.task(name=FAILING, ignore_result=True)
def explode():
    raise ValueError("the stand-in task fails on purpose")
'''


def worker_command(pod: str) -> tuple[list[str], dict[str, Any]]:
    """dist/stage's worker-default command line with the stand-in app, and its container."""
    container = rendered_container("07-worker.yaml", "worker-default")
    command = list(container.get("command", [])) + list(container.get("args", []))
    apps = [i for i, arg in enumerate(command) if arg.startswith("--app=")]
    assert command[0] == "celery" and len(apps) == 1, command
    command[apps[0]] = "--app=standin_app"
    hostnames = [arg for arg in command if arg.startswith("--hostname=")]
    assert hostnames and hostnames[0].endswith("@%h"), f"the worker's node name should end in @%h: {command}"
    # %h is the pod's hostname in the cluster.
    return [arg.replace("%h", pod) for arg in command], container


@dataclass
class Run:
    """What the exporter served during one scenario."""

    health: Any
    idle: Scrape  # before any worker or task
    backlog: Scrape  # tasks queued, no worker yet
    done: Scrape  # the worker ran them
    again: Scrape  # one more heartbeat
    offline: Scrape  # the worker stopped
    queues: list[str]
    heartbeat: str
    pod: str
    password: str


@pytest.fixture(scope="module")
def run(setup: Setup, redis_runtime: Runtime) -> Iterator[Run]:
    import redis as redis_client
    from celery import Celery

    heartbeat = heartbeat_task()
    with broker(redis_runtime) as server:
        exporter = start_exporter(setup, server, password=server.password, name="exporter")
        with stopping(exporter.popen):
            ok = wait_for(lambda: (answer := health(exporter)).status_code == 200 and answer, 60,
                          lambda: f"/health never answered 200:\n{exporter.tail()}")
            # Events are pub/sub: send none before the exporter's receiver has subscribed.
            client = redis_client.Redis(host=server.host, port=server.port, password=server.password)
            wait_for(lambda: int(client.execute_command("PUBSUB", "NUMPAT")) > 0, 30,
                     lambda: f"the exporter never subscribed to events:\n{exporter.tail()}", 0.2)
            idle = exporter.scrape()
            exporter_env = rendered_container("10-monitoring.yaml", "celery-exporter")["env"]
            (queues,) = [e["value"].split(",") for e in exporter_env if e["name"] == "CE_QUEUES"]

            producer = Celery("producer", broker=server.url(), set_as_current=False)
            # What task-sent events need on the producers (celery.txt's header).
            producer.conf.task_send_sent_event = True
            try:
                producer.send_task(heartbeat)
                producer.send_task(FAILING_TASK)
                backlog = wait_for(lambda: (s := exporter.scrape()).value("celery_task_sent_total", name=FAILING_TASK)
                                   and s, 30, lambda: f"no task-sent events counted:\n{exporter.tail()}")

                pod = "worker-default" + POD_SUFFIX
                command, container = worker_command(pod)
                (setup.base / "standin_app.py").write_text(
                    STANDIN_APP.replace("HEARTBEAT", repr(heartbeat)).replace("FAILING", repr(FAILING_TASK)))
                # What the stand-in reads of the rendered env (DJANGO_SETTINGS_MODULE would make
                # Celery set up Django).
                env = {name: value for name, value in rendered_env(
                    container, {"REDIS_PASSWORD": server.password},
                    {"REDIS_HOST": server.host, "REDIS_PORT": str(server.port)}, other_secrets=True).items()
                    if name.startswith(("CELERY_", "REDIS_"))}
                env.update(PATH=f"{setup.worker_bin}:{SYSTEM_PATH}", HOME=str(setup.base), PYTHONPATH=str(setup.base),
                           LC_ALL="C.UTF-8", PYTHONDONTWRITEBYTECODE="1")
                worker_log = setup.base / "worker.log"
                worker = start(setup.worker_runtime, command, env=env, cwd=setup.base, log=worker_log,
                               account=setup.account)
                with stopping(worker):
                    def both_counted() -> Scrape | None:
                        assert worker.poll() is None, f"the worker exited:\n{worker_log.read_text()[-3000:]}"
                        scrape = exporter.scrape()
                        counted = (scrape.value("celery_task_succeeded_total", name=heartbeat) == 1
                                   and scrape.value("celery_task_failed_total", name=FAILING_TASK) == 1
                                   and scrape.value("celery_worker_up", hostname=pod) == 1)
                        return scrape if counted else None

                    def report() -> str:
                        return f"exporter:\n{exporter.tail()}\nworker:\n{worker_log.read_text()[-3000:]}"

                    done = wait_for(both_counted, 90, report)
                    producer.send_task(heartbeat)

                    def counted_again() -> Scrape | None:
                        scrape = exporter.scrape()
                        # celery_worker_tasks_active comes with the worker's heartbeats (every 2 s).
                        counted = (scrape.value("celery_task_succeeded_total", name=heartbeat) == 2
                                   and scrape.value("celery_worker_tasks_active", hostname=pod) is not None)
                        return scrape if counted else None

                    again = wait_for(counted_again, 60, report)
                # Stopped with SIGTERM, as the kubelet stops a pod: a warm shutdown sends worker-offline.
                offline = wait_for(lambda: (s := exporter.scrape()).value("celery_worker_up", hostname=pod) == 0
                                   and s, 30, report)
            finally:
                producer.close()
                client.close()
            yield Run(ok, idle, backlog, done, again, offline, queues, heartbeat, pod, server.password)


# --- the tests ---------------------------------------------------------------------


def test_runs_the_dockerfiles_commit_with_the_locked_packages_on_the_images_python(setup):
    assert setup.interpreter.version.rsplit(".", 1)[0] == image_python(), setup.interpreter
    script = ("import importlib.metadata as m, json, platform; print(json.dumps({'python': platform.python_version(),"
              " 'packages': {d.metadata['Name']: d.version for d in m.distributions()}}))")
    result = subprocess.run(setup.interpreter.runtime.command([str(setup.venv / "bin" / "python"), "-c", script]),
                            capture_output=True, text=True, timeout=60, check=True)
    found = json.loads(result.stdout)
    assert found["python"] == setup.interpreter.version
    installed = {normalized(n): v for n, v in found["packages"].items() if normalized(n) not in {"pip", "setuptools"}}
    assert installed == lock_pins(), {"not locked": installed.keys() - lock_pins().keys(),
                                      "missing": lock_pins().keys() - installed.keys()}


def test_the_metric_list_was_verified_for_the_version_the_dockerfile_builds():
    match = re.search(r'image\.description="danihodovic/celery-exporter (v[0-9.]+)\b', DOCKERFILE.read_text())
    assert match, f"{DOCKERFILE.relative_to(REPO)}: no version in the image description"
    first = CELERY_LIST.read_text().splitlines()[0]
    assert f"celery-exporter {match.group(1)} " in first, (
        f"{CELERY_LIST.relative_to(REPO)} names another version ({first!r}) than the image builds ({match.group(1)}): "
        "run this module against the new source, then update the list and its header")


def test_health_answers_200_without_showing_the_password(run):
    assert run.health.status_code == 200, run.health.text
    assert run.password not in run.health.text and "**" in run.health.text, run.health.text


def test_every_listed_metric_has_series_and_the_list_names_the_rest(run):
    listed = metric_list("celery")
    missing = sorted(name for name in listed if name not in run.again.samples)
    assert not missing, f"monitoring/metrics/celery.txt lists {missing}; the exporter exposes no series of them"
    # What the exporter exposes beyond the list must be named in the list's header
    # (left out on purpose, with the reason), so a new upstream metric is a decision.
    header = " ".join(line for line in CELERY_LIST.read_text().splitlines() if line.startswith("#"))
    named = set(re.findall(r"\bcelery_[a-z_]+", header))
    histograms = {name.removesuffix("_bucket") for name in listed if name.endswith("_bucket")}
    # prometheus_client adds a <name>_created gauge (series start time) to each counter and histogram.
    created = {name.removesuffix("_total") + "_created" for name in listed if name.endswith("_total")} | \
        {name + "_created" for name in histograms}
    unlisted = sorted(run.again.families() - listed - histograms - created - named)
    assert not unlisted, f"exposed, but neither listed nor named in celery.txt's header: {unlisted}"


def test_queue_lengths_of_the_rendered_queues_appear_before_any_worker_consumes_them(run):
    assert run.queues and all(run.queues), run.queues
    for queue in run.queues:
        assert run.idle.value("celery_queue_length", queue_name=queue) == 0, run.idle.text
    # Two tasks waiting in the default queue, no worker yet.
    assert run.backlog.value("celery_queue_length", queue_name="celery") == 2, run.backlog.text
    assert run.done.value("celery_queue_length", queue_name="celery") == 0, run.done.text


def test_the_labels_the_rules_and_dashboards_use_are_on_the_series(run):
    uses = [(expr, metric, labels) for expr in celery_expressions() for metric, labels in label_uses(expr)]
    assert uses, "no celery_ expression with labels found in dist/ (rules, celery dashboard)"
    problems = []
    for expr, metric, labels in uses:
        missing = labels - TARGET_LABELS - run.again.labels(metric)
        if missing:
            problems.append(f"{metric} has no label {sorted(missing)} (has {sorted(run.again.labels(metric))}): {expr}")
    assert not problems, "\n".join(sorted(set(problems)))


def test_worker_series_carry_the_pod_name_the_rules_match(run):
    assert run.done.value("celery_worker_up", hostname=run.pod) == 1, run.done.text
    assert run.again.value("celery_worker_tasks_active", hostname=run.pod) == 0, run.again.text
    patterns = worker_pod_patterns()
    assert patterns, "no rendered rule selects celery_worker_up by hostname (dist/prod autoscaled workers)"
    group = "worker-default"
    matching = [p for p in patterns if p.startswith(group + "-")]
    assert matching, f"no pattern for {group}: {patterns}"
    for pattern in matching:
        # Prometheus anchors regular expressions at both ends.
        assert re.fullmatch(pattern, run.pod), f"{run.pod!r} (the exported hostname) does not match {pattern!r}"


def test_the_heartbeat_tasks_successes_are_counted(run):
    name = run.heartbeat
    assert run.idle.value("celery_task_succeeded_total", name=name) is None
    assert run.done.value("celery_task_succeeded_total", name=name) == 1, run.done.text
    assert run.again.value("celery_task_succeeded_total", name=name) == 2, run.again.text
    assert run.again.value("celery_task_runtime_count", name=name) == 2, run.again.text
    assert run.again.value("celery_task_sent_total", name=name) == 2, run.again.text
    assert run.again.value("celery_task_failed_total", name=name) == 0, run.again.text


def test_a_failed_task_is_counted_by_name_and_exception(run):
    assert run.done.value("celery_task_failed_total", name=FAILING_TASK, exception="ValueError") == 1, run.done.text
    assert run.done.value("celery_task_succeeded_total", name=FAILING_TASK) == 0, run.done.text


def test_a_stopped_worker_is_reported_down(run):
    # CeleryWorkersDown: absent(celery_worker_up == 1); worker-offline sets it to 0.
    assert run.offline.value("celery_worker_up", hostname=run.pod) == 0, run.offline.text


def test_a_wrong_broker_password_never_becomes_ready(setup, redis_runtime):
    with broker(redis_runtime) as server:
        exporter = start_exporter(setup, server, password=server.password + "-wrong", name="wrong-password")
        with stopping(exporter.popen):
            answers = []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and exporter.popen.poll() is None:
                with contextlib.suppress(OSError):  # requests' errors, nothing listening yet
                    answers.append(exporter.get("/health", timeout=10).status_code)
                time.sleep(0.5)
            assert 200 not in answers, f"ready with a wrong password: {answers}\n{exporter.tail()}"
            # It keeps retrying (CE_RETRY_INTERVAL) and says why; it never exits 0.
            assert exporter.popen.poll() != 0, exporter.tail()
            assert "WRONGPASS" in exporter.tail(100_000) or "invalid username-password" in exporter.tail(100_000), \
                exporter.tail()


def test_the_exporter_outlives_a_broker_outage_and_resumes(setup, redis_runtime):
    """v0.12.2 exits on the first broker error unless --retry-interval is set
    (its default 0 re-raises), so the chart sets CE_RETRY_INTERVAL: a Redis
    restart must neither end the process nor leave it deaf to events."""
    import redis as redis_client

    with broker(redis_runtime) as server:
        exporter = start_exporter(setup, server, password=server.password, name="outage")
        with stopping(exporter.popen):
            wait_for(lambda: health(exporter).status_code == 200, 60, lambda: f"never ready:\n{exporter.tail()}")
            server.stop()
            time.sleep(3)
            assert exporter.popen.poll() is None, f"exited with {exporter.popen.returncode}:\n{exporter.tail()}"
            server.start()
            client = redis_client.Redis(host=server.host, port=server.port, password=server.password)
            try:
                # The event receiver subscribed again (events are pub/sub on the broker).
                wait_for(lambda: int(client.execute_command("PUBSUB", "NUMPAT")) > 0, 60,
                         lambda: f"the exporter never subscribed again:\n{exporter.tail()}")
                client.lpush("celery", b"{}")
                wait_for(lambda: exporter.scrape().value("celery_queue_length", queue_name="celery") == 1, 30,
                         exporter.tail)
            finally:
                client.close()
            assert exporter.popen.poll() is None, exporter.tail()
