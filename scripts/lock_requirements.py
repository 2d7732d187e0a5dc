"""Write the hashed lock files that every `pip install` of the project reads.

Each lock is one requirements file (with its constraints) resolved by pip, the
ordinary client, for every Python and platform it must install on, and
written back with the sha256 of every file PyPI has for each pinned version
(all wheels and the sdist, as `pip-compile --generate-hashes` does). pip then
installs it with --require-hashes: a dependency that is not in the lock, or a
file whose bytes differ from PyPI's, fails the install.

  requirements.lock          requirements.txt + constraints.txt: .venv for make synth (setup.sh)
  requirements-dev.lock      requirements-dev.txt + constraints.txt: .venv for make test
  requirements-checkov.lock  requirements-checkov.txt: .venv-checkov
  requirements-roots.lock    the app's pins and the test tools: the runtime roots' venv
  app/requirements.lock      app/requirements.txt: the app image (app/Dockerfile)
  celery-exporter/requirements.lock
                             celery-exporter/requirements.txt: the Celery exporter image

The requirements files stay the source of every version: each package the
resolver picks must be pinned there (or in the constraints), so the locks are
reproducible. A package that is not is reported with the version pip chose,
ready to paste. A package needed only on some Pythons or platforms gets an
environment marker.

usage: .venv/bin/python scripts/lock_requirements.py [LOCK ...]   (default: all)
Needs PyPI (pip's own configuration is used for resolving; hashes come from
PyPI's JSON simple API, PEP 691). Exit 2 with one line on bad input.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import product
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
INDEX = "https://pypi.org/simple"
# CPython releases the project supports (README: Python >= 3.11).
PYTHONS = ("3.11", "3.12", "3.13", "3.14")
# Newest glibc the Linux wheels may need: Debian 12's (2.36); newer ones run them too.
GLIBC_MAX = 36


@dataclass(frozen=True)
class Platform:
    """One platform as pip's --platform tags and as PEP 508 marker values."""

    name: str
    sys_platform: str
    machine: str
    tags: tuple[str, ...]


def manylinux(machine: str) -> Platform:
    tags = tuple(f"manylinux_2_{minor}_{machine}" for minor in range(GLIBC_MAX, 16, -1))
    return Platform(f"linux-{machine}", "linux", machine, (*tags, f"manylinux2014_{machine}"))


LINUX = (manylinux("x86_64"), manylinux("aarch64"))
# Apple silicon only: pip expands the tag to every older macOS and to
# universal2. Intel Macs are left out: cryptography (moto's) ships no wheel for
# them since 50.0. Python 3.15 is left out: some pins have no wheel for it yet.
MACOS = (Platform("macos-arm64", "darwin", "arm64", ("macosx_14_0_arm64",)),)


@dataclass(frozen=True)
class Lock:
    path: str
    # The requirements the lock installs: files, or lines of this header file.
    requirements: tuple[str, ...]
    constraints: tuple[str, ...] = ()
    pythons: tuple[str, ...] = PYTHONS
    platforms: tuple[Platform, ...] = (*LINUX, *MACOS)
    # Only these lines of the requirement files (None: all), for a subset lock.
    select: tuple[str, ...] | None = None
    note: str = ""

    @property
    def where(self) -> str:
        pythons = (f"CPython {self.pythons[0]}-{self.pythons[-1]}" if len(self.pythons) > 1
                   else f"CPython {self.pythons[0]}")
        systems: dict[str, list[str]] = {}
        for platform in self.platforms:
            systems.setdefault("Linux" if platform.sys_platform == "linux" else "macOS", []).append(platform.machine)
        return pythons + " on " + " and ".join(f"{s} {'/'.join(m)}" for s, m in systems.items())


# What the runtime roots' venv holds besides the app's pins (trixie: Python
# 3.13 like the image; forky: Debian testing's 3.14).
ROOT_TOOLS = ("pytest", "requests", "boto3", "moto")

