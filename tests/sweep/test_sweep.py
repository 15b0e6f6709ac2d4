"""The reconcile sweep on the emulator: real HTTP to ACR and ARM, Azurite queues and blobs, the Functions host stand-in."""

from __future__ import annotations

import io
import json
import threading
import time
from typing import Any

from shared.__main__ import main as cli_main
from shared.storage import blob_service_client, queue_client
from shared.sweep.service import SweepService
from tests.push.conftest import event_for

from .conftest import NOREAD, PREMIUM, STANDARD, SweepStack


def run_cli(*args: str) -> tuple[int, str, str]:
    import contextlib

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(["sweep", *args])
    return code, out.getvalue(), err.getvalue()


def row(report: dict[str, Any], registry: str) -> dict[str, Any]:
    return next(r for r in report["registries"] if r["registry"] == registry)


def wait_done(stack: SweepStack, timeout: float = 90.0) -> dict[str, Any]:
    assert stack.host is not None
    report = stack.latest_report(timeout)
    assert stack.host.wait_queues_idle(30)
    return report


def test_timer_plans_queue_workers_stream_every_preexisting_image(sweep_stack):
    stack = sweep_stack(env={"AUTOPILOT_PUSH_EXCLUDE": "debug:*"})
    app = stack.digests("app")
    inv = stack.host.fire_timer("sweep_plan")
    assert inv.succeeded, inv.exception
    report = wait_done(stack)
    prem = row(report, PREMIUM)
    # 1.0, 1.1, 2.0(+latest) and tools a, b are converted; 1.2 already streams; arm cannot; debug is filtered out
    assert prem["started"] == 5 and prem["already_streaming"] == 1
    assert prem["skipped"] == {"filtered": 1, "platform": 1}
    assert prem["tags_seen"] == 9 and prem["digests_seen"] == 7  # 2.0 and latest share a digest: one decision
    converted = stack.ops_per_digest()
    converted.pop(app["1.2"])  # streaming before the sweep (its recorded conversion)
    assert set(converted) == {app["1.0"], app["1.1"], app["2.0"], stack.digests("tools")["a"], stack.digests("tools")["b"]}
    assert all(n == 1 for n in converted.values())
    # the registries that cannot stream are reported once, not walked; the unreadable one is a row, the others went on
    assert row(report, STANDARD)["status"] == "cannot-stream" and "Premium" in row(report, STANDARD)["detail"]
    noread = row(report, NOREAD)
    assert noread["status"] == "error" and "cannot list the repositories" in noread["detail"] and "AcrPull" in noread["detail"]
    assert not stack.operations(STANDARD)
    # one summary log line, the Markdown twin, outcome events on the topic
    summaries = [m for i in stack.host.invocations for m in i.messages if '"event": "sweep.summary"' in m]
    assert len(summaries) == 1
    md = blob_service_client().get_container_client(stack.container).download_blob("latest.md").readall().decode()
    assert "| sweepprem | swept |" in md
    types = [e.get("type") for e in stack.emu.ctx.extras["eventgrid"].topic_events()]
    assert types.count("Autopilot.ArtifactStreaming.SweepCompleted") == 1
    assert types.count("Autopilot.ArtifactStreaming.SweepRegistry") == 3


def test_transient_failures_are_retried_and_permanent_ones_reported_not_retried(sweep_stack):
    stack = sweep_stack(host=False)
    app = stack.digests("app")
    stack.fail_conversion("app", app["1.0"], "UNKNOWN_ERROR")
    stack.fail_conversion("app", app["1.1"], "IMAGE_NOT_RUNNABLE")  # ACR refused it: do not ask again every day
    code, out, _err = run_cli("--registry", PREMIUM, "--format", "json")
    report = json.loads(out)
    prem = row(report, PREMIUM)
    assert len([op for op in stack.operations() if op.digest == app["1.0"]]) == 2  # retried: a new conversion
    assert len([op for op in stack.operations() if op.digest == app["1.1"]]) == 1  # not retried
    assert prem["failed"] == {"IMAGE_NOT_RUNNABLE": 1}
    assert any(f["code"] == "IMAGE_NOT_RUNNABLE" and app["1.1"] in f["what"] for f in prem["failures"])
    assert code == 1  # a failure is in the report


