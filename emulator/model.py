"""The emulator's in-memory world: subscriptions, registries with their images, AKS clusters and pools, event routes."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

STREAMING_ARTIFACT_TYPE = "application/vnd.azure.artifact.streaming.v1"


def utcnow_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1e6) % 1000000:06d}Z"


def new_etag() -> str:
    return f'"{uuid.uuid4()}"'


# --------------------------------------------------------------------------------------------------- registry data


@dataclass
class Blob:
    digest: str
    size: int
    content: bytes | None = None  # None: a synthetic layer whose size is declared, never uploaded (e.g. 40 GB images)
    media_type: str | None = None


@dataclass
class Manifest:
    digest: str
    media_type: str
    content: bytes  # the exact bytes that were pushed; the digest is their sha256
    artifact_type: str | None = None  # OCI artifactType (or the config media type for artifacts)
    subject: str | None = None  # digest of the manifest this one refers to (referrers API)
    created: str = field(default_factory=utcnow_iso)
    size: int = 0


@dataclass
class TagRecord:
    name: str
    digest: str
    created: str = field(default_factory=utcnow_iso)
    updated: str = field(default_factory=utcnow_iso)


@dataclass
class StreamingOperation:
    """One artifact-streaming conversion, as `/acr/v1/{repo}/_operations/{id}` shows it."""

    id: str
    repository: str
    digest: str
    status: str = "NotStarted"  # NotStarted | Running | Succeeded | Failed | Canceled
    progress: int = 0
    start_time: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    details: str = ""
    error_code: str | None = None  # one of the documented failure codes when status == Failed
    referrer_digest: str | None = None  # the streaming artifact created on success


@dataclass
class Repository:
    name: str
    manifests: dict[str, Manifest] = field(default_factory=dict)
    tags: dict[str, TagRecord] = field(default_factory=dict)
    convert_pushed_images: bool = False
    operations: dict[str, StreamingOperation] = field(default_factory=dict)  # id -> operation, in creation order
    created: str = field(default_factory=utcnow_iso)

    def operations_for(self, digest: str) -> list[StreamingOperation]:
        return [op for op in self.operations.values() if op.digest == digest]


@dataclass
class ScopeMapToken:
    """A registry token (scope map) usable with `grant_type=password`."""

    username: str
    password: str
    actions: list[str]  # e.g. ["repositories/*/content/read", "repositories/app/content/write"]


# What each built-in role lets an AAD identity do on a registry's data plane (the refresh token's `permissions.actions`).
ACR_ROLE_PERMISSIONS: dict[str, list[str]] = {
    "AcrPull": ["read", "metadata/read"],
    "AcrPush": ["read", "write", "metadata/read", "metadata/write"],
    "AcrDelete": ["delete"],
    "Contributor": ["read", "write", "delete", "metadata/read", "metadata/write", "deleted/read", "deleted/restore/action", "catalog/read"],
    "Owner": ["read", "write", "delete", "metadata/read", "metadata/write", "deleted/read", "deleted/restore/action", "catalog/read"],
    # ABAC-enabled roles: the only repository roles an AbacRepositoryPermissions registry honours
    "Container Registry Repository Reader": ["read", "metadata/read"],
    "Container Registry Repository Writer": ["read", "write", "metadata/read", "metadata/write"],
    "Container Registry Repository Contributor": ["read", "write", "delete", "metadata/read", "metadata/write"],
    "Container Registry Repository Catalog Lister": ["catalog/read"],
}
# In ABAC-enabled registries the legacy Acr* roles are not honoured, and the broad roles (Owner, Contributor, Reader) grant
# control-plane permissions only (ACR ABAC docs; Microsoft Tech Community "ACR repository permissions with ABAC", Nov 2025).
LEGACY_ACR_ROLES = frozenset({"AcrPull", "AcrPush", "AcrDelete", "Owner", "Contributor", "Reader"})
ROLE_ASSIGNMENT_MODES = ("LegacyRegistryPermissions", "AbacRepositoryPermissions")


@dataclass
class Registry:
    name: str
    subscription_id: str
    resource_group: str
    location: str = "eastus"
    sku: str = "Premium"  # Basic | Standard | Premium
    encryption: str = "disabled"  # "enabled" means a customer-managed key
    admin_user_enabled: bool = False
    admin_password: str = ""
    tokens: list[ScopeMapToken] = field(default_factory=list)
    repositories: dict[str, Repository] = field(default_factory=dict)
    blobs: dict[str, Blob] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)  # ARM resource tags
    login_server: str = ""  # "127.0.0.1:PORT", set when the emulator binds the registry's port
    url: str = ""  # "https://127.0.0.1:PORT"
    # Data-plane roles AAD identities hold on this registry (keys of ACR_ROLE_PERMISSIONS); None: every permission.
    identity_roles: list[str] | None = None
    # azureADAuthenticationAsArmPolicy: False means /oauth2/exchange refuses ARM-audience AAD tokens (Azure Policy can enforce it)
    aad_auth_as_arm: bool = True
    role_assignment_mode: str = "LegacyRegistryPermissions"  # or AbacRepositoryPermissions (legacy Acr* roles then grant nothing)

    @property
    def resource_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.ContainerRegistry/registries/{self.name}"
        )


# --------------------------------------------------------------------------------------------------- AKS


@dataclass
class AgentPool:
    name: str
    os_type: str = "Linux"  # Linux | Windows
    os_sku: str | None = "Ubuntu"  # Ubuntu | AzureLinux | AzureContainerLinux | Flatcar | Windows2022 | ...
    orchestrator_version: str = "1.30.4"
    mode: str = "User"  # System | User
    count: int = 3
    vm_size: str = "Standard_D4s_v5"
    provisioning_state: str = "Succeeded"
    power_state: str = "Running"  # Running | Stopped
    artifact_streaming: bool | None = None  # None: the profile is null (off)
    workload_runtime: str | None = None  # OCIContainer | WasmWasi | KataMshvVmIsolation | KataVmIsolation
    tags: dict[str, str] = field(default_factory=dict)
    etag: str = field(default_factory=new_etag)
    operation_until: float = 0.0  # monotonic time until which an operation runs (409 meanwhile)
    extra: dict[str, Any] = field(default_factory=dict)  # other properties a client PUT, echoed back
    reimages: int = 0  # node reimages caused by accepted writes (streaming on/off, version upgrades)


@dataclass
class Cluster:
    name: str
    subscription_id: str
    resource_group: str
    location: str = "eastus"
    kubernetes_version: str = "1.30.4"
    provisioning_state: str = "Succeeded"
    power_state: str = "Running"
    tags: dict[str, str] = field(default_factory=dict)
    pools: dict[str, AgentPool] = field(default_factory=dict)
    operation_until: float = 0.0  # a cluster-level operation (upgrade...) running: pool writes get 409

    @property
    def resource_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.ContainerService/managedClusters/{self.name}"
        )


@dataclass
class Subscription:
    id: str
    display_name: str
    tenant_id: str
    state: str = "Enabled"
    accessible: bool = True  # False: listed, but every read inside it answers 403 AuthorizationFailed


# --------------------------------------------------------------------------------------------------- Event Grid


@dataclass
class EventSubscription:
    """A webhook subscription on a registry's system topic."""

    name: str
    registry: str  # registry name
    endpoint: str  # webhook URL
    schema: str = "EventGridSchema"  # EventGridSchema | CloudEventSchemaV1_0
    included_event_types: list[str] = field(default_factory=list)  # empty: all
    max_delivery_attempts: int = 30
    retry_base_seconds: float = 10.0  # first retry delay; doubles each attempt (capped)
    retry_max_seconds: float = 600.0
    duplicate_rate: float = 0.0  # share of events delivered twice (at-least-once delivery)
    dead_letter: bool = True  # write undeliverable events to the dead-letter folder
    # WebHook (handshake first; 400/401/403/413 not retried) or AzureFunction (Event Grid calls the function through its
    # resource: no handshake; 400/403/413 not retried), per Event Grid's delivery-and-retry docs
    endpoint_type: str = "WebHook"
    validated: bool = False


