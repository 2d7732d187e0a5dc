"""Promote a release: copy the project's images another env runs, by digest, into a profile.

    .venv/bin/python scripts/promote.py [--from stage] [--to prod] [--env-dir env]

Prod runs the project's images by digest only (charts/config.py RENDER_RULES).
images.yml records the digest of every image it pushes and cd.yml pins stage
to them (repository, commit tag, digest, revision); this copies exactly those
values of each image in PROJECT_IMAGES (`api.image`, `backups.image`,
`monitoring.celery_exporter_image`) into the target profile file,
keeping its comments and the rest of its text, and checks the result loads.
Review `git diff env/`, run `make synth` and merge it like any change: the
promotion is a reviewed commit, and what prod runs is what stage ran.

Refuses (exit 2, one line `file: key: message`) a source that runs an image
by tag: only what a release recorded can be promoted.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from charts.config import PROJECT_IMAGES, Image, ProfileError, load_profile  # noqa: E402


class PromoteError(Exception):
    pass


def flow(image: Image) -> str:
    """The image as a one-line YAML flow mapping, every string quoted."""
    fields = {"repository": image.repository, "tag": image.tag, "digest": image.digest, "revision": image.revision}
    return "{" + ", ".join(f"{key}: {json.dumps(value)}" for key, value in fields.items() if value) + "}"


def set_image(text: str, section: str, image: Image, attribute: str = "image") -> str:
    """`section.attribute` set to `image` in a profile's text; other lines unchanged.

    The image is one line under the top-level `section:` (two-space indent):
    an existing `attribute:` entry (flow or block style) is replaced, or a new
    one becomes the section's first line; a missing section is appended."""
    lines = text.splitlines(keepends=True)
    new_line = f"  {attribute}: {flow(image)}\n"
    start = next((i for i, line in enumerate(lines) if re.fullmatch(rf"{section}:[ \t]*(#.*)?\n?", line)), None)
    if start is None:
        if re.search(rf"^{section}:", text, re.MULTILINE):
            raise PromoteError(f"{section}: write it as a block mapping (`{section}:` on a line of its own)")
        return text + ("" if text.endswith("\n") or not text else "\n") + f"{section}:\n{new_line}"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].strip() and not lines[i].startswith((" ", "#"))),
               len(lines))
    for i in range(start + 1, end):
        if re.match(rf"  {attribute}:", lines[i]):
            stop = i + 1
            # A block-style image continues on the lines indented deeper.
            while stop < end and (lines[stop].startswith("    ") or not lines[stop].strip()):
                stop += 1
            while stop > i + 1 and not lines[stop - 1].strip():
                stop -= 1
            return "".join([*lines[:i], new_line, *lines[stop:]])
    return "".join([*lines[:start + 1], new_line, *lines[start + 1:]])


def promote(env_dir: Path, source: str, target: str) -> list[str]:
    """Write the source's project images into the target's file; returns what changed."""
    try:
        running = load_profile(env_dir, source)
    except ProfileError as err:
        raise PromoteError(str(err)) from None
    path = env_dir / f"{target}.yaml"
    if not path.is_file():
        raise PromoteError(f"{path}: no such profile")
    original = path.read_text()
    text = original
    report = []
    source_images = running.image_refs()
    for project in PROJECT_IMAGES:
        image = source_images[project.key]
        if not image.by_digest:
            raise PromoteError(f"{env_dir / (source + '.yaml')}: {project.key}.digest: {source} runs {image.ref} by "
                               "tag; only an image a release pinned by digest can be promoted (cd.yml pins stage)")
        text = set_image(text, project.section, image, project.attribute)
        report.append(f"{path}: {project.key}: {image.ref}"
                      + (f" (commit {image.revision})" if image.revision else ""))
    path.write_text(text)
    try:
        promoted = load_profile(env_dir, target).image_refs()
        for project in PROJECT_IMAGES:
            wanted, got = source_images[project.key], promoted[project.key]
            if got != wanted:
                raise PromoteError(f"{path}: {project.key}: reads back as {got.ref}, not {wanted.ref}")
    except (ProfileError, PromoteError) as err:
        path.write_text(original)
        raise PromoteError(str(err)) from None
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", default="stage", help="the env whose images to promote (stage)")
    parser.add_argument("--to", dest="target", default="prod", help="the profile to write (prod)")
    parser.add_argument("--env-dir", type=Path, default=ROOT / "env")
    args = parser.parse_args(argv)
    try:
        for line in promote(args.env_dir, args.source, args.target):
            print(line)
    except PromoteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"next: make synth, review `git diff env/{args.target}.yaml dist/{args.target}`, commit and merge")
    return 0


if __name__ == "__main__":
    sys.exit(main())
