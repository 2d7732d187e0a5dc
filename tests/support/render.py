"""Build one env with profile overrides, for tests of non-default switches."""

from __future__ import annotations

from typing import Any

import cdk8s

from charts.config import Profile, resolve_profile
from charts.schema import build, merge
from charts.stack import StackChart
from tests.support.manifests import ENV_DIR


def profile_with(env: str, overrides: dict[str, Any]) -> Profile:
    """env/<env>.yaml (with what it extends) and `overrides` merged in; the
    tier rules are not applied, so tests can build profiles they would refuse."""
    profile = build(Profile, merge(resolve_profile(ENV_DIR, env).data, overrides))
    object.__setattr__(profile, "name", env)
    return profile


def render_with(env: str, overrides: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    """(stack, manifests) for env/<env>.yaml with `overrides` merged in."""
    chart = StackChart(cdk8s.App(), env, profile=profile_with(env, overrides))
    return chart.stack, chart.to_json()



