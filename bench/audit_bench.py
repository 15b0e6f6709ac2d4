"""Audit path benchmark: the audit (bounded concurrency, one pool per cluster) against a sequential list/get/put baseline.

Each variant runs against a fresh emulator (child process, generated fleet, fixed injected ARM latency) in its own child
process, so wall time and peak memory (max RSS) belong to that variant alone. ARM requests are counted from the emulator's
request log. Variants:
  sequential-report  list subscriptions → list clusters → list pools, one request at a time, classify with the same rules
  audit-report       shared.audit.service.run_audit in report mode
  audit-report-cluster-profiles  the same with AUTOPILOT_AUDIT_POOL_SOURCE=cluster (pools from the cluster listing)
  audit-report-queue the default discovery fanned out (AUTOPILOT_AUDIT_FANOUT): a planner process queues the work items on
                     Azurite's `autopilot-audit`, WORKERS processes each run the Functions host stand-in with the app's
                     queue-triggered `audit_work_item` (host.json batchSize); wall time from plan to stored report
  sequential-enforce the baseline above, then for the first CAP remediable pools: GET → PUT (If-Match) → wait for the LRO
  audit-enforce      run_audit in enforce mode with the same cap (and an LRO budget long enough to finish every operation)
Usage: python bench/audit_bench.py [--subscriptions 100 --clusters 25 --pools 4 --latency-ms 50 --concurrency 16 --cap 50]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
VARIANTS = ("sequential-report", "audit-report", "audit-report-cluster-profiles", "audit-report-queue", "sequential-enforce",
            "audit-enforce")


# ------------------------------------------------------------------------------------------------ inside a variant child


def sequential(enforce: bool, cap: int) -> dict[str, Any]:
    """The naive way: one request at a time, list everything, then fix pools one after another and wait for each."""
    from azure.core import MatchConditions
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.containerservice.models import AgentPoolArtifactStreamingProfile

    from shared import azure_clients
    from shared.audit.discovery import ClusterInfo, pool_record, resource_group_of
    from shared.audit.rules import classify
    from shared.audit.settings import AuditSettings
    from shared.azure_clients import wire_text
    from shared.settings import AzureSettings, Env

    azure = AzureSettings.from_env()
    settings = AuditSettings.from_env(Env({}))
    pools, errors, remediable = 0, 0, []
    for sub in azure_clients.subscription_client(azure).subscriptions.list():
        client = azure_clients.container_service_client(azure, sub.subscription_id)
        try:
            clusters = list(client.managed_clusters.list())
        except HttpResponseError:
            errors += 1
            continue
        for mc in clusters:
            info = ClusterInfo(sub.subscription_id, sub.display_name or "", resource_group_of(mc.id), mc.name,
                               mc.current_kubernetes_version or mc.kubernetes_version, wire_text(mc.provisioning_state),
                               wire_text(getattr(mc.power_state, "code", None)), dict(mc.tags or {}))
            for pool in client.agent_pools.list(info.resource_group, info.name):
                pools += 1
                record = pool_record(info, pool)
                if classify(record, settings).state == "remediable":
                    remediable.append((client, record))
    fixed = 0
    if enforce:
        for client, record in remediable[:cap]:
            current = client.agent_pools.get(record.resource_group, record.cluster, record.pool)
            current.artifact_streaming_profile = AgentPoolArtifactStreamingProfile(enabled=True)
            poller = client.agent_pools.begin_create_or_update(
                record.resource_group, record.cluster, record.pool, current, etag=current.e_tag,
                match_condition=MatchConditions.IfNotModified, polling_interval=settings.poll_seconds)
            poller.result()
            fixed += 1
    return {"pools": pools, "error_rows": errors, "remediable": len(remediable), "remediated": fixed}


def audit(enforce: bool, cap: int, concurrency: int, pool_source: str = "agentpools") -> dict[str, Any]:
    from shared.audit.service import run_audit
    from shared.audit.settings import AuditSettings
    from shared.settings import Env

    settings = AuditSettings.from_env(Env({
        **os.environ,  # where Azure is (AUTOPILOT_ARM_ENDPOINT, ...): the emulator's
        "AUTOPILOT_AUDIT_MODE": "enforce" if enforce else "report",
        "AUTOPILOT_AUDIT_MAX_REMEDIATIONS": str(cap),
        "AUTOPILOT_AUDIT_CONCURRENCY": str(concurrency),
        "AUTOPILOT_AUDIT_LRO_BUDGET_SECONDS": "600",
        "AUTOPILOT_AUDIT_CONTAINER": "audit-bench",
        "AUTOPILOT_AUDIT_POOL_SOURCE": pool_source,
    }))
    report = run_audit(settings, publisher=None)
    s = report.summary
    return {"pools": s.total - s.by_state.get("error", 0), "error_rows": s.by_state.get("error", 0),
            "remediable": s.by_state.get("remediable", 0), "remediated": s.by_action.get("enabled", 0),
            "by_state": s.by_state}


def queue_env(concurrency: int) -> dict[str, str]:
    return {"AUTOPILOT_AUDIT_MODE": "report", "AUTOPILOT_AUDIT_CONCURRENCY": str(concurrency), "AUTOPILOT_AUDIT_FANOUT": "true",
            "AUTOPILOT_AUDIT_CONTAINER": "audit-bench", "AUTOPILOT_AUDIT_RUN_BUDGET_SECONDS": "600"}


def queue_worker(endpoints_path: str, concurrency: int) -> None:
    """One worker process: the Functions host stand-in with the app's audit blueprint, until stdin closes."""
    import azure.functions as func

    from emulator.funchost import FunctionsHost

    endpoints = json.loads(Path(endpoints_path).read_text())
    os.environ.update({**endpoints["env"], **queue_env(concurrency)})
    for key in ("AUTOPILOT_TOPIC_ENDPOINT", "AUTOPILOT_TOPIC_KEY"):
        os.environ.pop(key, None)
    from functions.audit import bp

    app = func.FunctionApp()
    app.register_functions(bp)
    host = FunctionsHost(app=app, max_workers=32, log_level=30)
    host.load()
    for fn in host.functions.values():
        fn.directory = str(REPO)  # the app's host.json (extensions.queues)
    host.start()
    print("ready", flush=True)
    sys.stdin.read()
    invocations = host.invocations_of("audit_work_item")
    host.stop()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    items = [i for i in invocations if "finalize" not in i.payload]
    finals = [i for i in invocations if i not in items and i.ended - i.started > 0.5]  # a finalize that did the report
    print(json.dumps({"invocations": len(invocations), "failed": sum(1 for i in invocations if not i.succeeded),
                      "cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
                      "items": {"first_start": min((i.started for i in items), default=0),
                                "last_end": max((i.ended for i in items), default=0)},
                      "finalize": [{"start": i.started, "end": i.ended} for i in finals]}))


