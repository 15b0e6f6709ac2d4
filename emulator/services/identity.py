"""Managed identity: the App Service / Functions token endpoint (IDENTITY_ENDPOINT + IDENTITY_HEADER, api 2019-08-01)."""

from __future__ import annotations

import time

from aiohttp import web

from ..web import Context, json_response

PATH = "/msi/token"
# Principal the emulated function app runs as (system-assigned identity).
PRINCIPAL_OID = "5b1e0f4c-0000-4000-8000-00000000a0a0"


def classify(path: str) -> str | None:
    return "identity.token" if path == PATH else None


def setup(app: web.Application, ctx: Context) -> None:
    async def token(request: web.Request) -> web.Response:
        if request.headers.get("X-IDENTITY-HEADER") != ctx.identity_header:
            # App Service answers a missing/wrong header with 400 (the endpoint is local to the sandbox).
            return json_response(400, {"statusCode": 400, "message": "X-IDENTITY-HEADER is missing or wrong"})
        if request.query.get("api-version") != "2019-08-01":
            return json_response(400, {"statusCode": 400, "message": "api-version must be 2019-08-01"})
        resource = request.query.get("resource")
        if not resource:
            return json_response(400, {"statusCode": 400, "message": "resource is required"})
        ttl = ctx.world.settings.aad_token_ttl_seconds
        aud = resource.rstrip("/") + "/" if resource.startswith("https://") else resource
        token = ctx.tokens.mint(
            {
                "aud": aud,
                "iss": f"https://sts.windows.net/{ctx.world.tenant_id}/",
                "tid": ctx.world.tenant_id,
                "oid": PRINCIPAL_OID,
                "sub": PRINCIPAL_OID,
                "idtyp": "app",
                "appid": request.query.get("client_id", "00000000-0000-0000-0000-00000000f00d"),
            },
            ttl,
        )
        return json_response(
            200,
            {
                "access_token": token,
                "expires_on": str(int(time.time()) + ttl),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": request.query.get("client_id", "00000000-0000-0000-0000-00000000f00d"),
            },
        )

    app.router.add_get(PATH, token)


def audience_ok(claims: dict, *accepted: str) -> bool:
    """Whether a token's audience is one of `accepted` (compared without the trailing slash)."""
    aud = str(claims.get("aud", "")).rstrip("/")
    return any(aud == a.rstrip("/") for a in accepted)
