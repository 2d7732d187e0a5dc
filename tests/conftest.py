"""Shared fixtures: every env is built once per session, in process."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from scripts import crds
from tests.support.manifests import ENV_DIR, ENVS
from tests.support.roots import skip_host_copies


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Stop before running when the CRD files are missing: one line instead of a dozen
    LookupErrors. The runtime roots run tests/app and tests/backup alone, which need none.

    Slow tests go first (a stable sort): with pytest-xdist's workers (make test) a
    minutes-long test that starts last would leave the other worker idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    skip_host_copies(items, config.rootpath)
    own_toolchain = ("tests/app/", "tests/backup/")
    if all(Path(str(item.path)).relative_to(config.rootpath).as_posix().startswith(own_toolchain)
           for item in items):
        return
    try:
        crds.locate()
    except crds.CrdsUnavailableError as error:
        raise pytest.UsageError(str(error)) from None


@pytest.fixture(scope="session")
def built() -> dict[str, tuple[Any, list[dict[str, Any]]]]:
    """{env: (chart, manifests)} for every profile in env/."""
    # Imported here: the runtime roots run tests/app and tests/backup without
    # the rendering toolchain (cdk8s, Node.js).
    import main

    return main.build(ENV_DIR, ENVS)


@pytest.fixture(scope="session")
def manifests(built) -> dict[str, list[dict[str, Any]]]:
    return {env: docs for env, (_chart, docs) in built.items()}


@pytest.fixture(scope="session")
def stacks(built) -> dict[str, Any]:
    return {env: chart.stack for env, (chart, _docs) in built.items()}

