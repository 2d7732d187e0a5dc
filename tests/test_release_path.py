"""The release path: hashed, complete lock files for every pip install;
images by digest in prod, and the promotion that puts them there."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import pytest
import yaml
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from charts.config import (
    DIGESTS,
    Image,
    ProfileError,
    images_by_digest,
    load_preview,
    load_profile,
)
from charts.schema import ConfigError
from tests.support.manifests import ENV_DIR, ROOT
from tests.support.render import profile_with, render_with

sys.path.insert(0, str(ROOT / "scripts"))
import lock_requirements as locks
import promote

DIGEST = "sha256:" + "ab" * 32
OTHER_DIGEST = "sha256:" + "cd" * 32
THIRD_DIGEST = "sha256:" + "ef" * 32
REVISION = "0123456789abcdef0123456789abcdef01234567"
ZERO_DIGEST = "sha256:" + "0" * 64
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))

# --- lock files ---------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    name: str
    extras: frozenset[str]
    version: str
    marker: str
    hashes: tuple[str, ...]


def read_lock(text: str) -> dict[str, Entry]:
    """{canonical name: entry} of a `--require-hashes` requirements file."""
    entries: dict[str, Entry] = {}
    for line in text.replace("\\\n", " ").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement_text, _, options = line.partition(" --hash=")
        requirement = Requirement(requirement_text.strip())
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", f"not an exact pin: {line[:80]}"
        hashes = tuple(re.findall(r"sha256:(\S+)", "--hash=" + options))
        key = canonicalize_name(requirement.name)
        assert key not in entries, f"{requirement.name} is locked twice"
        entries[key] = Entry(requirement.name, frozenset(requirement.extras), specifiers[0].version,
                             str(requirement.marker or ""), hashes)
    return entries


def read_pins(path: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """{canonical name: (version, extras)} of a pip requirements file and its -r/-c includes."""
    pins: dict[str, tuple[str, frozenset[str]]] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith(("-r ", "-c ")):
            pins.update(read_pins(path.parent / line[3:].strip()))
            continue
        requirement = Requirement(line)
        (specifier,) = requirement.specifier
        pins[canonicalize_name(requirement.name)] = (specifier.version, frozenset(requirement.extras))
    return pins


def drift(lock_text: str, requirements: list[Path], constraints: list[Path],
          only: set[str] | None = None) -> list[str]:
    """What differs between a lock and the files it was made from."""
    entries = read_lock(lock_text)
    direct: dict[str, tuple[str, frozenset[str]]] = {}
    for index, path in enumerate(requirements):
        pins = read_pins(path)
        if only is not None and index > 0:
            pins = {k: v for k, v in pins.items() if k in only}
        direct.update(pins)
    every = dict(direct)
    for path in constraints:
        every.update({k: v for k, v in read_pins(path).items() if k not in every})
    problems = [f"{name}=={version} is not in the lock" for name, (version, _extras) in direct.items()
                if name not in entries]
    for key, entry in entries.items():
        if key not in every:
            problems.append(f"{entry.name} is locked but pinned in no input")
        elif Version(every[key][0]) != Version(entry.version):
            problems.append(f"{entry.name}: lock {entry.version}, input {every[key][0]}")
        elif key in direct and direct[key][1] != entry.extras:
            problems.append(f"{entry.name}: lock extras {sorted(entry.extras)}, input {sorted(direct[key][1])}")
        if not entry.hashes or not all(re.fullmatch(r"[0-9a-f]{64}", h) for h in entry.hashes):
            problems.append(f"{entry.name}: no sha256 hashes")
    return problems


# The locks, the files each is made from, and where it installs (README: Python >= 3.11).
LOCKS = {
    "requirements.lock": (["requirements.txt"], ["constraints.txt"], None),
    "requirements-dev.lock": (["requirements-dev.txt"], ["constraints.txt"], None),
    "requirements-checkov.lock": (["requirements-checkov.txt"], [], None),
    "requirements-roots.lock": (["app/requirements.txt", "requirements-dev.txt"], ["constraints.txt"],
                                {"pytest", "requests", "boto3", "moto"}),
    "app/requirements.lock": (["app/requirements.txt"], [], None),
    "celery-exporter/requirements.lock": (["celery-exporter/requirements.txt"], [], None),
}


def test_the_lock_script_writes_exactly_these_locks():
    assert set(locks.LOCKS) == set(LOCKS)
    for name, lock in locks.LOCKS.items():
        requirements, constraints, only = LOCKS[name]
        assert list(lock.requirements) == requirements and list(lock.constraints) == constraints, name
        assert (set(lock.select) if lock.select else None) == only, name


@pytest.mark.parametrize("name", sorted(LOCKS))
def test_lock_matches_its_requirements(name):
    requirements, constraints, only = LOCKS[name]
    problems = drift((ROOT / name).read_text(), [ROOT / p for p in requirements], [ROOT / p for p in constraints],
                     only)
    assert not problems, f"{name} is stale, run scripts/lock_requirements.py {name}:\n" + "\n".join(problems)


def test_a_lock_that_drifts_from_its_requirements_is_caught(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("Django==5.2.19\ncelery[redis]==5.7.0\n")
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("asgiref==3.13.0\n")
    good = ("Django==5.2.19 \\\n    --hash=sha256:" + "1" * 64 + "\ncelery[redis]==5.7.0 --hash=sha256:" + "2" * 64
            + "\nasgiref==3.13.0 --hash=sha256:" + "3" * 64 + "\n")
    assert drift(good, [requirements], [constraints]) == []
    assert drift(good.replace("Django==5.2.19", "Django==5.2.18"), [requirements], [constraints]) == [
        "Django: lock 5.2.18, input 5.2.19"]
    assert drift(good.replace("asgiref==3.13.0", "asgiref==3.12.0"), [requirements], [constraints]) == [
        "asgiref: lock 3.12.0, input 3.13.0"]
    requirements.write_text("Django==5.2.19\ncelery[redis]==5.7.0\nwhitenoise==6.12.0\n")
    assert drift(good, [requirements], [constraints]) == ["whitenoise==6.12.0 is not in the lock"]
    assert drift(good.replace("celery[redis]", "celery"), [requirements], [constraints])[-1].startswith(
        "celery: lock extras []")
    assert "sqlparse is locked but pinned in no input" in drift(
        good + "sqlparse==0.6.1 --hash=sha256:" + "4" * 64 + "\n", [requirements], [constraints])


# Where each lock installs: (Python versions, [(sys_platform, platform_machine)]).
LINUX = [("linux", "x86_64"), ("linux", "aarch64")]
TARGETS = {
    "requirements.lock": (["3.11", "3.12", "3.13", "3.14"], [*LINUX, ("darwin", "arm64")]),
    "requirements-dev.lock": (["3.11", "3.12", "3.13", "3.14"], [*LINUX, ("darwin", "arm64")]),
    "requirements-checkov.lock": (["3.11", "3.12", "3.13", "3.14"], [*LINUX, ("darwin", "arm64")]),
    "requirements-roots.lock": (["3.13", "3.14"], LINUX),
    "app/requirements.lock": (["3.13"], LINUX),
    "celery-exporter/requirements.lock": (["3.13"], LINUX),
}
# Locks whose pins no venv here holds: their files are installed (from PyPI,
# --no-deps, checked against the lock's hashes) into a cache to read their metadata.
UNVENVED = {"celery-exporter/requirements.lock"}


def installed_metadata(python: Path) -> dict[str, dict]:
    """{canonical name: {version, requires}} of the distributions in a venv, read by its own Python."""
    script = ("import json, importlib.metadata as m; print(json.dumps({d.metadata['Name']: "
              "{'version': d.version, 'requires': d.requires or []} for d in m.distributions()}))")
    result = subprocess.run([str(python), "-c", script], capture_output=True, text=True, check=True, timeout=60)
    return {canonicalize_name(k): v for k, v in json.loads(result.stdout).items()}


def installed_lock_metadata(name: str) -> dict[str, dict]:
    """The metadata of a lock's own files: pip installs them (--no-deps, so
    nothing the lock misses is added; --require-hashes) into a cache directory
    named by the lock's hash, and this reads what landed there."""
    lock = ROOT / name
    target = ROOT / ".cache" / "lock-metadata" / hashlib.sha256(lock.read_bytes()).hexdigest()[:16]
    if not (target / ".complete").exists():
        shutil.rmtree(target, ignore_errors=True)
        result = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--require-hashes", "--only-binary=:all:", "--python-version", TARGETS[name][0][0],
             "--platform", "manylinux2014_x86_64", "--target", str(target), "--requirement", str(lock)],
            capture_output=True, text=True, timeout=600, check=False)
        assert result.returncode == 0, f"{name}: pip install failed:\n{result.stderr[-3000:]}"
        (target / ".complete").touch()
    script = ("import json, sys, importlib.metadata as m; print(json.dumps({d.metadata['Name']: "
              "{'version': d.version, 'requires': d.requires or []} for d in m.distributions(path=[sys.argv[1]])}))")
    result = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True, text=True, check=True,
                            timeout=60)
    return {canonicalize_name(k): v for k, v in json.loads(result.stdout).items()}


