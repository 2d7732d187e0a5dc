"""Argo CD objects for the rendered-manifests pattern.

One AppProject for the product and one Application per env that points at
dist/<env> in git. The project allows exactly the kinds the envs render and
only their namespaces, so a bad commit cannot make Argo CD create anything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cdk8s
from constructs import Construct

from charts.config import Profile
from charts.labels import Identity, api_metadata
from imports.io import argoproj as argo

# Kinds that are cluster-scoped among those we render.
CLUSTER_SCOPED = {("", "Namespace"), ("cert-manager.io", "ClusterIssuer")}


def group_kinds(manifests: Sequence[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(m["apiVersion"].rpartition("/")[0], m["kind"]) for m in manifests}


class ArgoChart(cdk8s.Chart):
    def __init__(self, scope: Construct, id: str, *, profiles: Sequence[Profile],
                 manifests: dict[str, list[dict[str, Any]]]) -> None:
        super().__init__(scope, id, disable_resource_name_hashes=True)
        managed = [p for p in profiles if p.argocd.enabled]
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
            spec=argo.AppProjectSpec(
                description=f"{first.part_of}: rendered manifests from git, one Application per env",
                source_repos=sorted({p.argocd.repo_url for p in managed}),
                destinations=[argo.AppProjectSpecDestinations(server=p.argocd.destination_server,
                                                              namespace=p.namespace)
                              for p in managed],
                cluster_resource_whitelist=[argo.AppProjectSpecClusterResourceWhitelist(group=g, kind=k)
                                            for g, k in sorted(kinds & CLUSTER_SCOPED)],
                namespace_resource_whitelist=[argo.AppProjectSpecNamespaceResourceWhitelist(group=g, kind=k)
                                              for g, k in sorted(kinds - CLUSTER_SCOPED)],
                orphaned_resources=argo.AppProjectSpecOrphanedResources(warn=True),
            ),
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
                    sync_policy=argo.ApplicationSpecSyncPolicy(
                        automated=automated,
                        # Server-side apply: large objects and field ownership
                        # shared with the HPA; prune last so replacements are up first.
                        sync_options=["ServerSideApply=true", "PruneLast=true", "ApplyOutOfSyncOnly=true"],
                        retry=argo.ApplicationSpecSyncPolicyRetry(
                            limit=5, backoff=argo.ApplicationSpecSyncPolicyRetryBackoff(
                                duration="10s", factor=2, max_duration="5m")),
                    ),
                ),
            )
