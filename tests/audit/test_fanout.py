"""The audit fanned out over the Storage queue (Azurite) to queue-triggered workers in Functions host stand-ins: the same
report as a single run, and enforce's cap and one pool per cluster held with several workers."""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError

from emulator import Emulator
from emulator.funchost import FunctionsHost
from emulator.services.arm import arm_state
from shared.audit.fanout import QUEUE_NAME, start_run
from shared.storage import blob_service_client, queue_client

from .test_audit_emulator import ENFORCEABLE, FLEET, settings, stored_latest, writes

VOLATILE = ("run_id", "started_at", "finished_at")


@pytest.fixture
def fleet(make_emulator) -> Emulator:
    emu = make_emulator(copy.deepcopy(FLEET))
    queue = queue_client(QUEUE_NAME)
    try:
        queue.clear_messages()  # the session's Azurite is shared by the tests
    except Exception:
        queue.create_queue()
    return emu


@pytest.fixture
def workers(fleet: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Start `n` host stand-ins, each indexing the app's audit blueprint, all listening on autopilot-audit."""
    hosts: list[FunctionsHost] = []

    def start(n: int, **env: str) -> list[FunctionsHost]:
        from functions.audit import bp

        for key, value in settings_env(**env).items():
            monkeypatch.setenv(key, value)
        (tmp_path / "host.json").write_text(json.dumps({"version": "2.0", "extensions": {"queues": {
            "batchSize": 1, "maxPollingInterval": "00:00:00.500", "visibilityTimeout": "00:00:01", "maxDequeueCount": 3}}}))
        for _ in range(n):
            app = func.FunctionApp()
            app.register_functions(bp)
            host = FunctionsHost(app=app, max_workers=8)
            host.load()
            for fn in host.functions.values():
                fn.directory = str(tmp_path)
            hosts.append(host.start())
        return hosts

    yield start
    for host in hosts:
        host.stop()


def settings_env(**env: str) -> dict[str, str]:
    from .test_audit_emulator import BASE_ENV

    return {**BASE_ENV, "AUTOPILOT_AUDIT_FANOUT": "true", **env}


def wait_for_report(run_id: str, limit: float = 60.0) -> dict[str, Any]:
    container = blob_service_client().get_container_client("audit-test")
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        names = [b.name for b in container.list_blobs(name_starts_with="reports/") if run_id in b.name and b.name.endswith(".json")]
        if names:
            return json.loads(container.download_blob(names[0]).readall())
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} was not reported within {limit}s")


def comparable(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k not in VOLATILE}


@pytest.mark.parametrize(("batch", "messages"), [("0", 3), ("2", 2)])  # auto: one subscription per message at this size
def test_fanned_out_run_gives_the_same_report_as_a_single_run(fleet: Emulator, workers, batch: str, messages: int):
    expected_batch = int(batch) or 1
    from shared.audit.service import run_audit

    single = run_audit(settings(), publisher=None)
    single_json = stored_latest()
    single_md = blob_service_client().get_container_client("audit-test").download_blob("latest.md").readall().decode()
    hosts = workers(3)
    record = start_run(settings(AUTOPILOT_AUDIT_FANOUT="true", AUTOPILOT_AUDIT_FANOUT_BATCH=batch))
    assert record["count"] == messages and record["batch"] == expected_batch
    fanned = wait_for_report(record["run_id"])
    assert comparable(fanned) == comparable(single_json)
    assert comparable(stored_latest()) == comparable(single_json)  # latest.json is the fanned-out run's now
    fanned_md = blob_service_client().get_container_client("audit-test").download_blob("latest.md").readall().decode()
    for value in VOLATILE:
        single_md = single_md.replace(str(getattr(single, value)), "X")
        fanned_md = fanned_md.replace(str(fanned[value]), "X")
    assert fanned_md == single_md
    assert all(h.wait_queues_idle(15) for h in hosts)
    items = [inv for h in hosts for inv in h.invocations_of("audit_work_item")]
    assert sum(1 for inv in items if inv.succeeded) >= messages + 1  # the work messages and at least one finalize


