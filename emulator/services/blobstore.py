"""ACR's blob storage behind the registry: blob GETs are redirected (307) here with a signed, expiring URL, as ACR does."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from urllib.parse import quote

from aiohttp import web

from ..model import World
from ..web import Context, service_middleware

# ACR answers a blob GET with "307 Temporary Redirect" to the registry's storage (or a dedicated data endpoint); the link is
# valid for 20 minutes ("How container image downloads work", container-registry-dedicated-data-endpoints).
LINK_TTL_SECONDS = 20 * 60
PATH = re.compile(r"^/(?P<registry>[a-z0-9]+)/(?P<digest>sha256:[a-f0-9]{64})$")


def classify(_path: str) -> str:
    return "storage.blob"


def _xml_error(status: int, code: str, message: str) -> web.Response:
    body = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{message}\n'
            f"RequestId:{secrets.token_hex(8)}\nTime:{time.strftime('%Y-%m-%dT%H:%M:%S.0000000Z', time.gmtime())}</Message></Error>")
    return web.Response(status=status, body=body.encode(), headers={"Content-Type": "application/xml", "x-ms-error-code": code})


class BlobStore:
    """Signs download links for the registries and serves them."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.world: World = ctx.world
        self._key = secrets.token_bytes(32)
        self.url = ""  # https://127.0.0.1:PORT, set when bound

    def _sig(self, registry: str, digest: str, expiry: int) -> str:
        mac = hmac.new(self._key, f"{registry}\n{digest}\n{expiry}".encode(), hashlib.sha256).digest()
        return base64.b64encode(mac).decode()

    def link(self, registry: str, digest: str, ttl: int = LINK_TTL_SECONDS) -> str:
        expiry = int(time.time()) + ttl
        se = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expiry))
        return f"{self.url}/{registry}/{digest}?se={quote(se)}&sp=r&sv=2023-11-03&sr=b&sig={quote(self._sig(registry, digest, expiry))}"

    async def get(self, request: web.Request) -> web.StreamResponse:
        m = PATH.match(request.path)
        if m is None:
            return _xml_error(400, "InvalidUri", "The requested URI does not represent any resource on the server.")
        if "Authorization" in request.headers:
            # The bearer token of the registry must never reach storage: clients drop it on the cross-host redirect.
            return _xml_error(400, "InvalidAuthenticationInfo", "Authentication information is not given in the correct format. "
                                                                "A SAS link and an Authorization header were both given.")
        try:
            expiry = int(time.mktime(time.strptime(request.query.get("se", ""), "%Y-%m-%dT%H:%M:%SZ")) - time.timezone)
        except ValueError:
            expiry = 0
        sig = request.query.get("sig", "")
        if not hmac.compare_digest(sig, self._sig(m["registry"], m["digest"], expiry)):
            return _xml_error(403, "AuthenticationFailed", "Server failed to authenticate the request. Make sure the value of "
                                                           "Authorization header is formed correctly including the signature.")
        if expiry < time.time():
            return _xml_error(403, "AuthenticationFailed", "Signed expiry time has to be after signed start time: the link expired.")
        reg = self.world.registries.get(m["registry"])
        blob = reg.blobs.get(m["digest"]) if reg else None
        if blob is None or blob.content is None:
            return _xml_error(404, "BlobNotFound", "The specified blob does not exist.")
        headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes", "x-ms-blob-type": "BlockBlob",
                   "ETag": f'"0x{hashlib.sha256(m["digest"].encode()).hexdigest()[:15].upper()}"'}
        rng = request.headers.get("Range") or request.headers.get("x-ms-range")
        if rng:
            rm = re.match(r"^bytes=(\d+)-(\d*)$", rng.strip())
            if not rm or int(rm.group(1)) >= max(blob.size, 1):
                return _xml_error(416, "InvalidRange", "The range specified is invalid for the current size of the resource.")
            start = int(rm.group(1))
            end = min(int(rm.group(2)) if rm.group(2) else blob.size - 1, blob.size - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{blob.size}"
            return web.Response(status=206, body=blob.content[start:end + 1], headers=headers)
        return web.Response(status=200, body=blob.content, headers=headers)


def create_app(ctx: Context) -> web.Application:
    store = ctx.extras["blobstore"] = BlobStore(ctx)
    app = web.Application(middlewares=[service_middleware(ctx, lambda r: classify(r.path), host="storage", error_style="acr")])
    app.router.add_route("GET", "/{tail:.*}", store.get)
    app.router.add_route("HEAD", "/{tail:.*}", store.get)
    return app