def closure_problems(entries: dict[str, Entry], metadata: dict[str, dict], pythons: list[str],
                     platforms: list[tuple[str, str]]) -> list[str]:
    """Every dependency (Requires-Dist, markers evaluated on every target, with
    the extras asked for) of every locked package is locked at a version it accepts."""
    problems = []
    for python, (system, machine), patch in product(pythons, platforms, (0, 99)):
        # Each target at its first and a late patch release (redis needs
        # async-timeout below 3.11.3 only).
        env = {"python_version": python, "python_full_version": f"{python}.{patch}", "sys_platform": system,
               "platform_system": {"linux": "Linux", "darwin": "Darwin"}[system], "platform_machine": machine,
               "os_name": "posix", "implementation_name": "cpython", "platform_python_implementation": "CPython"}
        wanted = {k: set(e.extras) for k, e in entries.items() if not e.marker or Marker(e.marker).evaluate(env)}
        todo = list(wanted)
        while todo:
            key = todo.pop()
            entry = entries[key]
            meta = metadata.get(key)
            if entry.marker and not Marker(entry.marker).evaluate():
                continue  # not for this machine, so not installed: its own dependencies cannot be read here
            if meta is None or Version(meta["version"]) != Version(entry.version):
                problems.append(f"{entry.name}=={entry.version} is not installed in the venv the test reads")
                continue
            for text in meta["requires"]:
                requirement = Requirement(text)
                extras = wanted[key] | {""}
                if requirement.marker and not any(requirement.marker.evaluate({**env, "extra": x}) for x in extras):
                    continue
                dependency = canonicalize_name(requirement.name)
                locked = entries.get(dependency)
                where = f"Python {python}.{patch} {system}/{machine}"
                if locked is None or (locked.marker and not Marker(locked.marker).evaluate(env)):
                    problems.append(f"{where}: {entry.name} needs {requirement}, which is not locked")
                elif not requirement.specifier.contains(locked.version, prereleases=True):
                    problems.append(f"{where}: {entry.name} needs {requirement}, locked {locked.version}")
                elif not set(requirement.extras) <= wanted.get(dependency, set()):
                    wanted[dependency] = wanted.get(dependency, set()) | set(requirement.extras)
                    todo.append(dependency)
                elif dependency not in wanted:
                    wanted[dependency] = set(requirement.extras)
                    todo.append(dependency)
    return sorted(set(problems))