def queue_plan(endpoints_path: str, concurrency: int) -> None:
    """The timer's part: plan and enqueue; prints the run id."""
    from shared.audit.fanout import start_run
    from shared.audit.settings import AuditSettings
    from shared.settings import Env

    endpoints = json.loads(Path(endpoints_path).read_text())
    env = {k: v for k, v in {**os.environ, **endpoints["env"], **queue_env(concurrency)}.items() if not k.startswith("AUTOPILOT_TOPIC")}
    os.environ.update(env)
    record = start_run(AuditSettings.from_env(Env(env)))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"run_id": record["run_id"], "items": record["count"], "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
                      "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}))


def run_queue_variant(endpoints_path: str, endpoints: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Workers first (listening), then the planner; done when the run's report is stored."""
    from azure.storage.blob import BlobServiceClient

    workers = [subprocess.Popen([sys.executable, __file__, "--queue-worker", "--endpoints", endpoints_path,
                                 "--concurrency", str(args.concurrency)], cwd=REPO, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True) for _ in range(args.workers)]
    try:
        for w in workers:
            if (w.stdout.readline() if w.stdout else "").strip() != "ready":
                raise RuntimeError("a queue worker did not start")
        t0 = time.perf_counter()
        epoch0 = time.time()
        planned = subprocess.run([sys.executable, __file__, "--queue-plan", "--endpoints", endpoints_path, "--concurrency",
                                  str(args.concurrency)], cwd=REPO, capture_output=True, text=True, timeout=600)
        if planned.returncode != 0:
            raise RuntimeError(f"planner failed:\n{planned.stderr[-3000:]}")
        plan = json.loads(planned.stdout.strip().splitlines()[-1])
        container = BlobServiceClient.from_connection_string(endpoints["env"]["AzureWebJobsStorage"]).get_container_client("audit-bench")
        report_name = None
        while report_name is None and time.perf_counter() - t0 < 1800:
            time.sleep(0.5)
            report_name = next((b.name for b in container.list_blobs(name_starts_with="reports/")
                                if plan["run_id"] in b.name and b.name.endswith(".json")), None)
        wall = time.perf_counter() - t0
        if report_name is None:
            raise RuntimeError("the fanned-out run was not reported within 30 minutes")
        report = json.loads(container.download_blob(report_name).readall())
    finally:
        stats = []
        for w in workers:
            out, _ = w.communicate("", timeout=120)
            stats.append(json.loads(out.strip().splitlines()[-1]) if out.strip() else {})
    s = report["summary"]
    for w in stats:  # when each worker's items ran and the final step, in seconds from the planner's start
        for key in ("first_start", "last_end"):
            w.get("items", {})[key] = round(w.get("items", {}).get(key, epoch0) - epoch0, 1)
        w["finalize"] = [{k: round(v - epoch0, 1) for k, v in f.items()} for f in w.get("finalize", [])]
    return {"pools": s["total"] - s["by_state"].get("error", 0), "error_rows": s["by_state"].get("error", 0),
            "remediable": s["by_state"].get("remediable", 0), "remediated": 0, "by_state": s["by_state"],
            "wall_s": round(wall, 2), "planner": plan, "workers": stats,
            "peak_rss_mb": max([plan["peak_rss_mb"]] + [w.get("peak_rss_mb", 0) for w in stats])}


def child(variant: str, endpoints_path: str, cap: int, concurrency: int) -> None:
    endpoints = json.loads(Path(endpoints_path).read_text())
    os.environ.update(endpoints["env"])
    os.environ.pop("AUTOPILOT_TOPIC_ENDPOINT", None)  # outcome events are not part of the comparison
    os.environ.pop("AUTOPILOT_TOPIC_KEY", None)
    t0 = time.perf_counter()
    if variant.startswith("sequential"):
        result = sequential(variant.endswith("enforce"), cap)
    else:
        result = audit(variant.endswith("enforce"), cap, concurrency,
                       "cluster" if variant.endswith("cluster-profiles") else "agentpools")
    result["wall_s"] = round(time.perf_counter() - t0, 2)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 2)
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    print(json.dumps(result))


