#!/usr/bin/env python3
"""Local stand-ins for the hosts backup/ and celery-exporter/Dockerfile download from, for test builds.

    standin_hosts.py make DIR              generate the material into DIR (a fresh directory)
    standin_hosts.py serve DIR ADDRESS     serve it on ADDRESS:80 (HTTP) and ADDRESS:443 (HTTPS)
                                           for at most --lifetime seconds (default 3600)

Nothing upstream is reachable here, so scripts/runtime-images.sh builds the
backup and Celery exporter images against these, with `podman build --add-host
NAME:ADDRESS` for each name below; the Dockerfiles run unchanged and verify
everything they verify in production, only against test keys and a test
commit passed as build args:

- downloads.rclone.org/v<VERSION>/: a release zip holding Debian's rclone
  binary (from the forky root, which prints `rclone v<VERSION>`) and a
  SHA256SUMS clearsigned by a throwaway "rclone release" key;
- rclone.org/KEYS: that key and a second throwaway key (the "rogue" one);
- apt.postgresql.org/pub/repos/apt/: a `trixie-pgdg main` repository signed
  by a throwaway "PGDG" key, holding postgresql-client-18, libpq5 and
  postgresql-client-common as Debian packages them (their other
  dependencies come from trixie), and that key as standin.asc;
- github.com/danihodovic/celery-exporter.git: a git repository served with
  git's smart HTTP protocol (`git http-backend` as CGI): the Dockerfile's
  `git fetch --depth=1 URL COMMIT` of a bare commit id needs it, and the
  repository allows a reachable commit id in a "want", as GitHub does. It
  holds a synthetic stand-in exporter, NOT upstream's code (unreachable
  here): cli.py, src/ and LICENSE.md laid out as upstream's, plus
  src/test_dummy.py, which the Dockerfile must strip. Its one commit has
  fixed names and dates, so its id changes only with its files.

The HTTPS certificate is signed by a throwaway CA (tls/ca.crt), which the
stand-in base images trust. Build args for the stand-ins are written to
DIR/build-args (backup/) and DIR/exporter-build-args (celery-exporter/),
NAME=VALUE per line. Versions under downloads.rclone.org that a verifying
build must refuse (the negative tests): BAD_VERSIONS. Every key is generated
here and its secret half deleted after signing; nothing is committed. Run
inside the forky root (gpg, openssl, apt-get, dpkg-deb, git).
"""

from __future__ import annotations

import argparse
import email.utils
import gzip
import hashlib
import http.server
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import zipfile
from pathlib import Path

RCLONE_HOSTS = ("downloads.rclone.org", "rclone.org")
PGDG_HOST = "apt.postgresql.org"
PGDG_SUITE = "trixie-pgdg"
PGDG_PACKAGES = ("postgresql-client-18", "libpq5", "postgresql-client-common")
GITHUB_HOST = "github.com"
# Under GITHUB_HOST: the repository of celery-exporter/Dockerfile's EXPORTER_REPOSITORY.
EXPORTER_REPOSITORY = "danihodovic/celery-exporter.git"
# Releases a verifying build must refuse, each for one reason.
BAD_VERSIONS = {
    "0.0.1-badsum": "the zip is not the one SHA256SUMS lists",
    "0.0.2-rogue": "SHA256SUMS is signed by a key in KEYS that is not the pinned one",
    "0.0.3-tampered": "SHA256SUMS was changed after it was signed",
}


def run(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=True, text=True, capture_output=True, **kwargs)  # type: ignore[call-overload]


class Keyring:
    """A throwaway GnuPG home with one key per name."""

    def __init__(self) -> None:
        # Short path: gpg-agent's socket lives here.
        self.home = tempfile.mkdtemp(prefix="gpg-", dir="/tmp")
        self.fingerprints: dict[str, str] = {}

    def gpg(self, *args: str) -> str:
        return run("gpg", "--homedir", self.home, "--batch", "--quiet", "--pinentry-mode", "loopback",
                   "--passphrase", "", *args).stdout

    def new_key(self, name: str, uid: str) -> str:
        self.gpg("--quick-generate-key", uid, "ed25519", "sign", "never")
        listing = self.gpg("--with-colons", "--list-keys", uid)
        fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
        self.fingerprints[name] = fingerprint
        return fingerprint

    def export(self, *names: str) -> str:
        return self.gpg("--armor", "--export", *(self.fingerprints[n] for n in names))

    def clearsign(self, name: str, text: str) -> str:
        with tempfile.NamedTemporaryFile("w", dir=self.home, delete=False) as source:
            source.write(text)
        return self.gpg("--local-user", self.fingerprints[name], "--output", "-", "--clearsign", source.name)

    def close(self) -> None:
        subprocess.run(["gpgconf", "--homedir", self.home, "--kill", "all"], check=False, capture_output=True)
        shutil.rmtree(self.home, ignore_errors=True)


