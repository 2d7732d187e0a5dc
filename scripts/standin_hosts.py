#!/usr/bin/env python3
"""Local stand-ins for the hosts backup/Dockerfile downloads from, for test builds.

    standin_hosts.py make DIR              generate the material into DIR (a fresh directory)
    standin_hosts.py serve DIR ADDRESS     serve it on ADDRESS:80 (HTTP) and ADDRESS:443 (HTTPS)
                                           for at most --lifetime seconds (default 3600)

Nothing upstream is reachable here, so scripts/runtime-images.sh builds the
backup image against these, with `podman build --add-host NAME:ADDRESS` for
each name below; the Dockerfile runs unchanged and verifies everything it
verifies in production, only against test keys passed as build args:

- downloads.rclone.org/v<VERSION>/: a release zip holding Debian's rclone
  binary (from the forky root, which prints `rclone v<VERSION>`) and a
  SHA256SUMS clearsigned by a throwaway "rclone release" key;
- rclone.org/KEYS: that key and a second throwaway key (the "rogue" one);
- apt.postgresql.org/pub/repos/apt/: a `trixie-pgdg main` repository signed
  by a throwaway "PGDG" key, holding postgresql-client-18, libpq5 and
  postgresql-client-common as Debian packages them (their other
  dependencies come from trixie), and that key as standin.asc.

The HTTPS certificate is signed by a throwaway CA (tls/ca.crt), which the
stand-in base image trusts. Build args for the stand-ins are written to
DIR/build-args (NAME=VALUE per line). Versions under downloads.rclone.org that
a verifying build must refuse (the negative tests): BAD_VERSIONS. Every key
is generated here and its secret half deleted after signing; nothing is
committed. Run inside the forky root (gpg, openssl, apt-get, dpkg-deb).
"""

from __future__ import annotations

import argparse
import email.utils
import gzip
import hashlib
import http.server
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import zipfile
from pathlib import Path

RCLONE_HOSTS = ("downloads.rclone.org", "rclone.org")
PGDG_HOST = "apt.postgresql.org"
PGDG_SUITE = "trixie-pgdg"
PGDG_PACKAGES = ("postgresql-client-18", "libpq5", "postgresql-client-common")
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
    names = ",".join(f"DNS:{n}" for n in (*RCLONE_HOSTS, PGDG_HOST))
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
    (work / "build-args").write_text(
        f"RCLONE_VERSION={version}\nRCLONE_KEY_FINGERPRINT={keys.fingerprints['rclone']}\n"
        f"PGDG_KEY_URL=http://{PGDG_HOST}/pub/repos/apt/standin.asc\n"
        f"PGDG_KEY_FINGERPRINT={keys.fingerprints['pgdg']}\n")
    work.rename(out)


class Handler(http.server.SimpleHTTPRequestHandler):
    """Files under DIR/hosts/<Host header>/; an unknown host gets 404."""

    hosts: Path
    log_file: Path

    def translate_path(self, path: str) -> str:
        host = (self.headers.get("Host") or "").split(":")[0].lower()
        known = {p.name for p in self.hosts.iterdir()}
        self.directory = str(self.hosts / host) if host in known else "/nonexistent"
        return super().translate_path(path)

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
