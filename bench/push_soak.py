"""Push-path soak (not a test): a bounded, seeded stream of pushes through Event Grid to on_image_pushed, with faults,
duplicate deliveries and failing conversions, then the exactly-once invariants checked on the emulator's state.

    .venv/bin/python bench/push_soak.py [--seconds 120] [--rate 2] [--seed 1] [--json]

Method (see docs/performance.md, "Push path soak"):
- The emulator runs in a child process (with Azurite for the leases); this process is the Functions host: the host
  stand-in serves the Event Grid webhook on 127.0.0.1 and runs the real function_app (wait mode, so a conversion that ends
  UNKNOWN_ERROR fails its invocation and Event Grid's redelivery starts a new one).
- One Event Grid subscription per registry: three Premium registries (Event Grid schema, CloudEvents, and an AzureFunction
  endpoint) and a Standard one, each with duplicate delivery, dead-lettering and a short retry schedule.
- Faults on the registry data plane and ARM (429/500/503 with Retry-After, latency, dropped connections) and UNKNOWN_ERROR
  on a share of conversions.
- For --seconds, a seeded workload pushes through the emulator's admin push API: new images with 1-3 tags, re-pushes of
  existing tags, multi-arch indexes, arm64-only, Windows, oversized, excluded by filter, indexes without linux/amd64,
  pushes to the Standard registry, and bursts of many tags of one digest.
- Then it waits for Event Grid and the conversions to settle and checks: every eligible digest has exactly one
  succeeded-or-running conversion (the others failed with UNKNOWN_ERROR) and exactly one streaming referrer when it
  succeeded; no other digest has any operation or referrer; every delivery was acknowledged or dead-lettered, and dead
  letters are only expected where a digest's every conversion failed with UNKNOWN_ERROR; no invocation raised anything but
  TransientError. Exit code 1 on any violation.
- Reported: events/s, invocations, redeliveries, duplicates, registry and ARM requests per event, p50/p99 invocation latency,
  outcomes, dead letters, and the resident memory of this process and of the emulator sampled every second.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import requests  # noqa: E402
from emulator_process import emulator_process  # noqa: E402

SUB = "5d1c7e00-0000-4000-8000-00000000500a"
FUNCTION = "on_image_pushed"
STREAMING = "application/vnd.azure.artifact.streaming.v1"
PREMIUM = {"soakeg": "EventGridSchema", "soakce": "CloudEventSchemaV1_0", "soakfn": "EventGridSchema"}
STANDARD = "soakstd"
ENDPOINT_TYPES = {"soakfn": "AzureFunction"}
REPOSITORIES = ("app", "team/api")
# kind -> weight; eligible kinds make exactly one streaming artifact, the others none
KINDS = {"new": 38, "repush": 15, "multiarch": 10, "burst": 4, "arm64": 5, "windows": 5, "oversized": 4, "excluded": 7,
         "index-no-amd64": 3, "standard": 9}
ELIGIBLE_KINDS = {"new", "multiarch", "burst"}
MB = 1024**2


def scenario(args: argparse.Namespace) -> dict[str, Any]:
    fault = {"error_rate": args.error_rate, "statuses": [429, 500, 503], "retry_after": 1.0}
    registries = [{"name": name, "resource_group": "rg-soak", "sku": "Premium",
                   "repositories": [{"name": r} for r in REPOSITORIES]} for name in PREMIUM]
    registries.append({"name": STANDARD, "resource_group": "rg-soak", "sku": "Standard"})
    return {
        "name": "push-soak", "seed": args.seed,
        "settings": {"conversion_seconds": args.conversion_seconds, "unknown_error_rate": args.unknown_error_rate,
                     "eventgrid_retry_base_seconds": args.retry_base_seconds},
        "faults": {"seed": args.seed + 100, "rules": [
            {"match": "acr.*", "latency_ms": args.latency_ms, "drop_rate": args.drop_rate, **fault},
            {"match": "arm.*", "latency_ms": 2 * args.latency_ms, "drop_rate": args.drop_rate, **fault},
        ]},
        "subscriptions": [{"id": SUB, "registries": registries}],
    }


# ------------------------------------------------------------------------------------------------ memory sampling


def rss_mb(pid: int | str = "self") -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def child_pid(parent: int, needle: str) -> int | None:
    """The pid of a direct child of `parent` whose command line contains `needle` (the emulator, Azurite)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == parent and needle in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                return int(entry.name)
        except (OSError, ValueError, IndexError):
            continue
    return None


