"""Managed clusters (Microsoft.ContainerService/managedClusters): the ARM shape, list and get."""

from __future__ import annotations

import uuid
import zlib
from typing import Any

from aiohttp import web

from ...model import Cluster, new_etag
from ...web import Context
from .agentpools import pool_properties
from .common import CLUSTER_TYPE, ArmRequest, _cluster_key, _page, arm_state, find_cluster, ok, resource_group, settle_cluster, subscription


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



def list_clusters(req: ArmRequest, rg: str | None = None, **_: str) -> web.Response:
    ctx = req.ctx
    world = ctx.world
    sub = subscription(req, req.segments[1], "Microsoft.ContainerService/managedClusters/read")
    index = arm_state(ctx).index(world)
    if rg is None:
        clusters = index.clusters_by_sub.get(sub.id, [])
    else:
        clusters = index.clusters_by_rg.get((sub.id, resource_group(ctx, sub, rg).lower()), [])

    def render(cluster: Cluster) -> dict[str, Any]:
        settle_cluster(ctx, cluster)
        return cluster_json(ctx, cluster, req.api_version)

    return ok(req, 200, _page(ctx, req.request, clusters, render))


def get_cluster(req: ArmRequest, rg: str, name: str, **_: str) -> web.Response:
    ctx = req.ctx
    sub = subscription(req, req.segments[1], "Microsoft.ContainerService/managedClusters/read")
    resource_group(ctx, sub, rg)
    cluster = find_cluster(ctx, sub, rg, name)
    body = cluster_json(ctx, cluster, req.api_version)
    return ok(req, 200, body, {"ETag": body["eTag"]})


