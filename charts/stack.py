"""One environment's stack: wires the components of a profile together.

Components connect by reference (`api.peer`, `postgres.client_env()`), and
declare their connections and secret references as they are built; the
NetworkPolicies and the ExternalSecret are rendered last, from those tables.
"""

from __future__ import annotations

import hashlib

import cdk8s
from constructs import Construct

from charts.api import Api, DevSource
from charts.app import Beat, Migration, Superuser, Worker
from charts.backup import EXPORTER_PORT as BACKUP_EXPORTER_PORT
from charts.backup import Backups
from charts.cnpg import METRICS_PORT as CNPG_METRICS_PORT
from charts.config import Profile
from charts.data import ObjectStore, Postgres, Redis, env
from charts.edge import Edge
from charts.labels import Identity, metadata
from charts.monitoring import Monitoring, ScaledWorkers, ScrapeTarget
from charts.namespace import Namespace
from charts.network import Network, Peer, external, pods_in
from charts.scaling import RedisAuthentication
from charts.secrets import SecretRefs
from imports import k8s


class Stack:
    """What every component of one environment needs to know."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.namespace = profile.namespace
        # The release version labels config objects; workloads use their image tag.
        self.version = profile.api.image.tag or "unversioned"
        self.network = Network(dns=pods_in(profile.network.dns_namespace, profile.network.dns_pod_labels,
                                           key="dns"), dns_cidrs=profile.network.dns_cidrs)
        self.secrets = SecretRefs(profile.secrets)
        # For pods that run the project's own images (API image, backup image).
        pull_secret = profile.images.pull_secret
        self.project_pull_secrets: tuple[str, ...] = (pull_secret,) if pull_secret else ()

    def identity(self, name: str, component: str, version: str | None = None) -> Identity:
        return Identity(name=name, component=component, instance=self.profile.instance,
                        part_of=self.profile.part_of, version=version or self.version)

    def identity_meta(self, name: str, component: str, version: str | None = None) -> k8s.ObjectMeta:
        """Metadata for a supporting object (ConfigMap...) of a component."""
        return metadata(self.identity(name, component, version), name, self.namespace)

    @staticmethod
    def checksum(text: str) -> str:
        """Pod annotation value that rolls the pods when their config changes."""
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class StackChart(cdk8s.Chart):
    def __init__(self, scope: Construct, id: str, *, profile: Profile) -> None:
        super().__init__(scope, id, disable_resource_name_hashes=True)
        stack = Stack(profile)
        self.stack = stack
        config_identity = stack.identity("config", "config")
        Namespace(self, "namespace", identity=config_identity, name=stack.namespace)

        self.postgres = Postgres(self, "postgres", stack=stack, config=profile.postgres)
        self.redis = Redis(self, "redis", stack=stack, config=profile.redis)
        self.object_store = ObjectStore(self, "object-store", stack=stack, config=profile.object_store)

        # The admin may have a host of its own (edge.admin.subdomain).
        admin_host = profile.edge.admin.host(profile.domain)
        hosts = [profile.domain, *([admin_host] if admin_host else [])]
        # What every process of the app reads (api, workers, beat, migrate).
        app_env = [
            env("ENV", profile.name),
            env("DOMAIN", profile.domain),
            env("DJANGO_SETTINGS_MODULE", profile.api.settings_module),
            env("ALLOWED_HOSTS", ",".join(hosts)),
            env("CSRF_TRUSTED_ORIGINS", ",".join(f"https://{host}" for host in hosts)),
            env("MAX_UPLOAD_SIZE", str(profile.edge.body_size_bytes)),
            # HSTS has one owner, Django's SecurityMiddleware (config.settings.prod).
            env("DJANGO_HSTS_SECONDS", str(profile.edge.hsts_max_age_seconds if profile.edge.hsts else 0)),
            env("DJANGO_HSTS_INCLUDE_SUBDOMAINS", "true" if profile.edge.hsts_include_subdomains else "false"),
            # Task events feed the Celery exporter (monitoring).
            env("CELERY_WORKER_SEND_TASK_EVENTS", "true"),
            # Longer than any task's hard time limit (profile rule), so Redis
            # redelivers only tasks whose worker died.
            env("CELERY_VISIBILITY_TIMEOUT", str(profile.worker.visibility_timeout_seconds)),
            stack.secrets.env("DJANGO_SECRET_KEY"),
            *self.postgres.client_env(),
            *self.redis.client_env(),
            *self.object_store.client_env(),
            stack.secrets.env("GA_SVC_JSON_BASE64"),
        ]
        image = profile.api.image
        source = DevSource(self, "dev-source", stack=stack, config=profile.api)
        # CA bundles of external data services: every app process mounts them
        # too, alongside the dev source.
        source.volumes.extend([*self.postgres.client_volumes(), *self.redis.client_volumes()])
        source.mounts.extend([*self.postgres.client_mounts(), *self.redis.client_mounts()])
        self.api = Api(self, "api", stack=stack, config=profile.api, app_env=app_env, source=source)
        keda_authentication = None
        if any(group.autoscaling.mode == "keda" for group in profile.worker.groups):
            keda_authentication = RedisAuthentication(
                self, "keda-redis", stack=stack, broker=self.redis,
                keda_namespace=profile.worker.keda_namespace,
                keda_operator_labels=dict(profile.worker.keda_operator_pod_labels)).name
        self.workers = [Worker(self, f"worker-{group.name}", stack=stack, image=image, group=group, app_env=app_env,
                               broker=self.redis, keda_authentication=keda_authentication,
                               source=source)
                        for group in profile.worker.groups]
        self.beat = Beat(self, "beat", stack=stack, image=image, config=profile.beat, app_env=app_env, source=source)
        self.migration = Migration(self, "migration", stack=stack, image=image, app_env=app_env, source=source)
        self.superuser = Superuser(self, "superuser", stack=stack, image=image, app_env=app_env, source=source,
                                   username=profile.api.superuser_username,
                                   email=profile.api.superuser_email or f"{profile.api.superuser_username}@"
                                                                         f"{profile.domain}")
        for peer in (self.api.peer, *(w.peer for w in self.workers), self.beat.peer, self.migration.peer,
                     self.superuser.peer):
            self._app_connections(peer)
        if profile.network.app_internet_egress:
            internet = external("0.0.0.0/0", key="internet")
            for peer in (self.api.peer, *(w.peer for w in self.workers)):
                stack.network.allow(peer, internet, 443, reason="outbound HTTPS APIs (network.app_internet_egress)")

        self.backups = Backups(self, "backups", stack=stack, config=profile.backups,
                               postgres=self.postgres, object_store=self.object_store)
        self.edge = Edge(self, "edge", stack=stack, config=profile.edge, domain=profile.domain,
                         backend_service=self.api.workload.service_name, backend_port=self.api.port,
                         backend=self.api.peer)
        self.monitoring = Monitoring(
            self, "monitoring", stack=stack, config=profile.monitoring, targets=self._scrape_targets(),
            broker=self.redis, celery_queues=[q for group in profile.worker.groups for q in group.queues],
            backup_stale_after_hours=profile.backups.stale_after_hours,
            postgres_volume_size=profile.postgres.storage.size, ingress_controller=self.edge.controller,
            autoscaled_workers=[ScaledWorkers(group=g.name, queues=g.queues, max_replicas=g.autoscaling.max_replicas)
                                for g in profile.worker.groups if g.autoscaling.mode != "off"])

        stack.network.render(self, config_identity, stack.namespace)
        stack.secrets.render(self, config_identity, stack.namespace)

    def _scrape_targets(self) -> list[ScrapeTarget]:
        """What Prometheus scrapes; Monitoring adds its Celery exporter itself.
        Job names are part of the contract with the rules and dashboards."""
        targets = [
            ScrapeTarget(job="api", workload=self.api.workload, port=self.api.port, metrics="django"),
        ]
        if self.postgres.exporter is not None:
            targets.append(ScrapeTarget(job="postgres", workload=self.postgres.exporter, port=Postgres.EXPORTER_PORT,
                                        metrics="postgres"))
        cnpg = self.postgres.cnpg
        if cnpg is not None:
            targets.append(ScrapeTarget(job="postgres", peer=cnpg.instances, port=CNPG_METRICS_PORT, metrics="cnpg",
                                        dns_name=f"{cnpg.metrics_service}.{self.stack.namespace}.svc"))
        if self.redis.exporter is not None:
            targets.append(ScrapeTarget(job="redis", workload=self.redis.exporter, port=Redis.EXPORTER_PORT,
                                        metrics="redis"))
        store = self.object_store
        if store.workload is not None:
            targets.append(ScrapeTarget(job="object-store", workload=store.workload, port=store.preset.metrics_port,
                                        path=store.preset.metrics_path, metrics=store.config.server))
        if self.backups.exporter is not None:
            targets.append(ScrapeTarget(job="backup", workload=self.backups.exporter, port=BACKUP_EXPORTER_PORT,
                                        metrics="backup"))
        return targets

    def _app_connections(self, peer: Peer) -> None:
        network = self.stack.network
        network.allow(peer, self.postgres.peer, self.postgres.port, reason="Django ORM")
        network.allow(peer, self.redis.peer, self.redis.port, reason="Celery broker and results, cache")
        network.allow(peer, self.object_store.peer, self.object_store.port, reason="uploaded files (S3)")