@pytest.mark.parametrize("name", sorted(LOCKS))
def test_lock_holds_every_dependency_on_every_target(name):
    """Independent of the lock script: the dependencies declared by the
    installed packages themselves (their wheels' metadata), on every Python
    and platform the lock serves."""
    venv = ROOT / (".venv-checkov" if name == "requirements-checkov.lock" else ".venv")
    if not (venv / "bin" / "python").exists():
        pytest.skip(f"{venv.name} missing (scripts/setup.sh test installs it)")
    metadata = installed_lock_metadata(name) if name in UNVENVED else installed_metadata(venv / "bin" / "python")
    problems = closure_problems(read_lock((ROOT / name).read_text()), metadata, *TARGETS[name])
    assert not problems, f"{name} is incomplete:\n" + "\n".join(problems)


def test_a_missing_dependency_is_caught():
    entries = read_lock((ROOT / "requirements.lock").read_text())
    metadata = installed_metadata(ROOT / ".venv" / "bin" / "python")
    assert closure_problems(entries, metadata, ["3.11"], LINUX[:1]) == []
    del entries["six"]
    assert any("python-dateutil needs six" in p for p in closure_problems(entries, metadata, ["3.11"], LINUX[:1]))


def test_the_venv_holds_what_the_lock_pins():
    """scripts/setup.sh installed .venv from the locks: same versions."""
    metadata = installed_metadata(ROOT / ".venv" / "bin" / "python")
    for key, entry in read_lock((ROOT / "requirements-dev.lock").read_text()).items():
        assert key in metadata and Version(metadata[key]["version"]) == Version(entry.version), entry.name


