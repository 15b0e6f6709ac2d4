"""Push-path benchmark (not a test): 1,000 ImagePushed events through on_image_pushed vs the az CLI's per-tag request sequence.

Both run against the same local emulator with the same injected latency on every registry request (default 20 ms).

    .venv/bin/python bench/push_bench.py [--events 1000] [--latency-ms 20] [--workers 16] [--az-sample 100] [--json]

Method (see docs/performance.md, "Push path"):
- The emulator holds EVENTS/2 new single-platform images, each tagged twice (the CI pattern: app:1.4.2 and app:latest):
  EVENTS ImagePushed events, built by the emulator's own Event Grid event builder, in push order (tag pairs adjacent).
- "function": the events go through the Functions host stand-in's invocation path (worker decoding + the real
  on_image_pushed adapter + PushService), on WORKERS threads (one instance: shared caches, like one Functions worker),
  and once more sequentially on a fresh instance. Blob leases live in Azurite.
- "az CLI sequence": for a sample of tags, the requests `az acr artifact-streaming create --image repo:tag` makes
  (recorded session, tests/fixtures/acr_recording): per call a /v2/ challenge twice and a token exchange; tag → digest,
  referrers, operation check, create. Sequential, as a CI script would run it.
- "already streaming": the first SEQUENTIAL_EVENTS events again once their conversions finished, on the warm instance.
- Reported: events/s, registry requests per event (from the emulator's request log), p50/p99 handler latency.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from emulator import Emulator  # noqa: E402
from emulator.azurite import Azurite  # noqa: E402
from emulator.funchost import FunctionsHost  # noqa: E402
from emulator.services.eventgrid import build_system_event  # noqa: E402

SUB = "5d1c7e00-0000-4000-8000-00000000be00"
REGISTRY = "benchprem"
STREAMING = "application/vnd.azure.artifact.streaming.v1"


def scenario(images: int, cli_images: int, latency_ms: float) -> dict[str, Any]:
    return {
        "name": "push-bench", "seed": 3,
        "settings": {"conversion_seconds": 5.0},
        "faults": {"rules": [{"match": "acr.*", "latency_ms": latency_ms}]},
        "subscriptions": [{"id": SUB, "registries": [{
            "name": REGISTRY, "resource_group": "rg-bench", "sku": "Premium",
            "repositories": [
                {"name": "app", "images": [{"tags": [f"{i}.0.0", f"{i}-latest"], "layers_mb": [4, 8], "seed": f"b{i}"}
                                           for i in range(images)]},
                {"name": "cli", "images": [{"tags": [f"{i}.0.0"], "layers_mb": [4, 8], "seed": f"c{i}"} for i in range(cli_images)]},
            ],
        }]}],
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def events_for(emu: Emulator, repository: str, count: int) -> list[dict[str, Any]]:
    reg = emu.world.registries[REGISTRY]
    repo = reg.repositories[repository]
    out = []
    for name, rec in repo.tags.items():
        m = repo.manifests[rec.digest]
        data = {"repository": repository, "digest": rec.digest, "mediaType": m.media_type, "size": m.size, "length": m.size, "tag": name}
        out.append(build_system_event("ImagePushed", reg, data).render("EventGridSchema"))
    return out[:count]


def registry_requests(emu: Emulator, mark: int) -> list[dict[str, Any]]:
    return [r for r in emu.requests_since(mark, service="acr") if r["host"] == REGISTRY]


def fresh_instance() -> None:
    import functions.push
    from shared.acr import PROCESS_TOKEN_CACHE, reset_clients

    functions.push._service = None
    PROCESS_TOKEN_CACHE.clear()
    reset_clients()


def run_function(emu: Emulator, host: FunctionsHost, events: list[dict[str, Any]], workers: int,
                 fresh: bool = True) -> dict[str, Any]:
    if fresh:
        fresh_instance()
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()

    def one(event: dict[str, Any]) -> None:
        nonlocal failures
        t0 = time.perf_counter()
        inv = host.invoke_event("on_image_pushed", event)
        dt = time.perf_counter() - t0
        with lock:
            latencies.append(dt)
            failures += not inv.succeeded

    mark = emu.request_mark()
    start = time.perf_counter()
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, events))
    else:
        for event in events:
            one(event)
    wall = time.perf_counter() - start
    reqs = registry_requests(emu, mark)
    auth = [r for r in reqs if r["path"].startswith("/oauth2/")]
    return {
        "events": len(events), "workers": workers, "seconds": round(wall, 2), "events_per_s": round(len(events) / wall, 1),
        "requests_per_event": round(len(reqs) / len(events), 2), "token_requests": len(auth),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1), "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "failed_invocations": failures,
    }


class AzCliSequence:
    """The requests of one `az acr artifact-streaming create -n REG --image repo:tag` (recorded session, CLI 2.72)."""

    def __init__(self, emu: Emulator, aad_token: str) -> None:
        reg = emu.world.registries[REGISTRY]
        self.base = reg.url
        self.service = reg.login_server
        self.aad = aad_token
        self.http = requests.Session()
        self.http.verify = emu.endpoints["ca_bundle"]

    def _challenge(self) -> None:
        for _ in range(2):  # the CLI probes /v2/ twice before each login
            self.http.get(f"{self.base}/v2/", timeout=30)

    def _exchange(self) -> str:
        return self.http.post(f"{self.base}/oauth2/exchange", timeout=30, data={
            "grant_type": "access_token", "service": self.service, "access_token": self.aad}).json()["refresh_token"]

    def _token(self, scope: str, refresh: str, password_grant: bool = False) -> dict[str, str]:
        if password_grant:
            form = {"grant_type": "password", "service": self.service, "scope": scope,
                    "username": "00000000-0000-0000-0000-000000000000", "password": refresh}
        else:
            form = {"grant_type": "refresh_token", "service": self.service, "scope": scope, "refresh_token": refresh}
        token = self.http.post(f"{self.base}/oauth2/token", data=form, timeout=30).json()["access_token"]
        return {"Authorization": f"Bearer {token}"}

    def create(self, repository: str, tag: str) -> str:
        """15 requests, as recorded: (challenge x2, exchange, token, call) x2, then challenge x2, password grant, check, create."""
        self._challenge()
        auth = self._token(f"repository:{repository}:metadata_read", self._exchange())
        digest = self.http.get(f"{self.base}/acr/v1/{repository}/_tags/{tag}", headers=auth, timeout=30).json()["tag"]["digest"]
        self._challenge()
        refresh = self._exchange()
        auth = self._token(f"repository:{repository}:pull", refresh)
        refs = self.http.get(f"{self.base}/v2/{repository}/referrers/{digest}?artifactType={quote(STREAMING, safe='')}",
                             headers=auth, timeout=30).json()
        if refs.get("manifests"):
            return "already-streaming"
        self._challenge()
        # the CLI's password grant sends a cached ACR token as the password; the refresh token makes the same request
        auth = self._token(f"repository:{repository}:pull,push", refresh, password_grant=True)
        op = self.http.get(f"{self.base}/acr/v1/{repository}/_streaming/{digest}", headers=auth, timeout=30)
        if op.status_code == 200:
            return "in-progress"
        self.http.post(f"{self.base}/acr/v1/{repository}/_streaming/{digest}", headers=auth, timeout=30,
                       json={"conversionFormat": "overlaybd", "conversionVersion": "v1"})
        return "created"


def run_az(emu: Emulator, sample: int) -> dict[str, Any]:
    from shared.azure_clients import credential
    from shared.settings import AzureSettings

    aad = credential().get_token(f"{AzureSettings.from_env().acr_audience}/.default").token
    cli = AzCliSequence(emu, aad)
    tags = list(emu.world.registries[REGISTRY].repositories["cli"].tags)[:sample]
    latencies = []
    mark = emu.request_mark()
    start = time.perf_counter()
    for tag in tags:
        t0 = time.perf_counter()
        cli.create("cli", tag)
        latencies.append(time.perf_counter() - t0)
    wall = time.perf_counter() - start
    reqs = registry_requests(emu, mark)
    return {
        "events": len(tags), "workers": 1, "seconds": round(wall, 2), "events_per_s": round(len(tags) / wall, 1),
        "requests_per_event": round(len(reqs) / len(tags), 2),
        "token_requests": len([r for r in reqs if r["path"].startswith("/oauth2/")]),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1), "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "failed_invocations": 0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--sequential-events", type=int, default=200, help="events for the sequential function run")
    parser.add_argument("--az-sample", type=int, default=100, help="tags for the az CLI sequence (it is slow by design)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.events < 2 or args.events % 2:
        parser.error("--events must be an even number (each image is pushed with two tags)")

    import logging

    logging.basicConfig(level=logging.WARNING)
    images = args.events // 2 + args.sequential_events // 2
    with Azurite() as azurite, Emulator(scenario(images, args.az_sample, args.latency_ms), state_dir=tempfile.mkdtemp(prefix="push-bench-"),
                                        azurite=azurite.connection_string) as emu:
        os.environ.update(emu.env)
        os.environ["AUTOPILOT_PUSH_LOCK_CONTAINER"] = f"bench-{int(time.time())}"
        from shared.azure_clients import reset_credential

        reset_credential()
        host = FunctionsHost(app_module="function_app", log_level=logging.WARNING)
        host.load()
        all_events = events_for(emu, "app", 2 * images)
        results = {
            "function (concurrent)": run_function(emu, host, all_events[: args.events], args.workers),
        }
        # sequential, on a fresh instance: new images, two tags each (as the concurrent run)
        results["function (sequential)"] = run_function(emu, host, all_events[args.events: args.events + args.sequential_events], 1)
        results["az CLI sequence (sequential)"] = run_az(emu, args.az_sample)
        # Event Grid redelivering (or a re-push of) images that finished converting: the warm cheapest exit
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and any(op.status in ("NotStarted", "Running") for op in
                                                  emu.world.registries[REGISTRY].repositories["app"].operations.values()):
            time.sleep(0.5)
        results["function (already streaming)"] = run_function(emu, host, all_events[: args.sequential_events], args.workers,
                                                               fresh=False)
        conversions = sum(len(r.operations) for r in emu.world.registries[REGISTRY].repositories.values())
    if args.json:
        print(json.dumps({"latency_ms": args.latency_ms, "results": results, "conversions": conversions}, indent=2))
        return 0
    print(f"push path benchmark: {args.latency_ms:g} ms injected latency per registry request, {os.cpu_count()} CPUs")
    cols = ["events", "workers", "seconds", "events_per_s", "requests_per_event", "token_requests", "p50_ms", "p99_ms",
            "failed_invocations"]
    print(f"{'run':32} " + " ".join(f"{c:>18}" for c in cols))
    for name, row in results.items():
        print(f"{name:32} " + " ".join(f"{row[c]!s:>18}" for c in cols))
    print(f"conversions started in the emulator: {conversions}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