@dataclass(frozen=True)
class Inv:
    """What the soak keeps of one invocation (the host stand-in keeps the whole Invocation, log records and traceback)."""

    id: str
    function: str
    seconds: float
    succeeded: bool
    timed_out: bool
    error: str | None  # exception type, None when it succeeded
    code: str | None  # TransientError.code
    transient: bool
    message: str


class Collector:
    """Moves finished invocations out of the host into compact records, so the RSS measured is the app's, not the
    stand-in's record of every invocation (each holds its payload, log records and, when it failed, the traceback)."""

    def __init__(self, host: Any, transient: type) -> None:
        self.host, self.transient = host, transient
        self.records: list[Inv] = []
        self._lock = threading.Lock()

    def drain(self) -> int:
        with self._lock:
            batch = self.host.invocations[:]
            del self.host.invocations[: len(batch)]  # appends only ever add at the end
            for inv in batch:
                exc = inv.exception
                self.records.append(Inv(inv.id, inv.function, inv.ended - inv.started, inv.succeeded, inv.timed_out,
                                        type(exc).__name__ if exc is not None else None, getattr(exc, "code", None),
                                        isinstance(exc, self.transient), str(exc)[:200] if exc is not None else ""))
            return len(self.records)


class Sampler(threading.Thread):
    """RSS of this process (the host) and of the emulator, every `interval` seconds, with the invocation count."""

    def __init__(self, pids: dict[str, int | None], invocations: Any, interval: float = 1.0) -> None:
        super().__init__(name="soak-rss", daemon=True)
        self.pids, self.invocations, self.interval = pids, invocations, interval
        self.samples: list[dict[str, Any]] = []
        self.t0 = time.monotonic()
        self._halt = threading.Event()

    def sample(self) -> None:
        row: dict[str, Any] = {"t": round(time.monotonic() - self.t0, 1), "invocations": self.invocations()}
        row["host"] = rss_mb()
        for name, pid in self.pids.items():
            row[name] = rss_mb(pid) if pid else None
        self.samples.append(row)

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
        self.sample()


def memory_report(samples: list[dict[str, Any]], key: str, warm_t: float, end_t: float) -> dict[str, Any]:
    rows = [s for s in samples if s.get(key) is not None]
    if not rows:
        return {}
    at = lambda t: min(rows, key=lambda s: abs(s["t"] - t))  # noqa: E731
    warm, end = at(warm_t), at(end_t)
    half = at(warm_t + (end_t - warm_t) / 2)
    minutes = max((end["t"] - half["t"]) / 60, 1e-9)
    return {"warm_mb": round(warm[key], 1), "end_of_workload_mb": round(end[key], 1), "final_mb": round(rows[-1][key], 1),
            "peak_mb": round(max(s[key] for s in rows), 1), "growth_mb": round(end[key] - warm[key], 1),
            "second_half_mb_per_min": round((end[key] - half[key]) / minutes, 1)}


# ------------------------------------------------------------------------------------------------ the workload


@dataclass
class Image:
    kind: str
    registry: str
    repository: str
    spec: dict[str, Any]
    digest: str
    tags: list[str]
    pushed: list[float] = field(default_factory=list)

    @property
    def eligible(self) -> bool:
        return self.kind in ELIGIBLE_KINDS


