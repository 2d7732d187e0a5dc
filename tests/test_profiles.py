"""Profiles v2: any environment name, policy tiers, `extends`, bases, and
preview environments that can never collide with each other or with the
committed environments. Expected names and hosts are written out here."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

import main
from tests.support.manifests import ENV_DIR, load_dir, of_kind, tree_digest
from tests.support.schemas import validate_custom

SMALL_QA = """\
extends: stage
namespace: vibearena-qa
domain: qa.vibearena.example.com
"""


@pytest.fixture
def env_dir(tmp_path: Path) -> Path:
    target = tmp_path / "env"
    shutil.copytree(ENV_DIR, target)
    return target


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    try:
        code = main.main(list(args))
    except SystemExit as exit_:  # argparse refuses the command line itself
        code = int(exit_.code or 0)
    return code, capsys.readouterr().err.splitlines()


def rejected(capsys: pytest.CaptureFixture[str], env_dir: Path, out: Path, *args: str) -> str:
    """Run main.py expecting bad input: exit 2, dist untouched; the error line."""
    before = tree_digest(out) if out.exists() else None
    code, errors = run(capsys, "--env-dir", str(env_dir), "--out", str(out), *args)
    assert code == 2, f"exit {code}: {errors}"
    assert errors and errors[0].startswith("error: "), errors
    assert (tree_digest(out) if out.exists() else None) == before, "output changed after a failed run"
    return errors[0].removeprefix("error: ")


def write(env_dir: Path, name: str, text: str) -> Path:
    path = env_dir / f"{name}.yaml"
    path.write_text(text)
    return path


def objects(out: Path, env: str) -> list[dict[str, Any]]:
    return load_dir(out / env)


# --- any name, tiers ---------------------------------------------------------


def test_a_new_environment_renders_under_its_own_name(capsys, env_dir, tmp_path):
    write(env_dir, "qa", SMALL_QA)
    out = tmp_path / "dist"
    code, errors = run(capsys, "--env-dir", str(env_dir), "--out", str(out))
    assert code == 0, errors
    qa = objects(out, "qa")
    assert {o["metadata"].get("namespace") for o in qa} - {None} == {"vibearena-qa"}
    ingress = next(o for o in qa if o["kind"] == "Ingress")
    assert [r["host"] for r in ingress["spec"]["rules"]] == ["qa.vibearena.example.com"]
    applications = {a["metadata"]["name"]: a for a in of_kind(objects(out, "argocd"), "Application")}
    assert applications["vibearena-qa"]["spec"]["source"]["path"] == "dist/qa"
    assert applications["vibearena-qa"]["spec"]["destination"]["namespace"] == "vibearena-qa"
    # qa inherits stage's tier, so it syncs by itself as stage does.
    assert applications["vibearena-qa"]["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}


def test_tier_rules_follow_the_tier_not_the_name(capsys, env_dir, tmp_path):
    out = tmp_path / "dist"
    one_replica = "api:\n  replicas: 1\n  autoscaling: {enabled: false}\n"
    write(env_dir, "prod-eu", "extends: prod\nnamespace: vibearena-prod-eu\ndomain: eu.vibearena.example.com\n"
          + one_replica)
    line = rejected(capsys, env_dir, out, "--env", "prod-eu")
    assert line == f"{env_dir / 'prod-eu.yaml'}: api.replicas: must be >= 2 in the prod tier (got 1)"
    # The same values in the dev tier are fine, whatever the name says.
    write(env_dir, "prod-eu", "extends: prod\ntier: dev\nnamespace: vibearena-prod-eu\n"
          "domain: eu.vibearena.example.com\n" + one_replica)
    code, errors = run(capsys, "--env-dir", str(env_dir), "--out", str(out), "--env", "prod-eu")
    assert code == 0, errors


def test_a_file_named_prod_gets_no_prod_rules_in_the_dev_tier(capsys, env_dir, tmp_path):
    text = (env_dir / "prod.yaml").read_text().replace("tier: prod", "tier: dev")
    assert "\n  tls:\n    acme_email:" in text
    local_ca = text.replace("\n  tls:\n    acme_email:", "\n  tls:\n    mode: local-ca\n    acme_email:", 1)
    write(env_dir, "prod", local_ca)
    code, errors = run(capsys, "--env-dir", str(env_dir), "--out", str(tmp_path / "d"), "--env", "prod")
    assert code == 0, errors


@pytest.mark.parametrize(("text", "expected"), [
    ("namespace: a\ndomain: a.example.com\napi: {image: {repository: x/y, tag: '1'}}\n",
     "tier: is required: one of 'dev', 'stage', 'prod' (missing)"),
    ("tier: production\nnamespace: a\ndomain: a.example.com\napi: {image: {repository: x/y, tag: '1'}}\n",
     "tier: must be one of 'dev', 'stage', 'prod' (got 'production')"),
])
def test_tier_is_required_and_checked(capsys, env_dir, tmp_path, text, expected):
    write(env_dir, "qa", text)
    assert expected in rejected(capsys, env_dir, tmp_path / "dist", "--env", "qa")


@pytest.mark.parametrize("name", ["QA", "1qa", "qa_1", "q" * 31, "qa.", "-qa"])
def test_environment_names_must_be_short_dns_labels(capsys, env_dir, tmp_path, name):
    write(env_dir, name, SMALL_QA)
    line = rejected(capsys, env_dir, tmp_path / "dist")
    assert line.startswith(f"{env_dir / (name + '.yaml')}: an environment name must be a DNS label"), line


def test_a_31_character_name_is_refused_and_30_is_fine(capsys, env_dir, tmp_path):
    write(env_dir, "q" * 30, SMALL_QA)
    code, errors = run(capsys, "--env-dir", str(env_dir), "--out", str(tmp_path / "d"), "--env", "q" * 30)
    assert code == 0, errors


def test_pr_names_are_reserved_for_previews(capsys, env_dir, tmp_path):
    write(env_dir, "pr-12", SMALL_QA)
    line = rejected(capsys, env_dir, tmp_path / "dist")
    assert line == f"{env_dir / 'pr-12.yaml'}: names like 'pr-12' are reserved for preview environments " \
                   "(make preview PR=<number>)"


# --- extends -------------------------------------------------------------------


def test_extends_merges_mappings_and_replaces_lists_and_scalars(capsys, env_dir, tmp_path):
    write(env_dir, "_small", "tier: stage\napi:\n  replicas: 3\n  gunicorn_workers: 1\n"
          "worker:\n  groups:\n    - {name: default, queues: [celery]}\n    - {name: mail, queues: [mail]}\n")
    write(env_dir, "qa", "extends: _small\nnamespace: vibearena-qa\ndomain: qa.vibearena.example.com\n"
          "api:\n  image: {repository: ghcr.io/vibearena/api, tag: '2.0.0'}\n  replicas: 2\n"
          "worker:\n  groups:\n    - {name: bulk, queues: [bulk]}\n"
          "edge:\n  tls: {acme_email: ops@vibearena.example.com}\n"
          "  admin: {subdomain: admin, allow_cidrs: ['10.0.0.0/8']}\n"
          "secrets: {provider: external-secrets, store: qa-store, remote_key: vibearena/qa}\n")
    out = tmp_path / "dist"
    code, errors = run(capsys, "--env-dir", str(env_dir), "--out", str(out), "--env", "qa")
    assert code == 0, errors
    qa = objects(out, "qa")
    api = next(o for o in qa if o["kind"] == "Deployment" and o["metadata"]["name"] == "api")
    assert api["spec"]["replicas"] == 2, "the child's scalar replaces the base's"
    assert api["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/vibearena/api:2.0.0"
    assert _env(api, "GUNICORN_WORKERS") == "1", "the base's gunicorn_workers survives the child's api mapping"
    workers = sorted(o["metadata"]["name"] for o in qa if o["kind"] == "Deployment"
                     and o["metadata"]["name"].startswith("worker-"))
    assert workers == ["worker-bulk"], "a list in the child replaces the base's list"


def _env(deployment: dict[str, Any], name: str) -> str | None:
    for variable in deployment["spec"]["template"]["spec"]["containers"][0].get("env", []):
        if variable["name"] == name:
            return variable.get("value")
    return None


def test_extends_chains_through_several_files(capsys, env_dir, tmp_path):
    write(env_dir, "_a", "tier: dev\npart_of: chain\nedge: {tls: {mode: local-ca}}\n")
    write(env_dir, "_b", "extends: _a\nnamespace: from-b\n")
    write(env_dir, "qa", "extends: _b\ndomain: qa.example.com\napi: {image: {repository: x/api, tag: '1'}}\n")
    out = tmp_path / "dist"
    code, errors = run(capsys, "--env-dir", str(env_dir), "--out", str(out), "--env", "qa")
    assert code == 0, errors
    namespace = next(o for o in objects(out, "qa") if o["kind"] == "Namespace")
    assert namespace["metadata"]["name"] == "from-b"
    assert namespace["metadata"]["labels"]["app.kubernetes.io/part-of"] == "chain"
    assert not (out / "_a").exists() and not (out / "_b").exists(), "bases are never rendered"


def test_an_inheritance_cycle_names_the_chain(capsys, env_dir, tmp_path):
    write(env_dir, "_a", "extends: _b\n")
    write(env_dir, "_b", "extends: qa\n")
    write(env_dir, "qa", "extends: _a\n")
    line = rejected(capsys, env_dir, tmp_path / "dist", "--env", "qa")
    assert line == f"{env_dir / '_b.yaml'}: extends: inheritance cycle: qa -> _a -> _b -> qa"


def test_a_profile_extending_itself_is_a_cycle(capsys, env_dir, tmp_path):
    write(env_dir, "qa", "extends: qa\n")
    line = rejected(capsys, env_dir, tmp_path / "dist", "--env", "qa")
    assert line == f"{env_dir / 'qa.yaml'}: extends: inheritance cycle: qa -> qa"


@pytest.mark.parametrize(("value", "words"), [
    ("nowhere", "no profile named 'nowhere'"),
    ("'../prod'", "must name another profile in env/"),
    ("[stage]", "must name another profile in env/"),
    ("7", "must name another profile in env/"),
])
def test_extends_must_name_an_existing_profile(capsys, env_dir, tmp_path, value, words):
    write(env_dir, "qa", f"extends: {value}\n")
    line = rejected(capsys, env_dir, tmp_path / "dist", "--env", "qa")
    assert line.startswith(f"{env_dir / 'qa.yaml'}: extends: "), line
    assert words in line, line


def test_an_error_in_an_inherited_key_names_the_file_that_wrote_it(capsys, env_dir, tmp_path):
    write(env_dir, "_base", "tier: dev\nedge: {tls: {mode: local-ca}}\napi:\n  replicas: -1\n")
    write(env_dir, "qa", "extends: _base\nnamespace: vibearena-qa\ndomain: qa.example.com\n"
          "api: {image: {repository: x/api, tag: '1'}}\n")
    line = rejected(capsys, env_dir, tmp_path / "dist", "--env", "qa")
    assert line.startswith(f"{env_dir / '_base.yaml'}: api.replicas: must be >= 0 (got -1)"), line
    assert f"(inherited by {env_dir / 'qa.yaml'})" in line, line


def test_a_child_that_overrides_the_bad_key_fixes_it(capsys, env_dir, tmp_path):
    write(env_dir, "_base", "tier: dev\nedge: {tls: {mode: local-ca}}\napi:\n  replicas: -1\n")
    write(env_dir, "qa", "extends: _base\nnamespace: vibearena-qa\ndomain: qa.example.com\n"
          "api: {image: {repository: x/api, tag: '1'}, replicas: 1}\n")
    code, errors = run(capsys, "--env-dir", str(env_dir), "--out", str(tmp_path / "d"), "--env", "qa")
    assert code == 0, errors


def test_a_tier_rule_on_an_inherited_key_names_the_base(capsys, env_dir, tmp_path):
    write(env_dir, "_base", "tier: prod\napi:\n  image: {repository: x/api, tag: latest}\n")
    write(env_dir, "prod-us", "extends: _base\nnamespace: vibearena-us\ndomain: us.example.com\n"
          "api: {replicas: 3}\nedge: {tls: {acme_email: ops@example.com}}\n")
    line = rejected(capsys, env_dir, tmp_path / "dist", "--env", "prod-us")
    assert line.startswith(f"{env_dir / '_base.yaml'}: api.image.tag: must be pinned in the prod tier"), line


def test_an_error_in_a_list_item_names_the_file_of_the_list(capsys, env_dir, tmp_path):
    write(env_dir, "_base", "tier: dev\nedge: {tls: {mode: local-ca}}\nworker:\n  groups:\n    - {name: Bad_Name}\n")
    write(env_dir, "qa", "extends: _base\nnamespace: vibearena-qa\ndomain: qa.example.com\n"
          "api: {image: {repository: x/api, tag: '1'}}\n")
    line = rejected(capsys, env_dir, tmp_path / "dist", "--env", "qa")
    assert line.startswith(f"{env_dir / '_base.yaml'}: worker.groups[0].name: "), line


def test_a_base_cannot_be_rendered_on_its_own(capsys, env_dir, tmp_path):
    line = rejected(capsys, env_dir, tmp_path / "dist", "--env", "_preview")
    assert line.startswith(f"{env_dir / '_preview.yaml'}: '_preview' is a base profile"), line


def test_full_render_skips_bases(capsys, tmp_path):
    out = tmp_path / "dist"
    code, errors = run(capsys, "--out", str(out))
    assert code == 0, errors
    assert sorted(p.name for p in out.iterdir()) == ["argocd", "dev", "prod", "stage"]


# --- environments never collide ----------------------------------------------


@pytest.mark.parametrize(("text", "key", "value", "owner"), [
    ("extends: stage\nnamespace: vibearena-prod\ndomain: qa.vibearena.example.com\n", "namespace",
     "vibearena-prod", "prod"),
    ("extends: stage\nnamespace: vibearena-qa\ndomain: vibearena.example.com\n", "domain",
     "vibearena.example.com", "prod"),
])
def test_two_environments_cannot_share_a_namespace_or_host(capsys, env_dir, tmp_path, text, key, value, owner):
    write(env_dir, "qa", text)
    line = rejected(capsys, env_dir, tmp_path / "dist")
    assert line == f"{env_dir / 'qa.yaml'}: {key}: {value!r} is already used by env/{owner}.yaml; " \
                   "every environment needs its own", line


@pytest.mark.parametrize(("key", "value"), [("project", "team-b"), ("namespace", "argo-two")])
def test_every_managed_environment_names_the_one_argo_project(capsys, env_dir, tmp_path, key, value):
    # dist/argocd holds a single AppProject; the error names the env file and key.
    write(env_dir, "qa", f"extends: stage\nnamespace: vibearena-qa\ndomain: qa.example.com\n"
                         f"argocd: {{{key}: {value}}}\n")
    line = rejected(capsys, env_dir, tmp_path / "dist")
    assert line.startswith(f"{env_dir / 'qa.yaml'}: argocd.{key}: must be the same in every env Argo CD "
                           "manages: env/"), line
    assert line.endswith(f"(got {value!r})"), line


def test_two_environments_cannot_share_an_argo_application_name(capsys, env_dir, tmp_path):
    # vibearena + qa-x and vibearena-qa + x both make the Application "vibearena-qa-x".
    write(env_dir, "qa-x", "extends: stage\nnamespace: ns-one\ndomain: one.example.com\n")
    write(env_dir, "x", "extends: stage\npart_of: vibearena-qa\nnamespace: ns-two\ndomain: two.example.com\n")
    line = rejected(capsys, env_dir, tmp_path / "dist")
    assert line.endswith("part_of: 'vibearena-qa-x' is already used by env/qa-x.yaml; every environment needs "
                         "its own"), line


@pytest.mark.parametrize(("text", "key"), [
    ("extends: stage\nnamespace: vibearena-pr-7\ndomain: qa.vibearena.example.com\n", "namespace"),
    ("extends: stage\nnamespace: vibearena-qa\ndomain: qa.preview.vibearena.example.com\n", "domain"),
    ("extends: stage\nnamespace: vibearena-qa\ndomain: preview.vibearena.example.com\n", "domain"),
])
def test_committed_environments_stay_out_of_what_previews_derive(capsys, env_dir, tmp_path, text, key):
    write(env_dir, "qa", text)
    line = rejected(capsys, env_dir, tmp_path / "dist")
    assert line.startswith(f"{env_dir / 'qa.yaml'}: {key}: "), line


def test_previews_never_read_a_committed_environments_secrets(capsys, env_dir, tmp_path):
    path = env_dir / "_preview.yaml"
    path.write_text(path.read_text().replace("remote_key: vibearena/preview", "remote_key: vibearena/stage"))
    line = rejected(capsys, env_dir, tmp_path / "dist", "--preview", "4")
    assert line.startswith(f"{path}: secrets.remote_key: previews must not read the secrets of env/stage.yaml"), line


# --- previews --------------------------------------------------------------------


@pytest.fixture(scope="module")
def preview_7(tmp_path_factory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("dist")
    assert main.main(["--out", str(out), "--preview", "7", "--image-tag", "sha-0a1b2c3"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["previews"], "a preview render writes nothing else"
    return load_dir(out / "previews" / "pr-7")


def test_a_preview_lives_in_its_own_namespace_and_host(preview_7):
    namespaces = {o["metadata"].get("namespace") for o in preview_7} - {None}
    assert namespaces == {"vibearena-pr-7"}
    (namespace,) = of_kind(preview_7, "Namespace")
    assert namespace["metadata"]["name"] == "vibearena-pr-7"
    ingresses = {o["metadata"]["name"]: o for o in preview_7 if o["kind"] == "Ingress"}
    assert sorted(ingresses) == ["admin", "public"], "stage's restricted admin comes with the preview"
    ingress = ingresses["public"]
    assert [r["host"] for r in ingress["spec"]["rules"]] == ["pr-7.preview.vibearena.example.com"]
    assert ingress["spec"]["tls"][0]["hosts"] == ["pr-7.preview.vibearena.example.com"]
    # The admin host is derived from the preview's domain, so previews never share it.
    assert [r["host"] for r in ingresses["admin"]["spec"]["rules"]] == ["admin.pr-7.preview.vibearena.example.com"]


def test_a_preview_runs_the_pull_requests_image(preview_7):
    images = {c["image"] for o in preview_7 if o["kind"] == "Deployment"
              for c in o["spec"]["template"]["spec"]["containers"] if "vibearena/api" in c["image"]}
    assert images == {"ghcr.io/vibearena/api:sha-0a1b2c3"}


def test_a_preview_reads_the_preview_secrets_and_keeps_no_backups(preview_7):
    (external,) = of_kind(preview_7, "ExternalSecret")
    keys = {item["remoteRef"]["key"] for item in external["spec"].get("data", [])} | \
        {item["extract"]["key"] for item in external["spec"].get("dataFrom", []) if "extract" in item}
    assert keys == {"vibearena/preview"}, keys
    assert not of_kind(preview_7, "CronJob") or all(
        o["metadata"]["name"] in {"createsuperuser"} or o["spec"].get("suspend")
        for o in of_kind(preview_7, "CronJob")), "no backup schedules in a preview"


@pytest.mark.parametrize("number", ["0", "-3", "1000000000", "seven", "1e3"])
def test_bad_pull_request_numbers(capsys, tmp_path, number):
    out = tmp_path / "dist"
    code, errors = run(capsys, "--out", str(out), "--preview", number)
    assert code == 2, errors
    assert not out.exists() or not any(out.iterdir())


def test_a_bad_image_tag_is_blamed_on_the_command_line(capsys, tmp_path):
    line = rejected(capsys, ENV_DIR, tmp_path / "dist", "--preview", "3", "--image-tag", "bad tag")
    assert line.startswith("--preview/--image-tag: api.image.tag: "), line


def test_image_tag_only_with_a_preview(capsys, tmp_path):
    line = rejected(capsys, ENV_DIR, tmp_path / "dist", "--image-tag", "x")
    assert "--image-tag is for --preview only" in line


def preview_identity(number: int) -> dict[str, str]:
    """What a preview must be called, written out: never derived by the charts."""
    return {"application": f"vibearena-pr-{number}", "namespace": f"vibearena-pr-{number}",
            "host": f"pr-{number}.preview.vibearena.example.com", "path": f"dist/previews/pr-{number}"}


def committed_identities(manifests: dict[str, list[dict[str, Any]]]) -> set[str]:
    taken: set[str] = set()
    for docs in manifests.values():
        for obj in docs:
            if obj["kind"] == "Namespace":
                taken.add(obj["metadata"]["name"])
            if obj["kind"] == "Ingress":
                taken.update(rule["host"] for rule in obj["spec"]["rules"])
            if obj["kind"] == "Application":
                taken.add(obj["metadata"]["name"])
                taken.add(obj["spec"]["source"]["path"])
    return taken


def test_previews_never_collide_with_each_other_or_committed_envs(manifests):
    from tests.support.manifests import ENVS
    rendered = dict(manifests)
    rendered["argocd"] = main.build_argocd(main.load_profiles(ENV_DIR, ENVS), manifests)
    taken = committed_identities(rendered)
    numbers = [1, 2, 7, 10, 11, 12, 21, 100, 123, 999_999_999]
    seen: set[str] = set()
    for number in numbers:
        values = set(preview_identity(number).values())
        assert not values & taken, (number, values & taken)
        assert not values & seen, (number, values & seen)
        seen |= values


@pytest.fixture(scope="module")
def argocd_objects(tmp_path_factory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("dist")
    assert main.main(["--out", str(out)]) == 0
    return load_dir(out / "argocd")


def expand(template: Any, number: int) -> Any:
    """The ApplicationSet controller's substitution of {{.number}} (a string)."""
    text = yaml.safe_dump(template)
    assert re.findall(r"{{\s*\.(\w+)\s*}}", text) and set(re.findall(r"{{\s*\.(\w+)\s*}}", text)) <= \
        {"number"}, "only the pull request number is used"
    return yaml.safe_load(re.sub(r"{{\s*\.number\s*}}", str(number), text))


