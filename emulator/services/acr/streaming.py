"""Artifact streaming on the data plane: /_streaming (repository setting), /_streaming/{digest} (conversions), /_operations."""

from __future__ import annotations

import json
import time
import uuid as uuid_mod
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ...streaming import RepositorySettingOperation, operation_body, refusal
from .common import (
    Abort,
    error_reply,
    reply,
)

if TYPE_CHECKING:
    from .service import RegistryService


def streaming_allowed(svc: RegistryService) -> None:
    refused = refusal(svc.reg)
    if refused is not None:
        raise Abort(error_reply(refused.status, refused.code, refused.message))


def op_headers(svc: RegistryService, repo: str, op_id: str) -> dict[str, str]:
    url = f"https://{svc.login}/acr/v1/{repo}/_operations/{op_id}"
    return {"Location": url, "Operation-Location": url, "operation-id": op_id}


async def streaming_body(svc: RegistryService, request: web.Request, repo_level: bool) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw) if raw else None
    except ValueError as exc:
        raise Abort(error_reply(400, "INVALID_REQUEST", f"the request body is not valid JSON ({exc}); send "
                                                    '{"conversionFormat":"overlaybd","conversionVersion":"v1"}')) from exc
    if not isinstance(body, dict):
        raise Abort(error_reply(400, "INVALID_REQUEST", 'the request body must be a JSON object such as '
                                                    '{"conversionFormat":"overlaybd","conversionVersion":"v1"}'))
    if body.get("conversionFormat") != "overlaybd" or body.get("conversionVersion") != "v1":
        raise Abort(error_reply(400, "INVALID_REQUEST",
                            f"unsupported conversion {body.get('conversionFormat')!r}/{body.get('conversionVersion')!r}: "
                            "only conversionFormat overlaybd with conversionVersion v1 is supported"))
    if repo_level and not isinstance(body.get("convertPushedImages"), bool):
        raise Abort(error_reply(400, "INVALID_REQUEST", "convertPushedImages must be true or false"))
    return body


async def streaming_repo(svc: RegistryService, request: web.Request, name: str) -> web.Response:
    if request.method == "GET":
        svc.require(request, name, ("pull", "metadata_read"), "pull")
        streaming_allowed(svc)
        repo = svc.repo_or_404(name)
        return reply(200, {"convertPushedImages": repo.convert_pushed_images})
    if request.method != "POST":
        return error_reply(405, "UNSUPPORTED", f"{request.method} is not supported on _streaming; use GET or POST")
    svc.require(request, name, ("push",), "pull,push")
    streaming_allowed(svc)
    repo = svc.repo_or_404(name)
    body = await streaming_body(svc, request, repo_level=True)
    repo.convert_pushed_images = body["convertPushedImages"]
    op = RepositorySettingOperation(id=str(uuid_mod.uuid4()), repository=name, convert_pushed_images=repo.convert_pushed_images,
                                    start_time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    svc.engine.repository_operations[op.id] = op
    return reply(202, {"convertPushedImages": repo.convert_pushed_images, "conversionFormat": "overlaybd",
                       "conversionVersion": "v1", "status": "Succeeded", "id": op.id}, op_headers(svc, name, op.id))


async def streaming_digest(svc: RegistryService, request: web.Request, name: str, digest: str) -> web.Response:
    if request.method == "GET":
        svc.require(request, name, ("pull", "metadata_read"), "pull")
        streaming_allowed(svc)
        svc.check_digest(digest)
        repo = svc.repo_or_404(name)
        op = svc.engine.latest(repo, digest)
        if op is None:
            raise Abort(error_reply(404, "OPERATION_UNKNOWN", "The specified operation does not exist", with_detail=False))
        return reply(200, {"id": op.id, "status": op.status}, op_headers(svc, name, op.id))
    if request.method != "POST":
        return error_reply(405, "UNSUPPORTED", f"{request.method} is not supported on _streaming/{{digest}}; use GET or POST")
    # The az CLI POSTs with its pull,push token (exchange 24 reuses exchange 18's token; see test_conformance.py).
    svc.require(request, name, ("push",), "pull,push")
    streaming_allowed(svc)
    svc.check_digest(digest)
    repo = svc.repo_or_404(name)
    await streaming_body(svc, request, repo_level=False)
    if digest not in repo.manifests:
        raise Abort(error_reply(404, "MANIFEST_UNKNOWN", "manifest unknown", {"Name": name, "Revision": digest}))
    op = svc.engine.start(svc.reg, repo, digest)
    return reply(202, {"id": op.id, "status": op.status}, op_headers(svc, name, op.id))


async def operation(svc: RegistryService, request: web.Request, name: str, op_id: str, cancel: str = "") -> web.Response:
    if cancel:
        if request.method != "POST":
            return error_reply(405, "UNSUPPORTED", "cancel with POST …/_operations/{id}:cancel")
        svc.require(request, name, ("push",), "pull,push")
    else:
        if request.method != "GET":
            return error_reply(405, "UNSUPPORTED", f"{request.method} is not supported on operations; use GET")
        svc.require(request, name, ("pull", "metadata_read"), "pull")
    streaming_allowed(svc)
    repo = svc.repo_or_404(name)
    op = repo.operations.get(op_id)
    if op is None:
        setting = svc.engine.repository_operations.get(op_id)
        if setting is not None and setting.repository == name and not cancel:
            return reply(200, setting.body())
        raise Abort(error_reply(404, "OPERATION_UNKNOWN", "The specified operation does not exist", with_detail=False))
    if cancel:
        svc.engine.cancel(op)
    return reply(200, operation_body(op, cancel=bool(cancel)))
