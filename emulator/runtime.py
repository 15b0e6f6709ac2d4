"""The emulator process: binds the services to loopback HTTPS ports, writes endpoints.json, runs until stopped."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import trustme
from aiohttp import web

from .azurite import Azurite
from .faults import FaultPlan
from .scenario import load_scenario
from .services import acr, admin, arm, blobstore, eventgrid, identity
from .tokens import TokenAuthority
from .web import Context, service_middleware

log = logging.getLogger("emulator")
T = TypeVar("T")
STORAGE_HOST = "localhost"  # the blob storage behind the registries; registries and ARM are 127.0.0.1
MANAGEMENT_SERVICES = (identity, admin, eventgrid, arm)  # arm last: it claims what the others do not


def _bind() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def management_classifier(request: web.Request) -> str:
    for service in MANAGEMENT_SERVICES:
        name = service.classify(request.path)
        if name:
            return name
    return "arm.unknown"


class Emulator:
    """Local Azure: ARM (subscriptions, ACR, AKS), the ACR data plane per registry, managed identity and Event Grid.

    Use as a context manager; `env` holds the settings that point the app, unmodified, at it.
    """

    def __init__(
        self,
        scenario: str | Path | dict[str, Any],
        state_dir: str | Path | None = None,
        azurite: bool | str = False,
    ) -> None:
        """`azurite`: False (none), True (start one), or a connection string of a running Azurite."""
        self.world, rules, fault_seed = load_scenario(scenario)
        self.faults = FaultPlan(seed=fault_seed)
        self.faults.configure(rules)
        self.state_dir = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="emulator-"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.ctx = Context(
            world=self.world,
            faults=self.faults,
            tokens=TokenAuthority(self.world.tenant_id),
            identity_header=secrets.token_urlsafe(24),
            state_dir=self.state_dir,
        )
        self._azurite_opt = azurite
        self._azurite: Azurite | None = None
        self.storage_connection_string: str | None = azurite if isinstance(azurite, str) else None
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._runners: list[web.AppRunner] = []
        self.endpoints: dict[str, Any] = {}

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Emulator:
        if self._azurite_opt is True:
            self._azurite = Azurite().start()
            self.storage_connection_string = self._azurite.connection_string
        self._thread = threading.Thread(target=self._loop.run_forever, name="emulator-loop", daemon=True)
        self._thread.start()
        try:
            self.run(self._astart(), timeout=60)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._thread is not None and self._loop.is_running():
            try:
                self.run(self._astop(), timeout=30)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout=10)
        self._thread = None
        if self._azurite is not None:
            self._azurite.stop()
            self._azurite = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers for tests and the demo
    def run(self, coro: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the emulator's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn` on the emulator's loop (safe against concurrent handlers) and return its result."""

        async def _call() -> T:
            return fn(*args, **kwargs)

        return self.run(_call())

    @property
    def env(self) -> dict[str, str]:
        return dict(self.endpoints.get("env", {}))

    def requests_since(self, seq: int = 0, service: str | None = None) -> list[dict[str, Any]]:
        with self.world.lock:
            return [r.as_dict() for r in self.world.requests[seq:] if service is None or r.service == service]

    def request_mark(self) -> int:
        with self.world.lock:
            return len(self.world.requests)

    # ------------------------------------------------------------------ internals
    async def _astart(self) -> None:
        self.ctx.loop = asyncio.get_running_loop()
        ca = trustme.CA(organization_name="Artifact Streaming Autopilot local Azure")
        cert = ca.issue_cert("127.0.0.1", STORAGE_HOST)
        ca_path = self.state_dir / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_path))
        ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ssl_ctx)
        self.ctx.extras["ssl_client_context"] = ssl.create_default_context(cafile=str(ca_path))

        mgmt_sock = _bind()
        mgmt_port = mgmt_sock.getsockname()[1]
        self.ctx.management_url = f"https://127.0.0.1:{mgmt_port}"
        storage_sock = _bind()
        storage_app = blobstore.create_app(self.ctx)
        # Storage answers under another host name than the registries (real ACR redirects blob GETs to *.blob.core.windows.net
        # or a data endpoint), so a client that keeps Authorization for the same host still must drop it: `localhost`
        # (127.0.0.1 here), covered by the same certificate.
        self.ctx.extras["blobstore"].url = f"https://{STORAGE_HOST}:{storage_sock.getsockname()[1]}"
        await self._serve(storage_app, storage_sock, ssl_ctx)
        reg_socks = {}
        for name, reg in self.world.registries.items():
            sock = _bind()
            port = sock.getsockname()[1]
            reg.login_server = f"127.0.0.1:{port}"
            reg.url = f"https://{reg.login_server}"
            reg_socks[name] = sock

        mgmt = web.Application(middlewares=[service_middleware(self.ctx, management_classifier)], client_max_size=64 * 1024**2)
        for service in MANAGEMENT_SERVICES:
            service.setup(mgmt, self.ctx)
        mgmt.router.add_route("*", "/{tail:.*}", arm.unknown_route)  # last: ARM's JSON 404 for what nothing serves
        await self._serve(mgmt, mgmt_sock, ssl_ctx)
        for name, sock in reg_socks.items():
            await self._serve(acr.create_registry_app(self.ctx, self.world.registries[name]), sock, ssl_ctx)

        env = {
            "AUTOPILOT_ARM_ENDPOINT": self.ctx.management_url,
            "REQUESTS_CA_BUNDLE": str(ca_path),
            "SSL_CERT_FILE": str(ca_path),
            "IDENTITY_ENDPOINT": f"{self.ctx.management_url}{identity.PATH}",
            "IDENTITY_HEADER": self.ctx.identity_header,
        }
        if self.storage_connection_string:
            env["AzureWebJobsStorage"] = self.storage_connection_string
        env.update(self.ctx.extras.get("env", {}))
        self.endpoints = {
            "arm": self.ctx.management_url,
            "ca_bundle": str(ca_path),
            "registries": {name: reg.url for name, reg in self.world.registries.items()},
            "tenant_id": self.world.tenant_id,
            "subscriptions": list(self.world.subscriptions),
            "identity_endpoint": env["IDENTITY_ENDPOINT"],
            "admin": f"{self.ctx.management_url}/_emulator",
            "storage": self.ctx.extras["blobstore"].url,
            **self.ctx.extras.get("endpoints", {}),
            "env": env,
        }
        if self.storage_connection_string:
            self.endpoints["storage_connection_string"] = self.storage_connection_string
        (self.state_dir / "endpoints.json").write_text(json.dumps(self.endpoints, indent=2))

    async def _serve(self, app: web.Application, sock: socket.socket, ssl_ctx: ssl.SSLContext) -> None:
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        await web.SockSite(runner, sock, ssl_context=ssl_ctx, backlog=1024).start()
        self._runners.append(runner)

    async def _astop(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()

    @property
    def endpoints_path(self) -> Path:
        return self.state_dir / "endpoints.json"
