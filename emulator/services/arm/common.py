"""ARM's shared plumbing: constants, state (operations, ETags, index, throttling), authentication, errors, paging, lookups."""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from aiohttp import web

from ...model import Cluster, Registry, Subscription, World
from ...tokens import bearer
from ...web import Context, json_response
from ..identity import PRINCIPAL_OID, audience_ok

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



@dataclass
class ArmRequest:
    """One authenticated ARM request on its way to a handler."""

    ctx: Context
    request: web.Request
    segments: list[str]  # path segments as sent
    lower: list[str]
    api_version: str
    claims: dict[str, Any]
    rate_headers: dict[str, str] = field(default_factory=dict)


def ok(req: ArmRequest, status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    """A success answer with ARM's headers (request ids, throttling counters) and the handler's own."""
    all_headers = _arm_headers(req.request, status)
    all_headers.update(req.rate_headers)
    all_headers.update(headers or {})
    if body is None:
        return web.Response(status=status, headers=all_headers)
    return json_response(status, body, all_headers)


# ------------------------------------------------------------------ lookups (raise ArmFailure with Azure's words)
def subscription(req: ArmRequest, sub_id: str, action: str) -> Subscription:
    sub = req.ctx.world.subscriptions.get(sub_id) or next((s for s in req.ctx.world.subscriptions.values() if s.id.lower() == sub_id.lower()), None)
    if sub is None:
        raise ArmFailure(404, "SubscriptionNotFound", f"The subscription '{sub_id}' could not be found.")
    if not sub.accessible:
        raise _forbidden(req.claims, action, "/" + "/".join(req.segments))
    return sub


def resource_group(ctx: Context, sub: Subscription, rg: str) -> str:
    name = arm_state(ctx).index(ctx.world).resource_groups.get((sub.id, rg.lower()))
    if name is None:
        raise ArmFailure(404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")
    return name


def find_cluster(ctx: Context, sub: Subscription, rg: str, name: str) -> Cluster:
    cluster = ctx.world.cluster(sub.id, rg, name)
    if cluster is None:
        raise _resource_not_found("Microsoft.ContainerService/managedClusters", name, rg)
    settle_cluster(ctx, cluster)
    return cluster


def settle_cluster(ctx: Context, cluster: Cluster) -> None:
    """Finish the cluster's and its pools' operations that are due (see operations.py)."""
    from .operations import _settle_cluster

    _settle_cluster(ctx, cluster)
