"""Emulator capacity: can it serve N concurrent requests with injected latency without becoming the bottleneck?

Runs the emulator in a child process (as the benchmarks do), injects a fixed latency on the managed-identity endpoint and on
ARM reads, and fires bursts of concurrent requests from an aiohttp client. With latency L and concurrency N, a server that
is not the bottleneck finishes a burst in about L (ideal throughput N/L); the ratio ideal/observed is the figure reported.
Usage: python bench/emulator_capacity.py [--concurrency 200] [--latency-ms 50] [--bursts 10]
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
from emulator_process import emulator_process  # bench/ is on sys.path when run as python bench/…

REPO = Path(__file__).resolve().parent.parent


async def burst(session: aiohttp.ClientSession, url: str, headers: dict[str, str], n: int) -> tuple[float, int]:
    async def one() -> int:
        async with session.get(url, headers=headers) as resp:
            await resp.read()
            return resp.status

    t0 = time.perf_counter()
    statuses = await asyncio.gather(*(one() for _ in range(n)))
    return time.perf_counter() - t0, sum(1 for s in statuses if s == 200)


async def run(endpoints: dict, concurrency: int, latency_ms: float, bursts: int) -> dict:
    ctx = ssl.create_default_context(cafile=endpoints["ca_bundle"])
    env = endpoints["env"]
    conn = aiohttp.TCPConnector(ssl=ctx, limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:
        rules = {"rules": [{"match": "identity.*", "latency_ms": latency_ms}, {"match": "arm*", "latency_ms": latency_ms}]}
        async with session.post(f"{endpoints['admin']}/faults", json=rules) as resp:
            assert resp.status == 200, await resp.text()
        url = f"{env['IDENTITY_ENDPOINT']}?api-version=2019-08-01&resource=https://management.azure.com"
        headers = {"X-IDENTITY-HEADER": env["IDENTITY_HEADER"]}
        async with session.get(url, headers=headers) as resp:
            token = (await resp.json())["access_token"]
        targets = {
            "identity token": (url, headers),
            "ARM subscriptions list": (f"{endpoints['arm']}/subscriptions?api-version=2022-12-01", {"Authorization": f"Bearer {token}"}),
        }
        results = {}
        for name, (target, hdrs) in targets.items():
            await burst(session, target, hdrs, concurrency)  # warm-up: TLS handshakes, connection pool
            times, oks = [], 0
            for _ in range(bursts):
                elapsed, ok = await burst(session, target, hdrs, concurrency)
                times.append(elapsed)
                oks += ok
            median = statistics.median(times)
            results[name] = {
                "concurrency": concurrency,
                "latency_ms": latency_ms,
                "median_burst_s": round(median, 4),
                "max_burst_s": round(max(times), 4),
                "requests_per_s": round(concurrency / median, 1),
                "ideal_requests_per_s": round(concurrency / (latency_ms / 1000), 1),
                "efficiency": round((latency_ms / 1000) / median, 3),
                "ok": oks,
                "sent": concurrency * bursts,
            }
        return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--bursts", type=int, default=10)
    parser.add_argument("--scenario", default=str(REPO / "emulator" / "scenarios" / "demo.yaml"))
    args = parser.parse_args()
    state = tempfile.mkdtemp(prefix="capacity-")
    with emulator_process(args.scenario, state) as endpoints:
        results = asyncio.run(run(endpoints, args.concurrency, args.latency_ms, args.bursts))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
