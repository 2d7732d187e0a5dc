"""Render dist/<env>/ for every profile in env/ (or the ones named with --env).

Wiring only: load profiles, build one stack chart per env, write the YAML.
All profiles are loaded and rendered in memory before anything is written,
and each dist/<env> is swapped in as a whole, so a bad profile or a failed
run leaves the last good output untouched.

Exit codes: 0 rendered; 2 bad input (profile, env name, arguments, output
directory): stderr is exactly one line `error: <file>: <key.path>: <what is
wrong> (got <value>)` and nothing was written; 1 a bug (with a traceback).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml

ROOT = Path(__file__).resolve().parent
# jsii prints a banner on every run under Node 20 (past end of life); silence
# exactly that one and nothing else. The README recommends Node 22+.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

# Output file order: kubectl apply -f <dir> applies files alphabetically, so
# the namespace and its policies come first and data services before apps.
COMPONENT_ORDER = ("gitops", "config", "edge", "database", "cache", "object-store", "migration",
                   "web", "worker", "scheduler", "backup", "monitoring")


ARGOCD_DIR = "argocd"
# `make preview` renders here; CI commits previews to their own branch, so
# dist/previews is not committed on main.
PREVIEWS_DIR = "previews"


class BadInputError(Exception):
    """Input the user must fix; the message names the file and key."""


class _Parser(argparse.ArgumentParser):
    """argparse prints usage and the error on two lines and exits; this makes
    a wrong argument one line like every other input error."""

    def error(self, message: str) -> NoReturn:
        raise BadInputError(f"arguments: {message} (see main.py --help)")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog="main.py", description=__doc__.splitlines()[0])
    parser.add_argument("--env", action="append", dest="envs", metavar="NAME",
                        help="render only this env (repeatable); default: every env/*.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output directory (default dist/)")
    parser.add_argument("--env-dir", type=Path, default=ROOT / "env", help="profile directory (default env/)")
    parser.add_argument("--preview", type=int, metavar="PR",
                        help="render the preview environment of pull request PR from env/_preview.yaml "
                             "into <out>/previews/pr-PR (nothing else is rendered)")
    parser.add_argument("--image-tag", metavar="TAG", help="with --preview: the app image tag to run")
    return parser.parse_args(argv)


def _literal_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Multi-line strings (config files in ConfigMaps) stay readable as blocks.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


# libyaml's emitter when PyYAML has it (several times faster), same output.
class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    pass


_Dumper.add_representer(str, _literal_str)


def to_yaml(documents: list[dict]) -> str:
    return yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                         width=120, allow_unicode=True)


def group_by_file(documents: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for document in documents:
        labels = document.get("metadata", {}).get("labels", {})
        component = labels.get("app.kubernetes.io/component", "config")
        groups.setdefault(component, []).append(document)

    def rank(component: str) -> tuple[int, str]:
        order = COMPONENT_ORDER.index(component) if component in COMPONENT_ORDER else len(COMPONENT_ORDER)
        return order, component

    return {f"{i:02d}-{component}.yaml": groups[component]
            for i, component in enumerate(sorted(groups, key=rank))}


@dataclass(frozen=True)
class RenderedEnv:
    files: dict[str, str]
    object_count: int


def load_profiles(env_dir: Path, names: list[str]) -> list[Any]:
    from charts.config import ProfileError, check_profile_set, load_profile

    try:
        profiles = [load_profile(env_dir, name) for name in names]
        check_profile_set(env_dir, profiles)
    except ProfileError as err:
        raise BadInputError(str(err)) from None
    return profiles


def load_preview_profile(env_dir: Path, number: int, image_tag: str | None) -> Any:
    from charts.config import ProfileError, check_profile_set, known_envs, load_preview, load_profile

    try:
        profile = load_preview(env_dir, number, image_tag=image_tag)
        # The committed environments must not collide with what previews derive.
        check_profile_set(env_dir, [load_profile(env_dir, name) for name in known_envs(env_dir)])
    except ProfileError as err:
        raise BadInputError(str(err)) from None
    return profile


def build(env_dir: Path, names: list[str]) -> dict[str, tuple[Any, list[dict]]]:
    """Load the profiles and build their charts: {env: (chart, manifests)}."""
    return build_profiles(env_dir, load_profiles(env_dir, names))


def build_profiles(env_dir: Path, profiles: list[Any]) -> dict[str, tuple[Any, list[dict]]]:

    # Imported only now, so a profile error never pays for jsii start-up.
    import cdk8s

    from charts.config import RENDER_RULES
    from charts.stack import StackChart

    app = cdk8s.App()
    built: dict[str, tuple[Any, list[dict]]] = {}
    for profile in profiles:
        file = env_dir / (profile.name + ".yaml")
        try:
            chart = StackChart(app, profile.name, profile=profile)
            built[profile.name] = (chart, chart.to_json())
        except ValueError as err:
            raise BadInputError(f"{file}: {err}") from None
        images = rendered_images(built[profile.name][1])
        for rule in RENDER_RULES[profile.tier]:
            violation = rule(profile, images)
            if violation:
                raise BadInputError(f"{file}: {violation[0]}: {violation[1]}")
    return built


def rendered_images(documents: list[dict]) -> set[str]:
    """Every image reference in rendered objects: containers' `image` and
    CloudNativePG's `imageName`, wherever they sit."""
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("image", "imageName") and isinstance(value, str):
                    found.add(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
    walk(documents)
    return found


def build_argocd(profiles: list[Any], manifests: dict[str, list[dict]],
                 preview: tuple[Any, list[dict]] | None = None) -> list[dict]:
    """The AppProject and one Application per env (dist/argocd), and the
    previews' ApplicationSet when env/_preview.yaml exists."""
    import cdk8s

    from charts.argocd import ArgoChart

    try:
        chart = ArgoChart(cdk8s.App(), "argocd", profiles=profiles, manifests=manifests, preview=preview)
    except ValueError as err:
        raise BadInputError(f"env/*.yaml: {err}") from None
    return chart.to_json()


def sample_preview(env_dir: Path) -> tuple[Any, list[dict]] | None:
    """A preview rendered in memory: the previews' AppProject allows exactly its kinds."""
    from charts.config import PREVIEW_BASE

    if not (env_dir / f"{PREVIEW_BASE}.yaml").is_file():
        return None
    profile = load_preview_profile(env_dir, 1, None)
    ((_chart, documents),) = build_profiles(env_dir, [profile]).values()
    return profile, documents


def render(env_dir: Path, names: list[str], *, with_argocd: bool = False) -> dict[str, RenderedEnv]:
    """Render the named envs (and dist/argocd from all of them) in memory; nothing is written."""
    built = build(env_dir, names)
    outputs = {env: documents for env, (_chart, documents) in built.items()}
    if with_argocd:
        outputs[ARGOCD_DIR] = build_argocd([chart.stack.profile for chart, _docs in built.values()], outputs,
                                           sample_preview(env_dir))
    return to_files(outputs)


def render_preview(env_dir: Path, number: int, image_tag: str | None) -> dict[str, RenderedEnv]:
    profile = load_preview_profile(env_dir, number, image_tag)
    outputs = {f"{PREVIEWS_DIR}/{name}": documents
               for name, (_chart, documents) in build_profiles(env_dir, [profile]).items()}
    return to_files(outputs, source="env/_preview.yaml")


def to_files(outputs: dict[str, list[dict]], source: str | None = None) -> dict[str, RenderedEnv]:
    rendered: dict[str, RenderedEnv] = {}
    for name, documents in outputs.items():
        origin = source or ("env/*.yaml" if name == ARGOCD_DIR else f"env/{name}.yaml")
        header = f"# Rendered by main.py from {origin}. Do not edit; run `make synth`.\n"
        files = {file: header + to_yaml(docs) for file, docs in group_by_file(documents).items()}
        rendered[name] = RenderedEnv(files=files, object_count=len(documents))
    return rendered


def write_atomically(out: Path, env: str, files: dict[str, str]) -> Path:
    """Write one env's files to a temp dir beside the target, then swap it in."""
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{env}-new-", dir=out))
    try:
        for name, text in files.items():
            (staging / name).write_text(text, encoding="utf-8")
        target, previous = out / env, out / f".{env}-old"
        shutil.rmtree(previous, ignore_errors=True)
        if target.exists():
            target.rename(previous)
        staging.rename(target)
        shutil.rmtree(previous, ignore_errors=True)
        return target
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def check_output_dir(out: Path, env_dir: Path, names: list[str]) -> None:
    """Refuse an --out that cannot take the rendered dirs, before any work."""
    try:
        target = out.resolve()
        profiles = env_dir.resolve()
    except (OSError, RuntimeError) as err:  # RuntimeError: a symlink loop (Python < 3.13)
        raise BadInputError(f"{out}: --out cannot be resolved ({err})") from None
    if target == Path(target.anchor):
        raise BadInputError(f"{out}: --out must not be the file system root")
    for name in names:
        if profiles == target / name or (target / name) in profiles.parents:
            raise BadInputError(f"{out}: --out would overwrite the profile directory {env_dir} with {name}/")
    existing = target
    while not existing.exists():
        if existing.is_symlink():
            raise BadInputError(f"{out}: --out is a symbolic link to nothing")
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing == target else f"is under {existing}, which is a file"
        raise BadInputError(f"{out}: --out {what}, not a directory")
    try:
        # The real test of writability (as root, permission bits say little).
        Path(tempfile.mkdtemp(prefix=".write-test-", dir=existing)).rmdir()
    except OSError as err:
        raise BadInputError(f"{out}: --out is not writable ({err.strerror})") from None


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        from charts.config import known_envs

        env_dir: Path = args.env_dir
        if not env_dir.is_dir():
            raise BadInputError(f"{env_dir}: --env-dir is not a directory")
        # --env twice names one env: render it once.
        names = list(dict.fromkeys(args.envs)) if args.envs else known_envs(env_dir)
        if args.preview is not None:
            if args.envs:
                raise BadInputError("--preview renders one preview only; drop --env")
            check_output_dir(args.out, env_dir, [PREVIEWS_DIR])
            rendered = render_preview(env_dir, args.preview, args.image_tag)
        elif args.image_tag is not None:
            raise BadInputError("--image-tag is for --preview only; set api.image.tag in the profile")
        elif not names:
            raise BadInputError(f"{env_dir}: no profiles (*.yaml) found")
        else:
            check_output_dir(args.out, env_dir, [*names, ARGOCD_DIR])
            # dist/argocd derives from every profile, so only a full render updates it.
            rendered = render(env_dir, names, with_argocd=not args.envs)
    except BadInputError as err:
        # One line; exit 2 also means nothing was written (dist/ keeps its content).
        print(f"error: {err}", file=sys.stderr)
        return 2

    for env, result in rendered.items():
        # "previews/pr-7" is written as pr-7 inside out/previews.
        parent, _, leaf = env.rpartition("/")
        target = write_atomically(args.out / parent if parent else args.out, leaf, result.files)
        print(f"rendered {result.object_count} objects to {target}")
    # `cdk8s synth` expects the app to write into CDK8S_OUTDIR (a scratch dir
    # it deletes first); give it a copy so its listing matches dist/.
    cdk8s_outdir = os.environ.get("CDK8S_OUTDIR")
    if cdk8s_outdir:
        scratch = Path(cdk8s_outdir)
        scratch.mkdir(parents=True, exist_ok=True)
        for env, result in rendered.items():
            for name, text in result.files.items():
                (scratch / f"{env.replace('/', '-')}-{name}").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