def test_the_application_set_validates_against_its_crd(argocd_objects):
    (appset,) = of_kind(argocd_objects, "ApplicationSet")
    assert not validate_custom(appset), validate_custom(appset)
    generator = appset["spec"]["generators"][0]["pullRequest"]
    assert generator["github"] == {"owner": "vibearena", "repo": "infra", "labels": ["preview"]}
    assert appset["spec"]["goTemplate"] is True


def test_the_application_set_points_at_what_make_preview_renders(argocd_objects, preview_7):
    (appset,) = of_kind(argocd_objects, "ApplicationSet")
    application = expand(appset["spec"]["template"], 7)
    expected = preview_identity(7)
    assert application["metadata"]["name"] == expected["application"]
    assert application["spec"]["destination"]["namespace"] == expected["namespace"]
    assert application["spec"]["source"]["path"] == expected["path"]
    assert application["spec"]["source"]["targetRevision"] == "previews"
    (namespace,) = of_kind(preview_7, "Namespace")
    assert namespace["metadata"]["name"] == application["spec"]["destination"]["namespace"]
    assert application["spec"]["project"] == "vibearena-previews"


def test_the_previews_project_only_reaches_preview_namespaces(argocd_objects, preview_7):
    projects = {p["metadata"]["name"]: p for p in of_kind(argocd_objects, "AppProject")}
    previews = projects["vibearena-previews"]["spec"]
    assert [d["namespace"] for d in previews["destinations"]] == ["vibearena-pr-*"]
    allowed = {(r["group"], r["kind"]) for r in previews["namespaceResourceWhitelist"]} | \
        {(r["group"], r["kind"]) for r in previews["clusterResourceWhitelist"]}
    rendered = {(o["apiVersion"].rpartition("/")[0], o["kind"]) for o in preview_7}
    assert allowed == rendered
    for project in projects.values():
        assert not validate_custom(project), validate_custom(project)
    committed = {d["namespace"] for d in projects["vibearena"]["spec"]["destinations"]}
    assert not any(re.fullmatch(r"vibearena-pr-.*", ns) for ns in committed)