LOCKS = {lock.path: lock for lock in (
    Lock("requirements.lock", ("requirements.txt",), ("constraints.txt",), note="make synth (.venv)"),
    Lock("requirements-dev.lock", ("requirements-dev.txt",), ("constraints.txt",), note="make test (.venv)"),
    Lock("requirements-checkov.lock", ("requirements-checkov.txt",), note="the checkov venv (.venv-checkov)"),
    Lock("requirements-roots.lock", ("app/requirements.txt", "requirements-dev.txt"), ("constraints.txt",),
         pythons=("3.13", "3.14"), platforms=LINUX, select=ROOT_TOOLS,
         note="the runtime roots' venv (scripts/runtime-roots.sh): the app's pins and its test tools"),
    Lock("app/requirements.lock", ("app/requirements.txt",), pythons=("3.13",), platforms=LINUX,
         note="the app image (app/Dockerfile, python:3.13-slim)"),
    Lock("celery-exporter/requirements.lock", ("celery-exporter/requirements.txt",), pythons=("3.13",),
         platforms=LINUX, note="the Celery exporter image (celery-exporter/Dockerfile, python:3.13-slim)"),
)}

PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]*)(\[[A-Za-z0-9_,.\- ]+\])?==([A-Za-z0-9_.!+-]+)")


class LockError(Exception):
    """One line for the user: `file: key: message`."""


@dataclass(frozen=True)
class Pin:
    name: str
    extras: tuple[str, ...]
    version: str
    source: str

    @property
    def key(self) -> str:
        return canonicalize_name(self.name)


