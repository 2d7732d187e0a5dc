"""Find a verified copy of the pinned upstream CRD files, or say what is missing.

The tests and `make validate` check custom resources against the CRDs listed in
scripts/crd-pins.txt. A directory counts only when it holds every pinned file
with its recorded SHA-256. Where to look, in order:

1. $VIBEARENA_CRDS_DIR, if set (then nothing else is tried);
2. ../shared/crds (the workplace's vetted copy beside the checkout);
3. .cache/crds (ignored by git), where `--fetch` downloads them with
   scripts/fetch_crds.sh.

usage: scripts/crds.py [--fetch]   prints the directory, or one line and exit 2
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PINS_FILE = ROOT / "scripts" / "crd-pins.txt"
SHARED_DIR = ROOT.parent / "shared" / "crds"
CACHE_DIR = ROOT / ".cache" / "crds"
ENV_VAR = "VIBEARENA_CRDS_DIR"
HOW_TO_GET = (f"get them with `scripts/fetch_crds.sh {CACHE_DIR.relative_to(ROOT)}` (needs HTTPS access to "
              f"raw.githubusercontent.com) or set {ENV_VAR} to a directory that holds them")


@dataclass(frozen=True)
class Pin:
    local: str
    repo: str
    commit: str
    path: str
    sha256: str

    @property
    def url(self) -> str:
        return f"https://raw.githubusercontent.com/{self.repo}/{self.commit}/{self.path}"


class CrdsUnavailableError(Exception):
    """No directory holds the complete, verified set; the message is one line."""


def pins(pins_file: Path = PINS_FILE) -> list[Pin]:
    found = []
    for line in pins_file.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            found.append(Pin(*(field.strip() for field in line.split("|"))))
    return found


def problems(directory: Path, pinned: list[Pin]) -> list[str]:
    """What keeps `directory` from being a complete, verified copy (empty when it is one)."""
    found = []
    for pin in pinned:
        path = directory / pin.local
        if not path.is_file():
            found.append(f"{path}: missing")
            continue
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        if actual != pin.sha256:
            found.append(f"{path}: SHA-256 {actual}, expected {pin.sha256} (not the pinned upstream file)")
    return found


def candidates() -> list[Path]:
    configured = os.environ.get(ENV_VAR)
    return [Path(configured)] if configured else [SHARED_DIR, CACHE_DIR]


def locate(*, fetch: bool = False) -> Path:
    """The first candidate directory that holds every pinned file unchanged."""
    pinned = pins()
    reasons = []
    for directory in candidates():
        if not directory.is_dir():
            reasons.append(f"{directory}: no such directory")
            continue
        found = problems(directory, pinned)
        if not found:
            return directory
        reasons.append(_summary(found))
    if fetch and not os.environ.get(ENV_VAR):
        _fetch(CACHE_DIR)
        found = problems(CACHE_DIR, pinned)
        if not found:
            return CACHE_DIR
        reasons.append(_summary(found))
    configured = os.environ.get(ENV_VAR)
    how = (f"fill it with `scripts/fetch_crds.sh {configured}` (needs HTTPS access to raw.githubusercontent.com) "
           f"or unset {ENV_VAR}") if configured else HOW_TO_GET
    raise CrdsUnavailableError(f"CRD files for the tests are missing or changed ({'; '.join(reasons)}): {how}")


def _summary(found: list[str]) -> str:
    more = f" and {len(found) - 1} more" if len(found) > 1 else ""
    return found[0] + more


def _fetch(directory: Path) -> None:
    print(f"crds: downloading the pinned CRD files into {directory}", file=sys.stderr)
    # Its output says which file failed; the one-line verdict comes from locate().
    subprocess.run(["bash", str(ROOT / "scripts" / "fetch_crds.sh"), str(directory)], check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fetch", action="store_true", help="download into .cache/crds when no copy is found")
    args = parser.parse_args(argv)
    try:
        print(locate(fetch=args.fetch))
    except CrdsUnavailableError as error:
        print(f"crds: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