# --- a written replica count that an autoscaler would override --------------

QA = "extends: stage\nnamespace: vibearena-qa\ndomain: qa.example.com\n"
KEDA_GROUP = "{name: default, autoscaling: {mode: keda, min_replicas: 2, max_replicas: 5}"


@pytest.mark.parametrize(("body", "key", "got"), [
    ("api: {replicas: 5, autoscaling: {enabled: true, min_replicas: 2, max_replicas: 6}}\n", "api.replicas", 5),
    (f"worker: {{groups: [{KEDA_GROUP}, replicas: 3}}]}}\n", "worker.groups[0].replicas", 3),
    ("worker: {groups: [{name: default}, {name: reports, queues: [reports], replicas: 1,"
     " autoscaling: {mode: hpa, min_replicas: 2, max_replicas: 4, cpu_utilization: 70}}]}\n",
     "worker.groups[1].replicas", 1),
])
def test_a_replica_count_the_autoscaler_would_override_is_refused(capsys, env_dir, tmp_path, body, key, got):
    write(env_dir, "qa", QA + body)
    line = rejected(capsys, env_dir, tmp_path / "dist", "--env", "qa")
    assert line.startswith(f"{env_dir / 'qa.yaml'}: {key}: is not used while autoscaling is on"), line
    assert line.endswith(f"(got {got})"), line


