"""Write app/requirements.lock: app/requirements.txt with wheel hashes.

Downloads (pip download, the ordinary client) the wheels the image installs,
CPython 3.13 on manylinux x86_64 and aarch64, and records every file's
sha256. The Dockerfile installs with --require-hashes from the lock, so a
re-uploaded or swapped file on the index fails the build.

usage: .venv/bin/python scripts/lock_app_requirements.py
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "app" / "requirements.txt"
LOCK = ROOT / "app" / "requirements.lock"
# One tag per architecture that every pinned package has a wheel for.
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_28_aarch64")
PIN = re.compile(r"([A-Za-z0-9_.-]+)(\[[^\]]+\])?==([^\s;]+)")
HEADER = (
    "# Generated from app/requirements.txt by scripts/lock_app_requirements.py:\n"
    "# every pin with the sha256 of its CPython 3.13 manylinux x86_64 and aarch64 wheels.\n"
    "# The image installs from this file with --require-hashes; do not edit by hand.\n"
)


def pins(text: str) -> list[tuple[str, str, str]]:
    found = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = PIN.fullmatch(line)
        if not match:
            raise SystemExit(f"{SOURCE.name}: not an exact pin: {line!r}")
        found.append((match.group(1), match.group(2) or "", match.group(3)))
    return found


def wheel_hashes(directory: Path) -> dict[tuple[str, str], set[str]]:
    hashes: dict[tuple[str, str], set[str]] = {}
    for path in directory.rglob("*.whl"):
        name, version, _build, _tags = parse_wheel_filename(path.name)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        hashes.setdefault((canonicalize_name(name), str(version)), set()).add(digest)
    return hashes


def render(requirements: list[tuple[str, str, str]], hashes: dict[tuple[str, str], set[str]]) -> str:
    lines = [HEADER.rstrip("\n")]
    for name, extra, version in requirements:
        digests = sorted(hashes.get((canonicalize_name(name), version), ()))
        if not digests:
            raise SystemExit(f"no wheel downloaded for {name}=={version}")
        lines.append(f"{name}{extra}=={version} \\")
        lines += [f"    --hash=sha256:{digest} \\" for digest in digests[:-1]]
        lines.append(f"    --hash=sha256:{digests[-1]}")
    return "\n".join(lines) + "\n"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for platform in PLATFORMS:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                 "--python-version", "3.13", "--implementation", "cp", "--abi", "cp313", "--abi", "abi3",
                 "--abi", "none", "--platform", platform, "-r", str(SOURCE), "-d", f"{tmp}/{platform}"],
                check=True,
            )
        LOCK.write_text(render(pins(SOURCE.read_text()), wheel_hashes(Path(tmp))))
    print(f"wrote {LOCK.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
