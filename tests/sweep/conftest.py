"""Sweep fixtures: a registry estate with pre-existing images, the Functions host running function_app with fast queue options."""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from emulator import Emulator
from emulator.funchost import FunctionsHost
from emulator.model import StreamingOperation
from emulator.streaming import FAILURES
from shared.acr import PROCESS_TOKEN_CACHE, reset_clients
from shared.storage import blob_service_client

SUB_ID = "5d1c7e00-0000-4000-8000-00000000c001"
PREMIUM, STANDARD, NOREAD = "sweepprem", "sweepstd", "sweepnoread"
SWEEP_KEYS = ("AUTOPILOT_SWEEP_REPOSITORIES_PER_ITEM",
              "AUTOPILOT_PUSH_MODE", "AUTOPILOT_PUSH_REGISTRIES", "AUTOPILOT_PUSH_INCLUDE", "AUTOPILOT_PUSH_EXCLUDE",
              "AUTOPILOT_SWEEP_MODE", "AUTOPILOT_SWEEP_MAX_CONVERSIONS", "AUTOPILOT_SWEEP_SUBSCRIPTIONS",
              "AUTOPILOT_SWEEP_AUTO_CONVERT", "AUTOPILOT_SWEEP_ITEM_SECONDS", "AUTOPILOT_SWEEP_PAGE_SIZE", "AUTOPILOT_SWEEP_TIME_BUDGET_SECONDS")
FAST_QUEUES = {"batchSize": 8, "newBatchThreshold": 4, "maxDequeueCount": 3, "visibilityTimeout": "00:00:00.2",
               "maxPollingInterval": "00:00:00.5"}


def image(tag: str, seed: str, **extra: Any) -> dict[str, Any]:
    return {"tags": [tag], "platforms": ["linux/amd64"], "layers_mb": [5], "seed": seed, **extra}


def estate(faults: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """sweepprem: app (3 old images, one already streaming, one arm64, one shared by two tags), tools (2), debug (1);
    sweepstd: Standard SKU; sweepnoread: Premium, but the identity has no data-plane role."""
    return {
        "name": "sweep", "seed": 5,
        "settings": {"conversion_seconds": 0.2, "eventgrid_retry_base_seconds": 0.05},
        "faults": {"seed": 3, "rules": faults or []},
        "subscriptions": [{"id": SUB_ID, "registries": [
            {"name": PREMIUM, "resource_group": "rg-sweep", "sku": "Premium", "repositories": [
                {"name": "app", "images": [image("1.0", "app-10"), image("1.1", "app-11"),
                                           image("1.2", "app-12", streaming=True),
                                           {"tags": ["arm"], "platforms": ["linux/arm64"], "layers_mb": [3], "seed": "app-arm"},
                                           {"tags": ["2.0", "latest"], "platforms": ["linux/amd64"], "layers_mb": [4],
                                            "seed": "app-20"}]},
                {"name": "tools", "images": [image("a", "tools-a"), image("b", "tools-b")]},
                {"name": "debug", "images": [image("x", "debug-x")]},
            ]},
            {"name": STANDARD, "resource_group": "rg-sweep", "sku": "Standard",
             "repositories": [{"name": "app", "images": [image("1.0", "std-10")]}]},
            {"name": NOREAD, "resource_group": "rg-sweep", "sku": "Premium", "identity_roles": [],
             "repositories": [{"name": "app", "images": [image("1.0", "noread-10")]}]},
        ]}],
    }


@dataclass
class SweepStack:
    emu: Emulator
    host: FunctionsHost | None
    container: str

    def registry(self, name: str = PREMIUM) -> Any:
        return self.emu.world.registries[name]

    def digests(self, repo: str, registry: str = PREMIUM) -> dict[str, str]:
        with self.emu.world.lock:
            return {t.name: t.digest for t in self.registry(registry).repositories[repo].tags.values()}

    def operations(self, registry: str = PREMIUM) -> list[StreamingOperation]:
        with self.emu.world.lock:
            return [op for repo in self.registry(registry).repositories.values() for op in repo.operations.values()]

    def ops_per_digest(self, registry: str = PREMIUM) -> dict[str, int]:
        out: dict[str, int] = {}
        for op in self.operations(registry):
            out[op.digest] = out.get(op.digest, 0) + 1
        return out

    def fail_conversion(self, repo: str, digest: str, code: str, registry: str = PREMIUM) -> None:
        """Record a finished, failed conversion of `digest` (as if an earlier attempt had ended that way)."""
        with self.emu.world.lock:
            r = self.registry(registry).repositories[repo]
            op_id = str(uuid.uuid4())
            r.operations[op_id] = StreamingOperation(op_id, repo, digest, status="Failed", progress=100, error_code=code,
                                                     details=f"Conversion failed for resource {repo}@{digest}. {code}: {FAILURES[code]}")

    def latest_report(self, timeout: float = 60.0) -> dict[str, Any]:
        container = blob_service_client().get_container_client(self.container)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return json.loads(container.download_blob("latest.json").readall())
            except Exception:
                time.sleep(0.2)
        raise AssertionError("no sweep report was written")


def reset_instance() -> None:
    import functions.push
    import functions.sweep

    functions.push._service = None
    functions.sweep._service = None
    PROCESS_TOKEN_CACHE.clear()
    reset_clients()


def start_host(tmp_path: Path, queues: dict[str, Any] | None = None) -> FunctionsHost:
    """function_app in the host stand-in, its queue triggers reading a host.json with fast retry settings."""
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0", "extensions": {"queues": queues or FAST_QUEUES}}))
    host = FunctionsHost(app_module="function_app", max_workers=16)
    host.load()
    for fn in host.functions.values():
        fn.directory = str(tmp_path)
    return host.start()


@pytest.fixture
def sweep_stack(make_emulator: Callable[..., Emulator], monkeypatch: pytest.MonkeyPatch,
                tmp_path: Path) -> Iterator[Callable[..., SweepStack]]:
    """`sweep_stack(faults=…, env={…}, host=True)` → emulator + (optionally) the Functions host with the sweep's queues."""
    hosts: list[FunctionsHost] = []

    def build(faults: list[dict[str, Any]] | None = None, env: dict[str, str] | None = None, host: bool = True,
              scenario: dict[str, Any] | None = None) -> SweepStack:
        emu = make_emulator(scenario or estate(faults))
        for key in SWEEP_KEYS:
            monkeypatch.delenv(key, raising=False)
        suffix = f"{os.getpid()}-{int(time.time() * 1000) % 10**7}"
        container = f"sweep-{suffix}"
        monkeypatch.setenv("AUTOPILOT_SWEEP_CONTAINER", container)
        monkeypatch.setenv("AUTOPILOT_PUSH_LOCK_CONTAINER", f"locks-{suffix}")
        monkeypatch.setenv("AUTOPILOT_DEADLETTER_CONTAINER", f"dl-{suffix}")
        monkeypatch.setenv("AUTOPILOT_SWEEP_SUBSCRIPTIONS", SUB_ID)
        monkeypatch.setenv("AUTOPILOT_PUSH_HTTP_RETRIES", "0")
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        reset_instance()
        # each test gets its own queues: clear what an earlier test left in the shared Azurite
        from shared.storage import queue_client

        for name in ("autopilot-sweep", "autopilot-sweep-poison"):
            q = queue_client(name)
            with contextlib.suppress(Exception):
                q.clear_messages()
        h = start_host(tmp_path) if host else None
        if h is not None:
            hosts.append(h)
        return SweepStack(emu, h, container)

    yield build
    for h in hosts:
        h.stop()
    reset_instance()
