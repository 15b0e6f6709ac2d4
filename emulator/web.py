"""HTTP plumbing shared by every emulated service: error bodies, request logging and fault injection middleware."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from .faults import FaultDecision, FaultPlan, strip_json
from .model import World
from .tokens import TokenAuthority


@dataclass
class Context:
    """What every service needs: the world, the fault plan, the token authority and where things live."""

    world: World
    faults: FaultPlan
    tokens: TokenAuthority
    identity_header: str
    state_dir: Path
    management_url: str = ""  # https://127.0.0.1:PORT (ARM, identity, Event Grid topics, admin)
    loop: asyncio.AbstractEventLoop | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # per-service runtime objects (e.g. the Event Grid dispatcher)


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json; charset=utf-8", **(headers or {})},
    )


def arm_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """ARM's error envelope: {"error": {"code", "message"}}."""
    return json_response(status, {"error": {"code": code, "message": message}}, headers)


def acr_error(status: int, code: str, message: str, detail: Any = None, headers: dict[str, str] | None = None) -> web.Response:
    """The registry's (docker distribution) error envelope: {"errors": [{"code", "message", "detail"}]}."""
    return json_response(status, {"errors": [{"code": code, "message": message, "detail": detail}]}, headers)


# Default error codes of injected faults, per status, in each service's style (a rule's error_code overrides them).
ARM_FAULT_CODES = {400: "BadRequest", 401: "AuthenticationFailed", 403: "AuthorizationFailed", 404: "NotFound",
                   408: "RequestTimeout", 409: "Conflict", 412: "PreconditionFailed", 429: "TooManyRequests",
                   500: "InternalServerError", 502: "BadGateway", 503: "ServiceUnavailable", 504: "GatewayTimeout"}
ACR_FAULT_CODES = {400: "UNSUPPORTED", 401: "UNAUTHORIZED", 403: "DENIED", 404: "NAME_UNKNOWN", 409: "CONFLICT",
                   412: "PRECONDITION_FAILED", 416: "BLOB_UPLOAD_INVALID", 429: "TOOMANYREQUESTS"}


def fault_response(decision: FaultDecision, endpoint_class: str, error_style: str) -> web.Response:
    """The error answer of an injected fault: ARM's `{"error": {...}}` or ACR's `{"errors": [...]}`, any status."""
    assert decision.status is not None
    headers = dict(decision.headers)
    if decision.retry_after is not None:
        headers["Retry-After"] = str(int(decision.retry_after)) if decision.retry_after >= 1 else f"{decision.retry_after:g}"
    message = decision.error_message or f"emulator fault injection ({endpoint_class})"
    if error_style == "arm":
        code = decision.error_code or ARM_FAULT_CODES.get(decision.status, "InjectedFault")
        return arm_error(decision.status, code, message, headers)
    code = decision.error_code or ACR_FAULT_CODES.get(decision.status) or \
        ARM_FAULT_CODES.get(decision.status, "InjectedFault").upper()
    return acr_error(decision.status, code, message, headers=headers)


def _injected(request: web.Request, decision: FaultDecision, endpoint_class: str, error_style: str) -> tuple[int, web.Response]:
    """The injected answer: a dropped connection (raises) or an error status with its service's error body."""
    if decision.drop:
        if request.transport is not None:
            request.transport.abort()
        raise ConnectionResetError("emulator fault: connection dropped")
    resp = fault_response(decision, endpoint_class, error_style)
    return resp.status, resp


# What the request log keeps of a request (the rest of the headers carry nothing tests assert on).
LOGGED_HEADERS = ("If-Match", "If-None-Match", "Content-Range", "Range", "Content-Type", "Content-Length", "Accept",
                  "Docker-Content-Digest", "x-ms-client-request-id", "aeg-event-type", "User-Agent")
SECRET_FIELDS = ("access_token", "refresh_token", "password", "client_secret", "key")
MAX_LOGGED_BODY = 16 * 1024
TEXT_TYPES = ("json", "text/", "x-www-form-urlencoded", "xml")


def logged_headers(request: web.Request) -> dict[str, str]:
    """The headers that matter for a test, Authorization reduced to its scheme (`Bearer`, `Basic`): never its value."""
    out = {name: request.headers[name] for name in LOGGED_HEADERS if name in request.headers}
    auth = request.headers.get("Authorization")
    if auth:
        out["Authorization"] = auth.split(" ", 1)[0] + " ***"
    for name in ("aeg-sas-key", "aeg-sas-token", "X-IDENTITY-HEADER"):
        if name in request.headers:
            out[name] = "***"
    return out


