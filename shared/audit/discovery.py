"""Discovery: a plan of work items (subscriptions), then clusters and pools through the mgmt SDKs, concurrent with a bound."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import (
    AzureError,
    DeserializationError,
)

from shared import azure_clients
from shared.azure_clients import describe_error, wire_text
from shared.settings import AzureSettings

from .model import PoolRecord, ReportRow, WorkItem
from .settings import AuditSettings

log = logging.getLogger("autopilot.audit.discovery")

Progress = Callable[[str, int, int], None]  # (phase, done, total)
# What Azure (or the way to it) can answer: HTTP errors, connection trouble, bodies the SDK cannot read.
SDK_ERRORS = (AzureError, DeserializationError)


def resource_group_of(resource_id: str | None) -> str:
    parts = (resource_id or "").split("/")
    for i, part in enumerate(parts[:-1]):
        if part.lower() == "resourcegroups":
            return parts[i + 1]
    return ""


def in_shard(subscription_id: str, shard: tuple[int, int]) -> bool:
    """Stable assignment of a subscription to one of `count` shards (same answer on every machine, every run)."""
    index, count = shard
    if count <= 1:
        return True
    digest = hashlib.sha256(subscription_id.lower().encode()).digest()
    return int.from_bytes(digest[:8], "big") % count == index


class Clients:
    """The run's management clients: one shared HTTP session (pooled connections), one AKS client per subscription."""

    def __init__(self, azure: AzureSettings, concurrency: int) -> None:
        import requests
        from azure.core.pipeline.transport import RequestsTransport

        self.azure = azure
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=max(10, concurrency + 4))
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self._transport_kwargs = {"transport": RequestsTransport(session=self.session, session_owner=False)}
        self._aks: dict[str, Any] = {}
        self._lock = threading.Lock()

    def subscriptions(self) -> Any:
        return azure_clients.subscription_client(self.azure, **self._transport_kwargs)

    def aks(self, subscription_id: str) -> Any:
        with self._lock:
            client = self._aks.get(subscription_id)
            if client is None:
                client = azure_clients.container_service_client(self.azure, subscription_id, **self._transport_kwargs)
                self._aks[subscription_id] = client
            return client

    def close(self) -> None:
        self.session.close()


@dataclass
class ClusterInfo:
    subscription_id: str
    subscription_name: str
    resource_group: str
    name: str
    kubernetes_version: str | None
    provisioning_state: str | None
    power_state: str | None
    tags: dict[str, str]
    profiles: list[Any] | None = None  # the cluster listing's agentPoolProfiles (used when AUTOPILOT_AUDIT_POOL_SOURCE=cluster)


@dataclass
class Discovery:
    work: list[WorkItem]
    pools: list[PoolRecord] = field(default_factory=list)
    errors: list[ReportRow] = field(default_factory=list)  # subscriptions or clusters that could not be read
    clusters: int = 0


def plan(settings: AuditSettings, clients: Clients) -> tuple[list[WorkItem], list[ReportRow]]:
    """The work items of this run: the configured subscriptions, or every one the identity can read; then this shard's part."""
    errors: list[ReportRow] = []
    if settings.subscriptions:
        names: dict[str, str] = {}
        try:  # one request for readable names in the report; the configured list stays authoritative
            names = {sub.subscription_id: sub.display_name or "" for sub in clients.subscriptions().subscriptions.list()}
        except SDK_ERRORS as exc:
            log.info("subscription names unavailable: %s", describe_error(exc))
        items = [WorkItem(s, names.get(s, "")) for s in settings.subscriptions]
    else:
        try:
            subs = list(clients.subscriptions().subscriptions.list())
        except SDK_ERRORS as exc:
            errors.append(error_row("", "", "", f"cannot list subscriptions: {describe_error(exc)}"))
            subs = []
        items = []
        for sub in subs:
            state = str(getattr(sub, "state", "") or "")
            if state.lower() in ("disabled", "deleted"):
                log.info("skipping subscription %s: state %s", sub.subscription_id, state)
                continue
            items.append(WorkItem(sub.subscription_id, sub.display_name or ""))
    items = [w for w in items if in_shard(w.subscription_id, settings.shard)]
    items.sort(key=lambda w: w.subscription_id)
    return items, errors


