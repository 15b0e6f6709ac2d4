"""The emulated Azure Resource Manager: subscriptions, ACR registries, AKS clusters and agent pools, as Azure answers them."""

from __future__ import annotations

import json
import math
import re
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from aiohttp import web

from ..model import AgentPool, ArmWrite, Cluster, Registry, Subscription, World, new_etag
from ..tokens import bearer
from ..web import Context, arm_error, json_response, read_json
from .identity import PRINCIPAL_OID, audience_ok

ARM_AUDIENCES = (
    "https://management.azure.com",
    "https://management.core.windows.net",
)
AKS_NAMESPACE = "microsoft.containerservice"
ACR_NAMESPACE = "microsoft.containerregistry"
POOL_TYPE = "Microsoft.ContainerService/managedClusters/agentPools"
CLUSTER_TYPE = "Microsoft.ContainerService/ManagedClusters"
REGISTRY_TYPE = "Microsoft.ContainerRegistry/registries"
# artifactStreamingProfile is part of the AKS API from 2026-03-01 (GA) and from the 2023-08-02-preview previews on.
STREAMING_GA_API = "2026-03-01"
STREAMING_PREVIEW_API = "2023-08-02-preview"
STREAMING_MIN_KUBERNETES = (1, 25)
IDLE_STATES = ("Succeeded", "Failed", "Canceled")
PENDING_OPERATION_HELP = "See https://aka.ms/aks-pending-operation for more details"
API_VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
POOL_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
UNSUPPORTED_STREAMING_OS_SKUS = ("AzureContainerLinux", "Flatcar")
KATA_RUNTIMES = ("KataMshvVmIsolation", "KataVmIsolation", "KataCcIsolation")
# Properties a client cannot change on an existing pool (AKS answers 400 PropertyChangeNotAllowed).
IMMUTABLE = {"osType": "os_type", "vmSize": "vm_size", "workloadRuntime": "workload_runtime"}
# Read-only properties a client may send back from a GET; ignored on PUT.
READ_ONLY = {"eTag", "provisioningState", "currentOrchestratorVersion", "nodeImageVersion", "status", "virtualMachineNodesStatus"}
MODELLED = {"count", "vmSize", "osType", "osSKU", "orchestratorVersion", "mode", "powerState", "workloadRuntime", "tags",
            "artifactStreamingProfile"}


def _now_iso(ts: float | None = None) -> str:
    ts = time.time() if ts is None else ts
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1e6) % 1000000:06d}Z"


def _version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split(".")[:3])
    except ValueError:
        return (0,)


def _strip_etag(value: str) -> str:
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')


# --------------------------------------------------------------------------------------------------- classification


def classify(path: str) -> str | None:
    """Endpoint class of a management-port request ARM serves (`arm.<kind>`), None for paths other services own."""
    if path.startswith("/_emulator"):
        return None
    lower = path.lower().rstrip("/")
    if lower == "/metadata/endpoints":
        return "arm.metadata"
    if not lower.startswith("/subscriptions"):
        return None
    if lower.count("/") <= 2:
        return "arm.subscriptions"
    if "/locations/" in lower and ("/operations/" in lower or "/operationresults/" in lower):
        return "arm.operations"
    if re.match(r"^/subscriptions/[^/]+(/resourcegroups/[^/]+)?/resources$", lower):
        return "arm.resources"
    if "/agentpools" in lower:
        return "arm.agentpools"
    if f"/{AKS_NAMESPACE}/managedclusters" in lower:
        return "arm.clusters"
    if f"/{ACR_NAMESPACE}/" in lower:
        return "arm.registries"
    return "arm.other"


# --------------------------------------------------------------------------------------------------- state


@dataclass
class AksOperation:
    """One AKS long-running operation (an agent pool PUT, or one the admin API started)."""

    id: str
    cluster_key: tuple[str, str, str]
    pool: str | None  # None: a cluster-level operation
    start: float
    deadline: float  # monotonic
    final_state: str = "Succeeded"
    previous_version: str | None = None  # the version nodes run until an upgrade finishes
    status: str = "InProgress"
    end: float | None = None


@dataclass
class _Index:
    signature: tuple[int, int, int]
    resource_groups: dict[tuple[str, str], str]  # (subscription, rg lower) -> rg name as first seen
    clusters_by_sub: dict[str, list[Cluster]]
    clusters_by_rg: dict[tuple[str, str], list[Cluster]]
    registries_by_sub: dict[str, list[Registry]]
    registries_by_rg: dict[tuple[str, str], list[Registry]]
    registries_by_key: dict[tuple[str, str, str], Registry]


@dataclass
class TokenBucket:
    """ARM's request throttling: a bucket per subscription and kind, refilled continuously (https://aka.ms/arm-throttling)."""

    capacity: float
    refill_per_second: float
    tokens: float
    updated: float  # monotonic

    def take(self, now: float) -> tuple[bool, int, float]:
        """(allowed, tokens left, seconds until one is available)."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.refill_per_second)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True, int(self.tokens), 0.0
        return False, 0, (1 - self.tokens) / self.refill_per_second if self.refill_per_second > 0 else 3600.0


# Azure's documented per-subscription limits: reads 250 with 25 per second refill, writes 200 with 10 per second.
DEFAULT_THROTTLE = {"reads_capacity": 250.0, "reads_refill": 25.0, "writes_capacity": 200.0, "writes_refill": 10.0}


@dataclass
class ArmState:
    """ARM's own bookkeeping: operations, cluster ETags and the lookup index (rebuilt when the world's shape changes)."""

    operations: dict[str, AksOperation] = field(default_factory=dict)
    pending: dict[tuple, str] = field(default_factory=dict)  # (cluster key, pool or None) -> operation id
    cluster_etags: dict[tuple[str, str, str], str] = field(default_factory=dict)
    created: str = field(default_factory=_now_iso)
    throttle: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_THROTTLE))
    buckets: dict[tuple[str, str], TokenBucket] = field(default_factory=dict)
    _index: _Index | None = None

    def take_token(self, subscription_id: str, kind: str) -> tuple[bool, int, float]:
        """Spend one request of `kind` (reads | writes) against a subscription's bucket."""
        now = time.monotonic()
        bucket = self.buckets.get((subscription_id.lower(), kind))
        if bucket is None:
            capacity = self.throttle[f"{kind}_capacity"]
            bucket = self.buckets[(subscription_id.lower(), kind)] = TokenBucket(capacity, self.throttle[f"{kind}_refill"], capacity, now)
        return bucket.take(now)

    def index(self, world: World) -> _Index:
        sig = (len(world.subscriptions), len(world.clusters), len(world.registries))
        if self._index is not None and self._index.signature == sig:
            return self._index
        rgs: dict[tuple[str, str], str] = {}
        by_sub: dict[str, list[Cluster]] = {}
        by_rg: dict[tuple[str, str], list[Cluster]] = {}
        for key in sorted(world.clusters):
            cl = world.clusters[key]
            rgs.setdefault((cl.subscription_id, cl.resource_group.lower()), cl.resource_group)
            by_sub.setdefault(cl.subscription_id, []).append(cl)
            by_rg.setdefault((cl.subscription_id, cl.resource_group.lower()), []).append(cl)
        r_sub: dict[str, list[Registry]] = {}
        r_rg: dict[tuple[str, str], list[Registry]] = {}
        r_key: dict[tuple[str, str, str], Registry] = {}
        for name in sorted(world.registries, key=str.lower):
            reg = world.registries[name]
            rgs.setdefault((reg.subscription_id, reg.resource_group.lower()), reg.resource_group)
            r_sub.setdefault(reg.subscription_id, []).append(reg)
            r_rg.setdefault((reg.subscription_id, reg.resource_group.lower()), []).append(reg)
            r_key[(reg.subscription_id, reg.resource_group.lower(), reg.name.lower())] = reg
        self._index = _Index(sig, rgs, by_sub, by_rg, r_sub, r_rg, r_key)
        return self._index


def arm_state(ctx: Context) -> ArmState:
    state = ctx.extras.get("arm")
    if state is None:
        state = ctx.extras["arm"] = ArmState()
    return state


def _cluster_key(cluster: Cluster) -> tuple[str, str, str]:
    return (cluster.subscription_id, cluster.resource_group.lower(), cluster.name.lower())


def _busy(state: str, until: float, now: float) -> bool:
    return state not in IDLE_STATES or until > now


# --------------------------------------------------------------------------------------------------- operations