def pip_installs(text: str) -> list[str]:
    text = text.replace("\\\n", " ")
    # Commands, not messages about them ("pip install failed").
    return [m.group(0) for m in re.finditer(r"\bpip(3)?\"? install\b(?! failed)[^\n]*", text)]


def test_every_pip_install_reads_a_hashed_lock():
    sources = [ROOT / "scripts" / "setup.sh", ROOT / "scripts" / "runtime-roots.sh", ROOT / "Makefile",
               ROOT / "app" / "Dockerfile", ROOT / "backup" / "Dockerfile", ROOT / "celery-exporter" / "Dockerfile",
               *WORKFLOWS]
    seen = 0
    for path in sources:
        for install in pip_installs(path.read_text()):
            seen += 1
            assert "--require-hashes" in install and "--only-binary=:all:" in install, f"{path.name}: {install}"
            assert re.search(r"(--requirement|-r) \S*(\.lock|\"\$lock\")", install), f"{path.name}: {install}"
    assert seen >= 3, "the pip installs of setup.sh, runtime-roots.sh and app/Dockerfile were not found"
    for workflow in WORKFLOWS:
        text = workflow.read_text()
        assert "cache: pip" not in text and "pip install" not in text.replace("--require-hashes", ""), workflow.name


def test_setup_installs_each_venv_from_its_lock_and_restamps_on_a_lock_change():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    steps = {m.group(1): (m.group(2).split(), m.group(3), m.group(4))
             for m in re.finditer(r"^\s*step (\S+) \"([^\"]+)\" venv (\S+) (\S+)$", setup, re.MULTILINE)}
    assert steps == {"python-synth": (["requirements.lock"], ".venv", "requirements.lock"),
                     "python-test": (["requirements-dev.lock"], ".venv", "requirements-dev.lock"),
                     "checkov": (["requirements-checkov.lock"], ".venv-checkov", "requirements-checkov.lock")}
    roots = (ROOT / "scripts" / "runtime-roots.sh").read_text()
    assert 'cat "$repo/requirements-roots.lock"' in roots, "a new roots lock must rebuild the roots"
    assert "/tmp/requirements.lock" in roots and 'cp "$repo/requirements-roots.lock"' in roots


@pytest.mark.parametrize("context", ["app", "celery-exporter"])
def test_the_image_installs_only_from_the_hashed_lock(context):
    dockerfile = (ROOT / context / "Dockerfile").read_text()
    (install,) = pip_installs(dockerfile)
    assert "--require-hashes" in install and "/tmp/requirements.lock" in install, install
    assert "COPY requirements.lock /tmp/requirements.lock" in dockerfile
    assert (ROOT / context / "requirements.lock").is_file() and f"{context}/requirements.lock" in locks.LOCKS


def test_lock_script_refuses_what_it_cannot_lock():
    with pytest.raises(locks.LockError, match="not an exact pin"):
        locks.read_pins("pyproject.toml")
    a = locks.Pin("django", (), "5.2.19", "a.txt")
    b = locks.Pin("Django", (), "5.2.18", "b.txt")
    with pytest.raises(locks.LockError, match=r"^b\.txt: Django: pinned to 5\.2\.18 here and to 5\.2\.19 in a\.txt$"):
        locks.pinned([a, b])
    assert locks.main(["nope.lock"]) == 2


def test_lock_markers_name_exactly_the_targets():
    x86, arm = locks.LINUX
    (mac,) = locks.MACOS
    pythons, platforms = ("3.11", "3.12", "3.13"), (x86, arm, mac)
    every = set(product(pythons, platforms))
    assert locks.marker(every, pythons, platforms) == ""
    assert locks.marker({e for e in every if e[0] == "3.11"}, pythons, platforms) == 'python_version < "3.12"'
    assert locks.marker({e for e in every if e[1] is mac}, pythons, platforms) == 'sys_platform == "darwin"'
    odd = {("3.12", x86)}
    marker = locks.marker(odd, pythons, platforms)
    for python, platform in every:
        env = {"python_version": python, "sys_platform": platform.sys_platform, "platform_machine": platform.machine}
        assert Marker(marker).evaluate(env) == ((python, platform) in odd), (marker, python, platform.name)


# --- images by digest -------------------------------------------------------------

