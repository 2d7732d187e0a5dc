"""Show what really differs in the rendered output: one env against git HEAD, or two envs.

    scripts/envdiff.py ENV          render ENV, diff against dist/ENV at git HEAD
    scripts/envdiff.py ENV OTHER    render both, diff with each env's own names
                                    replaced by placeholders

Between two envs most changed lines only carry the env's names. Each side's own
namespace, instance label value, domain and env name become <namespace>,
<instance>, <domain> and <env>, so what is left is a real difference (replicas,
resources, images, switches). Each side is normalised with its own names only:
a value that names the *other* env still shows. The env name is replaced only
as a whole value, path or dotted suffix (`env/stage.yaml`, `vibearena/stage`,
`config.settings.stage`, `value: stage`), never inside `/dev/shm`, `rw-dev-shm`
or an image tag `:dev`. Both sides are re-emitted from the parsed YAML without
line folding (embedded rule files too), so a longer name re-wraps no line, and
checksum annotations (hashes of config shown anyway) are masked. Diff headers
carry `ENV/file`, not temporary paths. --raw skips all of this.

Exit 0 (with or without differences), 2 when a render or git fails.
"""

from __future__ import annotations

import argparse
import difflib
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from charts.config import ProfileError, load_profile  # noqa: E402  (after the path set-up)


@dataclass(frozen=True)
class Names:
    """The strings in one env's render that only say which env it is."""

    env: str
    namespace: str
    instance: str
    domain: str

    def whole_names(self) -> list[tuple[re.Pattern[str], str]]:
        names = [(self.domain, "<domain>"), (self.namespace, "<namespace>"), (self.instance, "<instance>")]
        seen: set[str] = set()
        found = []
        # Longest first, so a domain that contains the namespace goes as a whole.
        for text, placeholder in sorted(names, key=lambda item: -len(item[0])):
            if text and text not in seen:
                seen.add(text)
                found.append((re.compile(rf"(?<![A-Za-z0-9]){re.escape(text)}(?![A-Za-z0-9])"), placeholder))
        return found

    @property
    def bare_name(self) -> re.Pattern[str]:
        # Not after a letter, digit, '-', '_' or ':' (an image tag), not before a
        # letter, digit, '-', '_' or '/' (a directory such as /dev/shm).
        return re.compile(rf"(?<![A-Za-z0-9_:-]){re.escape(self.env)}(?![A-Za-z0-9_/-])")

    def normalise(self, text: str) -> str:
        for pattern, placeholder in self.whole_names():
            text = pattern.sub(placeholder, text)
        return self.bare_name.sub("<env>", text)


def names_of(env_dir: Path, env: str) -> Names:
    profile = load_profile(env_dir, env)
    return Names(env=env, namespace=profile.namespace, instance=profile.instance, domain=profile.domain)


def diff_trees(old: dict[str, str], new: dict[str, str], old_label: str, new_label: str) -> Iterator[str]:
    """Unified diff lines of two {file name: text} trees, headers labelled `label/file`."""
    for name in sorted(old.keys() | new.keys()):
        if name not in new:
            yield f"Only in {old_label}: {name}\n"
        elif name not in old:
            yield f"Only in {new_label}: {name}\n"
        elif old[name] != new[name]:
            yield from unified(old[name].splitlines(keepends=True), new[name].splitlines(keepends=True),
                               f"{old_label}/{name}", f"{new_label}/{name}")


def unified(old: list[str], new: list[str], old_label: str, new_label: str, context: int = 3) -> Iterator[str]:
    """difflib.unified_diff without its "autojunk" heuristic, which treats lines that
    repeat in every object (labels) as noise and then aligns the wrong objects."""
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    yield f"--- {old_label}\n"
    yield f"+++ {new_label}\n"
    for group in matcher.get_grouped_opcodes(context):
        first, last = group[0], group[-1]
        yield f"@@ -{_range(first[1], last[2])} +{_range(first[3], last[4])} @@\n"
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                yield from (" " + line for line in old[i1:i2])
                continue
            yield from ("-" + line for line in old[i1:i2])
            yield from ("+" + line for line in new[j1:j2])


