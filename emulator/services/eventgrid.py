"""(being built) The emulated eventgrid service."""

from aiohttp import web

from ..web import Context


def classify(path: str) -> str | None:
    return None


def setup(app: web.Application, ctx: Context) -> None:
    return None
