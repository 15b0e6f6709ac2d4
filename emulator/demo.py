"""`make demo`: the autopilot's main job on the local Azure — pushes stream via Event Grid, the sweep, the AKS audit and enforce.

Everything runs against the emulator exactly as it would against Azure: the function app is loaded by the Functions host
stand-in, Event Grid delivers the registry's ImagePushed events to it, and the operator CLI (`python -m shared …`) runs as a
child process with nothing but the emulator's settings in its environment.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests

from .azurite import Azurite
from .funchost import FunctionsHost
from .model import STREAMING_ARTIFACT_TYPE
from .runtime import Emulator

REPO = Path(__file__).resolve().parent.parent
SCENARIO = Path(__file__).resolve().parent / "scenarios" / "demo.yaml"
FUNCTION = "on_image_pushed"
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")

# What the platform team pushes while the autopilot is running (registry, repository, image spec, why it is in the demo).
PUSHES: list[tuple[str, str, dict[str, Any], str]] = [
    ("contosoprod", "shop/checkout", {"tags": ["3.2.0", "latest"], "layers_mb": [60, 400, 900], "seed": "checkout-320"},
     "CI pushes two tags of one image at once: two events, one digest"),
    ("contosoprod", "shop/checkout", {"tags": ["3.2.0"], "layers_mb": [60, 400, 900], "seed": "checkout-320"},
     "the same tag pushed again (same digest)"),
    ("contosoprod", "shop/checkout", {"tags": ["3.2.0-debug"], "layers_mb": [60, 400], "seed": "checkout-debug"},
     "a debug build, excluded by AUTOPILOT_PUSH_EXCLUDE=*:*-debug"),
    ("contosoprod", "base/runtime", {"tags": ["24.04"], "platforms": ["linux/amd64", "linux/arm64"], "layers_mb": [90],
                                     "format": "oci", "seed": "runtime-2404"},
     "multi-arch: only the linux/amd64 entry converts"),
    ("contosoprod", "edge/agent", {"tags": ["1.0.0"], "platforms": ["linux/arm64"], "layers_mb": [25], "seed": "agent-100"},
     "arm64 only: cannot stream"),
    ("contosoprod", "win/iis", {"tags": ["ltsc2025"], "platforms": ["windows/amd64"], "layers_mb": [2100], "seed": "iis-2025"},
     "a Windows image: cannot stream"),
    ("contosoprod", "ml/trainer", {"tags": ["2026.12"], "layers_gb": [14, 28], "seed": "trainer-2612"},
     "42 GB: over the 30 GB guidance"),
    ("contosoprod", "charts/ingress", {"tags": ["4.11.0"], "format": "oci", "layers_mb": [1], "seed": "chart-4110",
                                       "config_media_type": "application/vnd.cncf.helm.config.v1+json",
                                       "layer_media_type": "application/vnd.cncf.helm.chart.content.v1.tar+gzip"},
     "a Helm chart, not an image"),
    ("contosoprod", "auto/converted", {"tags": ["1.0.0"], "layers_mb": [50, 120], "seed": "auto-100"},
     "a repository with auto-conversion on: ACR converts it itself"),
    ("contosostd", "web/frontend", {"tags": ["1.1.0"], "layers_mb": [40, 220], "seed": "std-frontend-110"},
     "a Standard-SKU registry: cannot stream"),
    ("contosocmk", "web/frontend", {"tags": ["1.2.0"], "layers_mb": [40, 220], "seed": "cmk-frontend-120"},
     "a registry encrypted with a customer-managed key: cannot stream"),
]


def heading(text: str) -> None:
    print(f"\n{BOLD}== {text} =={RESET}", flush=True)


def note(text: str) -> None:
    print(f"{DIM}{text}{RESET}", flush=True)


def table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    print("  " + "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=False)))
    print("  " + "  ".join("-" * w for w in widths))
    for row in rows:
        print("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)))
    sys.stdout.flush()


def show_world(emu: Emulator) -> None:
    world = emu.world
    heading("What the local Azure holds")
    note(f"endpoints: {emu.endpoints_path}   ARM: {emu.endpoints['arm']}")
    rows = []
    with world.lock:
        for reg in world.registries.values():
            for repo in reg.repositories.values():
                for tag in sorted(repo.tags.values(), key=lambda t: t.name):
                    streaming = any(m.subject and m.artifact_type == STREAMING_ARTIFACT_TYPE for m in repo.manifests.values()
                                    if m.subject == tag.digest or _child_of(repo, tag.digest, m.subject))
                    rows.append([reg.name, f"{reg.sku}{' +CMK' if reg.encryption == 'enabled' else ''}", reg.login_server,
                                 f"{repo.name}:{tag.name}", tag.digest[:19], "yes" if streaming else "no"])
                if not repo.tags:
                    rows.append([reg.name, reg.sku, reg.login_server, f"{repo.name} (empty, auto-convert on)", "", ""])
    table(rows, ["registry", "sku", "login server", "image", "digest", "streaming"])
    rows = []
    with world.lock:
        for cl in world.clusters.values():
            sub = world.subscriptions[cl.subscription_id].display_name
            for pool in cl.pools.values():
                state = {None: "null", True: "on", False: "off"}[pool.artifact_streaming]
                rows.append([sub, cl.name, pool.name, pool.os_type, pool.os_sku or "", pool.orchestrator_version,
                             pool.provisioning_state, pool.power_state, state, ",".join(f"{k}={v}" for k, v in {**cl.tags, **pool.tags}.items())])
    print()
    table(rows, ["subscription", "cluster", "pool", "os", "os sku", "k8s", "provisioning", "power", "streaming", "tags"])
    hidden = [s.display_name for s in world.subscriptions.values() if not s.accessible]
    if hidden:
        note(f"subscriptions the app's identity cannot read: {', '.join(hidden)}")


def _child_of(repo: Any, index_digest: str, subject: str | None) -> bool:
    manifest = repo.manifests.get(index_digest)
    if manifest is None or subject is None or ("index" not in manifest.media_type and "list" not in manifest.media_type):
        return False
    return any(m.get("digest") == subject for m in json.loads(manifest.content).get("manifests", []))


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    print(f"{BOLD}$ python -m shared {' '.join(args)}{RESET}", flush=True)
    proc = subprocess.run([sys.executable, "-m", "shared", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if proc.stdout:
        print(proc.stdout.rstrip("\n"))
    for line in proc.stderr.splitlines():
        note(line)
    note(f"(exit code {proc.returncode})")
    return proc


def settle(emu: Emulator, timeout: float = 120.0) -> None:
    """Wait until Event Grid has delivered everything and no conversion is running."""
    eventgrid = emu.ctx.extras["eventgrid"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        eventgrid.wait_idle_blocking(max(1.0, deadline - time.monotonic()))
        with emu.world.lock:
            running = sum(1 for reg in emu.world.registries.values() for repo in reg.repositories.values()
                          for op in repo.operations.values() if op.status in ("NotStarted", "Running"))
        if not running and eventgrid.wait_idle_blocking(2):
            return
        time.sleep(0.2)
    raise SystemExit("demo: deliveries or conversions did not settle in time")


def push_path(emu: Emulator, env: dict[str, str]) -> None:
    heading("Push path: Event Grid → on_image_pushed → streaming artifacts")
    os.environ.update(env)
    host = FunctionsHost(app_module="function_app", max_workers=8).start()
    eventgrid = emu.ctx.extras["eventgrid"]
    try:
        for i, registry in enumerate(("contosoprod", "contosostd", "contosocmk")):
            emu.call(eventgrid.add_subscription, {
                "name": f"autopilot-{registry}", "registry": registry, "endpoint": host.webhook_url(FUNCTION),
                "schema": "CloudEventSchemaV1_0" if i == 1 else "EventGridSchema",
                "included_event_types": ["Microsoft.ContainerRegistry.ImagePushed"],
                "duplicate_rate": 0.5 if registry == "contosoprod" else 0.0,
                # as infra/ deploys it: an AzureFunction destination (no webhook handshake); the others as plain webhooks
                "endpoint_type": "AzureFunction" if registry == "contosoprod" else "WebHook",
            })
        note("Event Grid subscriptions: contosoprod (an AzureFunction destination, as infra/ deploys it) and contosocmk in the "
             "Event Grid schema, contosoprod delivering about half its events twice (at-least-once delivery); contosostd in "
             "CloudEvents 1.0")
        for registry, repository, spec, why in PUSHES:
            resp = requests.post(f"{emu.endpoints['admin']}/registries/{registry}/images", json={"repository": repository, **spec},
                                 verify=emu.endpoints["ca_bundle"], timeout=30)
            resp.raise_for_status()
            print(f"  pushed {registry}/{repository}:{','.join(spec['tags'])}  {DIM}{why}{RESET}", flush=True)
        settle(emu)
        attempts = eventgrid.delivery_attempts()
        per_event = Counter(a.event_id for a in attempts if 200 <= (a.status or 0) < 300)
        note(f"Event Grid: {len(attempts)} delivery attempts, {sum(1 for n in per_event.values() if n > 1)} event(s) delivered "
             f"more than once, {len(eventgrid.dead_letters)} dead-lettered")
        print()
        rows = []
        for event in eventgrid.topic_events():
            data = event.get("data") or {}
            ref = f":{data['tag']}" if data.get("tag") else f"@{(data.get('digest') or '')[:19]}"
            rows.append([data.get("registry", ""), f"{data.get('repository', '')}{ref}", data.get("outcome", ""),
                         data.get("reason") or data.get("code") or "", (data.get("detail") or "")[:90]])
        table(rows, ["registry", "image", "outcome", "reason", "detail"])
        note("(one row per delivery, from the outcome events the function published to the Event Grid custom topic)")
    finally:
        host.stop()

    heading("Images pushed before the autopilot was deployed: the operator CLI")
    cli(env, "stream", "--registry", "contosoprod", "--image", "web/frontend:1.0.0", "--wait", "60")
    cli(env, "stream", "--registry", "contosoprod", "--image", "api/orders:2.3.1")
    cli(env, "stream", "--registry", "contosostd", "--image", "web/frontend:1.0.0")

    heading("Streaming artifacts now in contosoprod (list-referrers)")
    for image in ("shop/checkout:3.2.0", "shop/checkout:latest", "base/runtime:24.04", "auto/converted:1.0.0", "web/frontend:1.0.0",
                  "edge/agent:1.0.0"):
        cli(env, "stream", "--registry", "contosoprod", "--image", image, "--list-referrers")
    with emu.world.lock:
        ops = Counter((reg.name, repo.name, op.digest) for reg in emu.world.registries.values()
                      for repo in reg.repositories.values() for op in repo.operations.values())
    doubles = [k for k, n in ops.items() if n > 1]
    note(f"conversions started per digest: {'all exactly one' if not doubles else f'{len(doubles)} digests converted twice!'}")


def _latest_run(container: Any) -> str | None:
    try:
        return json.loads(container.download_blob("latest.json").readall()).get("run_id")
    except Exception:
        return None


def sweep_path(emu: Emulator, env: dict[str, str]) -> None:
    """The reconcile sweep: images from before the deployment, and a push whose event was dead-lettered during an outage."""
    from azure.storage.blob import BlobServiceClient

    heading("Reconcile sweep: what the events missed")
    os.environ.update(env)
    eventgrid = emu.ctx.extras["eventgrid"]
    blobs = BlobServiceClient.from_connection_string(env["AzureWebJobsStorage"])
    blobs.create_container("eventgrid-deadletter")  # infra/ creates it and points the subscriptions' dead-lettering at it
    with emu.world.lock:  # the function app is down (the host stopped above), and dead-lettering goes to Blob Storage
        sub = emu.world.event_subscriptions["autopilot-contosoprod"]
        sub.max_delivery_attempts, sub.dead_letter_container = 2, "eventgrid-deadletter"
    note("an outage: the function app is unreachable, Event Grid gives up on the push and dead-letters it into Blob Storage")
    requests.post(f"{emu.endpoints['admin']}/registries/contosoprod/images", verify=emu.endpoints["ca_bundle"], timeout=30,
                  json={"repository": "shop/payments", "tags": ["5.0.0"], "layers_mb": [40, 160], "seed": "payments-500"}
                  ).raise_for_status()
    print("  pushed contosoprod/shop/payments:5.0.0 during the outage", flush=True)
    settle(emu, timeout=240)  # also lets the retries of earlier undelivered events run out
    for dead in eventgrid.dead_letters:
        if "blob" in dead:
            note(f"dead letter: eventgrid-deadletter/{dead['blob']} ({dead['event'].get('subject')}, "
                 f"{dead['event'].get('deadLetterReason')})")
    cli(env, "sweep", "--report", "--registry", "contosoprod")
    heading("Reconcile sweep, enforce: the daily timer plans, queue workers stream (Azurite queue autopilot-sweep)")
    container = blobs.get_container_client("autopilot-sweep")
    before = _latest_run(container)
    host = FunctionsHost(app_module="function_app", max_workers=8).start()
    try:
        host.fire_timer("sweep_plan")
        deadline = time.monotonic() + 180
        report = None
        while report is None and time.monotonic() < deadline:
            if _latest_run(container) not in (None, before):
                report = container.download_blob("latest.md").readall().decode()
            else:
                time.sleep(0.5)
        host.wait_queues_idle(30)
    finally:
        host.stop()
    works = host.invocations_of("sweep_work")
    note(f"{len(works)} queue work item(s) ran on the Functions host; report: autopilot-sweep/latest.md")
    print(report or "(no report within 120 s)")
    with emu.world.lock:
        ops = Counter((reg.name, repo.name, op.digest) for reg in emu.world.registries.values()
                      for repo in reg.repositories.values() for op in repo.operations.values())
    doubles = [k for k, n in ops.items() if n > 1]
    note(f"conversions started per digest: {'all exactly one' if not doubles else f'{len(doubles)} digests converted twice!'}")
    cli(env, "stream", "--registry", "contosoprod", "--image", "shop/payments:5.0.0", "--list-referrers")
    cli(env, "stream", "--registry", "contosoprod", "--image", "legacy/billing:7.3.2", "--list-referrers")


def audit_path(emu: Emulator, env: dict[str, str]) -> None:
    heading("Audit path, report mode: what streams, what cannot and why (changes nothing)")
    cli(env, "audit", "--format", "table")
    heading("Audit path, enforce mode: enable streaming on remediable pools (ETag-guarded PUT, one pool per cluster)")
    cli({**env, "AUTOPILOT_AUDIT_LRO_BUDGET_SECONDS": "10"}, "audit", "--enforce", "--format", "table")
    with emu.world.lock:
        writes = list(getattr(emu.world, "arm_writes", []) or [])
    if writes:
        note(f"ARM writes the emulator saw: {len(writes)}")
    heading("Audit path, the hourly timer again: after enforce")
    time.sleep(max(0.0, emu.world.settings.lro_seconds))
    cli(env, "audit", "--format", "markdown")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulator.demo", description=__doc__)
    parser.add_argument("--scenario", default=str(SCENARIO))
    parser.add_argument("--skip-push", action="store_true")
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--skip-audit", action="store_true")
    args = parser.parse_args(argv)
    # The host captures INFO records from the app (as the Functions host does); the terminal shows only warnings.
    logging.basicConfig(level=logging.WARNING, format="  %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.WARNING)
        # azure-functions' indexing warns that auth levels do not apply to non-HTTP triggers: true, and noise here.
        handler.addFilter(lambda record: "Auth level is not applied" not in record.getMessage())
    state_dir = Path(tempfile.mkdtemp(prefix="autopilot-demo-"))
    heading("Starting the local Azure (ARM, ACR data plane, managed identity, Event Grid) and Azurite")
    with Azurite() as azurite, Emulator(args.scenario, state_dir=state_dir, azurite=azurite.connection_string) as emu:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("AUTOPILOT_")}, **emu.env,
               "AUTOPILOT_PUSH_EXCLUDE": "*:*-debug", "PYTHONUNBUFFERED": "1"}
        show_world(emu)
        if not args.skip_push:
            push_path(emu, env)
        if not args.skip_sweep:
            sweep_path(emu, env)
        if not args.skip_audit:
            audit_path(emu, env)
        heading("Done")
        note(f"emulator state, CA and dead letters: {state_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