# The distribution/reference grammar (github.com/distribution/reference, reference.go),
# written out here rather than taken from charts/validators.py.
ALPHANUM = r"[a-z0-9]+"
SEPARATOR = r"(?:[_.]|__|[-]+)"
PATH_COMPONENT = rf"{ALPHANUM}(?:{SEPARATOR}{ALPHANUM})*"
DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*)(?::[0-9]+)?"
REFERENCE = re.compile(rf"(?:{DOMAIN}/)?{PATH_COMPONENT}(?:/{PATH_COMPONENT})*"
                       r"(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?")


def rendered_images(objects: list[dict]) -> set[str]:
    found = set()
    for obj in objects:
        spec = obj.get("spec", {})
        if obj["kind"] == "Cluster":
            found.add(spec["imageName"])
        template = spec.get("jobTemplate", {}).get("spec", spec).get("template", {}).get("spec", {})
        found |= {c["image"] for key in ("containers", "initContainers") for c in template.get(key, [])}
    return found


def committed(env: str) -> list[dict]:
    return [doc for path in sorted((ROOT / "dist" / env).glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_committed_prod_runs_every_image_by_digest():
    images = rendered_images(committed("prod"))
    assert len(images) >= 10, images
    for ref in images:
        assert REFERENCE.fullmatch(ref), f"not an image reference: {ref}"
    by_tag = {ref for ref in images if "@sha256:" not in ref}
    assert by_tag == set(), by_tag


def test_digest_forms_render_as_valid_references():
    cases = {
        Image(repository="grafana/grafana", tag="13.1.3", digest=DIGEST): f"grafana/grafana:13.1.3@{DIGEST}",
        Image(repository="ghcr.io/vibearena/api", tag=DIGEST): f"ghcr.io/vibearena/api@{DIGEST}",
        Image(repository="localhost:5000/api", tag="1.0"): "localhost:5000/api:1.0",
    }
    for image, ref in cases.items():
        assert image.ref == ref and REFERENCE.fullmatch(ref)
    assert Image(repository="r", tag="1", digest=DIGEST).by_digest
    assert not Image(repository="r", tag="1").by_digest


def test_image_digest_is_checked():
    with pytest.raises(ConfigError, match=r"api\.image\.digest: must be sha256:<64 lower-case hex digits>"):
        profile_with("prod", {"api": {"image": {"digest": "sha256:ABC"}}})
    with pytest.raises(ConfigError, match=r"api\.image\.digest: the tag is a digest already"):
        profile_with("prod", {"api": {"image": {"tag": DIGEST, "digest": OTHER_DIGEST}}})
    with pytest.raises(ConfigError, match="40-character commit id"):
        profile_with("prod", {"api": {"image": {"revision": "main"}}})


def test_prod_rule_wants_every_rendered_image_by_digest():
    profile = profile_with("prod", {"api": {"image": {"tag": "1.2.0", "digest": None}}})
    refs = {"ghcr.io/vibearena/api:1.2.0", f"valkey/valkey:9.1.1-trixie@{DIGEST}", f"r@{DIGEST}"}
    key, message = images_by_digest(profile, refs)
    assert key == "api.image.digest" and "ghcr.io/vibearena/api:1.2.0 would run by tag" in message
    assert images_by_digest(profile, refs - {"ghcr.io/vibearena/api:1.2.0"}) is None
    # No image passes by tag, the exporter the chart used to pull from Docker Hub included.
    assert images_by_digest(profile, {"danihodovic/celery-exporter:0.11.1"})[0] == "images"
    by_tag = profile_with("prod", {"monitoring": {"celery_exporter_image": {"tag": "0.12.2", "digest": None}}})
    key, message = images_by_digest(by_tag, {by_tag.monitoring.celery_exporter_image.ref})
    assert key == "monitoring.celery_exporter_image.digest", message
    # An image of a component that is off is not rendered, so it needs no digest.
    assert profile.postgres.image.digest is None and images_by_digest(profile, set()) is None


def test_prod_render_without_a_digest_stops_with_one_line(tmp_path):
    env_dir = tmp_path / "env"
    shutil.copytree(ENV_DIR, env_dir)
    prod = env_dir / "prod.yaml"
    prod.write_text(re.sub(r"  image: \{repository: ghcr.io/vibearena/api, [^\n]*",
                           '  image: {repository: ghcr.io/vibearena/api, tag: "1.2.0"}', prod.read_text()))
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), "--env", "prod", "--env-dir", str(env_dir),
                             "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {prod}: api.image.digest: must be set in the prod tier: ghcr.io/vibearena/api:1.2.0 would run by "
        "tag, and a tag can be pushed again (docs/image-digests.md)"]
    assert not (tmp_path / "out" / "prod").exists()