def test_an_inherited_replica_count_names_the_parent_and_the_child(capsys, env_dir, tmp_path):
    write(env_dir, "_small", "extends: stage\napi: {replicas: 1}\n")
    write(env_dir, "qa", QA.replace("extends: stage", "extends: _small")
          + "api: {autoscaling: {enabled: true, min_replicas: 2, max_replicas: 4}}\n")
    line = rejected(capsys, env_dir, tmp_path / "dist", "--env", "qa")
    assert line.startswith(f"{env_dir / '_small.yaml'}: api.replicas: is not used while autoscaling is on"), line
    assert f"(inherited by {env_dir / 'qa.yaml'})" in line, line


@pytest.mark.parametrize("body", [
    # Written and equal to the autoscaler's minimum (as env/prod.yaml does).
    "api: {replicas: 3, autoscaling: {enabled: true, min_replicas: 3, max_replicas: 6}}\n",
    f"worker: {{groups: [{KEDA_GROUP}, replicas: 2}}]}}\n",
    # Not written: the default is never reported.
    "api: {autoscaling: {enabled: true, min_replicas: 4, max_replicas: 6}}\n",
    # Written without an autoscaler: it is the replica count.
    "api: {replicas: 4}\nworker: {groups: [{name: default, replicas: 3}]}\n",
])
def test_replica_counts_that_take_effect_are_accepted(capsys, env_dir, tmp_path, body):
    write(env_dir, "qa", QA + body)
    code, errors = run(capsys, "--env-dir", str(env_dir), "--out", str(tmp_path / "dist"), "--env", "qa")
    assert code == 0, errors