@pytest.mark.parametrize(("cap", "batch"), [(1, "1"), (10, "1"), (10, "2")])
def test_cap_and_one_pool_per_cluster_hold_across_workers(fleet: Emulator, workers, cap: int, batch: str):
    workers(3, AUTOPILOT_AUDIT_MODE="enforce", AUTOPILOT_AUDIT_MAX_REMEDIATIONS=str(cap))
    record = start_run(settings(AUTOPILOT_AUDIT_FANOUT="true", AUTOPILOT_AUDIT_MODE="enforce",
                               AUTOPILOT_AUDIT_MAX_REMEDIATIONS=str(cap), AUTOPILOT_AUDIT_FANOUT_BATCH=batch))
    report = wait_for_report(record["run_id"])
    touched = writes(fleet)
    assert len(touched) == min(cap, len(ENFORCEABLE)) and set(touched) <= ENFORCEABLE
    enabled = {(r["cluster"], r["pool"]) for r in report["rows"] if r["action"] == "enabled"}
    assert enabled == set(touched) and report["summary"]["remediations_started"] == len(touched)
    if cap == 1:
        assert sum(1 for r in report["rows"] if "per-run cap of 1" in r["outcome"]) == len(ENFORCEABLE) - 1
    ops = arm_state(fleet.ctx).operations
    by_cluster: dict[str, list] = {}
    for w in fleet.world.arm_writes:
        by_cluster.setdefault(w.cluster, []).append(w)
    for ws in by_cluster.values():  # a cluster's second write only after its first operation ended
        for first, second in itertools.pairwise(ws):
            assert ops[first.operation_id].end is not None and ops[first.operation_id].end <= second.ts


def test_earlier_remediations_too_many_for_a_message_travel_in_a_blob_and_are_verified(fleet: Emulator, workers,
                                                                                       monkeypatch: pytest.MonkeyPatch):
    from shared.audit import fanout
    from shared.audit.service import run_audit

    from .test_audit_emulator import pool_of, wait_until

    enforce = {"AUTOPILOT_AUDIT_MODE": "enforce", "AUTOPILOT_AUDIT_LRO_BUDGET_SECONDS": "0"}
    first = run_audit(settings(**enforce), publisher=None)  # leaves two remediations running (one per cluster)
    started = {(p.cluster, p.pool) for p in first.pending}
    assert len(started) == 2
    for cluster, pool in started:
        wait_until(lambda c=cluster, p=pool: pool_of(fleet, c, p).provisioning_state == "Succeeded", f"{cluster}/{pool} to settle")
    monkeypatch.setattr(fanout, "MESSAGE_LIMIT", 0)  # every message is "too big": its pending list goes to a blob
    workers(2, **enforce)
    record = start_run(settings(AUTOPILOT_AUDIT_FANOUT="true", AUTOPILOT_AUDIT_FANOUT_BATCH="2", **enforce))
    report = wait_for_report(record["run_id"])
    assert {(r["cluster"], r["pool"]) for r in report["rows"] if r["action"] == "verified"} == started
    names = [b.name for b in blob_service_client().get_container_client("audit-test").list_blobs(
        name_starts_with=f"runs/{record['run_id']}/pending/")]
    assert len(names) == 2  # one per message