def test_third_party_digests_are_the_documented_ones():
    """charts/config.py and the evidence record name the same digest for each image."""
    doc = (ROOT / "docs" / "image-digests.md").read_text()
    rows = dict(re.findall(r"^\| `([^`@]+)` \| `(sha256:[0-9a-f]{64})` \|", doc, re.MULTILINE))
    defaults = {ref.split("@")[0]: ref.split("@")[1] for ref in rendered_images(committed("prod"))
                if "@" in ref and "vibearena" not in ref}
    assert defaults == rows
    assert set(DIGESTS.values()) == set(rows.values())


def test_committed_prod_fails_closed_until_a_release_is_promoted():
    """Before a release, prod's own images are the zero digest: it names no
    image, so a deploy cannot start anything. After one, a real digest with
    the commit it was built from."""
    profile = load_profile(ENV_DIR, "prod")
    for image in (profile.api.image, profile.backups.image, profile.monitoring.celery_exporter_image):
        assert image.digest is not None
        if image.digest == ZERO_DIGEST:
            assert image.tag == "unreleased", image
        else:
            assert re.fullmatch(r"[0-9a-f]{40}", image.tag) and image.tag != "0" * 40, image
    assert profile.api.image.digest == profile.backups.image.digest == ZERO_DIGEST or profile.api.image.revision


def test_a_preview_runs_its_own_image_even_when_stage_is_pinned(tmp_path):
    env_dir = tmp_path / "env"
    shutil.copytree(ENV_DIR, env_dir)
    stage = env_dir / "stage.yaml"
    stage.write_text(promote.set_image(stage.read_text(), "api", Image(
        repository="ghcr.io/vibearena/api", tag=REVISION, digest=DIGEST, revision=REVISION)))
    assert load_profile(env_dir, "stage").api.image.digest == DIGEST
    preview = load_preview(env_dir, 7, image_tag="feedbeef")
    assert preview.api.image.ref == "ghcr.io/vibearena/api:feedbeef"


def test_a_child_that_changes_the_tag_of_an_inherited_digest_is_refused(tmp_path):
    """env/qa.yaml extends prod and sets another api tag: prod's digest would
    still decide what runs, under a tag that says otherwise."""
    env_dir = tmp_path / "env"
    shutil.copytree(ENV_DIR, env_dir)
    qa = env_dir / "qa.yaml"
    qa.write_text("extends: prod\nnamespace: vibearena-qa\ndomain: qa.example.com\n"
                  "secrets: {store: vibearena-qa, remote_key: vibearena/qa}\nargocd: {enabled: false}\n"
                  'api:\n  image: {tag: "2.0.0"}\n')
    with pytest.raises(ProfileError) as caught:
        load_profile(env_dir, "qa")
    assert str(caught.value) == (f"{qa}: api.image.tag: is changed here, but api.image.digest comes from "
                                 f"{env_dir / 'prod.yaml'}: the runtime would pull that image; set the digest "
                                 "here too (or digest: null)")
    qa.write_text(qa.read_text().replace('{tag: "2.0.0"}', f'{{tag: "2.0.0", digest: "{DIGEST}"}}'))
    assert load_profile(env_dir, "qa").api.image.ref == f"ghcr.io/vibearena/api:2.0.0@{DIGEST}"


# --- promotion --------------------------------------------------------------------

def pinned_stage(env_dir: Path) -> tuple[Image, Image, Image]:
    """Stage as cd.yml leaves it after a release: commit tag, digest, revision."""
    api = Image(repository="ghcr.io/vibearena/api", tag=REVISION, digest=DIGEST, revision=REVISION)
    backup = Image(repository="ghcr.io/vibearena/backup", tag=REVISION, digest=OTHER_DIGEST)
    exporter = Image(repository="ghcr.io/vibearena/celery-exporter", tag=REVISION, digest=THIRD_DIGEST)
    stage = env_dir / "stage.yaml"
    stage.write_text(stage.read_text().replace(
        '  image: {repository: ghcr.io/vibearena/api, tag: "0.1.0"}\n',
        f'  image: {{repository: ghcr.io/vibearena/api, tag: "{REVISION}", digest: "{DIGEST}", '
        f'revision: "{REVISION}"}}\n').replace(
        '  celery_exporter_image: {repository: danihodovic/celery-exporter, tag: "0.11.1"}\n',
        f'  celery_exporter_image: {{repository: ghcr.io/vibearena/celery-exporter, tag: "{REVISION}", '
        f'digest: "{THIRD_DIGEST}"}}\n') + f'backups:\n  image: {{repository: ghcr.io/vibearena/backup, '
                                           f'tag: "{REVISION}", digest: "{OTHER_DIGEST}"}}\n')
    assert stage.read_text().count("ghcr.io/vibearena/") == 3, "stage.yaml's image lines moved"
    return api, backup, exporter


