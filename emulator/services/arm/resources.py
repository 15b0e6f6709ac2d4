"""ARM's generic resource listing (`GET /subscriptions/{s}[/resourceGroups/{rg}]/resources?$filter=…`), which `az acr` starts with."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from ...model import Cluster, Registry
from .common import REGISTRY_TYPE, ArmFailure, ArmRequest, _page, arm_state, ok, resource_group, subscription

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



def list_resources(req: ArmRequest, rg: str | None = None, **_: str) -> web.Response:
    ctx = req.ctx
    world = ctx.world
    sub = subscription(req, req.segments[1], "Microsoft.Resources/subscriptions/resources/read")
    rg_lower = resource_group(ctx, sub, rg).lower() if rg is not None else None
    wanted = parse_resource_filter(req.request.query.get("$filter"))
    index = arm_state(ctx).index(world)
    found = [*index.registries_by_sub.get(sub.id, []), *index.clusters_by_sub.get(sub.id, [])]
    items = [generic_resource_json(x) for x in found if rg_lower is None or x.resource_group.lower() == rg_lower]
    items = [i for i in items if all(i[key].lower() == value.lower() for key, value in wanted.items())]
    items.sort(key=lambda i: i["id"].lower())
    return ok(req, 200, _page(ctx, req.request, items, lambda i: i))
