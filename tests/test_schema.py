"""Every rendered object validates strictly: built-in kinds against the oldest
and newest supported Kubernetes schema, custom resources against their CRD."""

from __future__ import annotations

import pytest

from tests.support.manifests import ENVS, name_of
from tests.support.schemas import NEWEST, OLDEST, is_custom, validate_builtin, validate_custom


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
@pytest.mark.parametrize("env", ENVS)
def test_builtin_objects_validate_strictly(manifests, env, version):
    failures = []
    for obj in manifests[env]:
        if is_custom(obj):
            continue
        failures += [f"{name_of(obj)}: {error}" for error in validate_builtin(obj, version)]
    assert not failures, f"{env} against Kubernetes {version}:\n" + "\n".join(failures)


@pytest.mark.parametrize("env", ENVS)
def test_custom_resources_validate_against_their_crds(manifests, env):
    failures = []
    for obj in manifests[env]:
        if is_custom(obj):
            failures += [f"{name_of(obj)}: {error}" for error in validate_custom(obj)]
    assert not failures, f"{env}:\n" + "\n".join(failures)


def test_strict_validation_rejects_an_unknown_field(manifests):
    """The validator itself must catch a typo, or the tests above prove nothing."""
    deployment = next(o for o in manifests["dev"] if o["kind"] == "Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replicaz": 2}}
    assert validate_builtin(broken, OLDEST), "a misspelt field passed strict validation"


def test_crd_validation_rejects_an_unknown_field(manifests):
    custom = next(o for env in ENVS for o in manifests[env] if is_custom(o))
    broken = {**custom, "spec": {**custom["spec"], "notAField": True}}
    assert validate_custom(broken), f"{name_of(custom)} with an unknown spec field passed"