def test_promote_copies_what_stage_runs_into_prod(tmp_path):
    env_dir = tmp_path / "env"
    shutil.copytree(ENV_DIR, env_dir)
    api, backup, exporter = pinned_stage(env_dir)
    before = (env_dir / "prod.yaml").read_text()
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "promote.py"), "--env-dir", str(env_dir)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    prod = load_profile(env_dir, "prod")
    assert (prod.api.image, prod.backups.image, prod.monitoring.celery_exporter_image) == (api, backup, exporter)
    after = (env_dir / "prod.yaml").read_text()
    # Only the three image lines changed; comments and every other line stay.
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert sorted(b.strip().split(":")[0] for _a, b in changed) == ["celery_exporter_image", "image", "image"], \
        changed
    # Promoting again changes nothing.
    assert promote.main(["--env-dir", str(env_dir)]) == 0 and (env_dir / "prod.yaml").read_text() == after
    _stack, objects = render_with("prod", {"api": {"image": {"tag": REVISION, "digest": DIGEST}}})
    assert f"ghcr.io/vibearena/api:{REVISION}@{DIGEST}" in rendered_images(objects)


def test_promote_refuses_an_env_that_runs_by_tag(tmp_path, capsys):
    env_dir = tmp_path / "env"
    shutil.copytree(ENV_DIR, env_dir)
    before = (env_dir / "prod.yaml").read_text()
    assert promote.main(["--env-dir", str(env_dir)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {env_dir / 'stage.yaml'}: api.image.digest: stage runs ghcr.io/vibearena/api:0.1.0 by tag; only "
        "an image a release pinned by digest can be promoted (cd.yml pins stage)"]
    assert (env_dir / "prod.yaml").read_text() == before


@pytest.mark.parametrize("key", ["api.image", "backups.image", "monitoring.celery_exporter_image"])
def test_promote_refuses_when_any_project_image_runs_by_tag(tmp_path, capsys, key):
    """Every image the project builds is promoted by digest or not at all."""
    env_dir = tmp_path / "env"
    shutil.copytree(ENV_DIR, env_dir)
    pinned_stage(env_dir)
    stage = env_dir / "stage.yaml"
    section, attribute = key.split(".")
    by_tag = Image(repository=load_profile(env_dir, "stage").image_refs()[key].repository, tag="1.2.3")
    stage.write_text(promote.set_image(stage.read_text(), section, by_tag, attribute))
    before = (env_dir / "prod.yaml").read_text()
    assert promote.main(["--env-dir", str(env_dir)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {stage}: {key}.digest: stage runs {by_tag.ref} by tag")
    assert (env_dir / "prod.yaml").read_text() == before


@pytest.mark.parametrize("text", [
    "tier: prod\napi:\n  replicas: 3\n",
    "tier: prod\napi:\n  image:\n    repository: r\n    tag: \"1\"\n\n  replicas: 3\n",
    "tier: prod\napi:\n  # the release\n  image: {repository: r, tag: \"1\"}\n  replicas: 3\n",
    "tier: prod\n",
])
def test_promote_sets_the_image_line_in_any_layout(text):
    image = Image(repository="ghcr.io/vibearena/api", tag=REVISION, digest=DIGEST, revision=REVISION)
    out = promote.set_image(text, "api", image)
    data = yaml.safe_load(out)
    assert data["api"]["image"] == {"repository": image.repository, "tag": REVISION, "digest": DIGEST,
                                    "revision": REVISION}
    assert data["tier"] == "prod" and data["api"].get("replicas") == yaml.safe_load(text).get("api", {}).get(
        "replicas") if "api" in text else True
    assert ("# the release" in out) == ("# the release" in text)
