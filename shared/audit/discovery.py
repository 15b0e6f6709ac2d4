"""Discovery: a plan of work items (subscriptions), then each item's clusters and pools read from ARM as plain JSON pages."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    DeserializationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    map_error,
)
from azure.core.paging import ItemPaged
from azure.core.rest import HttpRequest
from azure.mgmt.core.exceptions import ARMErrorFormat

from shared import azure_clients
from shared.azure_clients import describe_error, wire_text
from shared.settings import AzureSettings

from .model import PoolRecord, ReportRow, WorkItem
from .settings import AuditSettings

log = logging.getLogger("autopilot.audit.discovery")

Progress = Callable[[str, int, int], None]  # (phase, done, total)
# What Azure (or the way to it) can answer: HTTP errors, connection trouble, bodies the SDK cannot read.
SDK_ERRORS = (AzureError, DeserializationError)
_ERROR_MAP = {401: ClientAuthenticationError, 404: ResourceNotFoundError, 409: ResourceExistsError}
CLUSTERS_PATH = "/subscriptions/{sub}/providers/Microsoft.ContainerService/managedClusters"
POOLS_PATH = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerService/managedClusters/{cluster}/agentPools"


class UntrustedLinkError(AzureError):
    """A list page's nextLink points away from the ARM endpoint: it would carry the identity's token elsewhere."""


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
    """The run's management clients: one transport (pooled connections sized to the concurrency, the ARM profile's
    timeouts, every attempt capped to the applied deadline) shared by the reader and one AKS client per subscription."""

    def __init__(self, azure: AzureSettings, concurrency: int) -> None:
        import requests

        self.azure = azure
        self.profile = azure_clients.ARM_PROFILE.sized(concurrency + 4)
        self.transport = azure_clients.transport(self.profile)
        self.transport.open()
        # What requests would look up in the environment on every request (proxies, no_proxy, netrc, the CA bundle) is
        # looked up once: per request it cost more CPU than the rest of a list page's client-side work.
        session = self.transport.session
        session.trust_env = False
        session.proxies = requests.utils.get_environ_proxies(azure.arm_endpoint)
        self.transport.connection_config.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        self._transport_kwargs = {"transport": self.transport, "profile": self.profile}
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

    def reader(self) -> Any:
        """One AKS client for every list page of the run: `send_request` takes the path as given, so the client's own
        subscription does not matter, and building one client (its serializer over every model) per subscription would
        cost more CPU than a subscription's pages."""
        return self.aks("00000000-0000-0000-0000-000000000000")

    def close(self) -> None:
        self.transport.close()


@dataclass
class ClusterInfo:
    """What the rules need of a cluster (from a listing page or an SDK model)."""

    subscription_id: str
    subscription_name: str
    resource_group: str
    name: str
    kubernetes_version: str | None
    provisioning_state: str | None
    power_state: str | None
    tags: dict[str, str]
    profiles: list[dict[str, Any]] | None = None  # the listing's agentPoolProfiles (AUTOPILOT_AUDIT_POOL_SOURCE=cluster)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.subscription_id, self.resource_group.lower(), self.name.lower())


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


# ---------------------------------------------------------------------------------------------- plain JSON list pages


def json_pages(client: Any, path: str, arm_endpoint: str) -> Iterator[dict[str, Any]]:
    """The items of every page of an ARM list, through the SDK client's own pipeline (auth, retries, logging) as plain JSON.

    Paging is azure-core's (`ItemPaged` by page, following `nextLink` with the client's api-version, as the generated
    operations do); a nextLink on another host than the ARM endpoint is refused before any token could follow it.
    """
    api_version = client._config.api_version  # the version the SDK models (and the remediation's GET/PUT) speak
    arm_host = urllib.parse.urlsplit(arm_endpoint).netloc.lower()

    def get_next(next_link: str | None = None) -> Any:
        if next_link is None:
            request = HttpRequest("GET", path, params={"api-version": api_version})
        else:
            parsed = urllib.parse.urlsplit(next_link)
            if parsed.netloc.lower() != arm_host or parsed.scheme != "https":
                raise UntrustedLinkError(f"nextLink {parsed.scheme}://{parsed.netloc} is not the ARM endpoint {arm_host}; not followed")
            params = {k: v for k, v in urllib.parse.parse_qs(parsed.query).items()}
            params["api-version"] = [api_version]
            request = HttpRequest("GET", urllib.parse.urljoin(next_link, parsed.path), params=params)
        # The pipeline response: its ContentDecodePolicy has already parsed the JSON body (context "deserialized_data"),
        # so the page is not parsed a second time here.
        piped = client.send_request(request, _return_pipeline_response=True)
        response = piped.http_response
        if response.status_code != 200:
            map_error(status_code=response.status_code, response=response, error_map=_ERROR_MAP)
            raise HttpResponseError(response=response, error_format=ARMErrorFormat)
        return piped

    def extract(piped: Any) -> tuple[str | None, Iterator[dict[str, Any]]]:
        try:
            body = piped.context.get("deserialized_data")
            if body is None:
                body = json.loads(piped.http_response.content)
            value = list(body.get("value") or [])
        except (ValueError, AttributeError, TypeError) as exc:
            raise DeserializationError(f"list page is not the JSON ARM sends: {exc}") from None
        return body.get("nextLink") or None, iter(value)

    pages: Iterator[Iterator[dict[str, Any]]] = ItemPaged(get_next, extract).by_page()
    for page in pages:
        yield from page


