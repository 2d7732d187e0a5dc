"""Check the third-party image digests the rendered envs pin against their registries.

    .venv/bin/python scripts/check_digests.py [--dist dist] [--env dev --env stage --env prod]
                                              [--platform linux/amd64 ...] [--strict] [--skopeo-arg ARG ...]

The digests in charts/config.py DIGESTS come from public records, not from a
registry (docs/image-digests.md). This asks each registry, with skopeo (no
daemon, no pull), for every `repo:tag@sha256:...` the rendered envs run that
is not one of the project's own images (images.yml records those):

- the registry serves that digest, and its bytes hash to it;
- it is a multi-platform index holding every --platform (default
  linux/amd64 and linux/arm64), not one platform's manifest, which would run
  the wrong architecture or fail on the other nodes;
- the tag still points at it. A tag that moved (upstream rebuilt the image)
  is a warning: the pinned digest still pulls the build that was checked;
  with --strict it is an error.

One line per image; exit 1 if any check failed, 2 on bad input. The digests
workflow runs it (.github/workflows/digests.yml); registries are reached
anonymously.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from charts.config import PROJECT_IMAGES, ProfileError, load_profile  # noqa: E402

INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
DEFAULT_PLATFORMS = ("linux/amd64", "linux/arm64")


class CheckError(Exception):
    """Bad input: one line naming the file or argument."""


@dataclass(frozen=True, order=True)
class Pinned:
    repository: str  # as rendered (e.g. valkey/valkey)
    tag: str
    digest: str

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}@{self.digest}"


def registry_name(repository: str) -> str:
    """The fully qualified name a container runtime pulls: Docker Hub for a
    name without a registry host, `library/` for an official image."""
    first, _, rest = repository.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return repository
    return f"docker.io/{repository}" if rest else f"docker.io/library/{repository}"


def parse_ref(ref: str) -> Pinned | None:
    """repo:tag@sha256:... (None for a ref without a digest or without a tag)."""
    name, at, digest = ref.partition("@")
    if not at:
        return None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon <= slash:
        return None
    return Pinned(name[:colon], name[colon + 1:], digest)


def pod_images(doc: dict) -> Iterable[str]:
    spec = doc.get("spec") or {}
    if doc.get("kind") == "Cluster" and "imageName" in spec:
        yield spec["imageName"]
    template = (spec.get("jobTemplate", {}).get("spec", spec)).get("template", {}).get("spec", {})
    for key in ("initContainers", "containers"):
        for container in template.get(key) or ():
            yield container["image"]


def pinned_images(dist: Path, envs: Sequence[str], env_dir: Path) -> list[Pinned]:
    """Every third-party image the envs' rendered files run by digest."""
    ours: set[str] = set()
    found: set[Pinned] = set()
    for env in envs:
        try:
            refs = load_profile(env_dir, env).image_refs()
        except ProfileError as err:
            raise CheckError(str(err)) from None
        ours |= {refs[image.key].repository for image in PROJECT_IMAGES}
        files = sorted((dist / env).glob("*.yaml"))
        if not files:
            raise CheckError(f"{dist / env}: no rendered files (make synth)")
        for path in files:
            for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
                for ref in pod_images(doc or {}):
                    pinned = parse_ref(ref)
                    if pinned is not None:
                        found.add(pinned)
    return sorted(p for p in found if p.repository not in ours)


def raw_manifest(reference: str, skopeo_args: Sequence[str]) -> bytes:
    result = subprocess.run(["skopeo", "inspect", "--raw", *skopeo_args, f"docker://{reference}"],
                            capture_output=True, timeout=120, check=False)
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        raise LookupError(message[-1] if message else f"skopeo exited with {result.returncode}")
    return result.stdout


def check(pinned: Pinned, platforms: Sequence[str], strict: bool, skopeo_args: Sequence[str]) -> tuple[bool, str]:
    """(passed, the line to print)."""
    name = registry_name(pinned.repository)
    try:
        raw = raw_manifest(f"{name}@{pinned.digest}", skopeo_args)
    except LookupError as err:
        return False, f"error: {pinned.ref}: the registry does not serve this digest: {err}"
    served = "sha256:" + hashlib.sha256(raw).hexdigest()
    if served != pinned.digest:
        return False, f"error: {pinned.ref}: the registry served bytes that hash to {served}"
    try:
        manifest = json.loads(raw)
    except ValueError:
        return False, f"error: {pinned.ref}: not a JSON manifest"
    media_type = manifest.get("mediaType", "")
    # The OCI spec only recommends mediaType on an index; without one, its
    # `manifests` list is what makes it an index.
    is_index = media_type in INDEX_TYPES or (not media_type and isinstance(manifest.get("manifests"), list))
    if not is_index:
        return False, (f"error: {pinned.ref}: a single-platform manifest ({media_type or 'no mediaType'}), not "
                       "the tag's multi-platform index: nodes of another architecture could not run it")
    offered = {"/".join(filter(None, (m.get("platform", {}).get("os"), m.get("platform", {}).get("architecture"),
                                      m.get("platform", {}).get("variant"))))
               for m in manifest.get("manifests", [])}
    # An arm64 entry usually carries its variant (linux/arm64/v8), which is
    # what a runtime matches for linux/arm64.
    missing = [p for p in platforms if not any(o == p or o.startswith(p + "/") for o in offered)]
    if missing:
        return False, (f"error: {pinned.ref}: the index has no {', '.join(missing)} "
                       f"(it has {', '.join(sorted(offered))})")
    try:
        tagged = "sha256:" + hashlib.sha256(raw_manifest(f"{name}:{pinned.tag}", skopeo_args)).hexdigest()
    except LookupError as err:
        return not strict, f"{'error' if strict else 'warning'}: {pinned.ref}: the tag does not resolve: {err}"
    if tagged != pinned.digest:
        return not strict, (f"{'error' if strict else 'warning'}: {pinned.ref}: the tag now points at {tagged} "
                            "(a rebuild upstream); the pinned digest still pulls the build checked here")
    return True, f"ok: {pinned.ref} ({', '.join(p for p in platforms)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dist", type=Path, default=ROOT / "dist")
    parser.add_argument("--env-dir", type=Path, default=ROOT / "env")
    parser.add_argument("--env", action="append", dest="envs", help="an env to read (default: dev, stage, prod)")
    parser.add_argument("--platform", action="append", dest="platforms",
                        help="a platform the index must hold (default: linux/amd64 and linux/arm64)")
    parser.add_argument("--strict", action="store_true", help="a tag that moved is an error")
    parser.add_argument("--skopeo-arg", action="append", default=[], help="passed to skopeo inspect")
    args = parser.parse_args(argv)
    platforms = args.platforms or list(DEFAULT_PLATFORMS)
    try:
        images = pinned_images(args.dist, args.envs or ["dev", "stage", "prod"], args.env_dir)
    except CheckError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not images:
        print("error: no third-party image is pinned by digest in the rendered envs", file=sys.stderr)
        return 2
    failed = 0
    for pinned in images:
        passed, line = check(pinned, platforms, args.strict, args.skopeo_arg)
        failed += not passed
        print(line, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
