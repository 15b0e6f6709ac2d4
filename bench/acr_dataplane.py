"""ACR data-plane capacity of the emulator: paging a 100,000-tag repository, token round trips, concurrent conversions.

Runs the emulator in a child process (`python -m emulator`) with a generated scenario, then measures from an aiohttp client:
- `tags/list` and `/acr/v1/{repo}/_tags` pages (n=1000) across the whole 100k-tag repository: per-page latency p50/p95;
- `/oauth2/exchange` + `/oauth2/token` round trips (what every azure-containerregistry call costs), sequential and concurrent;
- N concurrent `POST /_streaming/{digest}` conversions: time to accept all and time until all Succeeded.
Usage: python bench/acr_dataplane.py [--tags 100000] [--concurrency 100] [--conversions 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml
from emulator_process import emulator_process  # bench/ is on sys.path when run as python bench/…

REPO = Path(__file__).resolve().parent.parent
BODY = {"conversionFormat": "overlaybd", "conversionVersion": "v1"}


def scenario(tags: int, conversions: int) -> dict:
    return {
        "name": "acr-bench",
        "settings": {"conversion_seconds": 1.0},
        "subscriptions": [{
            "id": "00000000-0000-4000-8000-0000000000be",
            "registries": [{"name": "bench", "repositories": [
                {"name": "big/repo", "images": [{"tags": [f"t{i:06d}" for i in range(tags)], "seed": "big"}]},
                {"name": "many", "images": [{"tags": [f"v{i}"], "seed": f"m{i}"} for i in range(conversions)]},
            ]}],
        }],
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(endpoints: dict, tags: int, concurrency: int, conversions: int) -> dict:
    ctx = ssl.create_default_context(cafile=endpoints["ca_bundle"])
    env = endpoints["env"]
    url = endpoints["registries"]["bench"]
    login = url.removeprefix("https://")
    results: dict = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=0)) as s:
        async with s.get(env["IDENTITY_ENDPOINT"], params={"api-version": "2019-08-01", "resource": "https://management.azure.com"},
                         headers={"X-IDENTITY-HEADER": env["IDENTITY_HEADER"]}) as r:
            aad = (await r.json())["access_token"]

        async def token(scope: str) -> str:
            async with s.post(f"{url}/oauth2/exchange", data={"grant_type": "access_token", "service": login, "access_token": aad}) as r:
                refresh = (await r.json())["refresh_token"]
            async with s.post(f"{url}/oauth2/token", data={"grant_type": "refresh_token", "service": login, "scope": scope,
                                                           "refresh_token": refresh}) as r:
                return (await r.json())["access_token"]

        # token round trips
        t0 = time.perf_counter()
        for _ in range(50):
            await token("repository:big/repo:pull")
        results["token_round_trip_ms_sequential"] = round((time.perf_counter() - t0) / 50 * 1000, 2)
        t0 = time.perf_counter()
        await asyncio.gather(*(token("repository:big/repo:pull") for _ in range(concurrency)))
        results[f"token_round_trips_{concurrency}_concurrent_s"] = round(time.perf_counter() - t0, 3)

        # paging
        pull = {"Authorization": f"Bearer {await token('repository:big/repo:pull')}"}
        meta = {"Authorization": f"Bearer {await token('repository:big/repo:metadata_read')}"}
        for label, path, hdrs in [("v2_tags_list", "/v2/big/repo/tags/list", pull), ("acr_v1_tags", "/acr/v1/big/repo/_tags", meta)]:
            latencies, seen, next_path = [], 0, f"{path}?n=1000"
            while next_path:
                t0 = time.perf_counter()
                async with s.get(url + next_path, headers=hdrs) as r:
                    body = await r.json()
                    link = r.headers.get("Link")
                latencies.append((time.perf_counter() - t0) * 1000)
                seen += len(body["tags"])
                next_path = link[1:link.index(">")] if link else None
            results[label] = {"tags_seen": seen, "pages": len(latencies), "page_ms_p50": round(statistics.median(latencies), 2),
                              "page_ms_p95": round(pct(latencies, 0.95), 2), "total_s": round(sum(latencies) / 1000, 3)}

        # concurrent conversions
        many = {"Authorization": f"Bearer {await token('repository:many:pull,push')}"}
        digests = []
        for i in range(conversions):
            async with s.head(f"{url}/v2/many/manifests/v{i}", headers=many) as r:
                digests.append(r.headers["Docker-Content-Digest"])

        async def convert(d: str) -> str:
            async with s.post(f"{url}/acr/v1/many/_streaming/{d}", json=BODY, headers=many) as r:
                return (await r.json())["id"]

        t0 = time.perf_counter()
        ids = await asyncio.gather(*(convert(d) for d in digests))
        accepted = time.perf_counter() - t0
        pending = set(ids)
        while pending:
            for op_id in list(pending):
                async with s.get(f"{url}/acr/v1/many/_operations/{op_id}", headers=many) as r:
                    if (await r.json())["status"] in ("Succeeded", "Failed", "Canceled"):
                        pending.discard(op_id)
            await asyncio.sleep(0.1)
        results[f"conversions_{conversions}"] = {"accept_all_s": round(accepted, 3),
                                                 "all_succeeded_s": round(time.perf_counter() - t0, 3),
                                                 "conversion_seconds_setting": 1.0}
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tags", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--conversions", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scn = Path(tmp) / "scenario.yaml"
        scn.write_text(yaml.safe_dump(scenario(args.tags, args.conversions)))
        t0 = time.perf_counter()
        with emulator_process(scn, tmp) as endpoints:
            startup = time.perf_counter() - t0
            results = {"emulator_startup_s": round(startup, 2), **asyncio.run(run(endpoints, args.tags, args.concurrency, args.conversions))}
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