def _range(start: int, stop: int) -> str:
    length = stop - start
    first = start + 1 if length else start
    return str(first) if length == 1 else f"{first},{length}"


def read_tree(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(directory.glob("*.yaml"))}


class _Dumper(yaml.SafeDumper):
    """No line folding (its breaks move with the length of a name), multi-line text as blocks."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _text)


def _normalise(value: Any, names: Names) -> Any:
    if isinstance(value, str):
        return names.normalise(value)
    if isinstance(value, dict):
        return {_normalise(k, names): _normalise(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(item, names) for item in value]
    return value


def _unfold(value: Any) -> Any:
    """Embedded YAML (rule and config files in ConfigMaps) re-emitted without line folding,
    and checksum annotations (hashes of config that is diffed anyway) masked."""
    if isinstance(value, str) and "\n" in value and value.lstrip()[:1] not in ("{", "["):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        if isinstance(parsed, dict | list):
            return _dump([_unfold(parsed)]).removesuffix("\n...\n")
        return value
    if isinstance(value, dict):
        return {k: "<checksum>" if isinstance(k, str) and k.startswith("checksum/") else _unfold(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_unfold(item) for item in value]
    return value


def _dump(docs: list[Any]) -> str:
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, width=float("inf"), allow_unicode=True)


def normalise_file(text: str, names: Names) -> str:
    """One rendered file with the env's names replaced, re-emitted without line folding."""
    return _dump([_normalise(_unfold(doc), names) for doc in yaml.safe_load_all(text) if doc])


def normalised_diff(old_dir: Path, old_names: Names, new_dir: Path, new_names: Names) -> list[str]:
    old = {name: normalise_file(text, old_names) for name, text in read_tree(old_dir).items()}
    new = {name: normalise_file(text, new_names) for name, text in read_tree(new_dir).items()}
    return list(diff_trees(old, new, old_names.env, new_names.env))


def render(envs: list[str], out: Path) -> None:
    args = [sys.executable, "-O", str(ROOT / "main.py"), "--out", str(out)]
    for env in envs:
        args += ["--env", env]
    result = subprocess.run(args, capture_output=True, text=True, check=False, cwd=ROOT)
    if result.returncode != 0:
        # main.py's first line names the bad input; its second is about dist/, not written here.
        lines = result.stderr.strip().splitlines()
        raise RuntimeError(lines[0] if lines else f"main.py exited with {result.returncode}")


def head_tree(env: str) -> dict[str, str]:
    listing = subprocess.run(["git", "ls-tree", "--name-only", "HEAD", f"dist/{env}/"], capture_output=True,
                             text=True, check=False, cwd=ROOT)
    if listing.returncode != 0:
        raise RuntimeError(f"git: {listing.stderr.strip()}")
    tree = {}
    for path in listing.stdout.split():
        if path.endswith(".yaml"):
            shown = subprocess.run(["git", "show", f"HEAD:{path}"], capture_output=True, text=True, check=True,
                                   cwd=ROOT)
            tree[Path(path).name] = shown.stdout
    return tree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("env")
    parser.add_argument("other", nargs="?")
    parser.add_argument("--raw", action="store_true", help="keep env names (no placeholders)")
    parser.add_argument("--env-dir", type=Path, default=ROOT / "env")
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="envdiff-") as tmp:
            out = Path(tmp)
            if args.other:
                render([args.env, args.other], out)
                old_names, new_names = names_of(args.env_dir, args.env), names_of(args.env_dir, args.other)
                if args.raw:
                    lines = list(diff_trees(read_tree(out / args.env), read_tree(out / args.other),
                                            args.env, args.other))
                else:
                    lines = normalised_diff(out / args.env, old_names, out / args.other, new_names)
            else:
                render([args.env], out)
                lines = list(diff_trees(head_tree(args.env), read_tree(out / args.env),
                                        f"HEAD:dist/{args.env}", f"dist/{args.env}"))
    except (RuntimeError, ProfileError) as error:
        print(error, file=sys.stderr)
        return 2
    sys.stdout.writelines(lines)
    changed = sum(1 for line in lines if line[:1] in "+-" and line[:3] not in ("+++", "---"))
    print(f"envdiff: {changed} changed lines" if lines else "no differences", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
