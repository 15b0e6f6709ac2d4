"""Agent pools (managedClusters/agentPools): the ARM shape, list, get and the PUT with AKS's write rules (ETags, busy, streaming)."""

from __future__ import annotations

import math
import time
from typing import Any
from urllib.parse import quote

from aiohttp import web

from ...model import AgentPool, ArmWrite, Cluster, new_etag
from ...web import Context, read_json
from .common import (
    IMMUTABLE,
    KATA_RUNTIMES,
    MODELLED,
    PENDING_OPERATION_HELP,
    POOL_NAME_RE,
    POOL_TYPE,
    READ_ONLY,
    STREAMING_GA_API,
    STREAMING_MIN_KUBERNETES,
    STREAMING_PREVIEW_API,
    UNSUPPORTED_STREAMING_OS_SKUS,
    ArmFailure,
    ArmRequest,
    _busy,
    _cluster_key,
    _page,
    _resource_not_found,
    _strip_etag,
    _version_tuple,
    arm_state,
    find_cluster,
    ok,
    resource_group,
    subscription,
)
from .operations import start_operation


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



def list_pools(req: ArmRequest, rg: str, name: str, **_: str) -> web.Response:
    ctx = req.ctx
    sub = subscription(req, req.segments[1], "Microsoft.ContainerService/managedClusters/agentPools/read")
    resource_group(ctx, sub, rg)
    cluster = find_cluster(ctx, sub, rg, name)
    pools = list(cluster.pools.values())
    return ok(req, 200, _page(ctx, req.request, pools, lambda p: pool_json(ctx, cluster, p, req.api_version)))


def get_pool(req: ArmRequest, rg: str, name: str, pool_name: str, **_: str) -> web.Response:
    ctx = req.ctx
    sub = subscription(req, req.segments[1], "Microsoft.ContainerService/managedClusters/agentPools/read")
    resource_group(ctx, sub, rg)
    cluster = find_cluster(ctx, sub, rg, name)
    pool = cluster.pools.get(pool_name) or next((p for p in cluster.pools.values() if p.name.lower() == pool_name.lower()), None)
    if pool is None:
        raise _resource_not_found(f"Microsoft.ContainerService/managedClusters/{cluster.name}/agentPools", pool_name, cluster.resource_group)
    return ok(req, 200, pool_json(ctx, cluster, pool, req.api_version), {"ETag": pool.etag})


async def put_pool(req: ArmRequest, rg: str, name: str, pool_name: str, **_: str) -> web.Response:
    ctx = req.ctx
    world = ctx.world
    sub = subscription(req, req.segments[1], "Microsoft.ContainerService/managedClusters/agentPools/write")
    if sub.state in ("Disabled", "Deleted", "Expired"):
        raise ArmFailure(409, "ReadOnlyDisabledSubscription",
                         f"The subscription '{sub.id}' is disabled and therefore marked as read only. You cannot perform any write "
                         "actions on this subscription until it is re-enabled.")
    resource_group(ctx, sub, rg)
    cluster = find_cluster(ctx, sub, rg, name)
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
    ctx = req.ctx
    world = ctx.world
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

