"""The registry's route table (route name -> handler) and its dispatch; `create_registry_app` mounts one registry.

To add an endpoint: add its path pattern and fault class to common.ROUTES and its handler here
(`async handler(svc: RegistryService, request, **path_params)`, raising Abort for ACR's errors).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from ...model import Registry
from ...web import Context, service_middleware
from . import admin, auth, manifests, oci, streaming, tags
from .common import COMMON_HEADERS, REPO_RE, Abort, classify, error_reply, match_route, reply
from .service import RegistryService

Handler = Callable[..., Awaitable[web.StreamResponse]]


async def v2(svc: RegistryService, request: web.Request) -> web.Response:
    """`GET /v2/`: 200 with any valid credentials, else the 401 challenge (without a scope) that starts every client's login."""
    if auth.request_grant(svc, request) is None:
        return svc.unauthorized()
    return reply(200, {})


HANDLERS: dict[str, Handler] = {
    "auth": auth.oauth2,
    "v2": v2,
    "catalog": oci.catalog,
    "manifest": oci.manifest,
    "upload": oci.upload,
    "blob": oci.blob,
    "referrers": oci.referrers,
    "tags_list": tags.tags_list,
    "acr_tag": tags.acr_tag,
    "acr_tags": tags.acr_tags,
    "acr_manifest": manifests.acr_manifest,
    "acr_manifests": manifests.acr_manifests,
    "streaming_digest": streaming.streaming_digest,
    "streaming_repo": streaming.streaming_repo,
    "operation": streaming.operation,
    "repository": manifests.repository,
}


async def dispatch(svc: RegistryService, request: web.Request) -> web.StreamResponse:
    if request.path.startswith("/_emulator/"):
        return await admin.admin(svc, request)
    found = match_route(request.rel_url.raw_path)
    if found is None:
        return error_reply(404, "NOT_FOUND", f"no such registry endpoint: {request.method} {request.path}")
    route, _cls, args = found
    if "name" in args and not REPO_RE.match(args["name"]):
        return error_reply(400, "NAME_INVALID", f"invalid repository name {args['name']!r}: use lowercase letters, digits "
                                                "and separators (. _ __ -) in path components separated by /", {"name": args["name"]})
    try:
        return await HANDLERS[route](svc, request, **args)
    except Abort as abort:
        return abort.response


SERVICE_KEY = web.AppKey("acr_service", RegistryService)


def create_registry_app(ctx: Context, registry: Registry) -> web.Application:
    """The registry's data plane as an aiohttp app (bind it to the registry's own port; login server 127.0.0.1:PORT)."""
    service = RegistryService(ctx, registry)
    app = web.Application(
        middlewares=[service_middleware(ctx, lambda r: classify(r.path), host=registry.name, error_style="acr")],
        client_max_size=256 * 1024**2,
    )

    async def add_common_headers(_request: web.Request, response: web.StreamResponse) -> None:
        for key, value in COMMON_HEADERS.items():
            response.headers[key] = value

    async def handle(request: web.Request) -> web.StreamResponse:
        return await dispatch(service, request)

    app.on_response_prepare.append(add_common_headers)
    app[SERVICE_KEY] = service
    ctx.extras.setdefault("acr_services", {})[registry.name] = service
    app.router.add_route("*", "/{tail:.*}", handle)
    return app
