"""Argo CD objects for the rendered-manifests pattern.

One AppProject for the product and one Application per env that points at
dist/<env> in git. The project allows exactly the kinds the envs render and
only their namespaces, so a bad commit cannot make Argo CD create anything else.

Previews (env/_preview.yaml) get their own AppProject, limited to the
`<part_of>-pr-*` namespaces, and an ApplicationSet whose pull-request
generator creates one Application per labelled pull request over the
branch where CI commits the rendered previews (docs/decisions/025).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cdk8s
from constructs import Construct

from charts.config import Profile
from charts.labels import Identity, api_metadata
from imports.io import argoproj as argo

# cert-manager's HTTP-01 edit-in-place (pkg/issuer/acme/http/ingress.go)
# prepends /.well-known/acme-challenge/<token>, backend cm-acme-http-solver-*,
# to the Ingress rule for the challenged host (or appends a rule holding only
# that path). Argo CD runs `del(<expression>)` on live and desired before
# diffing: without this, self-heal reverts the path and cert-manager re-adds
# it. Not managedFieldsManagers: `spec.rules` is an atomic list, so after
# cert-manager's update it owns every rule, and ours would be ignored too.
ACME_CHALLENGE_PATH = ('((.path // "") | startswith("/.well-known/acme-challenge/")) and '
                       '((.backend.service.name // "") | startswith("cm-acme-http-solver-"))')
ACME_CHALLENGE_IGNORE = (
    f".spec.rules[]? | select((.http.paths // []) | length > 0 and all(.[]; {ACME_CHALLENGE_PATH}))",
    f".spec.rules[]?.http.paths[]? | select({ACME_CHALLENGE_PATH})",
)

# Kinds that are cluster-scoped among those we render.
CLUSTER_SCOPED = {("", "Namespace"), ("cert-manager.io", "ClusterIssuer")}


def group_kinds(manifests: Sequence[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(m["apiVersion"].rpartition("/")[0], m["kind"]) for m in manifests}


# RespectIgnoreDifferences: a sync keeps live values of the ignored
# challenge paths where Argo CD can (docs/decisions/028).
SYNC_OPTIONS = ["ServerSideApply=true", "PruneLast=true", "ApplyOutOfSyncOnly=true", "RespectIgnoreDifferences=true"]
ACME_CHALLENGE_DIFFERENCES: dict[str, Any] = {"group": "networking.k8s.io", "kind": "Ingress",
                                              "jqPathExpressions": list(ACME_CHALLENGE_IGNORE)}


def project_spec(*, description: str, repos: Sequence[str], server_namespaces: Sequence[tuple[str, str]],
                 kinds: set[tuple[str, str]]) -> argo.AppProjectSpec:
    return argo.AppProjectSpec(
        description=description,
        source_repos=sorted(set(repos)),
        destinations=[argo.AppProjectSpecDestinations(server=server, namespace=namespace)
                      for server, namespace in server_namespaces],
        cluster_resource_whitelist=[argo.AppProjectSpecClusterResourceWhitelist(group=g, kind=k)
                                    for g, k in sorted(kinds & CLUSTER_SCOPED)],
        namespace_resource_whitelist=[argo.AppProjectSpecNamespaceResourceWhitelist(group=g, kind=k)
                                      for g, k in sorted(kinds - CLUSTER_SCOPED)],
        orphaned_resources=argo.AppProjectSpecOrphanedResources(warn=True),
    )


class ArgoChart(cdk8s.Chart):
    def __init__(self, scope: Construct, id: str, *, profiles: Sequence[Profile],
                 manifests: dict[str, list[dict[str, Any]]],
                 preview: tuple[Profile, list[dict[str, Any]]] | None = None) -> None:
        super().__init__(scope, id, disable_resource_name_hashes=True)
        managed = [p for p in profiles if p.argocd.enabled]
        if preview is not None:
            self._previews(*preview)
        if not managed:
            return
        first = managed[0]
        projects = {p.argocd.project for p in managed}
        namespaces = {p.argocd.namespace for p in managed}
        if len(projects) != 1 or len(namespaces) != 1:
            raise ValueError("argocd.project and argocd.namespace must be the same in every env")
        project, namespace = first.argocd.project, first.argocd.namespace
        identity = Identity(name="argocd", component="gitops", instance=first.part_of, part_of=first.part_of,
                            version=first.api.image.tag or "unversioned")
        kinds = set().union(*(group_kinds(manifests[p.name]) for p in managed))
        argo.AppProject(
            self, "project",
            metadata=api_metadata(identity, project, namespace),
            spec=project_spec(
                description=f"{first.part_of}: rendered manifests from git, one Application per env",
                repos=[p.argocd.repo_url for p in managed],
                server_namespaces=[(p.argocd.destination_server, p.namespace) for p in managed],
                kinds=kinds),
        )
        for profile in managed:
            config = profile.argocd
            automated = argo.ApplicationSpecSyncPolicyAutomated(prune=config.prune, self_heal=config.self_heal) \
                if config.auto_sync else None
            argo.Application(
                self, f"application-{profile.name}",
                metadata=api_metadata(identity, profile.instance, namespace),
                spec=argo.ApplicationSpec(
                    project=project,
                    source=argo.ApplicationSpecSource(
                        repo_url=config.repo_url, target_revision=config.target_revision,
                        path=f"dist/{profile.name}",
                        directory=argo.ApplicationSpecSourceDirectory(recurse=False)),
                    destination=argo.ApplicationSpecDestination(server=config.destination_server,
                                                                namespace=profile.namespace),
                    ignore_differences=[argo.ApplicationSpecIgnoreDifferences(
                        group="networking.k8s.io", kind="Ingress", jq_path_expressions=list(ACME_CHALLENGE_IGNORE))],
                    sync_policy=argo.ApplicationSpecSyncPolicy(
                        automated=automated,
                        # Server-side apply: large objects and field ownership
                        # shared with the HPA; prune last so replacements are up first.
                        sync_options=SYNC_OPTIONS,
                        retry=argo.ApplicationSpecSyncPolicyRetry(
                            limit=5, backoff=argo.ApplicationSpecSyncPolicyRetryBackoff(
                                duration="10s", factor=2, max_duration="5m")),
                    ),
                ),
            )

    def _previews(self, sample: Profile, sample_manifests: list[dict[str, Any]]) -> None:
        """The previews' AppProject and ApplicationSet. `sample` is a preview
        rendered in memory (pr-1): its kinds are what previews may create."""
        config, preview = sample.argocd, sample.preview
        project = f"{config.project}-previews"
        identity = Identity(name="argocd-previews", component="gitops", instance=sample.part_of,
                            part_of=sample.part_of, version=sample.api.image.tag or "unversioned")
        # Previews may only touch namespaces of their own form, never a committed env's.
        namespaces = f"{sample.part_of}-pr-*"
        argo.AppProject(
            self, "previews-project",
            metadata=api_metadata(identity, project, config.namespace),
            spec=project_spec(
                description=f"{sample.part_of}: one preview environment per labelled pull request",
                repos=[config.repo_url], server_namespaces=[(config.destination_server, namespaces)],
                kinds=group_kinds(sample_manifests)),
        )
        owner, repo = preview.github_repo.split("/")
        github: dict[str, Any] = {"owner": owner, "repo": repo, "labels": [preview.label]}
        if preview.token_secret:
            github["tokenRef"] = {"secretName": preview.token_secret, "key": "token"}
        name = f"{sample.part_of}-pr-{{{{.number}}}}"
        application_set = cdk8s.ApiObject(
            self, "previews",
            api_version="argoproj.io/v1alpha1", kind="ApplicationSet",
            metadata=api_metadata(identity, f"{sample.part_of}-previews", config.namespace))
        # No typed class (see scripts/gen_imports.py); the tests validate it
        # against the upstream CRD with unknown fields refused.
        application_set.add_json_patch(cdk8s.JsonPatch.add("/spec", {
                "goTemplate": True,
                # A missing parameter is an error, not an empty string in a name.
                "goTemplateOptions": ["missingkey=error"],
                "generators": [{"pullRequest": {"github": github,
                                                "requeueAfterSeconds": preview.requeue_seconds}}],
                # The generated Applications carry Argo CD's resources finalizer:
                # a closed pull request takes its namespace, volumes included, with it.
                "syncPolicy": {"preserveResourcesOnDeletion": False},
                "template": {
                    "metadata": {"name": name, "labels": identity.labels()},
                    "spec": {
                        "project": project,
                        "source": {"repoURL": config.repo_url, "targetRevision": preview.rendered_branch,
                                   "path": "dist/previews/pr-{{.number}}", "directory": {"recurse": False}},
                        "destination": {"server": config.destination_server, "namespace": name},
                        "ignoreDifferences": [ACME_CHALLENGE_DIFFERENCES],
                        "syncPolicy": {
                            "automated": {"prune": True, "selfHeal": True},
                            "syncOptions": SYNC_OPTIONS,
                            "retry": {"limit": 5, "backoff": {"duration": "10s", "factor": 2,
                                                              "maxDuration": "5m"}},
                        },
                    },
                },
            }))