def start_operation(ctx: Context, cluster: Cluster, pool: AgentPool | None, seconds: float, state: str = "Updating",
                    final_state: str = "Succeeded", previous_version: str | None = None) -> AksOperation:
    """Mark a pool (or the cluster, pool=None) busy for `seconds`; it settles to `final_state` afterwards."""
    arm = arm_state(ctx)
    now = time.monotonic()
    superseded = arm.operations.get(arm.pending.get((_cluster_key(cluster), pool.name if pool else None), ""))
    if superseded is not None and superseded.status == "InProgress":
        superseded.status, superseded.end = "Succeeded", time.time()  # its change is in place; the new operation carries on
    op = AksOperation(id=str(uuid.uuid4()), cluster_key=_cluster_key(cluster), pool=pool.name if pool else None, start=time.time(),
                      deadline=now + max(0.0, seconds), final_state=final_state, previous_version=previous_version)
    target: Any = pool if pool is not None else cluster
    target.provisioning_state = state
    target.operation_until = op.deadline
    arm.operations[op.id] = op
    arm.pending[(op.cluster_key, op.pool)] = op.id
    if ctx.loop is not None:
        ctx.loop.call_later(max(0.0, seconds) + 0.001, lambda: settle(ctx, cluster, pool))
    return op


def finish_operation(ctx: Context, cluster: Cluster, pool: AgentPool | None, final_state: str | None = None) -> AksOperation | None:
    """End the running operation on a pool (or the cluster) now."""
    arm = arm_state(ctx)
    op_id = arm.pending.pop((_cluster_key(cluster), pool.name if pool else None), None)
    op = arm.operations.get(op_id) if op_id else None
    target: Any = pool if pool is not None else cluster
    state = final_state or (op.final_state if op else "Succeeded")
    target.provisioning_state = state
    target.operation_until = 0.0
    if pool is not None:
        pool.etag = new_etag()
    else:
        arm.cluster_etags[_cluster_key(cluster)] = new_etag()
    if op is not None:
        op.status = "Succeeded" if state == "Succeeded" else ("Canceled" if state == "Canceled" else "Failed")
        op.end = time.time()
    return op


def settle(ctx: Context, cluster: Cluster, pool: AgentPool | None = None) -> None:
    """Finish a due operation (called on every read, and by a timer at the deadline)."""
    with ctx.world.lock:
        target: Any = pool if pool is not None else cluster
        if target.operation_until and time.monotonic() >= target.operation_until:
            finish_operation(ctx, cluster, pool)


def _settle_cluster(ctx: Context, cluster: Cluster) -> None:
    now = time.monotonic()
    if cluster.operation_until and now >= cluster.operation_until:
        settle(ctx, cluster, None)
    for pool in cluster.pools.values():
        if pool.operation_until and now >= pool.operation_until:
            settle(ctx, cluster, pool)


# --------------------------------------------------------------------------------------------------- JSON shapes


def _api_has_streaming(api_version: str) -> bool:
    if api_version.endswith("-preview"):
        return api_version >= STREAMING_PREVIEW_API
    return api_version >= STREAMING_GA_API


def _node_image_version(pool: AgentPool) -> str:
    if pool.os_type == "Windows":
        return "AKSWindows-2022-containerd-20348.2849.261104"
    sku = pool.os_sku or "Ubuntu"
    family = {"Ubuntu": "AKSUbuntu-2204gen2containerd", "AzureLinux": "AKSAzureLinux-V3gen2",
              "AzureContainerLinux": "AKSAzureContainerLinux-gen2", "Flatcar": "AKSFlatcar-gen2"}.get(sku, f"AKS{sku}-gen2")
    return f"{family}-202611.04.0"


def _default_properties(pool: AgentPool) -> dict[str, Any]:
    """Properties AKS fills in that the world does not model; a client echoing them back changes nothing."""
    return {
        "osDiskSizeGB": 128,
        "osDiskType": "Managed",
        "kubeletDiskType": "OS",
        "maxPods": 30 if pool.os_type == "Windows" else 110,
        "type": "VirtualMachineScaleSets",
        "enableAutoScaling": False,
        "scaleDownMode": "Delete",
        "enableNodePublicIP": False,
        "enableEncryptionAtHost": False,
        "enableUltraSSD": False,
        "upgradeSettings": {"maxSurge": "10%"},
        "enableFIPS": False,
        "securityProfile": {"enableVTPM": False, "enableSecureBoot": False},
    }


def pool_properties(ctx: Context, cluster: Cluster, pool: AgentPool, api_version: str) -> dict[str, Any]:
    """The agent pool's `properties` as AKS returns them (camelCase; unset optionals omitted, as AKS does)."""
    arm = arm_state(ctx)
    op_id = arm.pending.get((_cluster_key(cluster), pool.name))
    op = arm.operations.get(op_id) if op_id else None
    current = op.previous_version if op and op.previous_version else pool.orchestrator_version
    props: dict[str, Any] = {
        "eTag": pool.etag,
        "count": pool.count,
        "vmSize": pool.vm_size,
        "workloadRuntime": pool.workload_runtime or "OCIContainer",
        "provisioningState": pool.provisioning_state,
        "powerState": {"code": pool.power_state},
        "orchestratorVersion": pool.orchestrator_version,
        "currentOrchestratorVersion": current,
        "mode": pool.mode,
        "osType": pool.os_type,
        "nodeImageVersion": _node_image_version(pool),
        **_default_properties(pool),
    }
    if pool.os_sku:
        props["osSKU"] = pool.os_sku
    if pool.tags:
        props["tags"] = dict(pool.tags)
    props.update(pool.extra)
    if pool.artifact_streaming is not None and _api_has_streaming(api_version):
        props["artifactStreamingProfile"] = {"enabled": pool.artifact_streaming}
    else:
        props.pop("artifactStreamingProfile", None)
    return props


def pool_json(ctx: Context, cluster: Cluster, pool: AgentPool, api_version: str) -> dict[str, Any]:
    return {
        "id": f"{cluster.resource_id}/agentPools/{pool.name}",
        "name": pool.name,
        "type": POOL_TYPE,
        "properties": pool_properties(ctx, cluster, pool, api_version),
    }


def cluster_json(ctx: Context, cluster: Cluster, api_version: str) -> dict[str, Any]:
    arm = arm_state(ctx)
    etag = arm.cluster_etags.setdefault(_cluster_key(cluster), new_etag())
    dns_prefix = f"{cluster.name[:40]}-dns"
    fqdn = f"{dns_prefix}-{zlib.crc32(cluster.resource_id.lower().encode()):08x}.hcp.{cluster.location}.azmk8s.io"
    profiles = [{"name": p.name, **pool_properties(ctx, cluster, p, api_version)} for p in cluster.pools.values()]
    body: dict[str, Any] = {
        "id": cluster.resource_id,
        "location": cluster.location,
        "name": cluster.name,
        "type": CLUSTER_TYPE,
        "eTag": etag,
        "properties": {
            "provisioningState": cluster.provisioning_state,
            "powerState": {"code": cluster.power_state},
            "kubernetesVersion": cluster.kubernetes_version,
            "currentKubernetesVersion": cluster.kubernetes_version,
            "dnsPrefix": dns_prefix,
            "fqdn": fqdn,
            "azurePortalFQDN": fqdn.replace(".hcp.", ".portal.hcp."),
            "agentPoolProfiles": profiles,
            "nodeResourceGroup": f"MC_{cluster.resource_group}_{cluster.name}_{cluster.location}",
            "enableRBAC": True,
            "supportPlan": "KubernetesOfficial",
            "networkProfile": {"networkPlugin": "azure", "networkPluginMode": "overlay", "loadBalancerSku": "standard",
                               "podCidr": "10.244.0.0/16", "serviceCidr": "10.0.0.0/16", "dnsServiceIP": "10.0.0.10",
                               "outboundType": "loadBalancer"},
            "maxAgentPools": 100,
            "disableLocalAccounts": False,
            "oidcIssuerProfile": {"enabled": False},
        },
        "identity": {"type": "SystemAssigned", "principalId": str(uuid.uuid5(uuid.NAMESPACE_URL, cluster.resource_id)),
                     "tenantId": ctx.world.tenant_id},
        "sku": {"name": "Base", "tier": "Free"},
    }
    if cluster.tags:
        body["tags"] = dict(cluster.tags)
    return body


