"""Render dist/<env>/ for every profile in env/ (or the ones named with --env).

Wiring only: load profiles, build one stack chart per env, write the YAML.
All profiles are loaded and rendered in memory before anything is written,
and each dist/<env> is swapped in as a whole, so a bad profile or a failed
run leaves the last good output untouched.

Exit codes: 0 rendered, 2 bad input (profile, env name, arguments), 1 bug.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


class BadInputError(Exception):
    """Input the user must fix; the message names the file and key."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="main.py", description=__doc__.splitlines()[0])
    parser.add_argument("--env", action="append", dest="envs", metavar="NAME",
                        help="render only this env (repeatable); default: every env/*.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output directory (default dist/)")
    parser.add_argument("--env-dir", type=Path, default=ROOT / "env", help="profile directory (default env/)")
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


def build(env_dir: Path, names: list[str]) -> dict[str, tuple[Any, list[dict]]]:
    """Load the profiles and build their charts: {env: (chart, manifests)}."""
    from charts.config import ProfileError, load_profile

    profiles = []
    for name in names:
        try:
            profiles.append(load_profile(env_dir, name))
        except ProfileError as err:
            raise BadInputError(str(err)) from None

    # Imported only now, so a profile error never pays for jsii start-up.
    import cdk8s

    from charts.stack import StackChart

    app = cdk8s.App()
    built: dict[str, tuple[Any, list[dict]]] = {}
    for profile in profiles:
        try:
            chart = StackChart(app, profile.name, profile=profile)
            built[profile.name] = (chart, chart.to_json())
        except ValueError as err:
            raise BadInputError(f"{env_dir / (profile.name + '.yaml')}: {err}") from None
    return built


def build_argocd(profiles: list[Any], manifests: dict[str, list[dict]]) -> list[dict]:
    """The AppProject and one Application per env (dist/argocd)."""
    import cdk8s

    from charts.argocd import ArgoChart

    try:
        chart = ArgoChart(cdk8s.App(), "argocd", profiles=profiles, manifests=manifests)
    except ValueError as err:
        raise BadInputError(f"env/*.yaml: {err}") from None
    return chart.to_json()


def render(env_dir: Path, names: list[str], *, with_argocd: bool = False) -> dict[str, RenderedEnv]:
    """Render the named envs (and dist/argocd from all of them) in memory; nothing is written."""
    built = build(env_dir, names)
    outputs = {env: documents for env, (_chart, documents) in built.items()}
    if with_argocd:
        outputs[ARGOCD_DIR] = build_argocd([chart.stack.profile for chart, _docs in built.values()], outputs)
    rendered: dict[str, RenderedEnv] = {}
    for name, documents in outputs.items():
        source = "env/*.yaml" if name == ARGOCD_DIR else f"env/{name}.yaml"
        header = f"# Rendered by main.py from {source}. Do not edit; run `make synth`.\n"
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sys.path.insert(0, str(ROOT))
    from charts.config import known_envs

    env_dir: Path = args.env_dir
    names = args.envs or known_envs(env_dir)
    try:
        if not names:
            raise BadInputError(f"{env_dir}: no profiles (*.yaml) found")
        # dist/argocd derives from every profile, so only a full render updates it.
        rendered = render(env_dir, names, with_argocd=not args.envs)
    except BadInputError as err:
        print(f"error: {err}", file=sys.stderr)
        print("error: nothing was written; dist/ keeps its previous content", file=sys.stderr)
        return 2

    for env, result in rendered.items():
        target = write_atomically(args.out, env, result.files)
        print(f"rendered {result.object_count} objects to {target}")
    # `cdk8s synth` expects the app to write into CDK8S_OUTDIR (a scratch dir
    # it deletes first); give it a copy so its listing matches dist/.
    cdk8s_outdir = os.environ.get("CDK8S_OUTDIR")
    if cdk8s_outdir:
        scratch = Path(cdk8s_outdir)
        scratch.mkdir(parents=True, exist_ok=True)
        for env, result in rendered.items():
            for name, text in result.files.items():
                (scratch / f"{env}-{name}").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