# ------------------------------------------------------------------------------------------------ the driver


def _admin_get(endpoints: dict[str, Any], path: str) -> Any:
    import requests

    return requests.get(f"{endpoints['admin']}{path}", verify=endpoints["ca_bundle"], timeout=60).json()


def _arm_counts(endpoints: dict[str, Any], mark: int) -> dict[str, Any]:
    log = _admin_get(endpoints, f"/requests?since={mark}&service=arm")["requests"]
    by_kind: dict[str, int] = {}
    for r in log:
        key = f"{r['method']} {r['endpoint_class']}"
        by_kind[key] = by_kind.get(key, 0) + 1
    first = min((r["ts"] for r in log), default=0.0)
    per_5s: dict[int, int] = {}
    for r in log:  # throughput over the run: where it was latency-bound, where it idled
        per_5s[int((r["ts"] - first) // 5)] = per_5s.get(int((r["ts"] - first) // 5), 0) + 1
    return {"arm_requests": len(log), "arm_requests_by_kind": dict(sorted(by_kind.items())),
            "arm_requests_per_5s": [per_5s.get(i, 0) for i in range(max(per_5s, default=-1) + 1)]}


def _cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far, from /proc (Linux); 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            continue
    return kids


def _emulator_cpu(pid: int) -> dict[str, float]:
    """The emulator process's CPU seconds, and its children's (Azurite's blob and queue services), so far."""
    cpu = {"emulator": _cpu_seconds(pid), "azurite-blob": 0.0, "azurite-queue": 0.0}
    for kid in _children(pid):
        try:
            cmdline = Path(f"/proc/{kid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        key = "azurite-queue" if "queue" in cmdline else "azurite-blob"
        cpu[key] += _cpu_seconds(kid) + sum(_cpu_seconds(k) for k in _children(kid))
    return cpu


def _server_cpu(pid: int, before: dict[str, float]) -> dict[str, Any]:
    """CPU seconds the emulator (ARM, in its own process) and Azurite (blobs, queues) spent during the variant."""
    after = _emulator_cpu(pid)
    return {"server_cpu_s": {k: round(after[k] - before[k], 2) for k in after}}


def run_variant(variant: str, scenario: Path, args: argparse.Namespace) -> dict[str, Any]:
    state = tempfile.mkdtemp(prefix="audit-bench-")
    t_start = time.perf_counter()
    emu = subprocess.Popen([sys.executable, "-m", "emulator", "--scenario", str(scenario), "--state-dir", state, "--azurite"],
                           cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        endpoints_path = emu.stdout.readline().strip()
        if not endpoints_path:
            raise RuntimeError("the emulator did not start (see its stderr above)")
        endpoints = json.loads(Path(endpoints_path).read_text())
        startup = time.perf_counter() - t_start
        mark = _admin_get(endpoints, "/requests?service=__none__")["next"]
        cpu_before = _emulator_cpu(emu.pid)
        if variant == "audit-report-queue":
            result = run_queue_variant(endpoints_path, endpoints, args)
            return {**result, **_server_cpu(emu.pid, cpu_before), **_arm_counts(endpoints, mark),
                    "emulator_startup_s": round(startup, 1)}
        done = subprocess.run([sys.executable, __file__, "--run", variant, "--endpoints", endpoints_path, "--cap", str(args.cap),
                               "--concurrency", str(args.concurrency)], cwd=REPO, capture_output=True, text=True, timeout=3600)
        if done.returncode != 0:
            raise RuntimeError(f"{variant} failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        return {**result, **_server_cpu(emu.pid, cpu_before), **_arm_counts(endpoints, mark),
                "emulator_startup_s": round(startup, 1)}
    finally:
        emu.terminate()
        emu.wait(timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscriptions", type=int, default=100)
    parser.add_argument("--clusters", type=int, default=25, help="clusters per subscription")
    parser.add_argument("--pools", type=int, default=4, help="pools per cluster")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="injected on every ARM request")
    parser.add_argument("--concurrency", type=int, default=16, help="AUTOPILOT_AUDIT_CONCURRENCY of the audit variants")
    parser.add_argument("--cap", type=int, default=50, help="remediations per enforce run (both enforce variants)")
    parser.add_argument("--lro-seconds", type=float, default=1.0, help="how long the emulator keeps a pool PUT Updating")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {', '.join(VARIANTS)}")
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--workers", type=int, default=2, help="worker processes of audit-report-queue")
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--queue-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--queue-plan", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--endpoints", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        child(args.run, args.endpoints, args.cap, args.concurrency)
        return 0
    if args.queue_worker:
        queue_worker(args.endpoints, args.concurrency)
        return 0
    if args.queue_plan:
        queue_plan(args.endpoints, args.concurrency)
        return 0
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variant(s) {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    scenario = {
        "name": "audit-bench",
        "generate": {"subscriptions": args.subscriptions, "clusters_per_subscription": args.clusters,
                     "pools_per_cluster": args.pools, "registries": 0, "seed": args.seed},
        "settings": {"lro_seconds": args.lro_seconds, "page_size": 100},
        "faults": {"rules": [{"match": "arm.*", "latency_ms": args.latency_ms}]},
    }
    path = Path(tempfile.mkdtemp(prefix="audit-bench-scenario-")) / "fleet.yaml"
    path.write_text(yaml.safe_dump(scenario))
    results = {"fleet": {"subscriptions": args.subscriptions, "clusters": args.subscriptions * args.clusters,
                         "pools": args.subscriptions * args.clusters * args.pools},
               "latency_ms": args.latency_ms, "concurrency": args.concurrency, "queue_workers": args.workers, "cap": args.cap,
               "lro_seconds": args.lro_seconds, "cpus": os.cpu_count(), "load_average": os.getloadavg(), "variants": {}}
    # (the emulator's CPU in each variant is `server_cpu_s`: its ARM side and, separately, its Azurite children)
    for variant in variants:
        print(f"running {variant} ...", file=sys.stderr, flush=True)
        results["variants"][variant] = run_variant(variant, path, args)
        print(json.dumps({variant: results["variants"][variant]}), file=sys.stderr, flush=True)
    results["load_average_end"] = os.getloadavg()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