def make_tls(out: Path) -> None:
    """A CA and a server certificate for every stand-in name; the CA's key is deleted."""
    out.mkdir()
    names = ",".join(f"DNS:{n}" for n in (*RCLONE_HOSTS, PGDG_HOST, GITHUB_HOST))
    with tempfile.TemporaryDirectory() as work:
        ca_key = Path(work) / "ca.key"
        run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(ca_key), "-out", str(out / "ca.crt"), "-days", "3650",
            "-subj", "/CN=VibeArena stand-in hosts CA (tests only)",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        csr = Path(work) / "server.csr"
        run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(out / "server.key"), "-out", str(csr), "-subj", f"/CN={RCLONE_HOSTS[0]}")
        extensions = Path(work) / "ext.cnf"
        extensions.write_text(f"subjectAltName={names}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
                              "keyUsage=critical,digitalSignature\nauthorityKeyIdentifier=keyid\n"
                              "subjectKeyIdentifier=hash\n")
        run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(out / "ca.crt"), "-CAkey", str(ca_key),
            "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "825",
            "-extfile", str(extensions), "-out", str(out / "server.crt"))


def release_zip(directory: Path, version: str, arch: str, rclone: Path, *, extra: bytes = b"") -> Path:
    """rclone-v<version>-linux-<arch>.zip laid out like a real release."""
    stem = f"rclone-v{version}-linux-{arch}"
    path = directory / f"{stem}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo(f"{stem}/rclone")
        info.external_attr = 0o100755 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, rclone.read_bytes() + extra)
        archive.writestr(f"{stem}/README.txt", "stand-in release for tests\n")
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_rclone(hosts: Path, keys: Keyring, rclone: Path, arch: str) -> str:
    """The release server's tree; returns the good release's version."""
    version = run(str(rclone), "version").stdout.splitlines()[0].removeprefix("rclone v")
    keys.new_key("rclone", "rclone stand-in release key (tests only) <release@rclone.invalid>")
    keys.new_key("rogue", "rogue key (tests only) <rogue@rclone.invalid>")
    (hosts / "rclone.org").mkdir(parents=True)
    (hosts / "rclone.org" / "KEYS").write_text(keys.export("rclone", "rogue"))
    for name, signer in ((version, "rclone"), *((bad, "rclone") for bad in BAD_VERSIONS)):
        directory = hosts / "downloads.rclone.org" / f"v{name}"
        directory.mkdir(parents=True)
        listed = release_zip(directory, name, arch, rclone)
        sums = f"{sha256(listed)}  {listed.name}\n"
        if name == "0.0.1-badsum":
            release_zip(directory, name, arch, rclone, extra=b"\0")
        if name == "0.0.2-rogue":
            signer = "rogue"
        signed = keys.clearsign(signer, f"SHA256 hashes of the release files\n\n{sums}")
        if name == "0.0.3-tampered":
            signed = signed.replace(sums.split()[0], hashlib.sha256(b"tampered").hexdigest())
        (directory / "SHA256SUMS").write_text(signed)
    return version


