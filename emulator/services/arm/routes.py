"""ARM's route table: which handler answers which method and path, and the dispatch that authenticates and throttles first.

To add a resource type: write its handlers in a module of this package (`handler(req: ArmRequest, **path_params)`, sync or
async, raising ArmFailure for Azure's errors) and add a row here. Paths match case-insensitively, as ARM's do.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ...web import Context, arm_error, bound
from . import agentpools, clusters, metadata, operations, registries, resources, subscriptions
from .admin import setup_admin
from .common import ACR_NAMESPACE, AKS_NAMESPACE, API_VERSION_RE, ArmFailure, ArmRequest, _arm_headers, arm_state, authenticate, subscription

SUB = r"/subscriptions/(?P<sub>[^/]+)"
RG = SUB + r"/resourceGroups/(?P<rg>[^/]+)"
ACR = "/providers/Microsoft.ContainerRegistry/registries"
AKS = "/providers/Microsoft.ContainerService/managedClusters"


@dataclass(frozen=True)
class Route:
    pattern: re.Pattern[str]
    handlers: dict[str, Callable[..., Any]]  # method -> handler(req, **params)


def _route(path: str, **handlers: Callable[..., Any]) -> Route:
    return Route(re.compile(f"^{path}$", re.IGNORECASE), handlers)


ROUTES: list[Route] = [
    _route("/subscriptions", GET=subscriptions.list_subscriptions),
    _route(SUB, GET=subscriptions.get_subscription),
    _route(SUB + "/resources", GET=resources.list_resources),
    _route(SUB + ACR, GET=registries.list_registries),
    _route(SUB + AKS, GET=clusters.list_clusters),
    _route(SUB + r"/providers/Microsoft.ContainerService/locations/(?P<location>[^/]+)/(?P<kind>operations|operationresults)"
                 r"/(?P<op_id>[^/]+)", GET=operations.operation_status),
    _route(RG, GET=subscriptions.get_resource_group),
    _route(RG + "/resources", GET=resources.list_resources),
    _route(RG + ACR, GET=registries.list_registries),
    _route(RG + ACR + "/(?P<name>[^/]+)", GET=registries.get_registry),
    _route(RG + AKS, GET=clusters.list_clusters),
    _route(RG + AKS + "/(?P<name>[^/]+)", GET=clusters.get_cluster),
    _route(RG + AKS + "/(?P<name>[^/]+)/agentPools", GET=agentpools.list_pools),
    _route(RG + AKS + "/(?P<name>[^/]+)/agentPools/(?P<pool_name>[^/]+)", GET=agentpools.get_pool, PUT=agentpools.put_pool),
]


def match(method: str, path: str) -> tuple[Callable[..., Any], dict[str, str]] | None:
    """(handler, path parameters) for a request; raises 405 when the path is known but the method is not."""
    path = path.rstrip("/") or "/"
    for route in ROUTES:
        m = route.pattern.match(path)
        if m is None:
            continue
        handler = route.handlers.get(method)
        if handler is None:
            raise ArmFailure(405, "MethodNotAllowed", f"The local Azure emulator does not implement {method} on '{path}'; "
                                                      f"it implements {', '.join(route.handlers)}.")
        return handler, {k: v for k, v in m.groupdict().items() if v is not None}
    return None


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


def throttle(req: ArmRequest, subscription_id: str) -> None:
    kind = "reads" if req.request.method in ("GET", "HEAD") else "writes"
    allowed, remaining, wait = arm_state(req.ctx).take_token(subscription_id, kind)
    req.rate_headers[f"x-ms-ratelimit-remaining-subscription-{kind}"] = str(remaining)
    if not allowed:
        seconds = max(1, math.ceil(wait))
        raise ArmFailure(429, "SubscriptionRequestsThrottled",
                         f"Number of '{kind[:-1]}' requests for subscription '{subscription_id}' actor '{req.claims.get('oid')}' exceeded. "
                         f"Please try again after '{seconds}' seconds after additional tokens are available. "
                         "Refer to https://aka.ms/arm-throttling", {"Retry-After": str(seconds)})


def unknown_type(req: ArmRequest) -> ArmFailure:
    """Inside a subscription ARM checks the subscription, then does not know the type (404 InvalidResourceType)."""
    s, low = req.segments, req.lower
    if low[:1] != ["subscriptions"]:
        return ArmFailure(404, "NotFound", f"No ARM route matches '{req.request.path}'.")
    if len(s) >= 2:
        subscription(req, s[1], "*/read")
    provider = next((s[i + 1] for i in range(len(s) - 1) if low[i] == "providers"), "")
    rtype = "/".join(s[i] for i in range(len(s)) if i > low.index("providers") + 1) if "providers" in low else ""
    return ArmFailure(404, "InvalidResourceType",
                      f"The resource type '{rtype or req.request.path}' could not be found in the namespace '{provider}' for api version "
                      f"'{req.api_version}'.")


def _api_version(request: web.Request) -> str:
    api_version = request.query.get("api-version")
    if not api_version:
        raise ArmFailure(400, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required for all requests.")
    if not API_VERSION_RE.match(api_version):
        raise ArmFailure(400, "InvalidApiVersionParameter",
                         f"The api-version '{api_version}' is invalid. The supported versions are dates such as '2026-08-01' "
                         "(optionally with '-preview').")
    return api_version


async def dispatch(ctx: Context, request: web.Request) -> web.StreamResponse:
    """Authenticate, check the api-version, throttle per subscription, then run the route's handler."""
    req: ArmRequest | None = None
    try:
        claims = authenticate(ctx, request)
        api_version = _api_version(request)
        segments = [s for s in request.path.split("/") if s]
        req = ArmRequest(ctx, request, segments, [s.lower() for s in segments], api_version, claims)
        if len(segments) >= 2:
            throttle(req, segments[1])
        found = match(request.method, request.path)
        if found is None:
            raise unknown_type(req)
        handler, params = found
        result = handler(req, **params)
        return await result if inspect.isawaitable(result) else result
    except ArmFailure as failure:
        headers = _arm_headers(request, failure.status)
        headers.update(failure.headers)
        if req is not None:
            headers.update(req.rate_headers)
        return arm_error(failure.status, failure.code, failure.message, headers)


def setup(app: web.Application, ctx: Context) -> None:
    """Mount ARM, its control API and the cloud metadata endpoint on the management app."""
    arm_state(ctx)
    setup_admin(app, ctx)
    app.router.add_get("/metadata/endpoints", bound(metadata.endpoints, ctx))
    handler = bound(dispatch, ctx)
    app.router.add_route("*", "/subscriptions", handler)
    app.router.add_route("*", "/subscriptions/{tail:.*}", handler)
    app.router.add_route("*", "/Subscriptions/{tail:.*}", handler)
