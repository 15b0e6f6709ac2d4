"""Sweep benchmark (not a test): a generated registry of TAGS tags in REPOS repositories, SHARE of them not streaming, every
registry request delayed LATENCY ms; the sweep with one and with two worker processes vs the sequential az CLI loop.

    .venv/bin/python bench/sweep_bench.py [--repos 2000] [--tags-per-repo 50] [--not-streaming 0.05] [--latency-ms 20]
                                          [--az-sample 100] [--workers 1,2] [--json]

Method (docs/performance.md, "Sweep"):
- The registry comes from the emulator's fleet generator (emulator/generate.py): REPOS repositories x TAGS_PER_REPO tags, one
  distinct single-platform image per tag, (1 - SHARE) of the images already streaming (a streaming referrer each).
- The emulator (in this process, with Azurite) injects LATENCY ms on every ACR request (`acr.*`, tokens included).
- Per variant, on a fresh emulator: this process plans the run exactly as the timer does (`SweepService.start_run`: one
  work item per registry on the `autopilot-sweep` queue); N worker processes (`python -m emulator.funchost --app
  function_app`: the Functions host stand-in polling the queue with the repository's host.json) do the work; the wall time
  runs from the plan to the run's report blob. Conversions are capped far above what is needed (everything converts).
- Requests are the emulator's request log for the registry. "per tag, streaming majority" charges the listing requests
  (catalog, tag pages, tokens) pro rata to every tag and adds the referrers read of each streaming digest; the rest (manifest,
  config, lease-guarded operation read and POST) is the non-streaming 5 %'s own cost, reported separately.
- The az CLI loop (`az acr artifact-streaming create --image repo:tag` per tag: 15 requests each, the recorded sequence of
  bench/push_bench.py) runs sequentially for a sample of AZ_SAMPLE tags; its time for every tag is extrapolated from it.
- Peak RSS is each worker process's VmHWM.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from emulator import Emulator  # noqa: E402
from emulator.azurite import Azurite  # noqa: E402
from emulator.generate import generate_fleet  # noqa: E402

REGISTRY = "benchprem"  # the name push_bench's recorded az CLI sequence addresses


def scenario(repos: int, tags: int, not_streaming: float, latency_ms: float) -> dict[str, Any]:
    raw = generate_fleet(subscriptions=1, clusters_per_subscription=0, pools_per_cluster=1, registries=1, repositories=repos,
                   tags_per_repository=tags, distinct_images_per_repository=tags, streamed_share=1 - not_streaming, seed=7,
                   name="sweep-bench")
    (reg,) = [r for s in raw["subscriptions"] for r in s.get("registries", [])]
    reg["name"] = REGISTRY
    for repo in reg["repositories"]:
        for image in repo["images"]:
            image["layers_mb"] = [4]
    raw["settings"] = {"conversion_seconds": 0.5}
    raw["faults"] = {"rules": [{"match": "acr.*", "latency_ms": latency_ms}]}
    return raw


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def wait_report(run_id: str, container: str, timeout: float) -> dict[str, Any]:
    from shared.storage import blob_service_client

    blobs = blob_service_client().get_container_client(container)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            body = json.loads(blobs.download_blob("latest.json").readall())
            if body.get("run_id") == run_id:
                return body
        except Exception:
            pass
        time.sleep(1.0)
    raise RuntimeError(f"sweep run {run_id} wrote no report within {timeout:.0f} s")


def streaming_digests(emu: Emulator) -> set[str]:
    reg = emu.world.registries[REGISTRY]
    with emu.world.lock:
        return {m.subject for repo in reg.repositories.values() for m in repo.manifests.values() if m.subject}


def classify(emu: Emulator, mark: int, streaming: set[str]) -> dict[str, int]:
    """Requests to the registry since `mark`: listing (catalog, tags, tokens), referrers of the digests that were streaming
    before the run, the rest."""
    counts = {"total": 0, "listing": 0, "referrers_streaming": 0, "non_streaming": 0}
    for r in emu.requests_since(mark, service="acr"):
        if r.get("host") != REGISTRY:
            continue
        counts["total"] += 1
        path = r["path"]
        if path.startswith(("/oauth2/", "/v2/_catalog")) or "/_tags" in path or path == "/v2/":
            counts["listing"] += 1
        elif "/referrers/" in path and path.split("/referrers/")[1].split("?")[0] in streaming:
            counts["referrers_streaming"] += 1
        else:
            counts["non_streaming"] += 1
    return counts


def run_sweep(args: argparse.Namespace, workers: int, azurite: Azurite) -> dict[str, Any]:
    raw = scenario(args.repos, args.tags_per_repo, args.not_streaming, args.latency_ms)
    t0 = time.perf_counter()
    with Emulator(raw, state_dir=tempfile.mkdtemp(prefix="sweep-bench-"), azurite=azurite.connection_string) as emu:
        load_s = time.perf_counter() - t0
        with emu.world.lock:
            reg = emu.world.registries[REGISTRY]
            n_tags = sum(len(r.tags) for r in reg.repositories.values())
        suffix = f"{os.getpid()}-{workers}-{int(time.time())}"
        env = {**os.environ, **emu.env, "AUTOPILOT_SWEEP_CONTAINER": f"sweepbench-{suffix}",
               "AUTOPILOT_PUSH_LOCK_CONTAINER": f"sweepbenchlocks-{suffix}", "AUTOPILOT_DEADLETTER_CONTAINER": f"sweepbenchdl-{suffix}",
               "AUTOPILOT_PUSH_REGISTRIES": REGISTRY, "AUTOPILOT_SWEEP_MAX_CONVERSIONS": "1000000",
               "AUTOPILOT_SWEEP_TIME_BUDGET_SECONDS": "86400"}
        env.pop("AUTOPILOT_TOPIC_ENDPOINT", None)  # outcome events are not part of the comparison
        env.pop("AUTOPILOT_TOPIC_KEY", None)
        os.environ.clear()
        os.environ.update(env)
        from shared.azure_clients import reset_credential
        from shared.sweep.service import SweepService

        reset_credential()
        procs = [subprocess.Popen([sys.executable, "-m", "emulator.funchost", "--app", "function_app", "--port", "0"],
                                  cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for _ in range(workers)]
        try:
            time.sleep(3.0)  # the hosts index the app and start polling
            streaming = streaming_digests(emu)
            mark = emu.request_mark()
            start = time.perf_counter()
            run_id = SweepService.from_env().start_run()
            report = wait_report(run_id, env["AUTOPILOT_SWEEP_CONTAINER"], args.timeout)
            wall = time.perf_counter() - start
            rss = [peak_rss_mb(p.pid) for p in procs]
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(30)
        counts = classify(emu, mark, streaming)
        az = run_az(emu, args.az_sample) if workers == min(args.worker_counts) and args.az_sample else None
    totals = report["totals"]
    streaming_tags = n_tags - totals["started"]
    share = streaming_tags / n_tags if n_tags else 0
    return {
        "workers": workers, "tags": n_tags, "repositories": args.repos, "emulator_load_s": round(load_s, 1),
        "wall_s": round(wall, 1), "tags_per_s": round(n_tags / wall, 1), "started": totals["started"],
        "already_streaming": totals["already_streaming"], "failed": totals["failed"],
        "requests": counts, "requests_per_tag": round(counts["total"] / n_tags, 3),
        "requests_per_tag_streaming_majority": round((counts["listing"] * share + counts["referrers_streaming"]) / streaming_tags, 3)
        if streaming_tags else None,
        "requests_per_non_streaming_image": round((counts["listing"] * (1 - share) + counts["non_streaming"]) / max(1, totals["started"]), 2),
        "peak_rss_mb": rss, "az": az,
    }


def run_az(emu: Emulator, sample: int) -> dict[str, Any]:
    """The az CLI's recorded per-tag sequence for `sample` tags (already streaming or not, as they come), sequentially."""
    import push_bench

    from shared.azure_clients import credential
    from shared.settings import AzureSettings

    aad = credential().get_token(f"{AzureSettings.from_env().acr_audience}/.default").token
    cli = push_bench.AzCliSequence(emu, aad)
    with emu.world.lock:
        reg = emu.world.registries[REGISTRY]
        pairs = [(repo.name, tag) for repo in reg.repositories.values() for tag in repo.tags][:sample]
    mark = emu.request_mark()
    start = time.perf_counter()
    for repo, tag in pairs:
        cli.create(repo, tag)
    wall = time.perf_counter() - start
    reqs = [r for r in emu.requests_since(mark, service="acr") if r.get("host") == REGISTRY]
    return {"sample": len(pairs), "seconds": round(wall, 2), "seconds_per_tag": round(wall / len(pairs), 4),
            "requests_per_tag": round(len(reqs) / len(pairs), 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repos", type=int, default=2000)
    parser.add_argument("--tags-per-repo", type=int, default=50)
    parser.add_argument("--not-streaming", type=float, default=0.05)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--az-sample", type=int, default=100)
    parser.add_argument("--workers", default="1,2", help="worker process counts to run, comma separated")
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.worker_counts = [int(w) for w in args.workers.split(",")]
    results = []
    with Azurite() as azurite:
        for workers in args.worker_counts:
            results.append(run_sweep(args, workers, azurite))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    tags = results[0]["tags"]
    az = next(r["az"] for r in results if r["az"])
    summary = {"results": results, "az_cli_loop": {**az, "extrapolated_seconds_all_tags": round(az["seconds_per_tag"] * tags),
                                                   "extrapolated_requests_all_tags": round(az["requests_per_tag"] * tags)}}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for r in results:
            print(f"sweep, {r['workers']} worker process(es): {r['tags']} tags in {r['wall_s']} s ({r['tags_per_s']} tags/s), "
                  f"started {r['started']}, {r['requests_per_tag']} requests/tag overall, "
                  f"{r['requests_per_tag_streaming_majority']} per streaming tag, {r['requests_per_non_streaming_image']} per "
                  f"converted image, peak RSS {r['peak_rss_mb']} MB (emulator load {r['emulator_load_s']} s)")
        s = summary["az_cli_loop"]
        print(f"az CLI loop: {s['requests_per_tag']} requests/tag, {s['seconds_per_tag']} s/tag over a sample of {s['sample']}; "
              f"extrapolated to {tags} tags: {s['extrapolated_seconds_all_tags']} s, {s['extrapolated_requests_all_tags']} requests")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