class Workload:
    """Seeded pushes through `POST {admin}/registries/{r}/images`, paced at `rate` pushes per second."""

    def __init__(self, admin: str, verify: str, seed: int, rate: float) -> None:
        self.admin, self.rate = admin, rate
        self.rng = random.Random(seed)
        self.http = requests.Session()
        self.http.verify = verify
        self.images: dict[tuple[str, str, str], Image] = {}
        self.pushes: Counter[str] = Counter()
        self.tag_pushes = 0
        self.errors: list[str] = []
        self.n = 0

    def _post(self, registry: str, body: dict[str, Any]) -> str | None:
        try:
            resp = self.http.post(f"{self.admin}/registries/{registry}/images", json=body, timeout=30)
        except requests.RequestException as exc:
            self.errors.append(f"push to {registry}: {type(exc).__name__}: {exc}")
            return None
        if resp.status_code != 201:
            self.errors.append(f"push to {registry}: {resp.status_code} {resp.text[:200]}")
            return None
        return resp.json()["digest"]

    def push_one(self) -> None:
        kind = self.rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
        eligible_seen = [img for img in self.images.values() if img.eligible]
        if kind == "repush" and not eligible_seen:
            kind = "new"
        self.n += 1
        i, rng = self.n, self.rng
        if kind == "repush":
            img = rng.choice(eligible_seen)
            tags = rng.sample(img.tags, 1)
            digest = self._post(img.registry, {"repository": img.repository, **img.spec, "tags": tags})
            if digest is not None and digest != img.digest:
                self.errors.append(f"re-push of {img.registry}/{img.repository}:{tags[0]} gave {digest}, not {img.digest}")
            img.pushed.append(time.time())
            self.pushes[kind] += 1
            self.tag_pushes += 1
            return
        registry = STANDARD if kind == "standard" else rng.choice(list(PREMIUM))
        repository = rng.choice(REPOSITORIES)
        spec: dict[str, Any] = {"layers_mb": [rng.choice([1, 2, 4]), rng.choice([4, 8, 16])], "seed": f"soak-{kind}-{i}"}
        tags = [f"{i}.{k}.0" for k in range(rng.randint(1, 3))]
        if kind == "multiarch":
            spec["platforms"] = ["linux/amd64", "linux/arm64"] + (["linux/arm/v7"] if rng.random() < 0.5 else [])
        elif kind == "arm64":
            spec["platforms"] = ["linux/arm64"]
        elif kind == "windows":
            spec["platforms"] = ["windows/amd64"]
        elif kind == "index-no-amd64":
            spec["platforms"] = ["linux/arm64", "linux/arm/v7"]
        elif kind == "oversized":
            spec.pop("layers_mb")
            spec["layers_gb"] = [20, 12]
        elif kind == "excluded":
            tags = [f"{i}.0.0-debug"]
        elif kind == "burst":
            tags = [f"{i}.b{k}" for k in range(rng.randint(10, 25))]
        digest = self._post(registry, {"repository": repository, **spec, "tags": tags})
        if digest is None:
            return
        key = (registry, repository, digest)
        if key in self.images:
            self.errors.append(f"two workload images share {key}")
        self.images[key] = Image(kind, registry, repository, spec, digest, tags, [time.time()])
        self.pushes[kind] += 1
        self.tag_pushes += len(tags)

    def run(self, seconds: float) -> float:
        start = time.monotonic()
        deadline = start + seconds
        next_at = start
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            if now < next_at:
                time.sleep(min(next_at - now, deadline - now))
                continue
            self.push_one()
            next_at += self.rng.expovariate(self.rate)
        return time.monotonic() - start


# ------------------------------------------------------------------------------------------------ the emulator's state