def make_pgdg(hosts: Path, keys: Keyring, arch: str) -> None:
    """A signed `trixie-pgdg main` repository with the client packages of the forky root."""
    base = hosts / PGDG_HOST / "pub" / "repos" / "apt"
    pool = base / "pool" / "main"
    pool.mkdir(parents=True)
    # The versions installed in this root (the server the tests run is the same build).
    versions = run("dpkg-query", "-W", "-f=${Package}=${Version}\\n", *PGDG_PACKAGES).stdout.split()
    result = subprocess.run(["apt-get", "download", "-q", *versions], cwd=pool, text=True, capture_output=True,
                            check=False)
    if result.returncode != 0:
        # Debian testing keeps only its newest builds: a root older than the mirror
        # names versions that are gone.
        sys.exit(f"apt-get download {' '.join(versions)} failed: {result.stderr.strip()}\n"
                 "if the mirror has newer versions, rebuild the forky root: rm .cache/roots/forky.stamp; "
                 "scripts/runtime-roots.sh build")
    paragraphs = []
    for deb in sorted(pool.glob("*.deb")):
        control = run("dpkg-deb", "-f", str(deb)).stdout.rstrip("\n")
        data = deb.read_bytes()
        paragraphs.append(f"{control}\nFilename: pool/main/{deb.name}\nSize: {len(data)}\n"
                          f"MD5sum: {hashlib.md5(data).hexdigest()}\nSHA256: {hashlib.sha256(data).hexdigest()}\n")
    dist = base / "dists" / PGDG_SUITE
    binary = dist / "main" / f"binary-{arch}"
    binary.mkdir(parents=True)
    packages = "\n".join(paragraphs).encode()
    (binary / "Packages").write_bytes(packages)
    (binary / "Packages.gz").write_bytes(gzip.compress(packages, mtime=0))
    index = "".join(f" {sha256(dist / name)} {(dist / name).stat().st_size} {name}\n"
                    for name in (f"main/binary-{arch}/Packages", f"main/binary-{arch}/Packages.gz"))
    release = (f"Origin: VibeArena stand-in\nLabel: PostgreSQL for Debian (stand-in, tests only)\n"
               f"Suite: {PGDG_SUITE}\nCodename: {PGDG_SUITE}\n"
               f"Date: {email.utils.formatdate(usegmt=True)}\nArchitectures: {arch}\nComponents: main\n"
               f"SHA256:\n{index}")
    keys.new_key("pgdg", "PGDG stand-in archive key (tests only) <pgdg@postgresql.invalid>")
    (dist / "Release").write_text(release)
    (dist / "InRelease").write_text(keys.clearsign("pgdg", release))
    (base / "standin.asc").write_text(keys.export("pgdg"))
    (base / "two-keys.asc").write_text(keys.export("pgdg", "rogue"))


# The stand-in exporter: synthetic, for test builds only. Upstream's layout
# (cli.py runs src.cli's click command with auto_envvar_prefix="CE") and the
# options the chart passes; none of upstream's code. "@NOTICE@" is STANDIN_NOTICE.
STANDIN_NOTICE = ("Stand-in for danihodovic/celery-exporter, generated by VibeArena's "
                  "scripts/standin_hosts.py for test builds only; not upstream's code.")
EXPORTER_FILES = {
    "cli.py": r'''# @NOTICE@
from src.cli import cli

if __name__ == "__main__":
    cli(auto_envvar_prefix="CE")  # pylint: disable=no-value-for-parameter
''',
    "src/__init__.py": '"""@NOTICE@"""\n',
    "src/cli.py": r'''"""@NOTICE@

/health answers 200 only when the broker answers; /metrics serves whether it
did and each queue's length. Options as upstream's, CE_<OPTION> from the env."""

import click
from kombu import Connection
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from waitress import serve


class Broker:
    def __init__(self, url, ssl_options, queues):
        self.url, self.ssl, self.queues = url, ssl_options or None, queues

    def queue_lengths(self):
        """{queue: length}; raises when the broker does not answer."""
        with Connection(self.url, ssl=self.ssl, connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=1)
            channel = connection.default_channel
            return {queue: channel.queue_declare(queue=queue).message_count for queue in self.queues}

    def collect(self):
        up = GaugeMetricFamily("celery_broker_up", "1 if the broker answered this scrape")
        lengths = GaugeMetricFamily("celery_queue_length", "Messages waiting in the queue", labels=["queue_name"])
        try:
            for queue, length in self.queue_lengths().items():
                lengths.add_metric([queue], length)
            up.add_metric([], 1)
        except Exception:
            up.add_metric([], 0)
        yield up
        yield lengths


def application(broker, registry):
    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
            return [generate_latest(registry)]
        if path == "/health":
            try:
                broker.queue_lengths()
            except Exception as error:
                start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
                return [f"broker unreachable: {type(error).__name__}: {error}\n".encode()]
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"Connected to the broker\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    return app


def ssl_options(pairs):
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="--broker-ssl-option")
        options[key] = int(value) if value.isdigit() else value
    return options


@click.command(help="@NOTICE@")
@click.option("--broker-url", required=True, help="The Celery broker's URL.")
@click.option("--broker-ssl-option", "broker_ssl_option", multiple=True, help="key=value; repeatable.")
@click.option("--queues", multiple=True, default=["celery"], show_default=True, help="Queues to measure.")
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", type=int, default=9808, show_default=True)
def cli(broker_url, broker_ssl_option, queues, host, port):
    broker = Broker(broker_url, ssl_options(broker_ssl_option), queues)
    registry = CollectorRegistry()
    registry.register(broker)
    click.echo(f"stand-in celery-exporter on {host}:{port}, queues {', '.join(queues)}", err=True)
    serve(application(broker, registry), host=host, port=port, threads=2)
''',
    "src/test_dummy.py": r'''# @NOTICE@
# A test module: celery-exporter/Dockerfile leaves src/test_*.py out of the image.
raise RuntimeError("src/test_dummy.py reached the image")
''',
    "LICENSE.md": "@NOTICE@\n\nUpstream's celery-exporter is MIT-licensed; none of its code is here.\n",
}


