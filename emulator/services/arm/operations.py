"""AKS long-running operations: start, finish and settle them; the operation status endpoints clients poll."""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

from aiohttp import web

from ...model import AgentPool, Cluster, new_etag
from ...web import Context
from .common import AksOperation, ArmFailure, ArmRequest, _cluster_key, _now_iso, arm_state, ok, subscription


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



def operation_status(req: ArmRequest, op_id: str, kind: str, **_: str) -> web.Response:
    """GET …/locations/{l}/operations/{id} (Azure-AsyncOperation) or …/operationresults/{id} (Location)."""
    results = kind.lower() == "operationresults"
    ctx = req.ctx
    world = ctx.world
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