def test_cap_then_second_run_finishes_the_rest_without_redoing_work(sweep_stack):
    stack = sweep_stack(host=False, env={"AUTOPILOT_SWEEP_MAX_CONVERSIONS": "2", "AUTOPILOT_SWEEP_PAGE_SIZE": "2",
                                                  "AUTOPILOT_SWEEP_REPOSITORIES_PER_ITEM": "2"})
    code, out, _ = run_cli("--registry", PREMIUM, "--format", "json")
    first = row(json.loads(out), PREMIUM)
    assert first["started"] == 2 and first["repositories_left"] >= 1
    assert code == 0
    assert "cap of 2" in json.loads(out)["stopped"]
    assert len(stack.ops_per_digest()) == 3  # 2 + the one streaming before
    mark = stack.emu.request_mark()
    _, out, _ = run_cli("--registry", PREMIUM, "--format", "json")
    second = row(json.loads(out), PREMIUM)
    assert second["started"] == 2  # the cap again: 4 of the 6 now
    _, out, _ = run_cli("--registry", PREMIUM, "--format", "json")
    third = row(json.loads(out), PREMIUM)
    assert third["started"] == 2 and third["repositories_left"] == 0  # 6 convertible images in all (debug:x included)
    ops = stack.ops_per_digest()
    assert len(ops) == 7 and all(n == 1 for n in ops.values())  # 6 + the pre-seeded one: nothing started twice
    # the resumed runs did not walk from the top again: fewer tags seen in total than three full walks
    assert first["tags_seen"] + second["tags_seen"] + third["tags_seen"] < 3 * 9
    catalog_reads = [r for r in stack.emu.requests_since(mark, service="acr") if r["path"].startswith("/v2/_catalog")]
    assert catalog_reads == []  # resumed from the stored state, not re-planned from the catalog
    _code, out, _ = run_cli("--registry", PREMIUM, "--format", "json")  # a new generation: everything is streaming now
    fourth = row(json.loads(out), PREMIUM)
    assert fourth["started"] == 0 and fourth["already_streaming"] + fourth["in_progress"] == 7


def test_report_mode_starts_nothing_and_says_what_it_would(sweep_stack):
    stack = sweep_stack(host=False, env={"AUTOPILOT_SWEEP_AUTO_CONVERT": "tools"})
    _, out, _ = run_cli("--report", "--registry", PREMIUM, "--format", "markdown")
    assert "| sweepprem | swept |" in out and "would start" in out
    assert len(stack.ops_per_digest()) == 1  # only the pre-seeded streaming one
    assert not stack.registry().repositories["tools"].convert_pushed_images
    _, out, _ = run_cli("--report", "--registry", PREMIUM, "--format", "json")
    prem = row(json.loads(out), PREMIUM)
    assert prem["would_start"] == 6 and prem["auto_conversion_changed"] == ["tools"]
    _code, out, _ = run_cli("--enforce", "--registry", PREMIUM, "--format", "json")
    assert stack.registry().repositories["tools"].convert_pushed_images  # enforce switched it on


def test_unknown_registry_is_a_clear_error(sweep_stack):
    sweep_stack(host=False)
    code, out, err = run_cli("--registry", "nosuchregistry")
    assert code == 2 and "nosuchregistry" in err and "in scope: " in err and PREMIUM in err and out == ""


def test_two_queue_workers_and_the_push_path_start_one_conversion_per_digest(sweep_stack, tmp_path):
    from tests.sweep.conftest import start_host

    stack = sweep_stack(env={"AUTOPILOT_SWEEP_REPOSITORIES_PER_ITEM": "1"})  # one repository per item: workers side by side
    (tmp_path / "second").mkdir()
    second = start_host(tmp_path / "second")  # a second instance polling the same queue
    try:
        targets = [(repo, tag, digest) for repo in ("app", "tools", "debug") for tag, digest in stack.digests(repo).items()]
        stack.host.fire_timer("sweep_plan")
        # meanwhile the push path gets an ImagePushed for every tag (as if they had all just been re-pushed)
        threads = [threading.Thread(target=stack.host.invoke_event,
                                    args=("on_image_pushed", event_for(stack.emu, d, t, repository=r, registry=PREMIUM)))
                   for r, t, d in targets]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wait_done(stack)
        assert second.wait_queues_idle(30)
    finally:
        second.stop()
    ops = stack.ops_per_digest()
    assert len(ops) == 7 and all(n == 1 for n in ops.values()), ops  # 6 new + the pre-seeded one, each exactly once
    worked = {i.function for i in second.invocations} | {i.function for i in stack.host.invocations}
    assert "sweep_work" in worked


def test_a_poison_work_item_ends_in_the_poison_queue_with_a_report_line(sweep_stack):
    # every catalog read answers 500: the registry work items (sweepprem, sweepnoread) fail every attempt
    faults = [{"match": "acr.catalog", "error_rate": 1.0, "statuses": [500]}]
    stack = sweep_stack(faults=faults)
    stack.host.fire_timer("sweep_plan")
    report = stack.latest_report(90)
    prem = row(report, PREMIUM)
    assert report["poisoned_items"] == 2
    (line,) = [f for f in prem["failures"] if f["code"] == "WORK_ITEM_POISONED"]
    assert "autopilot-sweep-poison" in line["detail"] and "500" in line["detail"]
    attempts = [i for i in stack.host.invocations_of("sweep_work") if not i.succeeded]
    assert len(attempts) == 6  # maxDequeueCount (3) per item, then no more: not an endless loop
    time.sleep(1.0)
    assert len([i for i in stack.host.invocations_of("sweep_work") if not i.succeeded]) == 6