class Probe:
    def __init__(self, endpoints: dict[str, Any]) -> None:
        self.ep = endpoints
        self.http = requests.Session()
        self.http.verify = endpoints["ca_bundle"]
        self.eg = endpoints["eventgrid"]["admin"]

    def get(self, url: str, **params: Any) -> Any:
        resp = self.http.get(url, params=params, timeout=120)
        resp.raise_for_status()
        return resp.json()

    def subscribe(self, raw: dict[str, Any]) -> None:
        resp = self.http.post(f"{self.eg}/subscriptions", json=raw, timeout=60)
        if resp.status_code != 201:
            raise RuntimeError(f"subscription {raw['name']}: {resp.status_code} {resp.text}")

    def idle(self, timeout: float) -> bool:
        resp = self.http.get(f"{self.eg}/idle", params={"timeout": timeout}, timeout=timeout + 30)
        return resp.status_code == 200

    def registry(self, name: str, path: str, **params: Any) -> Any:
        return self.get(f"{self.ep['registries'][name]}/_emulator/{path}", **params)

    def in_flight(self) -> int:
        return sum(self.registry(name, "counts")["operationsByStatus"].get(s, 0)
                   for name in (*PREMIUM, STANDARD) for s in ("NotStarted", "Running"))

    def settle(self, timeout: float) -> bool:
        """Idle Event Grid and no running conversion, twice in a row a second apart (a finished conversion emits an event)."""
        deadline = time.monotonic() + timeout
        calm = 0
        while time.monotonic() < deadline:
            if self.idle(max(1.0, min(30.0, deadline - time.monotonic()))) and self.in_flight() == 0:
                calm += 1
                if calm >= 2:
                    return True
            else:
                calm = 0
            time.sleep(1.0)
        return False


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def check(workload: Workload, probe: Probe, invocations: list[Inv]) -> dict[str, Any]:
    """The invariants, from the emulator's own state (operations, referrers, deliveries, dead letters) and the host's."""
    violations: list[str] = []
    eligible = {k: img for k, img in workload.images.items() if img.eligible}
    ops_by_key: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for name in (*PREMIUM, STANDARD):
        for op in probe.registry(name, "operations")["operations"]:
            ops_by_key[(name, op["repository"], op["digest"])].append(op)

    dead = probe.get(f"{probe.eg}/deadletters")["value"]
    dead_by_key: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    registry_by_topic = {}
    for name in (*PREMIUM, STANDARD):
        registry_by_topic[f"/subscriptions/{SUB}/resourceGroups/rg-soak/providers/Microsoft.ContainerRegistry/registries/{name}".lower()] = name
    for d in dead:
        ev = d["event"]
        target = (ev.get("data") or {}).get("target") or {}
        reg = registry_by_topic.get(str(ev.get("topic") or ev.get("source") or "").lower(), "?")
        dead_by_key[(reg, target.get("repository", "?"), target.get("digest", "?"))].append(d)

    unknown_error_failures = retried_digests = 0
    expected_dead: list[str] = []
    for key, img in eligible.items():
        ops = ops_by_key.get(key, [])
        live = [op for op in ops if op["status"] in ("Succeeded", "Running", "NotStarted")]
        others = [op for op in ops if op not in live]
        bad_others = [op for op in others if not (op["status"] == "Failed" and op["errorCode"] == "UNKNOWN_ERROR")]
        unknown_error_failures += len(others) - len(bad_others)
        retried_digests += bool(others)
        refs = probe.registry(key[0], "referrers", repository=key[1], digest=key[2])["referrers"]
        refs = [r for r in refs if r["artifactType"] == STREAMING]
        where = f"{img.kind} {key[0]}/{key[1]}@{key[2][:19]}"
        if bad_others:
            violations.append(f"{where}: conversions ended {[(o['status'], o['errorCode']) for o in bad_others]}")
        if len(live) > 1:
            violations.append(f"{where}: {len(live)} succeeded-or-running conversions")
        if len(refs) > 1:
            violations.append(f"{where}: {len(refs)} streaming referrers")
        if live and live[0]["status"] == "Succeeded" and len(refs) != 1:
            violations.append(f"{where}: conversion succeeded but {len(refs)} streaming referrers")
        if not live:
            if ops and dead_by_key.get(key):
                expected_dead.append(f"{where}: {len(ops)} conversions all UNKNOWN_ERROR, event dead-lettered")
            else:
                violations.append(f"{where}: no succeeded or running conversion ({len(ops)} failed) and no dead letter")
    for key, ops in ops_by_key.items():
        if key not in eligible:
            kind = workload.images[key].kind if key in workload.images else "untracked (index child or referrer?)"
            violations.append(f"{kind} {key[0]}/{key[1]}@{key[2][:19]}: {len(ops)} operation(s) on a digest that must have none")
    for key, img in workload.images.items():
        if not img.eligible and key[0] in PREMIUM:
            refs = probe.registry(key[0], "referrers", repository=key[1], digest=key[2])["referrers"]
            if refs:
                violations.append(f"{img.kind} {key[0]}/{key[1]}@{key[2][:19]}: {len(refs)} referrer(s) on an ineligible digest")

    unexpected_dead = [d for key, rows in dead_by_key.items() for d in rows
                       if not (key in eligible and not any(op["status"] == "Succeeded" for op in ops_by_key.get(key, [])))]
    for d in unexpected_dead:
        ev = d["event"]
        violations.append(f"dead letter on {d['subscription']}: {ev.get('subject')} {ev.get('deadLetterReason')} after "
                          f"{ev.get('deliveryAttempts')} attempts (last {ev.get('lastHttpStatusCode')})")

    attempts = probe.get(f"{probe.eg}/deliveries")["value"]
    copies: dict[tuple[str, str, bool], list[dict[str, Any]]] = defaultdict(list)
    for a in attempts:
        if a["kind"] == "Notification" and a["event_id"]:
            copies[(a["subscription"], a["event_id"], a["duplicate"])].append(a)
    dead_ids = {(d["subscription"], d["event"].get("id")) for d in dead}
    unacknowledged = [k for k, rows in copies.items() if not any(r["outcome"] == "Success" for r in rows)
                      and (k[0], k[1]) not in dead_ids]
    for sub, event_id, dup in unacknowledged[:20]:
        violations.append(f"delivery of {event_id} on {sub} (duplicate={dup}) neither acknowledged nor dead-lettered")
    if len(unacknowledged) > 20:
        violations.append(f"... {len(unacknowledged) - 20} more unacknowledged deliveries")

    raised = [inv for inv in invocations if inv.error is not None and not inv.transient]
    for inv in raised[:20]:
        violations.append(f"invocation {inv.id} raised {inv.error}: {inv.message}")
    timed_out = [inv for inv in invocations if inv.timed_out]
    for inv in timed_out[:5]:
        violations.append(f"invocation {inv.id} exceeded the function timeout")
    if workload.errors:
        violations.extend(f"workload: {e}" for e in workload.errors[:10])

    notifications = [a for a in attempts if a["kind"] == "Notification" and a["event_id"]]
    return {
        "violations": violations,
        "eligible_digests": len(eligible),
        "ineligible_digests": len(workload.images) - len(eligible),
        "conversions": sum(len(v) for v in ops_by_key.values()),
        "unknown_error_failures": unknown_error_failures,
        "digests_converted_more_than_once": retried_digests,
        "dead_letters": len(dead),
        "expected_dead_letters": expected_dead,
        "events": len({(a["subscription"], a["event_id"]) for a in notifications}),
        "deliveries": len(notifications),
        "duplicate_copies": len({k for k in copies if k[2]}),
        "redeliveries": sum(1 for a in notifications if a["attempt"] > 1),
        "delivery_outcomes": dict(Counter(a["outcome"] if a["outcome"] != "Success" else f"{a['status']}" for a in notifications)),
        "validations": sum(1 for a in attempts if a["kind"] != "Notification"),
    }


