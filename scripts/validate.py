"""Check rendered manifests offline: strict schemas, CRDs and the policy tests.

`kubectl apply --dry-run=client` needs a server for anything but syntax; this
runs the checks of `make test` over files instead, for an edited or reviewed
`dist/` without a cluster:

- every built-in object against the strict Kubernetes schemas of the oldest
  and newest supported versions (unknown fields fail);
- every custom resource against its pinned CRD (scripts/crds.py finds them);
- the policy tests of tests/test_policy.py (hardening, probes, labels,
  resources, ...) on each directory that renders a Namespace (an env).

One line per problem; exit 1 if any, 2 if the input or the CRD files are missing.

usage: scripts/validate.py [DIR ...]    (default: every directory of YAML files under dist/)
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402  (after the path set-up, like the imports below)
import yaml  # noqa: E402

from scripts import crds  # noqa: E402
from tests import test_policy  # noqa: E402
from tests.support import schemas  # noqa: E402

Check = Callable[[dict[str, list[dict[str, Any]]], str], None]


def shown(path: Path) -> str:
    """The path as the user typed it or relative to here, so lines stay short."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load(directory: Path) -> tuple[list[tuple[Path, dict[str, Any]]], list[str]]:
    """(file, object) for every document, and one line for each file that is not YAML."""
    objects: list[tuple[Path, dict[str, Any]]] = []
    problems: list[str] = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as error:
            problems.append(f"{shown(path)}: not valid YAML: {' '.join(str(error).split())}")
            continue
        for doc in docs:
            if not doc:
                continue
            if not isinstance(doc, dict) or not {"apiVersion", "kind", "metadata"} <= doc.keys():
                problems.append(f"{shown(path)}: a document without apiVersion, kind and metadata")
                continue
            objects.append((path, doc))
    return objects, problems


def schema_problems(objects: list[tuple[Path, dict[str, Any]]]) -> Iterator[str]:
    for path, obj in objects:
        name = f"{shown(path)}: {obj['kind']}/{obj['metadata'].get('name', '?')}"
        try:
            if schemas.is_custom(obj):
                for error in schemas.validate_custom(obj):
                    yield f"{name}: {error}"
                continue
            for version in (schemas.OLDEST, schemas.NEWEST):
                for error in schemas.validate_builtin(obj, version):
                    yield f"{name}: Kubernetes {version}: {error}"
        except LookupError as error:
            yield f"{name}: {error}"


def policy_checks() -> list[tuple[str, Check]]:
    """The per-env rules of tests/test_policy.py: each test that takes (manifests, env)."""
    found: list[tuple[str, Check]] = []
    for name, function in inspect.getmembers(test_policy, inspect.isfunction):
        if name.startswith("test_") and list(inspect.signature(function).parameters) == ["manifests", "env"]:
            found.append((name.removeprefix("test_").replace("_", " "), function))
    return found


def policy_problems(directory: Path, objects: list[dict[str, Any]]) -> Iterator[str]:
    label = directory.name
    for rule, check in policy_checks():
        try:
            check({label: objects}, label)
        except (AssertionError, pytest.fail.Exception) as failure:
            detail = " ".join(str(failure).split()) or "failed"
            yield f"{shown(directory)}: {rule}: {detail}"
        except (KeyError, TypeError, ValueError) as error:
            # A tampered object can lack what a rule reads: that is a problem too.
            yield f"{shown(directory)}: {rule}: malformed object ({type(error).__name__}: {error})"


def validate(directory: Path) -> list[str]:
    objects, problems = load(directory)
    problems += schema_problems(objects)
    docs = [obj for _path, obj in objects]
    if any(obj["kind"] == "Namespace" for obj in docs):
        problems += policy_problems(directory, docs)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="*", type=Path, help="rendered directories (default: dist/*/)")
    args = parser.parse_args(argv)
    # Every directory with rendered files: dist/<env>, dist/argocd, dist/previews/pr-N.
    directories = args.dirs or sorted(p for p in (ROOT / "dist").rglob("*") if p.is_dir() and any(p.glob("*.yaml")))
    for directory in directories:
        if not directory.is_dir() or not any(directory.glob("*.yaml")):
            print(f"validate: {shown(directory)}: no rendered YAML files here", file=sys.stderr)
            return 2
    try:
        schemas.crds_dir()
    except crds.CrdsUnavailableError as error:
        print(f"validate: {error}", file=sys.stderr)
        return 2
    problems = [line for directory in directories for line in validate(directory)]
    for line in problems:
        print(line)
    checked = ", ".join(shown(d) for d in directories)
    if problems:
        print(f"validate: {len(problems)} problem(s) in {checked}", file=sys.stderr)
        return 1
    print(f"validate: {checked}: valid (strict schemas of Kubernetes {schemas.OLDEST} and {schemas.NEWEST}, "
          f"CRDs, and {len(policy_checks())} policy rules on each env)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
