"""Subscriptions and resource groups: list and get, as ARM answers them."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ...model import Subscription
from .common import ArmFailure, ArmRequest, _page, arm_state, ok, resource_group, subscription


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



def list_subscriptions(req: ArmRequest) -> web.Response:
    ctx = req.ctx
    world = ctx.world
    subs = sorted(world.subscriptions.values(), key=lambda s: s.id)
    body = _page(ctx, req.request, subs, subscription_json)
    body["count"] = {"type": "Total", "value": len(subs)}
    return ok(req, 200, body)


def get_subscription(req: ArmRequest, **_: str) -> web.Response:
    ctx = req.ctx
    world = ctx.world
    sub = world.subscriptions.get(req.segments[1])
    if sub is None:
        raise ArmFailure(404, "SubscriptionNotFound", f"The subscription '{req.segments[1]}' could not be found.")
    return ok(req, 200, subscription_json(sub))


def get_resource_group(req: ArmRequest, **_: str) -> web.Response:
    ctx = req.ctx
    world = ctx.world
    sub = subscription(req, req.segments[1], "Microsoft.Resources/subscriptions/resourceGroups/read")
    name = resource_group(ctx, sub, req.segments[3])
    index = arm_state(ctx).index(world)
    members = index.clusters_by_rg.get((sub.id, name.lower())) or index.registries_by_rg.get((sub.id, name.lower())) or []
    location = members[0].location if members else "eastus"
    return ok(req, 200, {"id": f"/subscriptions/{sub.id}/resourceGroups/{name}", "name": name, "type": "Microsoft.Resources/resourceGroups",
                         "location": location, "properties": {"provisioningState": "Succeeded"}})


