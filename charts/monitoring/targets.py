"""What Prometheus scrapes: `ScrapeTarget`, one metrics endpoint each.

Changes when the way a target is described or checked changes (not when a
target is added: the stack and `Monitoring` list them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from charts.monitoring.metrics import metric_list
from charts.network import Peer
from charts.schema import dns_label
from charts.workload import Workload

CERT_MANAGER_METRICS_PORT = 9402

@dataclass(frozen=True, kw_only=True)
class ScrapeTarget:
    """One metrics endpoint: a workload of ours, or pods reached by DNS (pods
    elsewhere, or pods in our namespace that an operator runs, e.g. CNPG).

    `metrics` names the committed list in monitoring/metrics/ of what the
    exporter exposes; rule groups and dashboards exist only for lists some
    target uses. A workload target gets a headless `<workload>-metrics`
    Service; an outside target (`peer` + `dns_name`) must offer one itself.
    """

    job: str
    port: int
    metrics: str
    path: str = "/metrics"
    workload: Workload | None = field(default=None, compare=False)
    peer: Peer | None = None
    dns_name: str | None = None

    def __post_init__(self) -> None:
        try:
            dns_label(self.job)
        except ValueError as err:
            raise ValueError(f"scrape target job: {err}") from None
        if (self.workload is None) == (self.peer is None):
            raise ValueError(f"scrape target {self.job!r}: set exactly one of workload, peer")
        if self.peer is not None and not self.dns_name:
            raise ValueError(f"scrape target {self.job!r}: a peer target needs a dns_name")
        if not 0 < self.port < 65536:
            raise ValueError(f"scrape target {self.job!r}: bad port {self.port}")
        if not self.path.startswith("/"):
            raise ValueError(f"scrape target {self.job!r}: path {self.path!r} must start with /")
        metric_list(self.metrics)
        if self.workload is not None and self.port not in _container_ports(self.workload):
            raise ValueError(f"scrape target {self.job!r}: workload {self.workload.name!r} has no container "
                             f"port {self.port}")

    @property
    def target_peer(self) -> Peer:
        peer = self.workload.peer if self.workload is not None else self.peer
        assert peer is not None  # __post_init__ requires one of them
        return peer

    @property
    def namespace(self) -> str | None:
        """None: our own namespace."""
        return self.peer.namespace if self.peer is not None else None

    @property
    def service_name(self) -> str:
        if self.workload is None:
            raise ValueError(f"scrape target {self.job!r} is not ours")
        return f"{self.workload.name}-metrics"


def _container_ports(workload: Workload) -> set[int]:
    spec = workload.pod_template.spec
    containers = list(spec.containers) if spec is not None else []
    return {int(port.container_port) for c in containers for port in (c.ports or [])}

