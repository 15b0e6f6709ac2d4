"""Push-path fixtures: a scenario with every registry kind, the Functions host stand-in wired to the emulator's Event Grid."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from emulator import Emulator
from emulator.funchost import FunctionsHost
from emulator.services.eventgrid import build_system_event
from shared.acr import PROCESS_TOKEN_CACHE, reset_clients

SUB_ID = "5d1c7e00-0000-4000-8000-00000000b001"
PREMIUM, STANDARD, CMK = "pushprem", "pushstd", "pushcmk"
FUNCTION = "on_image_pushed"
PUSH_ENV_KEYS = ("AUTOPILOT_PUSH_MODE", "AUTOPILOT_PUSH_REGISTRIES", "AUTOPILOT_PUSH_INCLUDE", "AUTOPILOT_PUSH_EXCLUDE",
                 "AUTOPILOT_PUSH_MAX_IMAGE_GB", "AUTOPILOT_PUSH_WAIT_SECONDS", "AUTOPILOT_PUSH_NOT_FOUND_WINDOW_SECONDS",
                 "AUTOPILOT_PUSH_LOCK_CONTAINER")


def scenario(images: list[dict[str, Any]] | None = None, faults: list[dict[str, Any]] | None = None, **settings: Any) -> dict[str, Any]:
    """Three registries: Premium (streams), Standard and Premium+CMK (cannot). `images` are seeded into pushprem/app."""
    return {
        "name": "push",
        "seed": 7,
        "settings": {"conversion_seconds": 0.3, "eventgrid_retry_base_seconds": 0.05, **settings},
        "faults": {"seed": 11, "rules": faults or []},
        "subscriptions": [{
            "id": SUB_ID,
            "registries": [
                {"name": PREMIUM, "resource_group": "rg-push", "sku": "Premium",
                 "repositories": [{"name": "app", "images": images or []}, {"name": "auto", "convert_pushed_images": True}]},
                {"name": STANDARD, "resource_group": "rg-push", "sku": "Standard"},
                {"name": CMK, "resource_group": "rg-push", "sku": "Premium", "encryption": "enabled"},
            ],
        }],
    }


def event_for(emu: Emulator, digest: str, tag: str, schema: str = "EventGridSchema", repository: str = "app",
              registry: str = PREMIUM) -> dict[str, Any]:
    """The event ACR would send for `repository:tag` → `digest` (built by the emulator's own Event Grid)."""
    reg = emu.world.registries[registry]
    manifest = reg.repositories[repository].manifests[digest]
    emitted = {"repository": repository, "digest": digest, "mediaType": manifest.media_type, "size": manifest.size,
               "length": manifest.size, "tag": tag}
    return build_system_event("ImagePushed", reg, emitted).render(schema)


def registry_requests(emu: Emulator, mark: int, registry: str = PREMIUM) -> list[tuple[str, str]]:
    """(method, path) of the requests to one registry since `mark` (`emu.request_mark()`)."""
    return [(r["method"], r["path"]) for r in emu.requests_since(mark, service="acr") if r["host"] == registry]


def reset_instance() -> None:
    """Forget everything a function instance caches (service, ACR clients, tokens): the next event starts a cold instance."""
    import functions.push

    functions.push._service = None
    PROCESS_TOKEN_CACHE.clear()
    reset_clients()


@dataclass
class Stack:
    emu: Emulator
    host: FunctionsHost
    subscriptions: list[str] = field(default_factory=list)

    @property
    def eventgrid(self) -> Any:
        return self.emu.ctx.extras["eventgrid"]

    def registry(self, name: str = PREMIUM) -> Any:
        return self.emu.world.registries[name]

    def subscribe(self, name: str, schema: str = "EventGridSchema", registry: str = PREMIUM, **extra: Any) -> None:
        raw = {"name": name, "registry": registry, "endpoint": self.host.webhook_url(FUNCTION), "schema": schema,
               "included_event_types": ["Microsoft.ContainerRegistry.ImagePushed"], **extra}
        self.emu.call(self.eventgrid.add_subscription, raw)
        self.subscriptions.append(name)

    def push(self, registry: str = PREMIUM, **image: Any) -> str:
        image.setdefault("repository", "app")
        resp = requests.post(f"{self.emu.endpoints['admin']}/registries/{registry}/images", json=image,
                             verify=self.emu.endpoints["ca_bundle"], timeout=30)
        assert resp.status_code == 201, resp.text
        return resp.json()["digest"]

    def settle(self, timeout: float = 60.0) -> None:
        """Wait until Event Grid is idle and no conversion runs (conversions push referrers, which emit events)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.eventgrid.wait_idle_blocking(max(1.0, deadline - time.monotonic())), "Event Grid deliveries still pending"
            if not self.in_flight():
                time.sleep(0.05)
                if self.eventgrid.wait_idle_blocking(5) and not self.in_flight():
                    return
            time.sleep(0.1)
        raise AssertionError("conversions or deliveries still running")

    def in_flight(self) -> int:
        with self.emu.world.lock:
            return sum(1 for reg in self.emu.world.registries.values() for repo in reg.repositories.values()
                       for op in repo.operations.values() if op.status in ("NotStarted", "Running"))

    def operations(self, digest: str, registry: str = PREMIUM, repository: str = "app") -> list[Any]:
        with self.emu.world.lock:
            repo = self.registry(registry).repositories.get(repository)
            return list(repo.operations_for(digest)) if repo else []

    def referrers(self, digest: str, registry: str = PREMIUM, repository: str = "app") -> list[Any]:
        """Streaming referrers whose subject is `digest` (ACR attaches an index's artifact to the index itself)."""
        with self.emu.world.lock:
            repo = self.registry(registry).repositories.get(repository)
            if repo is None:
                return []
            return [m for m in repo.manifests.values()
                    if m.subject == digest and m.artifact_type == "application/vnd.azure.artifact.streaming.v1"]

    def outcomes(self) -> list[dict[str, Any]]:
        """Outcome CloudEvents the function published to the emulator's custom topic."""
        return [e.get("data") or {} for e in self.eventgrid.topic_events()]


@pytest.fixture
def push_stack(make_emulator: Callable[..., Emulator], monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Stack]]:
    """`push_stack(images=…, faults=…, env={AUTOPILOT_PUSH_…})` → emulator + Functions host running function_app."""
    hosts: list[FunctionsHost] = []

    def build(images: list[dict[str, Any]] | None = None, faults: list[dict[str, Any]] | None = None,
              env: dict[str, str] | None = None, **settings: Any) -> Stack:
        emu = make_emulator(scenario(images, faults, **settings))
        for key in PUSH_ENV_KEYS:
            monkeypatch.delenv(key, raising=False)
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("AUTOPILOT_PUSH_LOCK_CONTAINER", f"locks-{os.getpid()}-{len(hosts)}-{int(time.time() * 1000) % 10**6}")
        reset_instance()
        host = FunctionsHost(app_module="function_app", max_workers=8).start()
        hosts.append(host)
        return Stack(emu, host)

    yield build
    for host in hosts:
        host.stop()
    reset_instance()