def registry_json(ctx: Context, reg: Registry) -> dict[str, Any]:
    """A registry as ACR's ARM API returns it (shape taken from a recorded az CLI session)."""
    created = arm_state(ctx).created
    system_data = {"createdBy": "autopilot-admin@contoso.example", "createdByType": "User", "createdAt": created,
                   "lastModifiedBy": "autopilot-admin@contoso.example", "lastModifiedByType": "User", "lastModifiedAt": created}
    encryption: dict[str, Any] = {"status": "enabled" if reg.encryption == "enabled" else "disabled"}
    body: dict[str, Any] = {
        "sku": {"name": reg.sku, "tier": reg.sku},
        "type": REGISTRY_TYPE,
        "id": reg.resource_id,
        "name": reg.name,
        "location": reg.location,
        "tags": dict(reg.tags),
        "systemData": system_data,
    }
    if reg.encryption == "enabled":
        identity_id = (f"/subscriptions/{reg.subscription_id}/resourceGroups/{reg.resource_group}/providers/"
                       f"Microsoft.ManagedIdentity/userAssignedIdentities/{reg.name}-cmk")
        client_id = str(uuid.uuid5(uuid.NAMESPACE_URL, identity_id))
        encryption["keyVaultProperties"] = {
            "keyIdentifier": f"https://{reg.name}-kv.vault.azure.net/keys/acr-cmk",
            "versionedKeyIdentifier": f"https://{reg.name}-kv.vault.azure.net/keys/acr-cmk/{uuid.uuid5(uuid.NAMESPACE_DNS, reg.name).hex}",
            "identity": client_id,
            "keyRotationEnabled": True,
            "lastKeyRotationTimestamp": created,
        }
        body["identity"] = {"type": "UserAssigned", "userAssignedIdentities": {
            identity_id: {"principalId": str(uuid.uuid5(uuid.NAMESPACE_OID, identity_id)), "clientId": client_id}}}
    premium = reg.sku == "Premium"
    body["properties"] = {
        "loginServer": reg.login_server,
        "creationDate": created,
        "provisioningState": "Succeeded",
        "adminUserEnabled": reg.admin_user_enabled,
        "networkRuleSet": {"defaultAction": "Allow", "ipRules": []} if premium else None,
        "policies": {
            "quarantinePolicy": {"status": "disabled"},
            "trustPolicy": {"type": "Notary", "status": "disabled"},
            "retentionPolicy": {"days": 7, "lastUpdatedTime": created, "status": "disabled"},
            "exportPolicy": {"status": "enabled"},
            "azureADAuthenticationAsArmPolicy": {"status": "enabled" if reg.aad_auth_as_arm else "disabled"},
            "softDeletePolicy": {"retentionDays": 7, "lastUpdatedTime": created, "status": "disabled"},
        },
        "encryption": encryption,
        "dataEndpointEnabled": False,
        "dataEndpointHostNames": [],
        "privateEndpointConnections": [],
        "publicNetworkAccess": "Enabled",
        "networkRuleBypassOptions": "AzureServices",
        "zoneRedundancy": "Disabled",
        "anonymousPullEnabled": False,
        "metadataSearch": "Disabled",
        "roleAssignmentMode": reg.role_assignment_mode,
        "autoGeneratedDomainNameLabelScope": "Unsecure",
    }
    if body["properties"]["networkRuleSet"] is None:
        del body["properties"]["networkRuleSet"]
    return body


RESOURCE_FILTER_RE = re.compile(r"^\s*(resourceType|name)\s+eq\s+'([^']*)'\s*$", re.IGNORECASE)


def parse_resource_filter(raw: str | None) -> dict[str, str]:
    """`resourceType eq 'X' [and name eq 'Y']` (what the az CLI and the SDKs send) -> {"type": X, "name": Y}."""
    if not raw:
        return {}
    wanted: dict[str, str] = {}
    for clause in re.split(r"\s+and\s+", raw.strip(), flags=re.IGNORECASE):
        m = RESOURCE_FILTER_RE.match(clause)
        if m is None:
            raise ArmFailure(400, "InvalidFilterInQueryString",
                             f"The $filter '{raw}' is not supported by the local Azure emulator: use resourceType eq '...' "
                             "and/or name eq '...', joined by 'and'.")
        wanted["type" if m.group(1).lower() == "resourcetype" else "name"] = m.group(2)
    return wanted


def generic_resource_json(resource: Registry | Cluster) -> dict[str, Any]:
    """A resource as ARM's generic listing (`GET /subscriptions/{s}/resources`) returns it: id, name, type, location, tags."""
    if isinstance(resource, Registry):
        return {"id": resource.resource_id, "name": resource.name, "type": REGISTRY_TYPE,
                "sku": {"name": resource.sku, "tier": resource.sku}, "location": resource.location, "tags": dict(resource.tags)}
    return {"id": resource.resource_id, "name": resource.name, "type": "Microsoft.ContainerService/managedClusters",
            "sku": {"name": "Base", "tier": "Free"}, "location": resource.location, "tags": dict(resource.tags or {})}


def cloud_metadata(arm_url: str, api_version: str) -> dict[str, Any] | list[dict[str, Any]]:
    """ARM's cloud metadata (`GET {arm}/metadata/endpoints`), as `az cloud register` discovers a sovereign cloud with it.

    api-version 2022-09-01 and later answer the one cloud this ARM belongs to; older versions a list of clouds."""
    base = arm_url.rstrip("/") + "/"
    cloud = {
        "portal": base, "authentication": {
            "loginEndpoint": "https://login.microsoftonline.com/", "audiences": ["https://management.core.windows.net/", "https://management.azure.com/"],
            "tenant": "common", "identityProvider": "AAD"},
        "media": base, "graphAudience": "https://graph.windows.net/", "graph": "https://graph.windows.net/",
        "name": "AzureLocalEmulator",
        "suffixes": {"azureDataLakeStoreFileSystem": "azuredatalakestore.net", "acrLoginServer": "azurecr.io",
                     "sqlServerHostname": "database.windows.net", "azureDataLakeAnalyticsCatalogAndJob": "azuredatalakeanalytics.net",
                     "keyVaultDns": "vault.azure.net", "storage": "core.windows.net",
                     "azureFrontDoorEndpointSuffix": "azurefd.net", "storageSyncEndpointSuffix": "afs.azure.net",
                     "mhsmDns": "managedhsm.azure.net", "mysqlServerEndpoint": "mysql.database.azure.com",
                     "postgresqlServerEndpoint": "postgres.database.azure.com", "mariadbServerEndpoint": "mariadb.database.azure.com",
                     "synapseAnalytics": "dev.azuresynapse.net", "attestationEndpoint": "attest.azure.net"},
        "batch": "https://batch.core.windows.net/", "resourceManager": base,
        "vmImageAliasDoc": "https://raw.githubusercontent.com/Azure/azure-rest-api-specs/master/arm-compute/quickstart-templates/aliases.json",
        "activeDirectoryDataLake": "https://datalake.azure.net/", "sqlManagement": "https://management.core.windows.net:8443/",
        "microsoftGraphResourceId": "https://graph.microsoft.com/", "appInsightsResourceId": "https://api.applicationinsights.io",
        "appInsightsTelemetryChannelResourceId": "https://dc.applicationinsights.azure.com/v2/track",
        "attestationResourceId": "https://attest.azure.net", "synapseAnalyticsResourceId": "https://dev.azuresynapse.net",
        "logAnalyticsResourceId": "https://api.loganalytics.io", "ossrDbmsResourceId": "https://ossrdbms-aad.database.windows.net",
    }
    return cloud if api_version >= "2022-09-01" else [cloud]


def setup_metadata(app: web.Application, ctx: Context) -> None:
    """`GET /metadata/endpoints?api-version=…` (no authentication, as on Azure) and ARM's JSON 404 for unknown routes."""

    async def endpoints(request: web.Request) -> web.Response:
        api_version = request.query.get("api-version")
        if not api_version or not API_VERSION_RE.match(api_version):
            return arm_error(400, "MissingApiVersionParameter" if not api_version else "InvalidApiVersionParameter",
                             "The api-version query parameter (?api-version=) is required: use 2022-09-01.",
                             _arm_headers(request, 400))
        return json_response(200, cloud_metadata(ctx.management_url, api_version), _arm_headers(request, 200))

    app.router.add_get("/metadata/endpoints", endpoints)


async def unknown_route(request: web.Request) -> web.Response:
    """ARM's error shape for a path nothing serves (registered last, after every management service)."""
    return arm_error(404, "NotFound", f"No route matches '{request.method} {request.path}' on the local Azure emulator's management "
                                      "endpoint (ARM, identity, Event Grid topics, /_emulator).", _arm_headers(request, 404))


