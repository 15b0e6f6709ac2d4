"""The emulator's own control API (`/_emulator/...`): inspect the world and the request log, change faults, push images."""

from __future__ import annotations

from aiohttp import web

from ..scenario import ScenarioError, seed_image
from ..web import Context, json_response, read_json


def classify(path: str) -> str | None:
    return "admin" if path.startswith("/_emulator") else None


def setup(app: web.Application, ctx: Context) -> None:
    world = ctx.world

    async def requests_log(request: web.Request) -> web.Response:
        since = int(request.query.get("since", "0"))
        service = request.query.get("service")
        with world.lock:
            rows = [r.as_dict() for r in world.requests[since:] if service is None or r.service == service]
        return json_response(200, {"next": since + len(world.requests[since:]), "requests": rows})

    async def faults(request: web.Request) -> web.Response:
        try:
            body = await read_json(request)
            ctx.faults.configure(body.get("rules", []), seed=body.get("seed"))
        except (ValueError, TypeError, AttributeError) as exc:
            return json_response(400, {"error": str(exc)})
        return json_response(200, {"rules": len(ctx.faults.rules), "seed": ctx.faults.seed})

    async def push_image(request: web.Request) -> web.Response:
        """Push a synthetic image (any size, any platforms) as `docker push` would: manifests stored, events emitted."""
        reg = world.registries.get(request.match_info["registry"])
        if reg is None:
            return json_response(404, {"error": f"no registry {request.match_info['registry']!r}"})
        try:
            body = await read_json(request)
            repository = body.pop("repository")
            with world.lock:
                digest = seed_image(world, reg, repository, body, where="push", emit=True)
        except (KeyError, ValueError, ScenarioError) as exc:
            return json_response(400, {"error": str(exc)})
        return json_response(201, {"digest": digest})

    app.router.add_get("/_emulator/requests", requests_log)
    app.router.add_post("/_emulator/faults", faults)
    app.router.add_post("/_emulator/registries/{registry}/images", push_image)