def read_pins(path: str, *, seen: tuple[str, ...] = ()) -> list[Pin]:
    """Exact pins of a requirements file, following `-r` and `-c` includes."""
    if path in seen:
        return []
    file = ROOT / path
    if not file.is_file():
        raise LockError(f"{path}: missing")
    pins: list[Pin] = []
    for number, raw in enumerate(file.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        include = re.fullmatch(r"-[rc]\s+(\S+)", line)
        if include:
            target = (file.parent / include.group(1)).resolve().relative_to(ROOT).as_posix()
            pins += read_pins(target, seen=(*seen, path))
            continue
        match = PIN.fullmatch(line.replace(" ", ""))
        if not match:
            raise LockError(f"{path}: line {number}: not an exact pin (name==version): {line!r}")
        extras = tuple(sorted(e.strip() for e in (match.group(2) or "[]")[1:-1].split(",") if e.strip()))
        pins.append(Pin(match.group(1), extras, match.group(3), path))
    return pins


def pinned(pins: Iterable[Pin]) -> dict[str, Pin]:
    """{canonical name: pin}; two different versions of one package are refused."""
    found: dict[str, Pin] = {}
    for pin in pins:
        other = found.get(pin.key)
        if other is not None and Version(other.version) != Version(pin.version):
            raise LockError(f"{pin.source}: {pin.name}: pinned to {pin.version} here and to {other.version} "
                           f"in {other.source}")
        if other is not None:
            pin = Pin(other.name, tuple(sorted({*other.extras, *pin.extras})), other.version, other.source)
        found[pin.key] = pin
    return found


def direct_pins(lock: Lock) -> list[Pin]:
    pins = [pin for path in lock.requirements for pin in read_pins(path)]
    if lock.select is not None:
        # The first file whole, of the others only the selected packages.
        chosen = {canonicalize_name(n) for n in lock.select}
        pins = [p for p in pins if p.source == lock.requirements[0] or p.key in chosen]
    return list(pinned(pins).values())


def input_pins(lock: Lock) -> dict[str, Pin]:
    """Every version the inputs fix: the requirements and their constraints."""
    return pinned([*direct_pins(lock), *(pin for path in lock.constraints for pin in read_pins(path))])


@dataclass(frozen=True)
class Resolved:
    version: str
    # Requires-Dist of the distribution pip would install (markers unevaluated).
    requires: tuple[str, ...]


def resolve(lock: Lock, python: str, platform: Platform, requirements: list[str]) -> dict[str, Resolved]:
    """What pip installs for one Python and platform: wheels for that target.

    pip checks wheel tags and Requires-Python against the target but evaluates
    environment markers for the Python running it, so the caller walks the
    dependencies again with the target's markers (closure)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        listing = Path(tmp) / "requirements.txt"
        listing.write_text("".join(f"{line}\n" for line in requirements))
        abi = "cp" + python.replace(".", "")
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                   "--disable-pip-version-check", "--report", str(report), "--only-binary=:all:",
                   "--target", str(Path(tmp) / "target"), "--python-version", python, "--implementation", "cp",
                   "--abi", abi, "--abi", "abi3", "--abi", "none",
                   *(f"--platform={tag}" for tag in platform.tags), "-r", str(listing),
                   *(arg for path in lock.constraints for arg in ("-c", str(ROOT / path)))]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            errors = [line for line in result.stderr.splitlines()
                      if line.startswith("ERROR") and "Location" not in line]
            raise LockError(f"{lock.path}: Python {python} {platform.name}: pip cannot resolve: "
                           f"{(errors or result.stderr.strip().splitlines() or ['?'])[-1]}")
        installs = json.loads(report.read_text())["install"]
    return {canonicalize_name(i["metadata"]["name"]):
            Resolved(i["metadata"]["version"], tuple(i["metadata"].get("requires_dist") or ()))
            for i in installs}


def marker_environments(python: str, platform: Platform) -> list[dict[str, str]]:
    """PEP 508 marker values of a target, at its first and a late patch release
    (a marker may compare python_full_version, e.g. redis: < "3.11.3")."""
    base = {"python_version": python, "sys_platform": platform.sys_platform,
            "platform_system": {"linux": "Linux", "darwin": "Darwin"}[platform.sys_platform],
            "platform_machine": platform.machine, "os_name": "posix", "implementation_name": "cpython",
            "platform_python_implementation": "CPython"}
    return [{**base, "python_full_version": f"{python}.{patch}", "implementation_version": f"{python}.{patch}"}
            for patch in (0, 99)]


def closure(direct: list[Pin], resolved: dict[str, Resolved],
            environments: list[dict[str, str]]) -> tuple[dict[str, set[str]], set[str]]:
    """({package: extras wanted}, packages needed but not resolved) on a target:
    the direct pins and everything their Requires-Dist asks for there."""
    wanted: dict[str, set[str]] = {pin.key: set(pin.extras) for pin in direct}
    todo, missing = list(wanted), set()
    while todo:
        key = todo.pop()
        info = resolved.get(key)
        if info is None:
            missing.add(key)
            continue
        for text in info.requires:
            requirement = Requirement(text)
            extras = wanted[key] | {""}
            if requirement.marker is not None and not any(
                    requirement.marker.evaluate({**env, "extra": extra}) for env in environments for extra in extras):
                continue
            dependency = canonicalize_name(requirement.name)
            if dependency not in wanted or not set(requirement.extras) <= wanted[dependency]:
                wanted[dependency] = wanted.get(dependency, set()) | set(requirement.extras)
                todo.append(dependency)
    return wanted, missing


Env = tuple[str, Platform]


def marker(present: set[Env], pythons: tuple[str, ...], platforms: tuple[Platform, ...]) -> str:
    """A PEP 508 marker true on exactly the environments in `present` (of the lock's matrix)."""
    everything = set(product(pythons, platforms))
    if present == everything:
        return ""
    py_set = {py for py, _ in present}
    plat_set = {plat for _, plat in present}
    if present != set(product(py_set, plat_set)):
        return " or ".join(f"({python_marker({py}, pythons)} and {platform_marker({plat}, platforms)})"
                           for py, plat in sorted(present, key=lambda e: (e[0], e[1].name)))
    parts = [python_marker(py_set, pythons), platform_marker(plat_set, platforms)]
    return " and ".join(p for p in parts if p)


def python_marker(chosen: set[str], pythons: tuple[str, ...]) -> str:
    if chosen == set(pythons):
        return ""
    ordered = [py for py in pythons if py in chosen]
    start = pythons.index(ordered[0])
    if ordered == list(pythons[start:start + len(ordered)]):
        if start == 0:
            return f'python_version < "{pythons[len(ordered)]}"'
        if start + len(ordered) == len(pythons):
            return f'python_version >= "{ordered[0]}"'
    return "(" + " or ".join(f'python_version == "{py}"' for py in ordered) + ")"


def platform_marker(chosen: set[Platform], platforms: tuple[Platform, ...]) -> str:
    if chosen == set(platforms):
        return ""
    systems = {p.sys_platform for p in chosen}
    whole = [s for s in sorted(systems)
             if {p for p in platforms if p.sys_platform == s} <= chosen]
    parts = [f'sys_platform == "{s}"' for s in whole]
    parts += [f'(sys_platform == "{p.sys_platform}" and platform_machine == "{p.machine}")'
              for p in sorted(chosen, key=lambda p: p.name) if p.sys_platform not in whole]
    return parts[0] if len(parts) == 1 else "(" + " or ".join(parts) + ")"


def file_hashes(name: str, version: str) -> list[str]:
    """sha256 of every file PyPI lists for this exact version (wheels and sdist)."""
    request = urllib.request.Request(f"{INDEX}/{canonicalize_name(name)}/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    wanted = Version(version)
    hashes = set()
    for entry in files:
        filename = entry["filename"]
        try:
            if filename.endswith(".whl"):
                file_version = parse_wheel_filename(filename)[1]
            elif filename.endswith((".tar.gz", ".zip")):
                file_version = parse_sdist_filename(filename)[1]
            else:
                continue
        except (InvalidWheelFilename, InvalidSdistFilename):
            continue
        if file_version == wanted and "sha256" in entry.get("hashes", {}):
            hashes.add(entry["hashes"]["sha256"])
    if not hashes:
        raise LockError(f"{name}=={version}: PyPI lists no file for this version")
    return sorted(hashes)


def header(lock: Lock) -> list[str]:
    subset = f" (of {', '.join(lock.requirements[1:])} only {', '.join(lock.select)})" if lock.select else ""
    return [
        "# Generated by scripts/lock_requirements.py; do not edit by hand.",
        f"# From {', '.join(lock.requirements + lock.constraints)}{subset},",
        f"# for {lock.note}.",
        f"# Resolved by pip for {lock.where}; each package with the sha256 of",
        "# every file PyPI has for its version (wheels and sdist). Install with:",
        f"#   pip install --require-hashes --only-binary=:all: -r {Path(lock.path).name}",
    ]


def render(lock: Lock, entries: list[tuple[Pin, str, list[str]]]) -> str:
    lines = header(lock)
    for pin, env_marker, hashes in sorted(entries, key=lambda e: e[0].key):
        extras = f"[{','.join(pin.extras)}]" if pin.extras else ""
        requirement = f"{pin.name}{extras}=={pin.version}" + (f" ; {env_marker}" if env_marker else "")
        lines.append(f"{requirement} \\")
        lines += [f"    --hash=sha256:{digest} \\" for digest in hashes[:-1]]
        lines.append(f"    --hash=sha256:{hashes[-1]}")
    return "\n".join(lines) + "\n"


def requirement_line(pin: Pin) -> str:
    return f"{pin.name}{'[' + ','.join(pin.extras) + ']' if pin.extras else ''}=={pin.version}"


def build(lock: Lock) -> str:
    direct = direct_pins(lock)
    pins = input_pins(lock)
    present: dict[str, set[Env]] = {}
    missing: dict[str, str] = {}
    for python, platform in product(lock.pythons, lock.platforms):
        environments = marker_environments(python, platform)
        requirements = [requirement_line(pin) for pin in direct]
        for _round in range(10):
            resolved = resolve(lock, python, platform, requirements)
            wanted, unresolved = closure(direct, resolved, environments)
            if not unresolved:
                break
            # Needed on this target only (pip evaluated its own markers): ask for them.
            requirements += [requirement_line(pins[key]) if key in pins else key for key in sorted(unresolved)]
        else:
            raise LockError(f"{lock.path}: Python {python} {platform.name}: the dependencies do not settle")
        for key in wanted:
            version = resolved[key].version
            pin = pins.get(key)
            if pin is None:
                missing.setdefault(key, version)
            elif Version(pin.version) != Version(version):
                raise LockError(f"{pin.source}: {pin.name}: pinned to {pin.version}, but pip installs {version} "
                               f"on Python {python} {platform.name}")
            present.setdefault(key, set()).add((python, platform))
    if missing:
        target = (lock.constraints or lock.requirements)[0]
        raise LockError(f"{target}: {len(missing)} dependencies of {lock.path} are not pinned; add: "
                       + " ".join(f"{name}=={version}" for name, version in sorted(missing.items())))
    entries = []
    for key, envs in present.items():
        pin = pins[key]
        extras = next((p.extras for p in direct if p.key == key), ())
        entries.append((Pin(pin.name, extras, pin.version, pin.source),
                        marker(envs, lock.pythons, lock.platforms), file_hashes(pin.name, pin.version)))
    return render(lock, entries)


def main(argv: list[str]) -> int:
    names = argv or list(LOCKS)
    try:
        for name in names:
            if name not in LOCKS:
                raise LockError(f"{name}: not a lock this script writes (one of {', '.join(LOCKS)})")
        for name in names:
            text = build(LOCKS[name])
            (ROOT / name).write_text(text)
            print(f"wrote {name}")
    except LockError as err:
        print(err, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