def test_a_dead_lettered_push_event_is_recovered_and_malformed_blobs_set_aside(sweep_stack, monkeypatch):
    import os

    stack = sweep_stack(host=False)
    container = os.environ["AUTOPILOT_DEADLETTER_CONTAINER"]
    blobs = blob_service_client().get_container_client(container)
    blobs.create_container()
    eg = stack.emu.ctx.extras["eventgrid"]
    # a subscription whose endpoint never answers, dead-lettering into the container (as infra configures it)
    stack.emu.call(eg.add_subscription, {"name": "app-push", "registry": PREMIUM, "endpoint": "http://127.0.0.1:9/down",
                                         "max_delivery_attempts": 1, "dead_letter_container": container,
                                         "included_event_types": ["Microsoft.ContainerRegistry.ImagePushed"]})
    import requests

    resp = requests.post(f"{stack.emu.endpoints['admin']}/registries/{PREMIUM}/images",
                         json={"repository": "late", "tags": ["v1"], "layers_mb": [2], "seed": "late-v1"},
                         verify=stack.emu.endpoints["ca_bundle"], timeout=30)
    digest = resp.json()["digest"]
    assert eg.wait_idle_blocking(30)
    (dead,) = [d for d in eg.dead_letters if d["subscription"] == "app-push"]
    parts = dead["blob"].split("/")
    assert parts[0] == PREMIUM.upper() and parts[1] == "APP-PUSH" and len(parts) == 7 and parts[-1].endswith(".json")
    body = json.loads(blobs.download_blob(dead["blob"]).readall())
    assert isinstance(body, list) and body[0]["deadLetterReason"] and body[0]["deliveryAttempts"] == 1
    assert {"lastDeliveryOutcome", "publishTime", "lastDeliveryAttemptTime", "lastHttpStatusCode"} <= set(body[0])
    blobs.upload_blob("SOMETOPIC/SUB/2026/1/2/3/broken.json", b"{not json")
    # an oversized blob is refused by its size (the read asks for at most the cap + 1 byte) and set aside like a broken one
    from shared.sweep import deadletters

    monkeypatch.setattr(deadletters, "MAX_BLOB_BYTES", 64 * 1024)
    blobs.upload_blob("SOMETOPIC/SUB/2026/1/2/3/huge.json", b"[" + b" " * (100 * 1024) + b"]")
    SweepService.from_env()  # settings valid
    _, out, _ = run_cli("--registry", PREMIUM, "--format", "json")
    report = json.loads(out)
    assert row(report, PREMIUM)["dead_letters_handled"] == 1
    assert stack.ops_per_digest().get(digest) == 1  # the image whose event was lost is streaming now
    names = {b.name for b in blobs.list_blobs()}
    assert f"handled/{dead['blob']}" in names and dead["blob"] not in names
    assert "malformed/SOMETOPIC/SUB/2026/1/2/3/broken.json" in names
    assert "malformed/SOMETOPIC/SUB/2026/1/2/3/huge.json" in names
    bad = row(report, "(dead letters)")
    assert bad["dead_letters_malformed"] == 2 and bad["failed"] == {"MALFORMED_DEAD_LETTER": 2}
    # a second run does not handle that blob again (later dead letters, e.g. the streaming artifact's own push, are new)
    _code, out, _ = run_cli("--registry", PREMIUM, "--format", "json")
    assert stack.ops_per_digest().get(digest) == 1 and f"handled/{dead['blob']}" in {b.name for b in blobs.list_blobs()}


def test_bad_queue_message_is_acknowledged_with_a_log_line(sweep_stack):
    stack = sweep_stack()
    queue_client("autopilot-sweep").send_message("not a work item")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not stack.host.invocations_of("sweep_work"):
        time.sleep(0.1)
    (inv,) = stack.host.invocations_of("sweep_work")
    assert inv.succeeded and any("sweep.bad_item" in m for m in inv.messages)


def test_an_item_that_runs_its_share_of_time_continues_in_a_new_item_of_the_same_run(sweep_stack):
    # AUTOPILOT_SWEEP_ITEM_SECONDS=0: every item decides one digest, then hands the rest to a continuation item
    stack = sweep_stack(env={"AUTOPILOT_SWEEP_ITEM_SECONDS": "0", "AUTOPILOT_PUSH_EXCLUDE": "debug:*"})
    stack.host.fire_timer("sweep_plan")
    report = wait_done(stack)
    prem = row(report, PREMIUM)
    assert (prem["started"], prem["already_streaming"], prem["digests_seen"]) == (5, 1, 7)
    assert prem["repositories_left"] == 0 and not report["stopped"]
    assert len(stack.host.invocations_of("sweep_work")) >= 7 + 2  # continuations ran as their own invocations
    ops = stack.ops_per_digest()
    assert len(ops) == 6 and all(n == 1 for n in ops.values())


def test_a_timer_tick_while_the_previous_run_works_plans_nothing(sweep_stack):
    stack = sweep_stack(host=False)
    service = SweepService.from_env()
    first = service.start_run()
    assert first is not None
    assert service.start_run() is None  # nobody works the queue here: the first run has not ended
    messages = [json.loads(m.content) for m in queue_client("autopilot-sweep").peek_messages(max_messages=32)]
    # the first run's items only: the two Premium registries (the Standard one is a report row) and the dead letters
    assert sorted(m["kind"] for m in messages) == ["deadletters", "registry", "registry"]
    assert {m["run_id"] for m in messages} == {first}
    assert stack.operations(STANDARD) == []
