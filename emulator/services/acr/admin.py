"""The registry port's control routes (no auth, no faults): /_emulator/operations, /_emulator/referrers, /_emulator/counts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ...model import utcnow_iso
from .common import (
    reply,
)

if TYPE_CHECKING:
    from .service import RegistryService


async def admin(svc: RegistryService, request: web.Request) -> web.Response:
    path = request.path
    if path == "/_emulator/operations":
        ops = []
        for repo in svc.reg.repositories.values():
            for op in repo.operations.values():
                ops.append({"id": op.id, "repository": op.repository, "digest": op.digest, "status": op.status,
                            "progress": op.progress, "errorCode": op.error_code, "referrerDigest": op.referrer_digest,
                            "details": op.details, "startTime": op.start_time})
        return reply(200, {"registry": svc.reg.name, "operations": ops})
    if path == "/_emulator/referrers":
        repo = svc.reg.repositories.get(request.query.get("repository", ""))
        if repo is None:
            return reply(404, {"error": f"no repository {request.query.get('repository')!r} in registry {svc.reg.name}"})
        digest = request.query.get("digest", "")
        return reply(200, {"repository": repo.name, "digest": digest,
                           "referrers": [{"digest": m.digest, "artifactType": m.artifact_type} for m in svc.referrers_of(repo, digest)]})
    if path == "/_emulator/counts":
        repos = svc.reg.repositories.values()
        ops = [op for r in repos for op in r.operations.values()]
        by_status: dict[str, int] = {}
        for op in ops:
            by_status[op.status] = by_status.get(op.status, 0) + 1
        return reply(200, {"registry": svc.reg.name, "repositories": len(svc.reg.repositories),
                           "manifests": sum(len(r.manifests) for r in repos), "tags": sum(len(r.tags) for r in repos),
                           "blobs": len(svc.reg.blobs), "operations": len(ops), "operationsByStatus": by_status,
                           "streamingReferrers": sum(1 for r in repos for m in r.manifests.values()
                                                     if m.artifact_type == "application/vnd.azure.artifact.streaming.v1"),
                           "updated": utcnow_iso()})
    return reply(404, {"error": f"no admin route {path}; try /_emulator/operations, /_emulator/referrers, /_emulator/counts"})