def make_exporter(hosts: Path) -> str:
    """The stand-in github.com repository (bare); returns its commit id."""
    author = {"NAME": "VibeArena stand-in (tests only)", "EMAIL": "standin@github.invalid",
              "DATE": "2025-07-15T00:00:00Z"}
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
           **{f"GIT_{role}_{key}": value for role in ("AUTHOR", "COMMITTER") for key, value in author.items()}}
    bare = hosts / GITHUB_HOST / EXPORTER_REPOSITORY
    with tempfile.TemporaryDirectory() as work:
        for name, text in EXPORTER_FILES.items():
            (Path(work) / name).parent.mkdir(parents=True, exist_ok=True)
            (Path(work) / name).write_text(text.replace("@NOTICE@", STANDIN_NOTICE))
        run("git", "-C", work, "init", "--quiet", "--initial-branch=master", env=env)
        run("git", "-C", work, "add", "--all", env=env)
        run("git", "-C", work, "commit", "--quiet", "--message", f"Stand-in celery-exporter\n\n{STANDIN_NOTICE}\n",
            env=env)
        bare.parent.mkdir(parents=True)
        run("git", "clone", "--quiet", "--bare", work, str(bare), env=env)
    # A fetch of a commit id asks for it by id ("want <id>"), which upload-pack
    # allows only with one of these (GitHub allows it); no pushes.
    for key, value in (("uploadpack.allowAnySHA1InWant", "true"), ("uploadpack.allowReachableSHA1InWant", "true"),
                       ("http.receivepack", "false")):
        run("git", "-C", str(bare), "config", key, value, env=env)
    return run("git", "-C", str(bare), "rev-parse", "HEAD", env=env).stdout.strip()


def make(out: Path) -> None:
    if out.exists():
        sys.exit(f"{out} exists; remove it first")
    work = out.with_name(out.name + ".new")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    arch = run("dpkg", "--print-architecture").stdout.strip()
    rclone = Path(shutil.which("rclone") or sys.exit("rclone is not installed in this root"))
    keys = Keyring()
    try:
        make_tls(work / "tls")
        version = make_rclone(work / "hosts", keys, rclone, arch)
        make_pgdg(work / "hosts", keys, arch)
    finally:
        keys.close()
    commit = make_exporter(work / "hosts")
    (work / "build-args").write_text(
        f"RCLONE_VERSION={version}\nRCLONE_KEY_FINGERPRINT={keys.fingerprints['rclone']}\n"
        f"PGDG_KEY_URL=http://{PGDG_HOST}/pub/repos/apt/standin.asc\n"
        f"PGDG_KEY_FINGERPRINT={keys.fingerprints['pgdg']}\n")
    # EXPORTER_REPOSITORY keeps its default (https://github.com/...), so the
    # build contacts github.com, which --add-host points here.
    (work / "exporter-build-args").write_text(f"EXPORTER_COMMIT={commit}\n")
    work.rename(out)