@dataclass
class EmulatorSettings:
    """Timing and behaviour knobs of one scenario (all optional in the YAML)."""

    lro_seconds: float = 2.0  # how long an agent-pool PUT stays Updating
    conversion_seconds: float = 1.0  # how long a streaming conversion runs
    unknown_error_rate: float = 0.0  # share of conversions that fail with UNKNOWN_ERROR
    page_size: int = 100  # ARM list page size (nextLink beyond it)
    acr_token_ttl_seconds: int = 4500  # ACR access tokens: exp - nbf = 4500 s (75 min) in the recorded exchanges 3, 8, 18
    aad_token_ttl_seconds: int = 3600
    eventgrid_retry_base_seconds: float | None = None  # overrides every subscription's retry_base_seconds
    max_image_gb: float = 30.0  # conversions of larger images take long; documented guidance, not a failure
    auto_conversion_delay_seconds: float = 0.0  # convertPushedImages: how long after the push ACR's own conversion starts


@dataclass
class ArmWrite:
    """One write ARM accepted (an agent pool PUT, or a change made behind ARM's back through the admin API)."""

    seq: int
    ts: float
    actor: str  # "arm" (a client PUT) | "admin" (the emulator's control API)
    subscription_id: str
    resource_group: str
    cluster: str
    pool: str
    created: bool
    changes: dict[str, Any]  # property -> [old, new] for every property the write changed
    operation_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class RequestRecord:
    seq: int
    ts: float
    service: str  # identity | arm | acr | eventgrid | admin
    endpoint_class: str  # e.g. arm.agentpools, acr.auth, acr.streaming
    host: str  # registry name for acr, "" otherwise
    method: str
    path: str
    query: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)  # the ones that matter (web.LOGGED_HEADERS); Authorization: scheme only
    body: str | None = None  # write bodies: text (secrets redacted, capped) or a `<N bytes type>` summary

    def as_dict(self) -> dict[str, Any]:
        out = self.__dict__.copy()
        out["headers"] = dict(self.headers)
        return out