def subscription_json(sub: Subscription) -> dict[str, Any]:
    return {
        "id": f"/subscriptions/{sub.id}",
        "authorizationSource": "RoleBased",
        "managedByTenants": [],
        "subscriptionId": sub.id,
        "tenantId": sub.tenant_id,
        "displayName": sub.display_name,
        "state": sub.state,
        "subscriptionPolicies": {"locationPlacementId": "Public_2014-09-01", "quotaId": "EnterpriseAgreement_2014-09-01",
                                 "spendingLimit": "Off"},
    }


# --------------------------------------------------------------------------------------------------- errors


class ArmFailure(Exception):
    """An ARM error answer: raised anywhere in a handler, turned into `{"error": {"code", "message"}}`."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def _auth_challenge(error_description: str) -> dict[str, str]:
    return {"WWW-Authenticate": f'Bearer authorization_uri="https://login.windows.net/", error="invalid_token", '
                                f'error_description="{error_description}"'}


def authenticate(ctx: Context, request: web.Request) -> dict[str, Any]:
    """The verified claims of the request's bearer token, or an ArmFailure 401 as ARM words it."""
    header = request.headers.get("Authorization")
    if not header:
        raise ArmFailure(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.",
                         _auth_challenge("The authentication failed because of missing 'Authorization' header."))
    token = bearer(header)
    if not token:
        raise ArmFailure(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is provided in an invalid format.",
                         _auth_challenge("The authentication failed because of an invalid 'Authorization' header."))
    claims = ctx.tokens.verify(token)
    if claims is None:
        expired = _expired_claim(token)
        if expired is not None:
            when = time.strftime("%m/%d/%Y %H:%M:%S", time.gmtime(expired))
            now = time.strftime("%m/%d/%Y %H:%M:%S", time.gmtime())
            raise ArmFailure(401, "ExpiredAuthenticationToken",
                             f"The access token expiry UTC time '{when}' is earlier than current UTC time '{now}'.",
                             _auth_challenge("The access token has expired."))
        raise ArmFailure(401, "InvalidAuthenticationToken", "The access token is invalid.",
                         _auth_challenge("The access token is invalid."))
    if not audience_ok(claims, *ARM_AUDIENCES):
        allowed = ",".join(f"'{a}/','{a}'" for a in reversed(ARM_AUDIENCES))
        raise ArmFailure(401, "InvalidAuthenticationTokenAudience",
                         f"The access token has been obtained for wrong audience or resource '{claims.get('aud')}'. "
                         f"It should exactly match with one of the allowed audiences {allowed}.",
                         _auth_challenge("The access token has been obtained for wrong audience."))
    return claims


def _expired_claim(token: str) -> int | None:
    """`exp` of a well-formed token that has expired (its signature is checked by TokenAuthority.verify elsewhere)."""
    import base64

    try:
        body = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        exp = int(claims.get("exp", 0))
    except (IndexError, ValueError, TypeError, json.JSONDecodeError):
        return None
    return exp if 0 < exp < time.time() else None


def _forbidden(claims: dict[str, Any], action: str, scope: str) -> ArmFailure:
    oid = claims.get("oid", PRINCIPAL_OID)
    return ArmFailure(403, "AuthorizationFailed",
                      f"The client '{oid}' with object id '{oid}' does not have authorization to perform action '{action}' over scope "
                      f"'{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials.")


def _resource_not_found(rtype: str, name: str, rg: str) -> ArmFailure:
    return ArmFailure(404, "ResourceNotFound",
                      f"The Resource '{rtype}/{name}' under resource group '{rg}' was not found. "
                      "For more details please go to https://aka.ms/ARMResourceNotFoundFix")


# --------------------------------------------------------------------------------------------------- request handling


@dataclass
class ArmRequest:
    request: web.Request
    segments: list[str]  # path segments as sent
    lower: list[str]
    api_version: str
    claims: dict[str, Any]
    rate_headers: dict[str, str] = field(default_factory=dict)