def logged_body(raw: bytes, content_type: str) -> str | None:
    """A write body as the log keeps it: text with secret fields redacted and capped, or a summary of binary content."""
    if not raw:
        return None
    if not any(t in content_type.lower() for t in TEXT_TYPES):
        return f"<{len(raw)} bytes {content_type or 'application/octet-stream'}>"
    text = raw[:MAX_LOGGED_BODY].decode("utf-8", errors="replace")
    for name in SECRET_FIELDS:
        text = re.sub(rf'(\b{name}=)[^&]*', r"\1***", text)  # form fields
        text = re.sub(rf'("{name}"\s*:\s*)"[^"]*"', r'\1"***"', text)  # JSON members
    return text + (f"… <{len(raw)} bytes>" if len(raw) > MAX_LOGGED_BODY else "")


async def _rewrite(request: web.Request, resp: web.StreamResponse, decision: FaultDecision) -> web.StreamResponse:
    """Apply the answer-shaping faults: a slow answer, fields stripped from JSON, extra headers, a huge body."""
    if decision.latency_after_s:
        await asyncio.sleep(decision.latency_after_s)
    if decision.strip_fields and isinstance(resp, web.Response) and resp.body and "json" in (resp.content_type or ""):
        original = json.loads(resp.body)
        body = strip_json(json.loads(resp.body), decision.strip_fields)
        if body != original:  # nothing stripped: the answer stays byte-identical (a manifest keeps its digest)
            resp = json_response(resp.status, body, {k: v for k, v in resp.headers.items()
                                                     if k.lower() not in ("content-length", "content-type")})
    for key, value in decision.set_headers.items():
        resp.headers[key] = value
    if decision.body_bytes and resp.status == 200:
        huge = web.StreamResponse(status=200, headers={"Content-Type": "application/octet-stream"})
        huge.enable_chunked_encoding()
        await huge.prepare(request)
        chunk = b"{" + b" " * (64 * 1024 - 1)
        sent = 0
        try:
            while sent < decision.body_bytes:
                await huge.write(chunk[: decision.body_bytes - sent])
                sent += len(chunk)
            await huge.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass  # the client stopped reading (what a capped reader does)
        return huge
    return resp


Classifier = Callable[[web.Request], str]


def service_middleware(ctx: Context, classify: Classifier, host: str = "", error_style: str = "arm"):
    """Record every request in the world's request log and apply the fault plan for its endpoint class.

    `classify` names the endpoint class of a request, `service.kind` (e.g. `arm.agentpools`, `acr.streaming`).
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        endpoint_class = classify(request)
        status = 0
        body = None
        if request.method in ("POST", "PUT", "PATCH", "DELETE") and request.can_read_body:
            body = logged_body(await request.read(), request.headers.get("Content-Type", ""))  # cached: the handler reads it again
        try:
            decision = None
            if not request.path.startswith("/_emulator"):
                decision = ctx.faults.decide(endpoint_class, request.method, request.path)
                if decision.latency_s:
                    await asyncio.sleep(decision.latency_s)
                if not decision.after_handler and (decision.drop or decision.status is not None):
                    status = -1 if decision.drop else 0
                    status, resp = _injected(request, decision, endpoint_class, error_style)
                    return resp
            try:
                resp = await handler(request)
            except web.HTTPException as exc:
                status = exc.status
                raise
            status = resp.status
            if decision is not None and decision.rewrites:
                resp = await _rewrite(request, resp, decision)
            if decision is not None and decision.after_handler and (decision.drop or decision.status is not None):
                # the request was processed; its answer is lost on the way back (the client cannot tell what happened)
                status = -1 if decision.drop else status
                status, resp = _injected(request, decision, endpoint_class, error_style)
            return resp
        finally:
            ctx.world.record(
                service=endpoint_class.split(".")[0],
                endpoint_class=endpoint_class,
                host=host,
                method=request.method,
                path=request.path,
                query=request.query_string,
                status=status or 500,  # -1: dropped connection; 500: the handler crashed
                headers=logged_headers(request),
                body=body,
            )

    return middleware


def bound(handler: Callable[[Context, web.Request], Awaitable[web.StreamResponse]], ctx: Context):
    """An aiohttp handler that calls `handler(ctx, request)` (module-level handlers stay importable and testable alone)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        return await handler(ctx, request)

    handle.__name__ = getattr(handler, "__name__", "handler")
    return handle


async def read_json(request: web.Request) -> Any:
    """The request's JSON body; raises ValueError with a readable reason when it is not JSON."""
    raw = await request.read()
    if not raw:
        raise ValueError("the request body is empty")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
