"""Facts kind/up.sh and the Makefile need, read from a profile and its render.

    .venv/bin/python kind/devenv.py COMMAND [ENV]

Commands (ENV defaults to dev):
  namespace        the env's namespace
  domain           the env's public domain
  images           "<build context> <image ref>" for each image we build
                   (app/, backup/) that dist/<env> actually uses
  namespace-object the rendered Namespace as YAML (created before the Secrets)
  jobs             names of the rendered one-shot Jobs
  migration-job    the rendered migration Job as YAML (for `make migrate`)
  migration-job-name  its name
  edge             "<controller> <namespace> <release>" of the ingress controller
  ingress-values   Helm values for the F5 NGINX Ingress Controller chart,
                   matching the class and pod labels the profile expects
  ingress-metrics  the headless metrics Service for that controller

Shell scripts could grep the YAML, but the profile loader already knows the
defaults and rejects typos, so the answers come from the same model the
charts use. Exit code 2 names the problem (bad env, missing render).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from charts.config import PROJECT_IMAGES, Profile, ProfileError, load_profile  # noqa: E402

KIND_DIR = ROOT / "kind"
NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
CHART_NAME = "nginx-ingress"


class DevEnvError(Exception):
    """Something the user must fix; the message says what."""


def profile_for(env: str, env_dir: Path = ROOT / "env") -> Profile:
    try:
        return load_profile(env_dir, env)
    except ProfileError as err:
        raise DevEnvError(str(err)) from None


def rendered_objects(env: str, dist: Path = ROOT / "dist") -> list[dict[str, Any]]:
    directory = dist / env
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise DevEnvError(f"{directory} has no manifests; run `make synth` first")
    return [doc for path in files for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def pod_specs(objects: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    for obj in objects:
        spec = obj.get("spec", {})
        if obj.get("kind") == "CronJob":
            yield spec["jobTemplate"]["spec"]["template"]["spec"]
        elif "template" in spec:
            yield spec["template"]["spec"]


def used_images(objects: Iterable[dict[str, Any]]) -> set[str]:
    return {container["image"] for spec in pod_specs(objects)
            for container in [*spec.get("initContainers", []), *spec["containers"]]}


def built_images(profile: Profile, objects: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(build context, image ref) for our own images that the render uses.

    An image the render does not use (backups switched off) is not built.
    """
    used = used_images(objects)
    images = profile.image_refs()
    return [(f"{image.context}/", images[image.key].ref) for image in PROJECT_IMAGES if images[image.key].ref in used]


def rendered_jobs(objects: list[dict[str, Any]]) -> list[str]:
    """Names of the rendered one-shot Jobs (migration, bucket set-up)."""
    return [o["metadata"]["name"] for o in objects if o.get("kind") == "Job"]


def namespace_object(objects: list[dict[str, Any]]) -> dict[str, Any]:
    found = [o for o in objects if o.get("kind") == "Namespace"]
    if len(found) != 1:
        raise DevEnvError(f"expected one rendered Namespace, found {len(found)}")
    return found[0]


def migration_job(objects: list[dict[str, Any]]) -> dict[str, Any]:
    jobs = [o for o in objects if o.get("kind") == "Job"
            and o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "migration"]
    if len(jobs) != 1:
        raise DevEnvError(f"expected one rendered migration Job, found {len(jobs)}")
    return jobs[0]


def ingress_release(profile: Profile) -> tuple[str, dict[str, Any]]:
    """(Helm release name, values) that make the controller's pods carry the
    labels, namespace and class the rendered NetworkPolicy and Ingress expect."""
    edge = profile.edge
    if edge.controller != "nginx-inc":
        raise DevEnvError(
            f"edge.controller is {edge.controller!r}; kind/up.sh installs only the F5 NGINX Ingress "
            "Controller (nginx-inc). Install yours by hand and run kind/up.sh with SKIP_INGRESS=1")
    values = yaml.safe_load((KIND_DIR / "nginx-ingress-values.yaml").read_text(encoding="utf-8"))
    labels = dict(edge.controller_pod_labels)
    # The chart derives two pod labels from its name and release; the rest
    # go in as extra labels.
    release = labels.pop(INSTANCE_LABEL, CHART_NAME)
    name = labels.pop(NAME_LABEL, CHART_NAME)
    if name != CHART_NAME:
        values["nameOverride"] = name
    controller = values["controller"]
    controller["ingressClass"]["name"] = edge.ingress_class
    if labels:
        controller.setdefault("pod", {})["extraLabels"] = labels
    if profile.monitoring.ingress_metrics_port:
        # The port Prometheus scrapes and the port the controller serves must agree.
        values.setdefault("prometheus", {})["port"] = profile.monitoring.ingress_metrics_port
    return release, values


def metrics_service(profile: Profile) -> dict[str, Any]:
    service = yaml.safe_load((KIND_DIR / "nginx-ingress-metrics.yaml").read_text(encoding="utf-8"))
    service["metadata"]["namespace"] = profile.edge.controller_namespace
    service["spec"]["selector"] = dict(profile.edge.controller_pod_labels)
    port = profile.monitoring.ingress_metrics_port
    if port:
        service["spec"]["ports"][0].update(port=port, targetPort=port)
    return service


def dump(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def run(command: str, env: str) -> str:
    profile = profile_for(env)
    commands: dict[str, Callable[[], str]] = {
        "namespace": lambda: profile.namespace,
        "domain": lambda: profile.domain,
        "images": lambda: "\n".join(f"{context} {ref}"
                                    for context, ref in built_images(profile, rendered_objects(env))),
        "namespace-object": lambda: dump(namespace_object(rendered_objects(env))).rstrip(),
        "jobs": lambda: "\n".join(rendered_jobs(rendered_objects(env))),
        "migration-job": lambda: dump(migration_job(rendered_objects(env))).rstrip(),
        "migration-job-name": lambda: migration_job(rendered_objects(env))["metadata"]["name"],
        "edge": lambda: " ".join((profile.edge.controller, profile.edge.controller_namespace,
                                  ingress_release(profile)[0])),
        "ingress-values": lambda: dump(ingress_release(profile)[1]).rstrip(),
        "ingress-metrics": lambda: dump(metrics_service(profile)).rstrip(),
    }
    if command not in commands:
        raise DevEnvError(f"unknown command {command!r} (known: {', '.join(commands)})")
    return commands[command]()


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    try:
        print(run(argv[0], argv[1] if len(argv) > 1 else "dev"))
    except DevEnvError as err:
        print(f"devenv: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
