"""Real PostgreSQL, Redis and S3 servers on loopback for tests.

Each context manager starts its server on a free 127.0.0.1 port in a fresh
temporary directory, yields a handle and removes everything on exit:

    with postgres_server() as pg:      # pg.dsn("postgres"), pg.url(...), pg.stop()
    with redis_server() as redis:      # redis.url(db=0), redis.stop()
    with s3_server() as s3:            # s3.endpoint, s3.access_key, s3.client()

PostgreSQL and Redis/Valkey run on this machine, or inside a Debian root
(scripts/runtime-roots.sh) when given a Runtime, or by default when
$TEST_SERVICES_RUNTIME names a root: Runtime.command() wraps their command
lines, Runtime.path() maps their paths for existence checks.

Handles can stop() and start() their server again on the same port and
data directory, so a test can simulate an outage. A missing binary raises
MissingBinaryError (a ServiceStartError) naming the package to install;
fixtures decide whether that is a skip or a failure.

Nothing here depends on the application: only the standard library (boto3
is imported lazily by S3Server.client()).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 30.0
SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


class ServiceStartError(RuntimeError):
    """A server did not come up."""


class MissingBinaryError(ServiceStartError):
    """The server program is not installed; the message names the package."""


def free_port() -> int:
    """A TCP port that was free a moment ago (callers retry on collisions)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, *, timeout: float = START_TIMEOUT, process: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServiceStartError(f"process exited with {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise ServiceStartError(f"nothing listening on {LOOPBACK}:{port} after {timeout:.0f}s")


def terminate(process: subprocess.Popen[Any], *, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`; always reaps the process."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


@dataclass(frozen=True)
class Account:
    """The unprivileged account servers run as when the tests run as root."""

    name: str
    uid: int
    gid: int

    def prefix(self) -> list[str]:
        """Command prefix that runs a program as this account, env unchanged."""
        if os.geteuid() != 0 or self.uid == 0:
            return []
        setpriv = shutil.which("setpriv")
        if setpriv:
            return [setpriv, f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups"]
        runuser = shutil.which("runuser")
        if runuser:
            return [runuser, "-u", self.name, "--"]
        raise MissingBinaryError("running as root needs setpriv or runuser (apt package util-linux)")

    def own(self, path: Path) -> None:
        if os.geteuid() == 0:
            os.chown(path, self.uid, self.gid)


@dataclass(frozen=True)
class Runtime:
    """Where server programs run: this machine (`root` None), or a directory
    tree entered with `launcher` (`<launcher> [--user UID:GID] -- CMD...`).
    Loopback, /tmp and the process table are shared with this machine."""

    name: str = "host"
    root: Path | None = None
    launcher: tuple[str, ...] = ()

    def command(self, args: list[str], account: Account | None = None) -> list[str]:
        """`args` as run in this runtime, as `account` when given."""
        if self.root is None:
            return [*(account.prefix() if account else []), *args]
        user: list[str] = []
        if account is not None and os.geteuid() == 0 and account.uid != 0:
            user = ["--user", f"{account.uid}:{account.gid}"]
        return [*self.launcher, *user, "--", *args]

    def path(self, inside: str | Path) -> Path:
        """Where `inside` (a path in this runtime) is on this machine."""
        inside = Path(inside)
        return inside if self.root is None else self.root / inside.relative_to("/")

    def which(self, name: str) -> str | None:
        """`name` on PATH (this machine) or on the system PATH of the root."""
        if self.root is None:
            return shutil.which(name)
        return next((f"{d}/{name}" for d in SYSTEM_PATH if self.path(f"{d}/{name}").is_file()), None)


HOST = Runtime()


def default_runtime() -> Runtime:
    """$TEST_SERVICES_RUNTIME (a root of scripts/runtime-roots.sh), else this machine."""
    name = os.environ.get("TEST_SERVICES_RUNTIME")
    if not name:
        return HOST
    from tests.support.roots import root_runtime

    return root_runtime(name)


def unprivileged_account(name: str | None = None) -> Account:
    """`name`, $TEST_SERVICE_USER, or nobody when root; else the current user."""
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)
    name = name or os.environ.get("TEST_SERVICE_USER", "nobody")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ServiceStartError(f"user {name!r} does not exist (set TEST_SERVICE_USER)") from None
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


def make_temp_dir(prefix: str, account: Account | None = None) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if account is not None:
        account.own(path)
    return path


# PostgreSQL --------------------------------------------------------------------


def find_postgres_bin(runtime: Runtime = HOST) -> Path:
    """$PG_BIN_DIR, the newest /usr/lib/postgresql/*/bin, or pg_ctl on PATH
    (in a root: its newest /usr/lib/postgresql/*/bin). A path in `runtime`."""
    candidates: list[Path] = []
    if os.environ.get("PG_BIN_DIR") and runtime.root is None:
        candidates.append(Path(os.environ["PG_BIN_DIR"]))
    versions = sorted(
        (Path("/usr/lib/postgresql") / p.parent.name / "bin"
         for p in runtime.path("/usr/lib/postgresql").glob("*/bin")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(versions)
    on_path = shutil.which("pg_ctl") if runtime.root is None else None
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for candidate in candidates:
        if runtime.path(candidate / "pg_ctl").is_file() and runtime.path(candidate / "initdb").is_file():
            return candidate
    raise MissingBinaryError(
        f"PostgreSQL server binaries (initdb, pg_ctl) not found in {runtime.name}: install the Debian package "
        "'postgresql' or set PG_BIN_DIR"
    )


@dataclass
class PostgresServer:
    """A throwaway cluster. The superuser is `user` with a random password."""

    bin_dir: Path
    base_dir: Path
    account: Account
    port: int
    host: str = LOOPBACK
    user: str = "postgres"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    runtime: Runtime = HOST

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq connection string (psql, pg_dump, psycopg)."""
        return f"host={self.host} port={self.port} user={self.user} password={self.password} dbname={dbname}"

    def url(self, dbname: str = "postgres") -> str:
        """postgres:// URL, the DATABASE_URL form."""
        return f"postgres://{quote(self.user)}:{quote(self.password, safe='')}@{self.host}:{self.port}/{quote(dbname)}"

    def env(self, dbname: str = "postgres") -> dict[str, str]:
        """PG* variables for libpq programs."""
        return {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGPASSWORD": self.password,
            "PGDATABASE": dbname,
        }

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.runtime.command(list(args), self.account),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.base_dir,
            check=False,
        )
        if result.returncode != 0:
            log = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            raise ServiceStartError(
                f"{Path(args[0]).name} failed ({result.returncode}): {result.stderr.strip()}\n{log}"
            )
        return result

    def initdb(self) -> None:
        pwfile = self.base_dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        self.account.own(pwfile)
        pwfile.chmod(0o600)
        self._run(
            str(self.bin_dir / "initdb"),
            "--pgdata", str(self.data_dir),
            "--username", self.user,
            "--pwfile", str(pwfile),
            "--auth-host", "scram-sha-256",
            "--auth-local", "trust",
            "--encoding", "UTF8",
            "--no-sync",
        )
        pwfile.unlink()

    def start(self) -> None:
        # fsync off: data safety is irrelevant for a throwaway test cluster.
        options = (
            f"-c listen_addresses={self.host} -p {self.port} -k {self.base_dir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            str(self.bin_dir / "pg_ctl"), "start", "--wait", "--timeout", str(int(START_TIMEOUT)),
            "--pgdata", str(self.data_dir), "--log", str(self.log_file), "-o", options,
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin_dir / "pg_ctl"), "stop", "--wait", "--pgdata", str(self.data_dir), "--mode", mode)

    def is_running(self) -> bool:
        result = subprocess.run(
            self.runtime.command(
                [str(self.bin_dir / "pg_ctl"), "status", "--pgdata", str(self.data_dir)], self.account
            ),
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL with psql over TCP; returns unaligned, tuples-only output."""
        result = subprocess.run(
            self.runtime.command([str(self.bin_dir / "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]),
            capture_output=True,
            text=True,
            env={**os.environ, **self.env(dbname)},
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def create_database(self, name: str) -> str:
        """Create database `name`; returns its DATABASE_URL."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextlib.contextmanager
def postgres_server(*, user: str | None = None, runtime: Runtime | None = None) -> Iterator[PostgresServer]:
    """Initialise and start a cluster; PostgreSQL refuses to run as root."""
    runtime = runtime or default_runtime()
    bin_dir = find_postgres_bin(runtime)
    account = unprivileged_account(user)
    base_dir = make_temp_dir("pgtest-", account)
    server: PostgresServer | None = None
    try:
        for attempt in range(3):
            server = PostgresServer(
                bin_dir=bin_dir, base_dir=base_dir, account=account, port=free_port(), runtime=runtime
            )
            if attempt == 0:
                server.initdb()
            try:
                server.start()
                break
            except ServiceStartError:
                if attempt == 2:
                    raise
        assert server is not None
        yield server
    finally:
        if server is not None and server.is_running():
            with contextlib.suppress(ServiceStartError):
                server.stop(mode="immediate")
        shutil.rmtree(base_dir, ignore_errors=True)


# Redis -------------------------------------------------------------------------


def find_redis_server(runtime: Runtime = HOST) -> str:
    """$REDIS_SERVER_BIN or redis-server here; valkey-server or redis-server in a root."""
    if runtime.root is None:
        path = os.environ.get("REDIS_SERVER_BIN") or shutil.which("redis-server")
    else:
        path = runtime.which("valkey-server") or runtime.which("redis-server")
    if not path:
        raise MissingBinaryError(f"redis-server not found in {runtime.name}: install the Debian package 'redis-server'")
    return path


@dataclass
class RedisServer:
    """A redis-server without persistence that requires a random password."""

    binary: str
    base_dir: Path
    port: int
    host: str = LOOPBACK
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    process: subprocess.Popen[bytes] | None = None
    runtime: Runtime = HOST

    def url(self, db: int = 0) -> str:
        return f"redis://:{quote(self.password, safe='')}@{self.host}:{self.port}/{db}"

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        config = self.base_dir / "redis.conf"
        # The password goes in a file, not argv, so `ps` does not show it.
        config.write_text(
            f"port {self.port}\nbind {self.host}\ndir {self.base_dir}\n"
            f'requirepass "{self.password}"\nsave ""\nappendonly no\n'
            f"logfile {self.base_dir / 'redis.log'}\ndaemonize no\n"
        )
        self.process = subprocess.Popen(
            self.runtime.command([self.binary, str(config)]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            self._wait_ready()
        except ServiceStartError:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise ServiceStartError(f"redis-server exited with {self.process.returncode}")
            if self.ping():
                return
            time.sleep(0.05)
        raise ServiceStartError("redis-server did not answer PING")

    def ping(self) -> bool:
        """AUTH + PING with the raw protocol (no client library needed)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as sock:
                sock.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                reply = b""
                while b"PONG" not in reply and len(reply) < 256:
                    chunk = sock.recv(256)
                    if not chunk:
                        break
                    reply += chunk
                return b"+PONG" in reply
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process)
            self.process = None

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None


ServerT = TypeVar("ServerT", "RedisServer", "S3Server")


@contextlib.contextmanager
def _running(make: Callable[[int], ServerT]) -> Iterator[ServerT]:
    """Start a server on a free port and stop it afterwards. Another process
    may take the port between the probe and the bind, so retry twice."""
    for attempt in range(3):
        server = make(free_port())
        try:
            server.start()
            break
        except ServiceStartError:
            server.stop()
            if attempt == 2:
                raise
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def redis_server(*, runtime: Runtime | None = None) -> Iterator[RedisServer]:
    runtime = runtime or default_runtime()
    binary = find_redis_server(runtime)
    base_dir = make_temp_dir("redistest-")
    try:
        with _running(lambda port: RedisServer(binary=binary, base_dir=base_dir, port=port, runtime=runtime)) as server:
            yield server
    finally:
        shutil.rmtree(base_dir, ignore_errors=True)


# S3 ----------------------------------------------------------------------------
#
# moto's server mode: a PyPI package like the rest of the test tooling (no
# Node.js runtime as s3rver would need, no MinIO binary installable here),
# it speaks the S3 REST API that boto3, rclone and the MinIO client use,
# including multipart uploads, and it runs as a separate process, so clients
# go through real HTTP. It accepts any credentials; the random pair below
# only makes sure the code under test passes them along.


def find_moto_server() -> list[str]:
    try:
        import moto.server  # noqa: F401
    except ImportError:
        raise MissingBinaryError("moto server not installed: pip install 'moto[server]'") from None
    return [sys.executable, "-m", "moto.server"]


@dataclass
class S3Server:
    command: list[str]
    base_dir: Path
    port: int
    host: str = LOOPBACK
    region: str = "us-east-1"
    access_key: str = field(default_factory=lambda: "AK" + secrets.token_hex(9).upper())
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(30))
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        log = (self.base_dir / "moto.log").open("ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.process = subprocess.Popen(
            [*self.command, "-H", self.host, "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()
        try:
            wait_for_port(self.port, process=self.process)
            self._wait_http()
        except ServiceStartError:
            self.stop()
            raise

    def _wait_http(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.endpoint + "/", timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # any HTTP answer means the server is up
            except OSError:
                time.sleep(0.1)
        raise ServiceStartError("moto server did not answer HTTP")

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process)
            self.process = None

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client_env(self) -> dict[str, str]:
        """AWS_* variables for CLI tools (aws, rclone's env_auth) against this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def client(self) -> Any:
        """A boto3 S3 client for this server."""
        import boto3
        from botocore.config import Config

        # verify=False: the endpoint is plain HTTP, and an inherited
        # AWS_CA_BUNDLE must not be loaded for it.
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            verify=False,
            config=Config(s3={"addressing_style": "path"}),
        )


@contextlib.contextmanager
def s3_server() -> Iterator[S3Server]:
    command = find_moto_server()
    base_dir = make_temp_dir("s3test-")
    try:
        with _running(lambda port: S3Server(command=command, base_dir=base_dir, port=port)) as server:
            yield server
    finally:
        shutil.rmtree(base_dir, ignore_errors=True)


def need(factory: Callable[[], Any]) -> Any:
    """factory(), or skip the test when its server binary is missing (never in CI)."""
    try:
        return factory()
    except MissingBinaryError as err:
        if os.environ.get("CI"):
            raise
        import pytest

        pytest.skip(str(err))
