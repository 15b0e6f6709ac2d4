"""(being built) The emulated ACR data plane, one aiohttp app per registry."""

from aiohttp import web

from ..model import Registry
from ..web import Context, service_middleware


def classify(path: str) -> str:
    return "acr.other"


def create_registry_app(ctx: Context, registry: Registry) -> web.Application:
    return web.Application(middlewares=[service_middleware(ctx, lambda r: classify(r.path), host=registry.name, error_style="acr")])