class World:
    """Everything the emulator holds. Handlers run on one event loop; `lock` guards access from other threads."""

    def __init__(self, tenant_id: str, settings: EmulatorSettings, seed: int = 0) -> None:
        self.tenant_id = tenant_id
        self.settings = settings
        self.seed = seed
        self.subscriptions: dict[str, Subscription] = {}
        self.registries: dict[str, Registry] = {}  # by name (registry names are globally unique in Azure)
        self.clusters: dict[tuple[str, str, str], Cluster] = {}  # (subscription, resource group lower, name lower)
        self.event_subscriptions: dict[str, EventSubscription] = {}
        self.requests: list[RequestRecord] = []
        self.arm_writes: list[ArmWrite] = []  # every accepted agent pool write, in order
        self.lock = threading.RLock()
        self._listeners: list[Callable[[str, Registry, dict[str, Any]], None]] = []

    # -- requests
    def record(self, **fields: Any) -> RequestRecord:
        with self.lock:
            rec = RequestRecord(seq=len(self.requests), ts=time.time(), **fields)
            self.requests.append(rec)
            return rec

    # -- registry events (ImagePushed / ImageDeleted ...): the data plane emits, Event Grid listens
    def add_listener(self, listener: Callable[[str, Registry, dict[str, Any]], None]) -> None:
        self._listeners.append(listener)

    def emit(self, event_type: str, registry: Registry, data: dict[str, Any]) -> None:
        for listener in list(self._listeners):
            listener(event_type, registry, data)

    # -- lookups
    def registry_by_login_server(self, login_server: str) -> Registry | None:
        for reg in self.registries.values():
            if reg.login_server == login_server:
                return reg
        return None

    def cluster(self, subscription_id: str, resource_group: str, name: str) -> Cluster | None:
        return self.clusters.get((subscription_id, resource_group.lower(), name.lower()))

    def add_cluster(self, cluster: Cluster) -> None:
        self.clusters[(cluster.subscription_id, cluster.resource_group.lower(), cluster.name.lower())] = cluster