def error_row(subscription_id: str, resource_group: str, cluster: str, message: str, subscription_name: str = "") -> ReportRow:
    return ReportRow(
        subscription_id=subscription_id, subscription_name=subscription_name, resource_group=resource_group, cluster=cluster,
        pool="", os_type=None, os_sku=None, kubernetes_version=None, state="error", reason=message,
    )


def pool_record(cluster: ClusterInfo, pool: Any) -> PoolRecord:
    """Facts from an SDK AgentPool (and its cluster)."""
    profile = getattr(pool, "artifact_streaming_profile", None)
    power = getattr(pool, "power_state", None)
    return PoolRecord(
        subscription_id=cluster.subscription_id,
        subscription_name=cluster.subscription_name,
        resource_group=cluster.resource_group,
        cluster=cluster.name,
        pool=pool.name,
        os_type=wire_text(pool.os_type),
        os_sku=wire_text(pool.os_sku),
        kubernetes_version=pool.current_orchestrator_version or pool.orchestrator_version or cluster.kubernetes_version,
        provisioning_state=wire_text(pool.provisioning_state),
        power_state=wire_text(getattr(power, "code", None)),
        streaming_enabled=None if profile is None else profile.enabled,
        workload_runtime=wire_text(pool.workload_runtime),
        pool_tags=dict(pool.tags or {}),
        cluster_tags=dict(cluster.tags),
        cluster_provisioning_state=cluster.provisioning_state,
        cluster_power_state=cluster.power_state,
        etag=pool.e_tag,
    )


def discover(settings: AuditSettings, clients: Clients, work: list[WorkItem], progress: Progress | None = None) -> Discovery:
    """Clusters of every work item, then pools of every cluster; each phase runs at most `concurrency` requests at a time."""
    result = Discovery(work=work)
    done = [0]
    lock = threading.Lock()

    def tick(phase: str, total: int) -> None:
        with lock:
            done[0] += 1
            if progress:
                progress(phase, done[0], total)

    def list_clusters(item: WorkItem) -> list[ClusterInfo] | ReportRow:
        try:
            found = []
            for mc in clients.aks(item.subscription_id).managed_clusters.list():
                found.append(ClusterInfo(
                    subscription_id=item.subscription_id, subscription_name=item.display_name,
                    resource_group=resource_group_of(mc.id), name=mc.name,
                    kubernetes_version=mc.current_kubernetes_version or mc.kubernetes_version,
                    provisioning_state=wire_text(mc.provisioning_state),
                    power_state=wire_text(getattr(mc.power_state, "code", None)), tags=dict(mc.tags or {}),
                    profiles=list(mc.agent_pool_profiles or []) if settings.pool_source == "cluster" else None,
                ))
            return found
        except SDK_ERRORS as exc:
            return error_row(item.subscription_id, "", "", f"cannot list clusters: {describe_error(exc)}", item.display_name)
        finally:
            tick("subscriptions", len(work))

    def list_pools(cluster: ClusterInfo, total: int) -> list[PoolRecord] | ReportRow:
        try:
            pools = clients.aks(cluster.subscription_id).agent_pools.list(cluster.resource_group, cluster.name)
            return [pool_record(cluster, p) for p in pools]
        except SDK_ERRORS as exc:
            return error_row(cluster.subscription_id, cluster.resource_group, cluster.name,
                             f"cannot list node pools: {describe_error(exc)}", cluster.subscription_name)
        finally:
            tick("clusters", total)

    with ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="audit-discovery") as pool:
        clusters: list[ClusterInfo] = []
        for listed in pool.map(list_clusters, work):
            if isinstance(listed, ReportRow):
                result.errors.append(listed)
            else:
                clusters.extend(listed)
        result.clusters = len(clusters)
        if settings.pool_source == "cluster":  # one request per subscription page instead of one per cluster
            result.pools = [pool_record(c, p) for c in clusters for p in c.profiles or []]
            return result
        done[0] = 0
        for outcome in pool.map(lambda c: list_pools(c, len(clusters)), clusters):
            if isinstance(outcome, ReportRow):
                result.errors.append(outcome)
            else:
                result.pools.extend(outcome)
    return result