# ------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120.0, help="workload duration (default 120)")
    parser.add_argument("--rate", type=float, default=2.0, help="pushes per second (Poisson; default 2)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--error-rate", type=float, default=0.15, help="429/500/503 share on registry and ARM requests")
    parser.add_argument("--drop-rate", type=float, default=0.01, help="dropped connections on registry and ARM requests")
    parser.add_argument("--latency-ms", type=float, default=10.0, help="per registry request (ARM: twice this)")
    parser.add_argument("--unknown-error-rate", type=float, default=0.15, help="conversions ending UNKNOWN_ERROR")
    parser.add_argument("--duplicate-rate", type=float, default=0.3, help="events Event Grid delivers twice")
    parser.add_argument("--conversion-seconds", type=float, default=0.5)
    parser.add_argument("--retry-base-seconds", type=float, default=1.0,
                        help="Event Grid's first retry delay (its schedule and delivery timeout scale with it)")
    parser.add_argument("--max-delivery-attempts", type=int, default=10)
    parser.add_argument("--http-retries", type=int, default=1, help="AUTOPILOT_PUSH_HTTP_RETRIES (low: more redeliveries)")
    parser.add_argument("--wait-seconds", type=float, default=20.0, help="AUTOPILOT_PUSH_WAIT_SECONDS")
    parser.add_argument("--workers", type=int, default=32, help="host invocation threads")
    parser.add_argument("--settle-seconds", type=float, default=300.0)
    parser.add_argument("--json", action="store_true", help="print the full JSON result")
    args = parser.parse_args(argv)

    state = Path(tempfile.mkdtemp(prefix="push-soak-"))
    scenario_path = state / "scenario.json"
    scenario_path.write_text(json.dumps(scenario(args)))
    log_path = state / "host.log"
    logging.basicConfig(level=logging.WARNING, filename=str(log_path), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    with emulator_process(scenario_path, state / "emulator", "--azurite") as endpoints:
        emu_pid = child_pid(os.getpid(), "-m emulator")
        azurite_pid = child_pid(emu_pid, "azurite") if emu_pid else None
        os.environ.update(endpoints["env"])
        os.environ.update({
            "AUTOPILOT_PUSH_WAIT_SECONDS": f"{args.wait_seconds:g}",
            "AUTOPILOT_PUSH_HTTP_RETRIES": str(args.http_retries),
            "AUTOPILOT_PUSH_EXCLUDE": "*:*-debug",
            "AUTOPILOT_PUSH_REGISTRY_CACHE_SECONDS": "5",  # ARM is asked often enough for its faults to matter
            "AUTOPILOT_PUSH_LOCK_CONTAINER": f"soak-{int(time.time())}",
        })
        from emulator.funchost import FunctionsHost
        from shared.push.outcomes import TransientError

        host = FunctionsHost(app_module="function_app", max_workers=args.workers, log_level=logging.WARNING).start()
        probe = Probe(endpoints)
        try:
            for name, schema in [*PREMIUM.items(), (STANDARD, "CloudEventSchemaV1_0")]:
                probe.subscribe({"name": f"soak-{name}", "registry": name, "endpoint": host.webhook_url(FUNCTION), "schema": schema,
                                 "included_event_types": ["Microsoft.ContainerRegistry.ImagePushed"],
                                 "duplicate_rate": args.duplicate_rate, "max_delivery_attempts": args.max_delivery_attempts,
                                 "retry_base_seconds": args.retry_base_seconds, "retry_max_seconds": 5.0, "dead_letter": True,
                                 "endpoint_type": ENDPOINT_TYPES.get(name, "WebHook")})
            collector = Collector(host, TransientError)
            sampler = Sampler({"emulator": emu_pid, "azurite": azurite_pid}, collector.drain)
            sampler.sample()
            sampler.start()
            workload = Workload(endpoints["admin"], endpoints["ca_bundle"], args.seed, args.rate)
            acr_mark = probe.get(f"{endpoints['admin']}/requests", since=0)["next"]
            started = time.monotonic()
            workload_seconds = workload.run(args.seconds)
            end_of_workload_t = sampler.samples[-1]["t"] if sampler.samples else 0.0
            settled = probe.settle(args.settle_seconds)
            settle_seconds = time.monotonic() - started - workload_seconds
            sampler.stop()
            collector.drain()
            invocations = [inv for inv in collector.records if inv.function == FUNCTION]
            result = check(workload, probe, invocations)
            if not settled:
                result["violations"].append(f"did not settle within {args.settle_seconds:g} s")
            log_rows = probe.get(f"{endpoints['admin']}/requests", since=acr_mark)["requests"]
            outcomes = probe.get(f"{probe.eg}/topics/autopilot-outcomes/events")["value"]
        finally:
            host.stop()

    acr_reqs = [r for r in log_rows if r["service"] == "acr" and r["endpoint_class"] != "acr.admin"]
    arm_reqs = [r for r in log_rows if r["service"] == "arm"]
    durations = [inv.seconds for inv in invocations]
    failed = [inv for inv in invocations if not inv.succeeded]
    by_outcome = Counter(((e.get("data") or {}).get("outcome"), (e.get("data") or {}).get("reason") or (e.get("data") or {}).get("code"))
                         for e in (row["event"] for row in outcomes))
    events = result["events"]
    by_kind: dict[str, list[float]] = defaultdict(list)  # the outcome events carry the handler's own duration
    for row in outcomes:
        data = row["event"].get("data") or {}
        if data.get("duration_ms") is not None:
            by_kind[str(data.get("outcome"))].append(float(data["duration_ms"]))
    warm_t = min(10.0, end_of_workload_t / 3)  # after the first events loaded the SDKs
    report = {
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "cpus": os.cpu_count(),
        "workload_seconds": round(workload_seconds, 1),
        "settle_seconds": round(settle_seconds, 1),
        "pushes": dict(workload.pushes), "tag_pushes": workload.tag_pushes,
        **{k: v for k, v in result.items() if k != "violations"},
        "events_per_s": round(events / (workload_seconds + settle_seconds), 1),
        "events_per_s_workload": round(events / workload_seconds, 1),
        "invocations": len(invocations),
        "failed_invocations": len(failed),
        "failed_by_code": dict(Counter(inv.code or inv.error for inv in failed)),
        "registry_requests": len(acr_reqs),
        "registry_requests_per_event": round(len(acr_reqs) / max(events, 1), 2),
        "registry_requests_per_invocation": round(len(acr_reqs) / max(len(invocations), 1), 2),
        "registry_faulted": sum(1 for r in acr_reqs if r["status"] in (429, 500, 503, -1)),
        "arm_requests": len(arm_reqs),
        "arm_faulted": sum(1 for r in arm_reqs if r["status"] in (429, 500, 503, -1)),
        "p50_ms": round(percentile(durations, 50) * 1000, 1),
        "p99_ms": round(percentile(durations, 99) * 1000, 1),
        "handler_ms_by_outcome": {k: {"n": len(v), "p50": round(percentile(v, 50), 1), "p99": round(percentile(v, 99), 1)}
                                  for k, v in sorted(by_kind.items())},
        "outcomes": {f"{k[0]}({k[1]})" if k[1] else str(k[0]): v for k, v in sorted(by_outcome.items(), key=lambda kv: -kv[1])},
        "memory": {name: memory_report(sampler.samples, name, warm_t, end_of_workload_t) for name in ("host", "emulator", "azurite")},
        "invariant_violations": len(result["violations"]),
        "violations": result["violations"],
        "state_dir": str(state),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"push path soak: {report['workload_seconds']} s of pushes + {report['settle_seconds']} s to settle, {os.cpu_count()} CPUs")
        for key in ("pushes", "tag_pushes", "eligible_digests", "ineligible_digests", "events", "deliveries", "duplicate_copies",
                    "redeliveries", "delivery_outcomes", "events_per_s", "invocations", "failed_invocations", "failed_by_code",
                    "registry_requests_per_event", "registry_faulted", "arm_requests", "arm_faulted", "p50_ms", "p99_ms",
                    "handler_ms_by_outcome", "conversions", "unknown_error_failures", "dead_letters", "expected_dead_letters", "outcomes", "memory"):
            print(f"  {key}: {report[key]}")
        print(f"  invariant violations: {len(result['violations'])}")
        for v in result["violations"]:
            print(f"    - {v}")
        print(f"  logs and dead letters: {state}")
    return 1 if result["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