class Handler(http.server.SimpleHTTPRequestHandler):
    """Files under DIR/hosts/<Host header>/; an unknown host gets 404. GITHUB_HOST
    speaks git's smart HTTP protocol instead: `git http-backend`, run as CGI."""

    hosts: Path
    log_file: Path

    def host(self) -> str:
        return (self.headers.get("Host") or "").split(":")[0].lower()

    def translate_path(self, path: str) -> str:
        known = {p.name for p in self.hosts.iterdir()}
        self.directory = str(self.hosts / self.host()) if self.host() in known else "/nonexistent"
        return super().translate_path(path)

    def do_GET(self) -> None:
        if self.host() == GITHUB_HOST:
            self.git_http_backend()
        else:
            super().do_GET()

    def do_POST(self) -> None:
        if self.host() == GITHUB_HOST:
            self.git_http_backend()
        else:
            self.send_error(405)

    def request_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b""
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            body += self.rfile.read(size)
            self.rfile.readline()
        while self.rfile.readline().strip():  # trailers, up to the blank line
            pass
        return body

    def git_http_backend(self) -> None:
        """The request, as CGI, to `git http-backend` (upload-pack only: the repository refuses pushes)."""
        path, _, query = self.path.partition("?")
        body = self.request_body() if self.command == "POST" else b""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_PROJECT_ROOT": str(self.hosts / GITHUB_HOST),
            "GIT_HTTP_EXPORT_ALL": "1", "GATEWAY_INTERFACE": "CGI/1.1", "SERVER_PROTOCOL": self.request_version,
            "REQUEST_METHOD": self.command, "PATH_INFO": urllib.parse.unquote(path), "QUERY_STRING": query,
            "REMOTE_ADDR": self.client_address[0], "CONTENT_LENGTH": str(len(body)),
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            # Protocol v2 and a gzipped request body, passed on as a web server does.
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
        }
        result = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, timeout=300,
                                check=False)
        if result.stderr:
            with self.log_file.open("a") as log:
                log.write(f"{GITHUB_HOST} git http-backend: {result.stderr.decode(errors='replace').strip()}\n")
        # CGI output: header lines, a blank line, the body.
        blank = re.search(rb"\r?\n\r?\n", result.stdout)
        if blank is None:
            self.send_error(502, f"git http-backend exited with {result.returncode} and no headers")
            return
        head, content = result.stdout[:blank.start()], result.stdout[blank.end():]
        headers = [line.decode("latin-1").split(":", 1) for line in head.splitlines() if b":" in line]
        status = next((value.strip() for name, value in headers if name.lower() == "status"), "200 OK")
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason or None)
        for name, value in headers:
            if name.lower() not in {"status", "content-length"}:
                self.send_header(name, value.strip())
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def list_directory(self, path: str | os.PathLike[str]) -> None:
        self.send_error(404)
        return None

    def log_message(self, format: str, *args: object) -> None:
        with self.log_file.open("a") as log:
            log.write(f"{self.headers.get('Host', '-') if self.headers else '-'} {format % args}\n")


def serve(directory: Path, address: str, lifetime: float) -> None:
    Handler.hosts = directory / "hosts"
    Handler.log_file = directory / "serve.log"
    plain = http.server.ThreadingHTTPServer((address, 80), Handler)
    secure = http.server.ThreadingHTTPServer((address, 443), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "tls" / "server.crt", directory / "tls" / "server.key")
    secure.socket = context.wrap_socket(secure.socket, server_side=True)
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    # The build that started it stops it; this bounds a server whose build was killed.
    threading.Timer(lifetime, os._exit, args=(0,)).start()
    print(f"serving {directory} on {address}:80 and :443", file=sys.stderr, flush=True)
    secure.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("make").add_argument("dir", type=Path)
    serving = sub.add_parser("serve")
    serving.add_argument("dir", type=Path)
    serving.add_argument("address")
    serving.add_argument("--lifetime", type=float, default=3600)
    args = parser.parse_args()
    if args.command == "make":
        make(args.dir)
    else:
        serve(args.dir, args.address, args.lifetime)


if __name__ == "__main__":
    main()
