"""Push-path benchmark (not a test): 1,000 ImagePushed events through on_image_pushed vs the az CLI's per-tag request sequence.

Both run against the same local emulator with the same injected latency on every registry request (default 20 ms). The
emulator (with its Azurite for the leases) runs in a child process, as ACR runs on other machines than the function: the
function's interpreter is not shared with the registry's.

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
sys.path.insert(0, str(ROOT / "bench"))

import requests  # noqa: E402
import yaml  # noqa: E402
from emulator_process import emulator_process  # noqa: E402

from emulator.funchost import FunctionsHost  # noqa: E402
from emulator.scenario import load_scenario  # noqa: E402
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


class RemoteEmulator:
    """The emulator child process as the bench sees it: the same seeded world rebuilt here (digests are deterministic) for
    building events, the request log and the conversions read over its admin API."""

    def __init__(self, scn: dict[str, Any], endpoints: dict[str, Any]) -> None:
        self.endpoints = endpoints
        self.world = load_scenario(scn)[0]
        reg = self.world.registries[REGISTRY]
        reg.url = endpoints["registries"][REGISTRY]
        reg.login_server = reg.url.removeprefix("https://")
        self.http = requests.Session()
        self.http.verify = endpoints["ca_bundle"]

    def request_mark(self) -> int:
        # a service no request has: only the log length comes back
        return int(self.http.get(f"{self.endpoints['admin']}/requests", params={"since": 0, "service": "-"}, timeout=30).json()["next"])

    def requests_since(self, mark: int, service: str) -> list[dict[str, Any]]:
        return self.http.get(f"{self.endpoints['admin']}/requests", params={"since": mark, "service": service}, timeout=60).json()["requests"]

    def operations(self) -> list[dict[str, Any]]:
        url = f"{self.endpoints['registries'][REGISTRY]}/_emulator/operations"
        return self.http.get(url, timeout=60).json()["operations"]


def events_for(emu: RemoteEmulator, repository: str, count: int) -> list[dict[str, Any]]:
    reg = emu.world.registries[REGISTRY]
    repo = reg.repositories[repository]
    out = []
    for name, rec in repo.tags.items():
        m = repo.manifests[rec.digest]
        data = {"repository": repository, "digest": rec.digest, "mediaType": m.media_type, "size": m.size, "length": m.size, "tag": name}
        out.append(build_system_event("ImagePushed", reg, data).render("EventGridSchema"))
    return out[:count]


def registry_requests(emu: RemoteEmulator, mark: int) -> list[dict[str, Any]]:
    return [r for r in emu.requests_since(mark, service="acr") if r["host"] == REGISTRY]


def fresh_instance() -> None:
    import functions.push
    from shared.acr import PROCESS_TOKEN_CACHE, reset_clients

    functions.push._service = None
    PROCESS_TOKEN_CACHE.clear()
    reset_clients()


def run_function(emu: RemoteEmulator, host: FunctionsHost, events: list[dict[str, Any]], workers: int,
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
    cpu0 = time.process_time()
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, events))
    else:
        for event in events:
            one(event)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu0  # this process only: the function side (the emulator and Azurite are children)
    reqs = registry_requests(emu, mark)
    auth = [r for r in reqs if r["path"].startswith("/oauth2/")]
    return {
        "events": len(events), "workers": workers, "seconds": round(wall, 2), "events_per_s": round(len(events) / wall, 1),
        "requests_per_event": round(len(reqs) / len(events), 2), "token_requests": len(auth),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1), "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "failed_invocations": failures, "cpu_ms_per_event": round(cpu * 1000 / len(events), 1),
    }


class AzCliSequence:
    """The requests of one `az acr artifact-streaming create -n REG --image repo:tag` (recorded session, CLI 2.72)."""

    def __init__(self, emu: RemoteEmulator, aad_token: str) -> None:
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


def run_az(emu: RemoteEmulator, sample: int) -> dict[str, Any]:
    from shared.azure_clients import credential
    from shared.settings import AzureSettings

    aad = credential().get_token(f"{AzureSettings.from_env().acr_audience}/.default").token
    cli = AzCliSequence(emu, aad)
    tags = list(emu.world.registries[REGISTRY].repositories["cli"].tags)[:sample]
    latencies = []
    mark = emu.request_mark()
    start = time.perf_counter()
    cpu0 = time.process_time()
    for tag in tags:
        t0 = time.perf_counter()
        cli.create("cli", tag)
        latencies.append(time.perf_counter() - t0)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    reqs = registry_requests(emu, mark)
    return {
        "events": len(tags), "workers": 1, "seconds": round(wall, 2), "events_per_s": round(len(tags) / wall, 1),
        "requests_per_event": round(len(reqs) / len(tags), 2),
        "token_requests": len([r for r in reqs if r["path"].startswith("/oauth2/")]),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1), "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "failed_invocations": 0, "cpu_ms_per_event": round(cpu * 1000 / len(tags), 1),
    }


def warm_lock_container(container: str) -> None:
    """The lock container as a deployed app has it after its first few hundred pushes: its lease blobs exist (the emulator's
    Azurite starts empty every run). Untimed; without it each of the first events per shard also creates its blob."""
    from shared.locks import BlobLeaseLock
    from shared.storage import blob_service_client

    lock = BlobLeaseLock(blob_service_client(), container)
    client = blob_service_client().get_container_client(container)
    client.create_container()
    for shard in range(lock.shards):
        client.upload_blob(f"{REGISTRY}/shard-{shard:04d}", b"", overwrite=True)


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
    scn = scenario(images, args.az_sample, args.latency_ms)
    state = Path(tempfile.mkdtemp(prefix="push-bench-"))
    (state / "scenario.yaml").write_text(yaml.safe_dump(scn))
    with emulator_process(state / "scenario.yaml", state / "emulator", "--azurite") as endpoints:
        emu = RemoteEmulator(scn, endpoints)
        os.environ.update(endpoints["env"])
        os.environ["AUTOPILOT_PUSH_LOCK_CONTAINER"] = f"bench-{int(time.time())}"
        warm_lock_container(os.environ["AUTOPILOT_PUSH_LOCK_CONTAINER"])
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
        while time.monotonic() < deadline and any(op["repository"] == "app" and op["status"] in ("NotStarted", "Running")
                                                  for op in emu.operations()):
            time.sleep(0.5)
        results["function (already streaming)"] = run_function(emu, host, all_events[: args.sequential_events], args.workers,
                                                               fresh=False)
        ops = emu.operations()
        conversions = len(ops)
        per_digest: dict[str, int] = {}
        for op in ops:
            per_digest[op["digest"]] = per_digest.get(op["digest"], 0) + 1
        exactly_once = all(n == 1 for n in per_digest.values())
    ratio = round(results["function (concurrent)"]["events_per_s"] / results["az CLI sequence (sequential)"]["events_per_s"], 1)
    if args.json:
        print(json.dumps({"latency_ms": args.latency_ms, "results": results, "conversions": conversions,
                          "one_conversion_per_digest": exactly_once, "ratio_concurrent_to_az": ratio}, indent=2))
        return 0
    print(f"push path benchmark: {args.latency_ms:g} ms injected latency per registry request, {os.cpu_count()} CPUs")
    cols = ["events", "workers", "seconds", "events_per_s", "requests_per_event", "token_requests", "p50_ms", "p99_ms",
            "failed_invocations", "cpu_ms_per_event"]
    print(f"{'run':32} " + " ".join(f"{c:>18}" for c in cols))
    for name, row in results.items():
        print(f"{name:32} " + " ".join(f"{row[c]!s:>18}" for c in cols))
    print(f"conversions started in the emulator: {conversions} (one per digest: {exactly_once})")
    print(f"16-thread burst / az CLI sequence, same run: {ratio}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