def cluster_from_json(item: WorkItem, raw: dict[str, Any], with_profiles: bool) -> ClusterInfo:
    props = raw.get("properties") or {}
    power = props.get("powerState") or {}
    return ClusterInfo(
        subscription_id=item.subscription_id, subscription_name=item.display_name,
        resource_group=resource_group_of(raw.get("id")), name=str(raw.get("name") or ""),
        kubernetes_version=props.get("currentKubernetesVersion") or props.get("kubernetesVersion"),
        provisioning_state=props.get("provisioningState"), power_state=power.get("code"), tags=dict(raw.get("tags") or {}),
        profiles=list(props.get("agentPoolProfiles") or []) if with_profiles else None,
    )


def pool_from_json(cluster: ClusterInfo, raw: dict[str, Any]) -> PoolRecord:
    """Facts from an agent pool resource (`{name, properties}`) or a cluster listing's flat agentPoolProfiles entry."""
    props = raw.get("properties")
    if not isinstance(props, dict):
        props = raw
    profile = props.get("artifactStreamingProfile")
    return PoolRecord(
        subscription_id=cluster.subscription_id, subscription_name=cluster.subscription_name,
        resource_group=cluster.resource_group, cluster=cluster.name, pool=str(raw.get("name") or ""),
        os_type=props.get("osType"), os_sku=props.get("osSKU"),
        kubernetes_version=props.get("currentOrchestratorVersion") or props.get("orchestratorVersion") or cluster.kubernetes_version,
        provisioning_state=props.get("provisioningState"), power_state=(props.get("powerState") or {}).get("code"),
        streaming_enabled=None if profile is None else profile.get("enabled"), workload_runtime=props.get("workloadRuntime"),
        pool_tags=props.get("tags") or {}, cluster_tags=cluster.tags, cluster_provisioning_state=cluster.provisioning_state,
        cluster_power_state=cluster.power_state, etag=props.get("eTag"), vm_size=props.get("vmSize"),
    )


def pool_record(cluster: ClusterInfo, pool: Any) -> PoolRecord:
    """Facts from an SDK AgentPool model (and its cluster): what a remediation reads right before it writes."""
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
        vm_size=wire_text(getattr(pool, "vm_size", None)),
    )


def cluster_from_model(subscription_id: str, subscription_name: str, mc: Any) -> ClusterInfo:
    """A ClusterInfo from an SDK ManagedCluster model."""
    return ClusterInfo(
        subscription_id=subscription_id, subscription_name=subscription_name, resource_group=resource_group_of(mc.id),
        name=mc.name, kubernetes_version=mc.current_kubernetes_version or mc.kubernetes_version,
        provisioning_state=wire_text(mc.provisioning_state), power_state=wire_text(getattr(mc.power_state, "code", None)),
        tags=dict(mc.tags or {}),
    )


def list_clusters(clients: Clients, item: WorkItem, with_profiles: bool) -> Iterator[ClusterInfo]:
    client = clients.reader()
    path = CLUSTERS_PATH.format(sub=urllib.parse.quote(item.subscription_id, safe=""))
    for raw in json_pages(client, path, clients.azure.arm_endpoint):
        yield cluster_from_json(item, raw, with_profiles)


def list_pools(clients: Clients, cluster: ClusterInfo) -> list[PoolRecord]:
    if cluster.profiles is not None:
        return [pool_from_json(cluster, p) for p in cluster.profiles]
    client = clients.reader()
    path = POOLS_PATH.format(sub=urllib.parse.quote(cluster.subscription_id, safe=""),
                             rg=urllib.parse.quote(cluster.resource_group, safe=""), cluster=urllib.parse.quote(cluster.name, safe=""))
    return [pool_from_json(cluster, raw) for raw in json_pages(client, path, clients.azure.arm_endpoint)]
