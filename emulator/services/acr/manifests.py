"""ACR's manifest and repository attributes: /acr/v1/{repo}/_manifests[/{digest}] and /acr/v1/{repo}."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ... import oci
from ...model import Manifest, Repository
from .common import (
    CHANGEABLE,
    Abort,
    error_reply,
    next_link,
    paging_n,
    reply,
)

if TYPE_CHECKING:
    from .service import RegistryService


def manifest_attrs(svc: RegistryService, repo: Repository, m: Manifest, tags_by_digest: dict[str, list[str]] | None = None) -> dict[str, Any]:
    doc = json.loads(m.content)
    out: dict[str, Any] = {"digest": m.digest, "imageSize": 0, "createdTime": m.created, "lastUpdateTime": m.created}
    if m.media_type in oci.INDEX_TYPES:
        out["references"] = [
            {"digest": e.get("digest"), "architecture": (e.get("platform") or {}).get("architecture"),
             "os": (e.get("platform") or {}).get("os")}
            for e in doc.get("manifests") or []
        ]
        out["imageSize"] = m.size
    else:
        out["imageSize"] = int((doc.get("config") or {}).get("size", 0)) + sum(int(x.get("size", 0)) for x in doc.get("layers") or [])
        blob = svc.reg.blobs.get((doc.get("config") or {}).get("digest", ""))
        if blob is not None and blob.content is not None:
            try:
                cfg = json.loads(blob.content)
                if isinstance(cfg, dict) and cfg.get("architecture"):
                    out["architecture"], out["os"] = cfg.get("architecture"), cfg.get("os")
            except ValueError:
                pass
    out["mediaType"] = m.media_type
    config_type = (doc.get("config") or {}).get("mediaType")
    if config_type:
        out["configMediaType"] = config_type
    if m.artifact_type and m.artifact_type != config_type:
        out["artifactType"] = m.artifact_type
    if tags_by_digest is None:
        tags = [t.name for t in repo.tags.values() if t.digest == m.digest]
    else:
        tags = tags_by_digest.get(m.digest, [])
    if tags:
        out["tags"] = tags
    out["changeableAttributes"] = dict(CHANGEABLE)
    return out


async def acr_manifests(svc: RegistryService, request: web.Request, name: str) -> web.Response:
    svc.require(request, name, ("metadata_read",), "metadata_read")
    repo = svc.repo_or_404(name)
    n = paging_n(request)
    orderby = request.query.get("orderby", "")
    mans = list(repo.manifests.values())
    if orderby in ("timedesc", "timeasc"):
        mans.sort(key=lambda m: (m.created, m.digest), reverse=orderby == "timedesc")
    elif orderby:
        raise Abort(error_reply(400, "UNSUPPORTED", f"orderby {orderby!r} is not supported; use timedesc or timeasc"))
    else:
        mans.sort(key=lambda m: m.digest)
    last = request.query.get("last")
    digests = [m.digest for m in mans]
    start = (digests.index(last) + 1 if last in digests else len(digests)) if last else 0
    page = mans[start:start + n]
    tags_by_digest: dict[str, list[str]] = {}
    for rec in repo.tags.values():
        tags_by_digest.setdefault(rec.digest, []).append(rec.name)
    headers = {}
    if start + n < len(mans) and page:
        headers["Link"] = next_link(request.path, {"last": page[-1].digest, "n": n, "orderby": orderby or None})
    body = {"registry": svc.login, "imageName": name,
            "manifests": [manifest_attrs(svc, repo, m, tags_by_digest) for m in page]}
    return reply(200, body, headers)


async def acr_manifest(svc: RegistryService, request: web.Request, name: str, digest: str) -> web.Response:
    svc.require(request, name, ("metadata_read",), "metadata_read")
    repo = svc.repo_or_404(name)
    m = svc.resolve(repo, digest)
    return reply(200, {"registry": svc.login, "imageName": name, "manifest": manifest_attrs(svc, repo, m)})


async def repository(svc: RegistryService, request: web.Request, name: str) -> web.Response:
    if request.method == "DELETE":
        svc.require(request, name, ("delete",), "delete")
        repo = svc.repo_or_404(name)
        for m in list(repo.manifests.values()):
            svc.world.emit("ImageDeleted", svc.reg, {"repository": name, "digest": m.digest, "mediaType": m.media_type})
        del svc.reg.repositories[name]
        return reply(202, {"manifestsDeleted": list(repo.manifests), "tagsDeleted": list(repo.tags)})
    svc.require(request, name, ("metadata_read",), "metadata_read")
    repo = svc.repo_or_404(name)
    updated = max((t.updated for t in repo.tags.values()), default=repo.created)
    return reply(200, {"registry": svc.login, "imageName": name, "createdTime": repo.created, "lastUpdateTime": updated,
                       "manifestCount": len(repo.manifests), "tagCount": len(repo.tags),
                       "changeableAttributes": {**CHANGEABLE, "teleportEnabled": False}})
