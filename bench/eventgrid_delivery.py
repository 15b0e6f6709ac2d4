"""Event Grid → Functions host delivery: how fast does the emulator's dispatcher drain a burst of registry events?

Emits N ImagePushed events at once on the emulator loop (as N concurrent `docker push`es would), delivers them to a
Functions host stand-in running a function that sleeps `--work-ms` per event, and reports drain time, events/s and the
per-event latency from eventTime to the function starting (p50/p95/max). With work W, in-flight bound F and host pool P, a
dispatcher that is not the bottleneck drains in about N*W/min(F, P).
Usage: python bench/eventgrid_delivery.py [--events 500] [--work-ms 20] [--schema EventGridSchema|CloudEventSchemaV1_0]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import azure.functions as func  # noqa: E402

from emulator import Emulator  # noqa: E402
from emulator.funchost import FunctionsHost  # noqa: E402

SUB_ID = "3c9a1f0e-0000-4000-8000-0000000be001"


def make_app(work_s: float) -> func.FunctionApp:
    app = func.FunctionApp()

    @app.event_grid_trigger(arg_name="event")
    def sink(event: func.EventGridEvent) -> None:
        time.sleep(work_s)

    return app


def event_time(ev: func.EventGridEvent | func.CloudEvent) -> float:
    t = ev.event_time if isinstance(ev, func.EventGridEvent) else ev.time
    assert isinstance(t, datetime.datetime)
    return t.timestamp()


def run(events: int, work_ms: float, schema: str, workers: int) -> dict:
    with FunctionsHost(app=make_app(work_ms / 1000), max_workers=workers) as host, tempfile.TemporaryDirectory() as tmp:
        scenario = {
            "subscriptions": [{"id": SUB_ID, "registries": [{"name": "benchacr"}]}],
            "eventgrid": {"subscriptions": [{"name": "sink", "registry": "benchacr", "endpoint": host.webhook_url("sink"),
                                             "schema": schema}]},
        }
        with Emulator(scenario, state_dir=tmp) as emu:
            eg = emu.ctx.extras["eventgrid"]
            reg = emu.world.registries["benchacr"]

            def burst() -> None:
                for i in range(events):
                    emu.world.emit("ImagePushed", reg, {"repository": f"bench/r{i % 50}", "tag": f"t{i}",
                                                         "digest": f"sha256:{i:064x}", "mediaType": "application/json",
                                                         "size": 500, "length": 500})

            t0 = time.perf_counter()
            emu.call(burst)
            assert eg.wait_idle_blocking(600), "deliveries still pending after 600 s"
            drain = time.perf_counter() - t0
            attempts = eg.delivery_attempts("sink")
        invs = host.invocations_of("sink")
        lat = sorted(i.started - event_time(i.trigger) for i in invs)
    return {
        "events": events, "schema": schema, "work_ms": work_ms, "host_workers": workers, "in_flight_bound": eg.max_in_flight,
        "delivered": len(invs), "attempts": len(attempts), "failed_attempts": sum(1 for a in attempts if a.outcome != "Success"),
        "drain_s": round(drain, 3), "events_per_s": round(events / drain, 1),
        "ideal_drain_s": round(events * work_ms / 1000 / min(eg.max_in_flight, workers), 3),
        "latency_ms": {"p50": round(statistics.median(lat) * 1000, 1), "p95": round(lat[int(0.95 * (len(lat) - 1))] * 1000, 1),
                       "max": round(lat[-1] * 1000, 1)},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--work-ms", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=16, help="host thread pool size")
    parser.add_argument("--schema", default="EventGridSchema", choices=["EventGridSchema", "CloudEventSchemaV1_0"])
    args = parser.parse_args()
    print(json.dumps(run(args.events, args.work_ms, args.schema, args.workers), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
