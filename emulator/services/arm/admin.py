"""ARM's part of the control API (`/_emulator/arm/...`): the writes log, busy operations, changes behind ARM's back, throttling.

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

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from ...model import AgentPool, ArmWrite, Cluster, World, new_etag
from ...web import Context, bound, json_response, read_json
from .common import DEFAULT_THROTTLE, IDLE_STATES, _cluster_key, arm_state
from .operations import finish_operation, start_operation


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



def error(status: int, message: str) -> web.Response:
    return json_response(status, {"error": message})


def target(ctx: Context, request: web.Request) -> tuple[Cluster, AgentPool | None] | web.Response:
    world = ctx.world
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


async def writes(ctx: Context, request: web.Request) -> web.Response:
    world = ctx.world
    try:
        since = int(request.query.get("since", "0"))
    except ValueError:
        return error(400, "since must be an integer (the `next` of a previous answer)")
    with world.lock:
        rows = [w.as_dict() for w in world.arm_writes[since:]]
        nxt = len(world.arm_writes)
    return json_response(200, {"next": nxt, "writes": rows})


async def start_op(ctx: Context, request: web.Request) -> web.Response:
    world = ctx.world
    found = target(ctx, request)
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


async def stop_op(ctx: Context, request: web.Request) -> web.Response:
    world = ctx.world
    found = target(ctx, request)
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


async def patch_pool(ctx: Context, request: web.Request) -> web.Response:
    world = ctx.world
    found = target(ctx, request)
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


async def patch_cluster(ctx: Context, request: web.Request) -> web.Response:
    world = ctx.world
    found = target(ctx, request)
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


async def throttle_config(ctx: Context, request: web.Request) -> web.Response:
    world = ctx.world
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


ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/_emulator/arm/writes", writes),
    ("GET", "/_emulator/arm/throttle", throttle_config),
    ("POST", "/_emulator/arm/throttle", throttle_config),
    ("POST", "/_emulator/arm/clusters/{cluster}/operation", start_op),
    ("DELETE", "/_emulator/arm/clusters/{cluster}/operation", stop_op),
    ("PATCH", "/_emulator/arm/clusters/{cluster}", patch_cluster),
    ("POST", "/_emulator/arm/clusters/{cluster}/pools/{pool}/operation", start_op),
    ("DELETE", "/_emulator/arm/clusters/{cluster}/pools/{pool}/operation", stop_op),
    ("PATCH", "/_emulator/arm/clusters/{cluster}/pools/{pool}", patch_pool),
]


def setup_admin(app: web.Application, ctx: Context) -> None:
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, bound(handler, ctx))


def pools_touched(world: World, since: int = 0, actor: str = "arm") -> list[tuple[str, str, str]]:
    """(subscription, cluster, pool) of every write by `actor` since `since`, in order (a helper for tests)."""
    with world.lock:
        return [(w.subscription_id, w.cluster, w.pool) for w in world.arm_writes[since:] if w.actor == actor]