def test_a_final_step_whose_instance_died_is_taken_over_once_its_lease_lapses_and_a_reported_run_is_left_alone(
        fleet: Emulator, workers, monkeypatch: pytest.MonkeyPatch):
    from shared.audit import fanout
    from shared.audit.report import ReportStore
    from shared.audit.settings import AuditSettings
    from shared.settings import Env

    monkeypatch.setattr(fanout, "FINALIZE_BUSY_SECONDS", 1)
    store = ReportStore(blob_service_client(), "audit-test")
    dead = store.blobs().get_blob_client("finalizer/shard-0000")
    with contextlib.suppress(ResourceExistsError, HttpResponseError):
        dead.upload_blob(b"", overwrite=False)
    dead.acquire_lease(lease_duration=15)  # an instance that took the final step and died: nobody renews or releases it
    taken = time.monotonic()
    workers(2)
    record = start_run(settings(AUTOPILOT_AUDIT_FANOUT="true"))
    report = wait_for_report(record["run_id"], limit=60)
    assert time.monotonic() - taken >= 14  # not before the dead holder's lease lapsed
    assert report["summary"]["total"] > 0
    again = fanout.handle_message(AuditSettings.from_env(Env(settings_env())), {"kind": "finalize", "run": record["run_id"]},
                                  store=store, publisher=None)
    assert again is None
    reports = [b.name for b in store.blobs().list_blobs(name_starts_with="reports/") if record["run_id"] in b.name]
    assert len(reports) == 2  # its JSON and Markdown, once


def test_batches_cover_the_plan_in_order_and_auto_size_keeps_instances_busy():
    from shared.audit.fanout import batch_of, batch_size, work_messages
    from shared.audit.model import PendingRemediation, WorkItem

    assert [batch_size(0, n) for n in (1, 150, 1000, 50_000)] == [1, 1, 10, 10]
    assert batch_size(3, 1000) == 3
    work = [WorkItem(f"sub-{i}", f"S{i}") for i in range(7)]
    pending = {"sub-4": [PendingRemediation("/x", "sub-4", "rg", "c", "p", "2026-12-01T00:00:00Z")]}
    messages = list(work_messages("run1", work, 3, "enforce", pending))
    assert [m["count"] for m in messages] == [3, 3, 3]
    assert [[i["subscription_id"] for i in m["items"]] for m in messages] == [
        ["sub-0", "sub-1", "sub-2"], ["sub-3", "sub-4", "sub-5"], ["sub-6"]]
    assert [len(m["pending"]) for m in messages] == [0, 1, 0]
    record = {"batch": 3, "items": [w.as_dict() for w in work]}
    assert [i["subscription_id"] for i in batch_of(record, 2)] == ["sub-6"]


def test_the_final_step_skips_only_records_that_every_recording_says_have_nothing_to_remediate():
    from shared.audit.fanout import plain_items

    done = "\n".join([
        '{"index":0,"clusters":3,"targets":0,"pending":0}',
        '{"index":1,"clusters":2,"targets":1,"pending":0}',  # a target: read
        '{"index":2,"clusters":2,"targets":0,"pending":1}',  # an earlier remediation still running: read
        '{"index":3,"clusters":4,"targets":0,"pending":0}',
        '{"index":3,"clusters":5,"targets":0,"pending":0}',  # a redelivery saw another listing: read
        '{"index":4,"clusters":1,"targets":0,"pending":0}',
        '{"index":4,"clusters":1,"targets":0,"pending":0}',  # the same twice: skipped
        '5',  # a line without the summary: read
        '{"index":6,"clusters":1,"targets":0,"pending":0',  # a torn line: read
    ])
    assert plain_items(done) == {0: 3, 4: 1}


def test_audit_concurrency_is_per_worker_instance_shared_by_its_invocations():
    from shared.audit.fanout import worker_clients
    from shared.audit.settings import AuditSettings
    from shared.settings import Env

    from .test_audit_emulator import BASE_ENV

    sixteen = AuditSettings.from_env(Env({**BASE_ENV, "AUTOPILOT_AUDIT_CONCURRENCY": "16"}))
    clients, threads = worker_clients(sixteen)
    assert worker_clients(sixteen) == (clients, threads)  # every invocation of the instance: the same pool and threads
    assert threads._max_workers == 16 and clients.profile.pool_size >= 16
    assert worker_clients(AuditSettings.from_env(Env({**BASE_ENV, "AUTOPILOT_AUDIT_CONCURRENCY": "4"})))[1]._max_workers == 4