def _page(ctx: Context, request: web.Request, items: list[Any], render: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    size = max(1, int(ctx.world.settings.page_size))
    token = request.query.get("$skipToken") or request.query.get("$skiptoken")
    start = 0
    if token is not None:
        try:
            start = int(token)
            if start < 0:
                raise ValueError
        except ValueError:
            raise ArmFailure(400, "InvalidSkipToken", f"The skip token '{token}' is not valid. Use the nextLink of the previous page "
                                                      "as it was returned.") from None
    chunk = items[start:start + size]
    body: dict[str, Any] = {"value": [render(item) for item in chunk]}
    if start + size < len(items):
        api = quote(request.query.get("api-version", ""), safe="")
        body["nextLink"] = f"{ctx.management_url}{request.path}?api-version={api}&$skipToken={start + size}"
    return body


def setup(app: web.Application, ctx: Context) -> None:
    world = ctx.world
    arm_state(ctx)

    # ------------------------------------------------------------------ lookups (raise ArmFailure with Azure's words)
    def subscription(req: ArmRequest, sub_id: str, action: str) -> Subscription:
        sub = world.subscriptions.get(sub_id) or next((s for s in world.subscriptions.values() if s.id.lower() == sub_id.lower()), None)
        if sub is None:
            raise ArmFailure(404, "SubscriptionNotFound", f"The subscription '{sub_id}' could not be found.")
        if not sub.accessible:
            raise _forbidden(req.claims, action, "/" + "/".join(req.segments))
        return sub

    def resource_group(sub: Subscription, rg: str) -> str:
        name = arm_state(ctx).index(world).resource_groups.get((sub.id, rg.lower()))
        if name is None:
            raise ArmFailure(404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")
        return name

    def find_cluster(sub: Subscription, rg: str, name: str) -> Cluster:
        cluster = world.cluster(sub.id, rg, name)
        if cluster is None:
            raise _resource_not_found("Microsoft.ContainerService/managedClusters", name, rg)
        _settle_cluster(ctx, cluster)
        return cluster

    # ------------------------------------------------------------------ handlers
    def list_subscriptions(req: ArmRequest) -> web.Response:
        subs = sorted(world.subscriptions.values(), key=lambda s: s.id)
        body = _page(ctx, req.request, subs, subscription_json)
        body["count"] = {"type": "Total", "value": len(subs)}
        return ok(req, 200, body)

    def get_subscription(req: ArmRequest) -> web.Response:
        sub = world.subscriptions.get(req.segments[1])
        if sub is None:
            raise ArmFailure(404, "SubscriptionNotFound", f"The subscription '{req.segments[1]}' could not be found.")
        return ok(req, 200, subscription_json(sub))

    def get_resource_group(req: ArmRequest) -> web.Response:
        sub = subscription(req, req.segments[1], "Microsoft.Resources/subscriptions/resourceGroups/read")
        name = resource_group(sub, req.segments[3])
        index = arm_state(ctx).index(world)
        members = index.clusters_by_rg.get((sub.id, name.lower())) or index.registries_by_rg.get((sub.id, name.lower())) or []
        location = members[0].location if members else "eastus"
        return ok(req, 200, {"id": f"/subscriptions/{sub.id}/resourceGroups/{name}", "name": name, "type": "Microsoft.Resources/resourceGroups",
                             "location": location, "properties": {"provisioningState": "Succeeded"}})

    def list_registries(req: ArmRequest, rg: str | None) -> web.Response:
        sub = subscription(req, req.segments[1], "Microsoft.ContainerRegistry/registries/read")
        index = arm_state(ctx).index(world)
        if rg is None:
            regs = index.registries_by_sub.get(sub.id, [])
        else:
            regs = index.registries_by_rg.get((sub.id, resource_group(sub, rg).lower()), [])
        return ok(req, 200, _page(ctx, req.request, regs, lambda r: registry_json(ctx, r)))

    def get_registry(req: ArmRequest, rg: str, name: str) -> web.Response:
        sub = subscription(req, req.segments[1], "Microsoft.ContainerRegistry/registries/read")
        rg_name = resource_group(sub, rg)
        reg = arm_state(ctx).index(world).registries_by_key.get((sub.id, rg.lower(), name.lower()))
        if reg is None:
            raise _resource_not_found("Microsoft.ContainerRegistry/registries", name, rg_name)
        return ok(req, 200, registry_json(ctx, reg))

    def list_clusters(req: ArmRequest, rg: str | None) -> web.Response:
        sub = subscription(req, req.segments[1], "Microsoft.ContainerService/managedClusters/read")
        index = arm_state(ctx).index(world)
        if rg is None:
            clusters = index.clusters_by_sub.get(sub.id, [])
        else:
            clusters = index.clusters_by_rg.get((sub.id, resource_group(sub, rg).lower()), [])

        def render(cluster: Cluster) -> dict[str, Any]:
            _settle_cluster(ctx, cluster)
            return cluster_json(ctx, cluster, req.api_version)

        return ok(req, 200, _page(ctx, req.request, clusters, render))

    def list_resources(req: ArmRequest, rg: str | None) -> web.Response:
        sub = subscription(req, req.segments[1], "Microsoft.Resources/subscriptions/resources/read")
        rg_lower = resource_group(sub, rg).lower() if rg is not None else None
        wanted = parse_resource_filter(req.request.query.get("$filter"))
        index = arm_state(ctx).index(world)
        found = [*index.registries_by_sub.get(sub.id, []), *index.clusters_by_sub.get(sub.id, [])]
        items = [generic_resource_json(x) for x in found if rg_lower is None or x.resource_group.lower() == rg_lower]
        items = [i for i in items if all(i[key].lower() == value.lower() for key, value in wanted.items())]
        items.sort(key=lambda i: i["id"].lower())
        return ok(req, 200, _page(ctx, req.request, items, lambda i: i))

    def get_cluster(req: ArmRequest, rg: str, name: str) -> web.Response:
        sub = subscription(req, req.segments[1], "Microsoft.ContainerService/managedClusters/read")
        resource_group(sub, rg)
        cluster = find_cluster(sub, rg, name)
        body = cluster_json(ctx, cluster, req.api_version)
        return ok(req, 200, body, {"ETag": body["eTag"]})

    def list_pools(req: ArmRequest, rg: str, name: str) -> web.Response:
        sub = subscription(req, req.segments[1], "Microsoft.ContainerService/managedClusters/agentPools/read")
        resource_group(sub, rg)
        cluster = find_cluster(sub, rg, name)
        pools = list(cluster.pools.values())
        return ok(req, 200, _page(ctx, req.request, pools, lambda p: pool_json(ctx, cluster, p, req.api_version)))

    def get_pool(req: ArmRequest, rg: str, name: str, pool_name: str) -> web.Response:
        sub = subscription(req, req.segments[1], "Microsoft.ContainerService/managedClusters/agentPools/read")
        resource_group(sub, rg)
        cluster = find_cluster(sub, rg, name)
        pool = cluster.pools.get(pool_name) or next((p for p in cluster.pools.values() if p.name.lower() == pool_name.lower()), None)
        if pool is None:
            raise _resource_not_found(f"Microsoft.ContainerService/managedClusters/{cluster.name}/agentPools", pool_name, cluster.resource_group)
        return ok(req, 200, pool_json(ctx, cluster, pool, req.api_version), {"ETag": pool.etag})

    async def put_pool(req: ArmRequest, rg: str, name: str, pool_name: str) -> web.Response:
        sub = subscription(req, req.segments[1], "Microsoft.ContainerService/managedClusters/agentPools/write")
        if sub.state in ("Disabled", "Deleted", "Expired"):
            raise ArmFailure(409, "ReadOnlyDisabledSubscription",
                             f"The subscription '{sub.id}' is disabled and therefore marked as read only. You cannot perform any write "
                             "actions on this subscription until it is re-enabled.")
        resource_group(sub, rg)
        cluster = find_cluster(sub, rg, name)
        try:
            body = await read_json(req.request)
        except ValueError as exc:
            raise ArmFailure(400, "InvalidRequestContent", f"The request content was invalid and could not be deserialized: {exc}.") from None
        if not isinstance(body, dict) or not isinstance(body.get("properties", {}), dict):
            raise ArmFailure(400, "InvalidRequestContent", "The request content was invalid and could not be deserialized: "
                                                           "expected a JSON object with an optional 'properties' object.")
        with world.lock:
            return apply_pool_put(req, cluster, pool_name, body.get("properties") or {})

    def apply_pool_put(req: ArmRequest, cluster: Cluster, pool_name: str, props: dict[str, Any]) -> web.Response:
        now = time.monotonic()
        pool = cluster.pools.get(pool_name) or next((p for p in cluster.pools.values() if p.name.lower() == pool_name.lower()), None)
        pool_name = pool.name if pool is not None else pool_name
        # --- optimistic concurrency (If-Match / If-None-Match), checked before anything else
        if_match = req.request.headers.get("If-Match")
        if_none = req.request.headers.get("If-None-Match")
        if if_match is not None:
            wanted = _strip_etag(if_match)
            if pool is None:
                raise ArmFailure(412, "PreconditionFailed", f"Operation is not allowed: agent pool '{pool_name}' does not exist, so the "
                                                            f"If-Match condition '{if_match}' cannot be met.")
            if wanted != "*" and wanted != _strip_etag(pool.etag):
                raise ArmFailure(412, "PreconditionFailed",
                                 f"Operation is not allowed: the If-Match eTag '{if_match}' does not match the current eTag of agent pool "
                                 f"'{pool.name}'. Get the agent pool again and retry with its current eTag.")
        if if_none is not None and pool is not None:
            wanted = _strip_etag(if_none)
            if wanted == "*" or wanted == _strip_etag(pool.etag):
                raise ArmFailure(412, "PreconditionFailed", f"Operation is not allowed: agent pool '{pool.name}' already exists "
                                                            f"(If-None-Match: {if_none}).")
        # --- pending operations: the pool's own, then the cluster's
        if pool is not None and _busy(pool.provisioning_state, pool.operation_until, now):
            raise ArmFailure(409, "OperationNotAllowed",
                             f"Operation is not allowed: Another agentpool operation ({pool.name} - {pool.provisioning_state}) is in progress, "
                             f"please wait for it to finish before starting a new operation. {PENDING_OPERATION_HELP}")
        if _busy(cluster.provisioning_state, cluster.operation_until, now):
            raise ArmFailure(409, "OperationNotAllowed",
                             f"Operation is not allowed: Another operation ({cluster.provisioning_state}) is in progress, please wait for it "
                             f"to finish before starting a new operation. {PENDING_OPERATION_HELP}")
        # AKS runs one agent pool operation per cluster: a sibling pool's operation blocks this one too (reported as
        # "Another agentpool operation (nodepool1 - Creating) is in progress" in cilium/cilium#25944, azure-workload-identity#417).
        for sibling in cluster.pools.values():
            if sibling is not pool and _busy(sibling.provisioning_state, sibling.operation_until, now):
                raise ArmFailure(409, "OperationNotAllowed",
                                 f"Operation is not allowed: Another agentpool operation ({sibling.name} - {sibling.provisioning_state}) is in "
                                 f"progress, please wait for it to finish before starting a new operation. {PENDING_OPERATION_HELP}")
        if cluster.power_state == "Stopped":
            raise ArmFailure(409, "OperationNotAllowed",
                             f"Operation is not allowed: managed cluster '{cluster.name}' is in Power State(Stopped). Start the cluster "
                             "before changing its agent pools.")
        desired = _desired_pool(req, cluster, pool, pool_name, props)
        changes = _diff(pool, desired)
        if pool is not None:
            _check_pool_update(cluster, pool, desired, changes)
        _check_streaming(cluster, desired)
        return commit_pool_write(req, cluster, pool, desired, changes)

    def commit_pool_write(req: ArmRequest, cluster: Cluster, pool: AgentPool | None, desired: AgentPool,
                          changes: dict[str, Any]) -> web.Response:
        created = pool is None
        if created:
            pool = desired
            cluster.pools[pool.name] = pool
            state, previous = "Creating", None
        else:
            previous = pool.orchestrator_version if "orchestratorVersion" in changes else None
            for attr in ("count", "vm_size", "os_type", "os_sku", "orchestrator_version", "mode", "workload_runtime", "tags",
                         "artifact_streaming", "extra"):
                setattr(pool, attr, getattr(desired, attr))
            if "powerState" in changes:
                pool.power_state = desired.power_state
                state = "Starting" if desired.power_state == "Running" else "Stopping"
            elif previous is not None:
                state = "Upgrading"
            else:
                state = "Updating"
        if not created and ("artifactStreamingProfile" in changes or "orchestratorVersion" in changes or "osSKU" in changes):
            pool.reimages += 1
        pool.etag = new_etag()
        op = start_operation(ctx, cluster, pool, world.settings.lro_seconds, state=state, previous_version=previous)
        with world.lock:
            world.arm_writes.append(ArmWrite(seq=len(world.arm_writes), ts=time.time(), actor="arm", subscription_id=cluster.subscription_id,
                                             resource_group=cluster.resource_group, cluster=cluster.name, pool=pool.name, created=created,
                                             changes=changes, operation_id=op.id))
        base = f"{ctx.management_url}/subscriptions/{cluster.subscription_id}/providers/Microsoft.ContainerService/locations/{cluster.location}"
        api = quote(req.api_version, safe="")
        retry = str(max(1, math.ceil(min(world.settings.lro_seconds, 10.0))))
        headers = {
            "Azure-AsyncOperation": f"{base}/operations/{op.id}?api-version={api}",
            "Location": f"{base}/operationresults/{op.id}?api-version={api}",
            "Retry-After": retry,
            "ETag": pool.etag,
        }
        return ok(req, 201 if created else 200, pool_json(ctx, cluster, pool, req.api_version), headers)

    def operation_status(req: ArmRequest, op_id: str, results: bool) -> web.Response:
        sub = subscription(req, req.segments[1], "Microsoft.ContainerService/locations/operations/read")
        arm = arm_state(ctx)
        op = arm.operations.get(op_id)
        if op is None or op.cluster_key[0] != sub.id:
            raise ArmFailure(404, "NotFound", f"Operation '{op_id}' was not found.")
        cluster = world.clusters.get(op.cluster_key)
        if cluster is not None:
            pool = cluster.pools.get(op.pool) if op.pool else None
            settle(ctx, cluster, pool)
        remaining = op.deadline - time.monotonic()
        retry = {"Retry-After": str(max(1, math.ceil(min(remaining, 10.0))))} if op.status == "InProgress" else {}
        if results:
            if op.status == "InProgress":
                return ok(req, 202, None, {"Location": f"{ctx.management_url}{req.request.path_qs}", **retry})
            return ok(req, 204, None)
        body: dict[str, Any] = {"name": op.id, "status": op.status, "startTime": _now_iso(op.start)}
        if op.end is not None:
            body["endTime"] = _now_iso(op.end)
        if op.status == "Failed":
            body["error"] = {"code": "AgentPoolOperationFailed", "message": "The operation failed (set by the emulator's admin API)."}
        return ok(req, 200, body, retry)

    # ------------------------------------------------------------------ dispatch
    def ok(req: ArmRequest, status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
        all_headers = _arm_headers(req.request, status)
        all_headers.update(req.rate_headers)
        all_headers.update(headers or {})
        if body is None:
            return web.Response(status=status, headers=all_headers)
        return json_response(status, body, all_headers)

    async def dispatch(request: web.Request) -> web.StreamResponse:
        req: ArmRequest | None = None
        try:
            claims = authenticate(ctx, request)
            api_version = request.query.get("api-version")
            if not api_version:
                raise ArmFailure(400, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required for all requests.")
            if not API_VERSION_RE.match(api_version):
                raise ArmFailure(400, "InvalidApiVersionParameter",
                                 f"The api-version '{api_version}' is invalid. The supported versions are dates such as '2026-08-01' "
                                 "(optionally with '-preview').")
            segments = [s for s in request.path.split("/") if s]
            req = ArmRequest(request, segments, [s.lower() for s in segments], api_version, claims)
            if len(segments) >= 2:
                throttle(req, segments[1])
            return await route(req)
        except ArmFailure as failure:
            headers = _arm_headers(request, failure.status)
            headers.update(failure.headers)
            if req is not None:
                headers.update(req.rate_headers)
            return arm_error(failure.status, failure.code, failure.message, headers)

    def throttle(req: ArmRequest, subscription_id: str) -> None:
        kind = "reads" if req.request.method in ("GET", "HEAD") else "writes"
        allowed, remaining, wait = arm_state(ctx).take_token(subscription_id, kind)
        req.rate_headers[f"x-ms-ratelimit-remaining-subscription-{kind}"] = str(remaining)
        if not allowed:
            seconds = max(1, math.ceil(wait))
            raise ArmFailure(429, "SubscriptionRequestsThrottled",
                             f"Number of '{kind[:-1]}' requests for subscription '{subscription_id}' actor '{req.claims.get('oid')}' exceeded. "
                             f"Please try again after '{seconds}' seconds after additional tokens are available. "
                             "Refer to https://aka.ms/arm-throttling", {"Retry-After": str(seconds)})

    async def route(req: ArmRequest) -> web.StreamResponse:
        s, low, method = req.segments, req.lower, req.request.method
        n = len(s)

        def only(*allowed: str) -> None:
            if method not in allowed:
                raise ArmFailure(405, "MethodNotAllowed", f"The local Azure emulator does not implement {method} on '{req.request.path}'; "
                                                          f"it implements {', '.join(allowed)}.")

        if low[:1] != ["subscriptions"]:
            raise ArmFailure(404, "NotFound", f"No ARM route matches '{req.request.path}'.")
        if n == 1:
            only("GET")
            return list_subscriptions(req)
        if n == 2:
            only("GET")
            return get_subscription(req)
        # /subscriptions/{s}/providers/{ns}/...
        if low[2] == "providers" and n >= 5:
            ns, kind = low[3], low[4]
            if ns == ACR_NAMESPACE and kind == "registries" and n == 5:
                only("GET")
                return list_registries(req, None)
            if ns == AKS_NAMESPACE and kind == "managedclusters" and n == 5:
                only("GET")
                return list_clusters(req, None)
            if ns == AKS_NAMESPACE and kind == "locations" and n == 8 and low[6] in ("operations", "operationresults"):
                only("GET")
                return operation_status(req, s[7], results=low[6] == "operationresults")
        if low[2] == "resourcegroups" and n >= 4:
            rg = s[3]
            if n == 4:
                only("GET")
                return get_resource_group(req)
            if low[4] == "providers" and n >= 7:
                ns, kind = low[5], low[6]
                if ns == ACR_NAMESPACE and kind == "registries":
                    if n == 7:
                        only("GET")
                        return list_registries(req, rg)
                    if n == 8:
                        only("GET")
                        return get_registry(req, rg, s[7])
                if ns == AKS_NAMESPACE and kind == "managedclusters":
                    if n == 7:
                        only("GET")
                        return list_clusters(req, rg)
                    if n == 8:
                        only("GET")
                        return get_cluster(req, rg, s[7])
                    if n >= 9 and low[8] == "agentpools":
                        if n == 9:
                            only("GET")
                            return list_pools(req, rg, s[7])
                        if n == 10:
                            only("GET", "PUT")
                            if method == "PUT":
                                return await put_pool(req, rg, s[7], s[9])
                            return get_pool(req, rg, s[7], s[9])
        if n == 3 and low[2] == "resources":
            only("GET")
            return list_resources(req, None)
        if n == 5 and low[2] == "resourcegroups" and low[4] == "resources":
            only("GET")
            return list_resources(req, s[3])
        # Anything else inside a subscription: ARM checks the subscription, then does not know the type.
        if n >= 2:
            subscription(req, s[1], "*/read")
        provider = next((s[i + 1] for i in range(n - 1) if low[i] == "providers"), "")
        rtype = "/".join(s[i] for i in range(len(s)) if i > low.index("providers") + 1) if "providers" in low else ""
        raise ArmFailure(404, "InvalidResourceType",
                         f"The resource type '{rtype or req.request.path}' could not be found in the namespace '{provider}' for api version "
                         f"'{req.api_version}'.")

    # ------------------------------------------------------------------ pool write rules (AKS's, simplified but real)
    def _desired_pool(req: ArmRequest, cluster: Cluster, pool: AgentPool | None, pool_name: str, props: dict[str, Any]) -> AgentPool:
        if pool is None and not POOL_NAME_RE.match(pool_name):
            raise ArmFailure(400, "InvalidParameter",
                             f"The value of parameter agentPoolProfile.name is invalid: '{pool_name}'. Agent pool names must start with a "
                             "lowercase letter, have at most 12 characters and contain only lowercase letters and numbers.")
        base = pool or AgentPool(name=pool_name, os_sku=None, orchestrator_version=cluster.kubernetes_version, count=1)
        desired = AgentPool(name=base.name, os_type=base.os_type, os_sku=base.os_sku, orchestrator_version=base.orchestrator_version,
                            mode=base.mode, count=base.count, vm_size=base.vm_size, provisioning_state=base.provisioning_state,
                            power_state=base.power_state, artifact_streaming=base.artifact_streaming, workload_runtime=base.workload_runtime,
                            tags=dict(base.tags), etag=base.etag, extra={})
        if "count" in props:
            count = props["count"]
            if not isinstance(count, int) or isinstance(count, bool) or count < 0 or count > 1000:
                raise ArmFailure(400, "InvalidParameter", f"The value of parameter agentPoolProfile.count is invalid: {count!r}. "
                                                          "It must be an integer from 0 to 1000.")
            desired.count = count
        for key, attr in (("vmSize", "vm_size"), ("osType", "os_type"), ("osSKU", "os_sku"), ("mode", "mode"),
                          ("workloadRuntime", "workload_runtime"), ("orchestratorVersion", "orchestrator_version")):
            if props.get(key) is not None:
                if not isinstance(props[key], str):
                    raise ArmFailure(400, "InvalidParameter", f"The value of parameter agentPoolProfile.{key} is invalid: {props[key]!r}.")
                setattr(desired, attr, props[key])
        if desired.workload_runtime == "OCIContainer" and (pool is None or pool.workload_runtime is None):
            desired.workload_runtime = None
        if desired.os_type not in ("Linux", "Windows"):
            raise ArmFailure(400, "InvalidParameter", f"The value of parameter agentPoolProfile.osType is invalid: '{desired.os_type}'. "
                                                      "Use Linux or Windows.")
        if desired.os_sku is None:
            desired.os_sku = "Windows2022" if desired.os_type == "Windows" else "Ubuntu"
        if desired.mode not in ("System", "User", "Gateway"):
            raise ArmFailure(400, "InvalidParameter", f"The value of parameter agentPoolProfile.mode is invalid: '{desired.mode}'.")
        if desired.mode == "System" and desired.os_type == "Windows":
            raise ArmFailure(400, "InvalidParameter", "System node pools must use Linux; Windows agent pools can only be User pools.")
        # tags: PUT replaces them (absent means none)
        tags = props.get("tags")
        if tags is not None and (not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values())):
            raise ArmFailure(400, "InvalidParameter", "The value of parameter agentPoolProfile.tags is invalid: expected an object of strings.")
        desired.tags = dict(tags or {})
        power = props.get("powerState")
        if power is not None:
            code = power.get("code") if isinstance(power, dict) else None
            if code not in ("Running", "Stopped"):
                raise ArmFailure(400, "InvalidParameter", f"The value of parameter agentPoolProfile.powerState is invalid: {power!r}. "
                                                          "Use {\"code\": \"Running\"} or {\"code\": \"Stopped\"}.")
            desired.power_state = code
        if _api_has_streaming(req.api_version) and "artifactStreamingProfile" in props:
            profile = props["artifactStreamingProfile"]
            if profile is None:
                pass  # an omitted or null profile leaves the setting as it is
            elif not isinstance(profile, dict) or not isinstance(profile.get("enabled", False), bool | None):
                raise ArmFailure(400, "InvalidParameter", f"The value of parameter agentPoolProfile.artifactStreamingProfile is invalid: "
                                                          f"{profile!r}. Use {{\"enabled\": true}} or {{\"enabled\": false}}.")
            elif profile.get("enabled") is not None:
                desired.artifact_streaming = bool(profile["enabled"])
        defaults = _default_properties(desired)
        desired.extra = {k: v for k, v in props.items() if k not in MODELLED and k not in READ_ONLY and defaults.get(k, ...) != v}
        return desired

    def _check_pool_update(cluster: Cluster, pool: AgentPool, desired: AgentPool, changes: dict[str, Any]) -> None:
        for key in IMMUTABLE:
            if key in changes:
                raise ArmFailure(400, "PropertyChangeNotAllowed", f"Changing property '{key}' is not allowed.")
        if "osSKU" in changes and {pool.os_sku, desired.os_sku} != {"Ubuntu", "AzureLinux"}:
            raise ArmFailure(400, "PropertyChangeNotAllowed",
                             f"Changing property 'osSKU' from '{pool.os_sku}' to '{desired.os_sku}' is not allowed; only Ubuntu and AzureLinux "
                             "can be migrated in place.")
        if "orchestratorVersion" in changes:
            new, old = _version_tuple(desired.orchestrator_version), _version_tuple(pool.orchestrator_version)
            if new < old:
                raise ArmFailure(400, "NotAllowedAgentPoolVersionDowngrade",
                                 f"Downgrading agent pool '{pool.name}' from {pool.orchestrator_version} to {desired.orchestrator_version} "
                                 "is not allowed.")
            if new[:2] > _version_tuple(cluster.kubernetes_version)[:2]:
                raise ArmFailure(400, "NodePoolMcVersionIncompatible",
                                 f"Node pool version {desired.orchestrator_version} and control plane version {cluster.kubernetes_version} "
                                 "are incompatible. Upgrade the control plane first.")
        if pool.power_state == "Stopped" and "powerState" not in changes and changes:
            raise ArmFailure(409, "OperationNotAllowed",
                             f"Operation is not allowed: agent pool '{pool.name}' is in Power State(Stopped). Start it (powerState.code "
                             "Running) before changing other properties.")
        if "powerState" in changes and len(changes) > 1:
            raise ArmFailure(400, "InvalidParameter",
                             "Starting or stopping an agent pool cannot be combined with other changes; change powerState alone.")

    def _check_streaming(cluster: Cluster, desired: AgentPool) -> None:
        if not desired.artifact_streaming:
            return
        if desired.os_type == "Windows":
            raise ArmFailure(400, "InvalidParameter", "Artifact streaming is not supported for Windows agent pools. "
                                                      "Enable it on Linux agent pools only.")
        if desired.os_sku in UNSUPPORTED_STREAMING_OS_SKUS:
            raise ArmFailure(400, "InvalidParameter", f"Artifact streaming is not supported for OS SKU '{desired.os_sku}'. "
                                                      "Use Ubuntu or AzureLinux agent pools.")
        if desired.workload_runtime in KATA_RUNTIMES:
            raise ArmFailure(400, "InvalidParameter", f"Artifact streaming is not supported with workload runtime '{desired.workload_runtime}' "
                                                      "(Kata pod sandboxing).")
        if _version_tuple(desired.orchestrator_version)[:2] < STREAMING_MIN_KUBERNETES:
            raise ArmFailure(400, "InvalidParameter",
                             f"Artifact streaming requires Kubernetes version 1.25 or later; agent pool '{desired.name}' runs "
                             f"{desired.orchestrator_version}. Upgrade the agent pool first.")

    setup_admin(app, ctx)
    setup_metadata(app, ctx)
    app.router.add_route("*", "/subscriptions", dispatch)
    app.router.add_route("*", "/subscriptions/{tail:.*}", dispatch)
    app.router.add_route("*", "/Subscriptions/{tail:.*}", dispatch)


def _diff(pool: AgentPool | None, desired: AgentPool) -> dict[str, Any]:
    """Property -> [old, new] for every property a write changes (all of them for a new pool)."""
    fields = (("count", "count"), ("vmSize", "vm_size"), ("osType", "os_type"), ("osSKU", "os_sku"),
              ("orchestratorVersion", "orchestrator_version"), ("mode", "mode"), ("workloadRuntime", "workload_runtime"),
              ("tags", "tags"), ("powerState", "power_state"), ("artifactStreamingProfile", "artifact_streaming"))
    changes: dict[str, Any] = {}
    for key, attr in fields:
        old = getattr(pool, attr) if pool is not None else None
        new = getattr(desired, attr)
        if pool is None or old != new:
            changes[key] = [old, new]
    old_extra = pool.extra if pool is not None else {}
    for key in sorted(set(old_extra) | set(desired.extra)):
        if old_extra.get(key) != desired.extra.get(key):
            changes[key] = [old_extra.get(key), desired.extra.get(key)]
    return changes


def _arm_headers(request: web.Request, status: int) -> dict[str, str]:
    request_id = str(uuid.uuid4())
    headers = {
        "x-ms-request-id": request_id,
        "x-ms-correlation-request-id": request.headers.get("x-ms-correlation-request-id") or str(uuid.uuid4()),
        "x-ms-routing-request-id": f"LOCAL:{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}:{request_id}",
        "Cache-Control": "no-cache",
        "Pragma": "no-cache",
        "Expires": "-1",
        "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
        "X-Content-Type-Options": "nosniff",
    }
    client_request_id = request.headers.get("x-ms-client-request-id")
    if client_request_id:
        headers["x-ms-client-request-id"] = client_request_id
    return headers


# --------------------------------------------------------------------------------------------------- admin API


def _find_clusters(world: World, name: str, subscription: str | None, resource_group: str | None) -> list[Cluster]:
    return [c for c in world.clusters.values() if c.name.lower() == name.lower()
            and (subscription is None or c.subscription_id == subscription)
            and (resource_group is None or c.resource_group.lower() == resource_group.lower())]


def record_admin_write(world: World, cluster: Cluster, pool: AgentPool, changes: dict[str, Any]) -> None:
    with world.lock:
        world.arm_writes.append(ArmWrite(seq=len(world.arm_writes), ts=time.time(), actor="admin", subscription_id=cluster.subscription_id,
                                         resource_group=cluster.resource_group, cluster=cluster.name, pool=pool.name, created=False,
                                         changes=changes))


ADMIN_POOL_FIELDS = {"artifact_streaming", "provisioning_state", "power_state", "orchestrator_version", "tags", "count", "os_sku",
                     "workload_runtime"}


def setup_admin(app: web.Application, ctx: Context) -> None:
    """`/_emulator/arm/...`: the writes log, busy operations, changes made behind ARM's back, throttling limits.

    GET    /_emulator/arm/writes?since=N                      -> {"next", "writes": [ArmWrite...]} (every accepted pool write)
    POST   /_emulator/arm/clusters/{c}[/pools/{p}]/operation  {"seconds": 60, "state": "Updating", "final_state": "Succeeded"}
                                                              -> the pool (or cluster) is busy: PUTs answer 409 until it ends
    DELETE /_emulator/arm/clusters/{c}[/pools/{p}]/operation[?final_state=Failed]  -> end it now
    PATCH  /_emulator/arm/clusters/{c}/pools/{p}              {"artifact_streaming": true|false|null, "provisioning_state", "power_state",
                                                               "orchestrator_version", "tags", "count", "os_sku", "workload_runtime"}
                                                              -> another actor changed the pool: new eTag, logged with actor "admin"
    PATCH  /_emulator/arm/clusters/{c}                        {"provisioning_state", "power_state", "kubernetes_version", "tags"}
    GET|POST /_emulator/arm/throttle                          {"reads_capacity", "reads_refill", "writes_capacity", "writes_refill"}
    Cluster names may repeat across subscriptions: add ?subscription=...&resource_group=... to pick one.
    """
    world = ctx.world

    def error(status: int, message: str) -> web.Response:
        return json_response(status, {"error": message})

    def target(request: web.Request) -> tuple[Cluster, AgentPool | None] | web.Response:
        name = request.match_info["cluster"]
        matches = _find_clusters(world, name, request.query.get("subscription"), request.query.get("resource_group"))
        if not matches:
            return error(404, f"no cluster named {name!r} (filters: subscription={request.query.get('subscription')}, "
                              f"resource_group={request.query.get('resource_group')})")
        if len(matches) > 1:
            return error(409, f"{len(matches)} clusters are named {name!r}; add ?subscription=...&resource_group=... to pick one")
        cluster = matches[0]
        pool_name = request.match_info.get("pool")
        if pool_name is None:
            return cluster, None
        pool = cluster.pools.get(pool_name)
        if pool is None:
            return error(404, f"cluster {cluster.name!r} has no pool {pool_name!r}; it has {sorted(cluster.pools)}")
        return cluster, pool

    async def writes(request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            return error(400, "since must be an integer (the `next` of a previous answer)")
        with world.lock:
            rows = [w.as_dict() for w in world.arm_writes[since:]]
            nxt = len(world.arm_writes)
        return json_response(200, {"next": nxt, "writes": rows})

    async def start_op(request: web.Request) -> web.Response:
        found = target(request)
        if isinstance(found, web.Response):
            return found
        cluster, pool = found
        try:
            body = await read_json(request) if request.can_read_body else {}
            seconds = float(body.get("seconds", 60))
            state = str(body.get("state", "Updating" if pool else "Upgrading"))
            final = str(body.get("final_state", "Succeeded"))
        except (ValueError, TypeError, AttributeError) as exc:
            return error(400, f"expected {{\"seconds\": N, \"state\": \"Updating\", \"final_state\": \"Succeeded\"}}: {exc}")
        if final not in IDLE_STATES:
            return error(400, f"final_state must be one of {list(IDLE_STATES)}")
        with world.lock:
            op = start_operation(ctx, cluster, pool, seconds, state=state, final_state=final)
        return json_response(201, {"operation_id": op.id, "state": state, "seconds": seconds})

    async def stop_op(request: web.Request) -> web.Response:
        found = target(request)
        if isinstance(found, web.Response):
            return found
        cluster, pool = found
        final = request.query.get("final_state")
        if final is not None and final not in IDLE_STATES:
            return error(400, f"final_state must be one of {list(IDLE_STATES)}")
        with world.lock:
            op = finish_operation(ctx, cluster, pool, final)
        subject: Any = pool if pool is not None else cluster
        return json_response(200, {"operation_id": op.id if op else None, "provisioning_state": subject.provisioning_state})

    async def patch_pool(request: web.Request) -> web.Response:
        found = target(request)
        if isinstance(found, web.Response):
            return found
        cluster, pool = found
        assert pool is not None
        try:
            body = await read_json(request)
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
        except ValueError as exc:
            return error(400, str(exc))
        unknown = set(body) - ADMIN_POOL_FIELDS
        if unknown:
            return error(400, f"unknown pool field(s) {sorted(unknown)}; settable: {sorted(ADMIN_POOL_FIELDS)}")
        if "artifact_streaming" in body and body["artifact_streaming"] not in (None, True, False):
            return error(400, "artifact_streaming must be true, false or null")
        with world.lock:
            changes = {}
            for key, value in body.items():
                old = getattr(pool, key)
                if old != value:
                    changes[key] = [old, value]
                    setattr(pool, key, dict(value) if isinstance(value, dict) else value)
            if changes:
                pool.etag = new_etag()
                if "provisioning_state" in changes and body["provisioning_state"] in IDLE_STATES:
                    finish_operation(ctx, cluster, pool, body["provisioning_state"])  # also ends a pending operation's poller
                record_admin_write(world, cluster, pool, changes)
        return json_response(200, {"changes": changes, "etag": pool.etag})

    async def patch_cluster(request: web.Request) -> web.Response:
        found = target(request)
        if isinstance(found, web.Response):
            return found
        cluster, _ = found
        try:
            body = await read_json(request)
        except ValueError as exc:
            return error(400, str(exc))
        allowed = {"provisioning_state", "power_state", "kubernetes_version", "tags"}
        if not isinstance(body, dict) or set(body) - allowed:
            return error(400, f"expected an object with some of {sorted(allowed)}")
        with world.lock:
            for key, value in body.items():
                setattr(cluster, key, value)
            arm_state(ctx).cluster_etags[_cluster_key(cluster)] = new_etag()
        return json_response(200, {"cluster": cluster.name})

    async def throttle_config(request: web.Request) -> web.Response:
        arm = arm_state(ctx)
        if request.method == "POST":
            try:
                body = await read_json(request)
                if not isinstance(body, dict) or set(body) - set(DEFAULT_THROTTLE):
                    raise ValueError(f"expected an object with some of {sorted(DEFAULT_THROTTLE)}")
                values = {k: float(v) for k, v in body.items()}
                if any(v < 0 for v in values.values()):
                    raise ValueError("capacities and refill rates must be >= 0")
            except (ValueError, TypeError) as exc:
                return error(400, str(exc))
            with world.lock:
                arm.throttle.update(values)
                arm.buckets.clear()
        return json_response(200, arm.throttle)

    app.router.add_get("/_emulator/arm/writes", writes)
    app.router.add_get("/_emulator/arm/throttle", throttle_config)
    app.router.add_post("/_emulator/arm/throttle", throttle_config)
    app.router.add_post("/_emulator/arm/clusters/{cluster}/operation", start_op)
    app.router.add_delete("/_emulator/arm/clusters/{cluster}/operation", stop_op)
    app.router.add_patch("/_emulator/arm/clusters/{cluster}", patch_cluster)
    app.router.add_post("/_emulator/arm/clusters/{cluster}/pools/{pool}/operation", start_op)
    app.router.add_delete("/_emulator/arm/clusters/{cluster}/pools/{pool}/operation", stop_op)
    app.router.add_patch("/_emulator/arm/clusters/{cluster}/pools/{pool}", patch_pool)


def pools_touched(world: World, since: int = 0, actor: str = "arm") -> list[tuple[str, str, str]]:
    """(subscription, cluster, pool) of every write by `actor` since `since`, in order (a helper for tests)."""
    with world.lock:
        return [(w.subscription_id, w.cluster, w.pool) for w in world.arm_writes[since:] if w.actor == actor]

