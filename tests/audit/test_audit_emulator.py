"""The audit against the emulator's ARM (real mgmt SDK clients over HTTPS) and Azurite: every state, report vs enforce,
cap, failure threshold, one pool per cluster, 409 and 412, verification on the next run, the stored report."""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from emulator import Emulator
from emulator.model import new_etag
from emulator.services.arm import arm_state, start_operation
from shared.audit.service import run_audit
from shared.audit.settings import AuditSettings
from shared.settings import Env
from shared.storage import blob_service_client

SUB_A = "3f2a3d10-0000-4000-8000-00000000aa01"
SUB_B = "3f2a3d10-0000-4000-8000-00000000bb02"
SUB_C = "3f2a3d10-0000-4000-8000-00000000cc03"

FLEET: dict[str, Any] = {
    "seed": 7,
    "settings": {"lro_seconds": 0.3, "page_size": 2},
    "subscriptions": [
        {"id": SUB_A, "name": "prod", "clusters": [
            {"name": "aks-a", "resource_group": "rg-a", "kubernetes_version": "1.30.4", "pools": [
                {"name": "system", "mode": "System", "artifact_streaming": None},
                {"name": "green", "artifact_streaming": False},
                {"name": "blue", "os_sku": "AzureLinux", "artifact_streaming": True},
                {"name": "win", "os_type": "Windows"},
                {"name": "flatcar", "os_sku": "Flatcar"},
                {"name": "kata", "os_sku": "AzureLinux", "workload_runtime": "KataMshvVmIsolation"},
                {"name": "noble", "os_sku": "Ubuntu2404"},
                {"name": "batch", "power_state": "Stopped"},
                {"name": "legacy", "tags": {"artifact-streaming": "off"}},
            ]},
            {"name": "aks-gpu", "resource_group": "rg-a", "pools": [
                {"name": "gpu", "provisioning_state": "Updating"},  # someone else's operation, running
                {"name": "spare"},                                  # remediable, but its cluster is busy with gpu
            ]},
            {"name": "aks-frozen", "resource_group": "rg-a", "tags": {"artifact-streaming": "off"},
             "pools": [{"name": "system", "mode": "System"}]},
            {"name": "aks-old", "resource_group": "rg-a", "kubernetes_version": "1.24.10",
             "pools": [{"name": "system", "mode": "System"}]},
            {"name": "aks-listed", "resource_group": "rg-vendor", "pools": [{"name": "system", "mode": "System"}]},
        ]},
        {"id": SUB_B, "name": "dev", "clusters": [
            {"name": "aks-b1", "resource_group": "rg-b", "pools": [
                {"name": "system", "mode": "System", "os_sku": "AzureLinux"},
                {"name": "user", "artifact_streaming": False},
            ]},
            {"name": "aks-b2", "resource_group": "rg-b", "power_state": "Stopped", "pools": [{"name": "system", "mode": "System"}]},
        ]},
        {"id": SUB_C, "name": "restricted", "accessible": False,
         "clusters": [{"name": "aks-c", "resource_group": "rg-c", "pools": [{"name": "system", "mode": "System"}]}]},
    ],
}

EXPECTED = {
    ("aks-a", "system"): "remediable", ("aks-a", "green"): "remediable", ("aks-a", "blue"): "compliant",
    ("aks-a", "win"): "ineligible", ("aks-a", "flatcar"): "ineligible", ("aks-a", "kata"): "ineligible",
    ("aks-a", "noble"): "ineligible", ("aks-gpu", "gpu"): "busy", ("aks-gpu", "spare"): "remediable",
    ("aks-a", "batch"): "stopped",
    ("aks-a", "legacy"): "excluded", ("aks-frozen", "system"): "excluded", ("aks-old", "system"): "ineligible",
    ("aks-listed", "system"): "excluded", ("aks-b1", "system"): "remediable", ("aks-b1", "user"): "remediable",
    ("aks-b2", "system"): "stopped",
}
REMEDIABLE = {k for k, v in EXPECTED.items() if v == "remediable"}
ENFORCEABLE = REMEDIABLE - {("aks-gpu", "spare")}  # aks-gpu has another pool mid-operation: AKS would answer 409
BASE_ENV = {
    "AUTOPILOT_AUDIT_EXCLUDE": "/subscriptions/*/resourceGroups/rg-vendor/*",
    "AUTOPILOT_AUDIT_POLL_SECONDS": "0.1",
    "AUTOPILOT_AUDIT_LRO_BUDGET_SECONDS": "30",
    "AUTOPILOT_AUDIT_CONTAINER": "audit-test",
}


def settings(**env: str) -> AuditSettings:
    azure = {k: v for k, v in os.environ.items() if not k.startswith("AUTOPILOT_AUDIT_")}  # the emulator's ARM and topic
    return AuditSettings.from_env(Env({**azure, **BASE_ENV, **env}))


def audit(s: AuditSettings, **kwargs: Any):
    return run_audit(s, publisher=None, **kwargs)


def states(report) -> dict[tuple[str, str], str]:
    return {(r.cluster, r.pool): r.state for r in report.rows if r.pool}


def rows_by_key(report) -> dict[tuple[str, str], Any]:
    return {(r.cluster, r.pool): r for r in report.rows if r.pool}


def writes(emu: Emulator, since: int = 0) -> list[tuple[str, str]]:
    return [(w.cluster, w.pool) for w in emu.world.arm_writes[since:]]


def arm_mutations(emu: Emulator, mark: int) -> list[dict[str, Any]]:
    return [r for r in emu.requests_since(mark, service="arm") if r["method"] not in ("GET", "HEAD")]


def wait_until(predicate: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    """Poll (not a timed assertion): the emulator settles LROs on its own clock."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def pool_of(emu: Emulator, cluster: str, pool: str):
    return next(c for c in emu.world.clusters.values() if c.name == cluster).pools[pool]


def on_request(emu: Emulator, hook: Callable[[dict[str, Any]], None]) -> None:
    """Run `hook(record)` on the emulator loop as each request is logged: a change 'behind ARM's back' at an exact moment."""
    world = emu.world
    original = world.record

    def record(**fields: Any):
        rec = original(**fields)
        hook(fields)
        return rec

    world.record = record  # type: ignore[method-assign]


@pytest.fixture
def fleet(make_emulator) -> Emulator:
    return make_emulator(copy.deepcopy(FLEET))


def stored_latest(container: str = "audit-test") -> dict[str, Any]:
    service = blob_service_client()
    return json.loads(service.get_container_client(container).download_blob("latest.json").readall())


# ---------------------------------------------------------------------------------------------------------- report mode


def test_report_mode_classifies_every_state_and_writes_nothing(fleet: Emulator):
    mark = fleet.request_mark()
    report = audit(settings())
    assert states(report) == EXPECTED
    assert arm_mutations(fleet, mark) == []
    assert fleet.world.arm_writes == []
    rows = rows_by_key(report)
    assert {k for k, r in rows.items() if r.action == "would-enable"} == REMEDIABLE
    assert "pool tag artifact-streaming=off" in rows[("aks-a", "legacy")].reason
    assert "cluster tag" in rows[("aks-frozen", "system")].reason
    assert "below the documented minimum 1.25" in rows[("aks-old", "system")].reason
    # the unreadable subscription is a row with the error, not a crashed run
    errors = [r for r in report.rows if r.state == "error"]
    assert [(e.subscription_id, e.subscription_name) for e in errors] == [(SUB_C, "restricted")]
    assert "403 AuthorizationFailed" in errors[0].reason
    # paging: aks-a's ten pools came in pages of two through nextLink
    pool_lists = [r for r in fleet.requests_since(mark, service="arm")
                  if r["method"] == "GET" and r["path"].endswith("/managedClusters/aks-a/agentPools")]
    assert len(pool_lists) == 5 and sum("skipToken" in r["query"] for r in pool_lists) == 4
    # the stored report is the report
    stored = stored_latest()
    assert stored == json.loads(json.dumps(report.as_dict()))
    assert report.locations["json"].startswith("reports/") and stored["summary"]["by_state"]["remediable"] == 5
    assert stored["summary"]["by_subscription"][SUB_B] == {"remediable": 2, "stopped": 1}


def test_selected_subscriptions_only_and_an_unknown_one_is_a_row(fleet: Emulator):
    unknown = "3f2a3d10-0000-4000-8000-00000000dd04"
    report = audit(settings(AUTOPILOT_AUDIT_SUBSCRIPTIONS=f"{SUB_B},{unknown}"))
    assert {r.subscription_id for r in report.rows} == {SUB_B, unknown}
    assert {k: v for k, v in states(report).items()} == {k: v for k, v in EXPECTED.items() if k[0].startswith("aks-b")}
    error = next(r for r in report.rows if r.state == "error")
    assert error.subscription_id == unknown and "404" in error.reason
    assert {r.subscription_name for r in report.rows if r.subscription_id == SUB_B} == {"dev"}


# ---------------------------------------------------------------------------------------------------------- enforce


def test_enforce_enables_exactly_the_remediable_pools_one_per_cluster(fleet: Emulator):
    before = {(c.name, p.name): p.etag for c in fleet.world.clusters.values() for p in c.pools.values()}
    mark = fleet.request_mark()
    report = audit(settings(AUTOPILOT_AUDIT_MODE="enforce"))
    touched = writes(fleet)
    assert sorted(touched) == sorted(ENFORCEABLE)
    assert all(list(w.changes) == ["artifactStreamingProfile"] for w in fleet.world.arm_writes)
    puts = arm_mutations(fleet, mark)
    assert all(r["method"] == "PUT" and r["status"] == 200 for r in puts) and len(puts) == len(ENFORCEABLE)
    rows = rows_by_key(report)
    assert {k for k, r in rows.items() if r.action == "enabled"} == ENFORCEABLE
    assert all(rows[k].outcome == "Succeeded" for k in ENFORCEABLE)
    spare = rows[("aks-gpu", "spare")]
    assert spare.action == "skipped" and "waiting: pool gpu in this cluster is Updating" in spare.outcome
    for (cluster, pool), etag in before.items():
        if (cluster, pool) in ENFORCEABLE:
            assert pool_of(fleet, cluster, pool).artifact_streaming is True
        elif cluster != "aks-c":
            assert pool_of(fleet, cluster, pool).etag == etag, f"{cluster}/{pool} was touched"
    # one pool per cluster: the second write in a cluster came after the first one's operation ended
    ops = arm_state(fleet.ctx).operations
    by_cluster: dict[str, list] = {}
    for w in fleet.world.arm_writes:
        by_cluster.setdefault(w.cluster, []).append(w)
    assert {c: len(ws) for c, ws in by_cluster.items()} == {"aks-a": 2, "aks-b1": 2}
    for ws in by_cluster.values():
        first, second = ws
        assert ops[first.operation_id].end is not None and ops[first.operation_id].end <= second.ts
    assert report.summary.remediations_started == 4 and report.summary.failures == 0
    # a second enforce run finds everything compliant and changes nothing
    again = audit(settings(AUTOPILOT_AUDIT_MODE="enforce"))
    assert len(fleet.world.arm_writes) == 4
    assert all(states(again)[k] == "compliant" for k in ENFORCEABLE)


def test_budget_exceeded_records_remediation_started_and_the_next_run_verifies(fleet: Emulator):
    s = settings(AUTOPILOT_AUDIT_MODE="enforce", AUTOPILOT_AUDIT_LRO_BUDGET_SECONDS="0")
    first = audit(s)
    rows = rows_by_key(first)
    started = {k for k, r in rows.items() if r.action == "remediation-started"}
    waiting = {k for k, r in rows.items() if r.action == "skipped" and r.outcome.startswith("waiting")}
    assert len(started) == 2 and {k[0] for k in started} == {"aks-a", "aks-b1"}  # one per cluster
    assert started | waiting == REMEDIABLE
    waiting -= {("aks-gpu", "spare")}  # its cluster stays busy with someone else's operation throughout
    assert sorted(writes(fleet)) == sorted(started)
    assert {p.pool for p in first.pending} == {k[1] for k in started}
    assert len(stored_latest()["pending"]) == 2
    for cluster, pool in started:
        wait_until(lambda c=cluster, p=pool: pool_of(fleet, c, p).provisioning_state == "Succeeded", f"{cluster}/{pool} to settle")

    second = audit(s)
    rows2 = rows_by_key(second)
    assert {k for k, r in rows2.items() if r.action == "verified"} == started
    assert {k for k, r in rows2.items() if r.action == "remediation-started"} == waiting
    assert sorted(writes(fleet)) == sorted(ENFORCEABLE)
    for cluster, pool in waiting:
        wait_until(lambda c=cluster, p=pool: pool_of(fleet, c, p).provisioning_state == "Succeeded", f"{cluster}/{pool} to settle")
    third = audit(s)
    assert {k for k, r in rows_by_key(third).items() if r.action == "verified"} == waiting
    assert third.pending == [] and len(fleet.world.arm_writes) == 4


def test_still_running_remediation_blocks_its_cluster_on_the_next_run(make_emulator):
    scenario = copy.deepcopy(FLEET)
    scenario["settings"]["lro_seconds"] = 60
    emu = make_emulator(scenario)
    s = settings(AUTOPILOT_AUDIT_MODE="enforce", AUTOPILOT_AUDIT_LRO_BUDGET_SECONDS="0",
                 AUTOPILOT_AUDIT_SUBSCRIPTIONS=SUB_B)
    audit(s)
    assert writes(emu) == [("aks-b1", "system")]
    second = audit(s)
    rows = rows_by_key(second)
    assert rows[("aks-b1", "system")].action == "remediation-started" and "still Updating" in rows[("aks-b1", "system")].outcome
    assert rows[("aks-b1", "user")].action == "skipped" and "still updating" in rows[("aks-b1", "user")].outcome
    assert writes(emu) == [("aks-b1", "system")] and len(second.pending) == 1


def test_cap_limits_remediations_per_run(fleet: Emulator):
    mark = fleet.request_mark()
    report = audit(settings(AUTOPILOT_AUDIT_MODE="enforce", AUTOPILOT_AUDIT_MAX_REMEDIATIONS="1"))
    assert len(fleet.world.arm_writes) == 1
    capped = [r for r in report.rows if r.action == "skipped" and "per-run cap of 1" in r.outcome]
    assert len(capped) == 3 and report.summary.remediations_started == 1
    # a capped pool costs no request at all
    paths = {r["path"].lower() for r in fleet.requests_since(mark, service="arm")}
    assert not any(p.endswith(f"/managedclusters/{r.cluster}/agentpools/{r.pool}".lower()) for r in capped for p in paths)


def test_cap_zero_changes_nothing(fleet: Emulator):
    report = audit(settings(AUTOPILOT_AUDIT_MODE="enforce", AUTOPILOT_AUDIT_MAX_REMEDIATIONS="0"))
    assert fleet.world.arm_writes == []
    assert sum(1 for r in report.rows if "per-run cap of 0" in r.outcome) == 4


def test_failure_threshold_stops_remediation_for_the_rest_of_the_run(make_emulator):
    # The operator lowered the minimum below what AKS accepts: the rules call these pools remediable, ARM answers 400.
    sub = "3f2a3d10-0000-4000-8000-00000000ee05"
    emu = make_emulator({"settings": {"lro_seconds": 0.2}, "subscriptions": [{"id": sub, "clusters": [
        {"name": f"old{i}", "resource_group": "rg-old", "kubernetes_version": "1.24.10", "pools": [{"name": "system"}]}
        for i in range(4)]}]})
    mark = emu.request_mark()
    report = audit(settings(AUTOPILOT_AUDIT_MODE="enforce", AUTOPILOT_AUDIT_MIN_KUBERNETES="1.20",
                            AUTOPILOT_AUDIT_FAILURE_THRESHOLD="2", AUTOPILOT_AUDIT_CONCURRENCY="1"))
    puts = arm_mutations(emu, mark)
    assert [r["status"] for r in puts] == [400, 400]
    failed = [r for r in report.rows if r.action == "failed"]
    skipped = [r for r in report.rows if r.action == "skipped"]
    assert len(failed) == 2 and "PUT refused: 400 InvalidParameter" in failed[0].outcome and "1.25" in failed[0].outcome
    assert len(skipped) == 2 and all("failure threshold of 2 reached" in r.outcome for r in skipped)
    assert report.summary.failures == 2 and "failure threshold" in report.summary.stopped_early
    assert emu.world.arm_writes == []


def test_409_marks_the_pool_busy_for_this_run(fleet: Emulator):
    target = "/managedClusters/aks-b1/agentPools/user"

    def busy_after_get(rec: dict[str, Any]) -> None:
        if rec["method"] == "GET" and rec["path"].endswith(target) and rec["status"] == 200:
            cluster = next(c for c in fleet.world.clusters.values() if c.name == "aks-b1")
            if not cluster.operation_until:
                start_operation(fleet.ctx, cluster, None, 60, state="Upgrading")  # an upgrade starts behind our back

    on_request(fleet, busy_after_get)
    mark = fleet.request_mark()
    report = audit(settings(AUTOPILOT_AUDIT_MODE="enforce", AUTOPILOT_AUDIT_SUBSCRIPTIONS=SUB_B))
    row = rows_by_key(report)[("aks-b1", "user")]
    assert row.state == "busy" and row.action == "skipped" and "409" in row.outcome and "OperationNotAllowed" in row.reason
    assert [r["status"] for r in arm_mutations(fleet, mark) if r["path"].endswith(target)] == [409]
    assert ("aks-b1", "user") not in writes(fleet)
    assert report.summary.failures == 0


@pytest.mark.parametrize("times", [1, 2])
def test_412_rereads_once(fleet: Emulator, times: int):
    target = "/managedClusters/aks-b1/agentPools/user"
    seen = [0]

    def change_after_get(rec: dict[str, Any]) -> None:
        if rec["method"] == "GET" and rec["path"].endswith(target) and rec["status"] == 200 and seen[0] < times:
            seen[0] += 1
            pool_of(fleet, "aks-b1", "user").etag = new_etag()  # someone else wrote the pool after our GET

    on_request(fleet, change_after_get)
    mark = fleet.request_mark()
    report = audit(settings(AUTOPILOT_AUDIT_MODE="enforce", AUTOPILOT_AUDIT_SUBSCRIPTIONS=SUB_B))
    statuses = [r["status"] for r in arm_mutations(fleet, mark) if r["path"].endswith(target)]
    row = rows_by_key(report)[("aks-b1", "user")]
    if times == 1:
        assert statuses == [412, 200]
        assert row.action == "enabled" and "after one 412 re-read" in row.outcome
        assert pool_of(fleet, "aks-b1", "user").artifact_streaming is True
    else:
        assert statuses == [412, 412]
        assert row.action == "failed" and "412 PreconditionFailed twice" in row.outcome
        assert pool_of(fleet, "aks-b1", "user").artifact_streaming is False


def test_pool_changed_since_discovery_is_reclassified_and_left_alone(fleet: Emulator):
    listing = "/managedClusters/aks-b1/agentPools"

    def exclude_after_listing(rec: dict[str, Any]) -> None:
        if rec["method"] == "GET" and rec["path"].endswith(listing):
            pool_of(fleet, "aks-b1", "user").tags = {"artifact-streaming": "off"}

    on_request(fleet, exclude_after_listing)
    report = audit(settings(AUTOPILOT_AUDIT_MODE="enforce", AUTOPILOT_AUDIT_SUBSCRIPTIONS=SUB_B))
    row = rows_by_key(report)[("aks-b1", "user")]
    assert row.state == "excluded" and row.action == "skipped" and "changed since discovery" in row.outcome
    assert writes(fleet) == [("aks-b1", "system")]


def test_outside_the_window_enforce_behaves_as_report(fleet: Emulator):
    hour = time.gmtime().tm_hour
    closed = f"{(hour + 2) % 24:02d}-{(hour + 3) % 24:02d}"
    report = audit(settings(AUTOPILOT_AUDIT_MODE="enforce", AUTOPILOT_AUDIT_WINDOW=closed))
    assert report.effective_mode == "report" and "outside the allowed window" in report.note
    assert fleet.world.arm_writes == []
    assert sum(1 for r in report.rows if r.action == "would-enable") == 5
    assert stored_latest()["effective_mode"] == "report"


def test_outcome_events_go_to_the_custom_topic(fleet: Emulator):
    assert os.environ.get("AUTOPILOT_TOPIC_ENDPOINT"), "the emulator's env names the outcome topic"
    report = run_audit(settings(AUTOPILOT_AUDIT_MODE="enforce", AUTOPILOT_AUDIT_SUBSCRIPTIONS=SUB_B))
    events = fleet.ctx.extras["eventgrid"].topic_events()
    types = sorted(e["type"] for e in events)
    assert types == ["Autopilot.NodePoolAudit.Completed", "Autopilot.NodePoolAudit.Enabled", "Autopilot.NodePoolAudit.Enabled"]
    done = next(e for e in events if e["type"].endswith("Completed"))
    assert done["data"]["run_id"] == report.run_id and done["data"]["summary"]["by_state"]["remediable"] == 2


def test_pools_from_the_cluster_listing_give_the_same_states_with_no_pool_requests(fleet: Emulator):
    mark = fleet.request_mark()
    report = audit(settings(AUTOPILOT_AUDIT_POOL_SOURCE="cluster"))
    assert states(report) == EXPECTED
    assert not any("/agentpools" in r["path"].lower() for r in fleet.requests_since(mark, service="arm"))
    enforce = audit(settings(AUTOPILOT_AUDIT_POOL_SOURCE="cluster", AUTOPILOT_AUDIT_MODE="enforce"))
    assert sorted(writes(fleet)) == sorted(ENFORCEABLE)
    assert {k for k, r in rows_by_key(enforce).items() if r.action == "enabled"} == ENFORCEABLE


def test_run_budget_spent_reads_and_starts_nothing(fleet: Emulator):
    # The run's deadline covers every ARM request, retry and poll: a spent budget reads nothing and writes nothing.
    mark = fleet.request_mark()
    report = audit(settings(AUTOPILOT_AUDIT_MODE="enforce", AUTOPILOT_AUDIT_RUN_BUDGET_SECONDS="0"))
    assert fleet.world.arm_writes == [] and fleet.requests_since(mark, service="arm") == []
    assert [r.state for r in report.rows] == ["error"] and "cannot list subscriptions" in report.rows[0].reason


def test_no_remediation_starts_after_the_run_deadline(fleet: Emulator):
    from shared.audit.discovery import Clients
    from shared.audit.items import Target
    from shared.audit.model import ReportRow
    from shared.audit.remediation import Remediator
    from shared.deadline import Deadline

    s = settings(AUTOPILOT_AUDIT_MODE="enforce")
    target = Target(SUB_B, "dev", "rg-b", "aks-b1", "user")
    row = ReportRow(SUB_B, "dev", "rg-b", "aks-b1", "user", "Linux", "Ubuntu", "1.30.4", "remediable", "off",
                    resource_id=target.resource_id)
    mark = fleet.request_mark()
    clients = Clients(s.azure, s.concurrency)
    try:
        Remediator(s, clients, Deadline.after(0)).run([(target, row)])
    finally:
        clients.close()
    assert row.action == "skipped" and "run time budget of 420s used" in row.outcome
    assert fleet.requests_since(mark, service="arm") == [] and fleet.world.arm_writes == []


def test_shards_partition_the_estate_and_keep_their_own_latest(fleet: Emulator):
    seen: list[set[str]] = []
    for index in range(3):
        report = audit(settings(AUTOPILOT_AUDIT_SHARD=f"{index}/3"))
        seen.append({r.subscription_id for r in report.rows})
        if report.rows:
            assert report.locations["latest_json"] == f"latest-shard-{index}-of-3.json"
    assert set().union(*seen) == {SUB_A, SUB_B, SUB_C}
    assert sum(len(s) for s in seen) == 3  # each subscription in exactly one shard


def test_summary_is_logged_as_one_structured_line(fleet: Emulator, caplog: pytest.LogCaptureFixture):
    caplog.set_level("INFO", logger="autopilot.audit")
    report = audit(settings())
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "autopilot.audit"]
    done = [line for line in lines if line["event"] == "audit.completed"]
    assert len(done) == 1
    assert done[0]["run_id"] == report.run_id and done[0]["by_state"] == report.summary.by_state
    assert done[0]["subscriptions"] == 3 and done[0]["report"] == report.locations["json"]


def test_throttling_and_transient_errors_are_retried_by_the_sdk(make_emulator):
    scenario = copy.deepcopy(FLEET)
    scenario["faults"] = {"seed": 3, "rules": [
        {"match": "arm.*", "methods": ["GET"], "error_rate": 0.3, "statuses": [429, 503], "retry_after": 0.05}]}
    emu = make_emulator(scenario)
    mark = emu.request_mark()
    report = audit(settings())
    assert states(report) == EXPECTED
    statuses = [r["status"] for r in emu.requests_since(mark, service="arm")]
    assert statuses.count(429) + statuses.count(503) >= 5


def test_unreachable_storage_is_a_note_not_a_failed_audit(fleet: Emulator):
    from emulator.azurite import ACCOUNT, KEY
    from shared.audit.report import ReportStore

    dead = BlobServiceClient.from_connection_string(
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};BlobEndpoint=http://127.0.0.1:9/{ACCOUNT}",
        retry_total=0)
    report = audit(settings(), store=ReportStore(dead, "audit-test"))
    assert states(report) == EXPECTED
    assert "earlier remediations not verified" in report.note and "report not stored" in report.note
    assert report.locations == {}


def test_409_holds_the_rest_of_the_cluster_without_further_requests(fleet: Emulator):
    first = "/managedClusters/aks-b1/agentPools/system"  # pools of a cluster go in name order: system, then user

    def busy_after_get(rec: dict[str, Any]) -> None:
        if rec["method"] == "GET" and rec["path"].endswith(first) and rec["status"] == 200:
            cluster = next(c for c in fleet.world.clusters.values() if c.name == "aks-b1")
            if not cluster.operation_until:
                start_operation(fleet.ctx, cluster, None, 60, state="Upgrading")

    on_request(fleet, busy_after_get)
    mark = fleet.request_mark()
    report = audit(settings(AUTOPILOT_AUDIT_MODE="enforce", AUTOPILOT_AUDIT_SUBSCRIPTIONS=SUB_B))
    rows = rows_by_key(report)
    assert rows[("aks-b1", "system")].state == "busy"
    assert rows[("aks-b1", "user")].action == "skipped" and "409 for pool system" in rows[("aks-b1", "user")].outcome
    assert not any(r["path"].endswith("/agentPools/user") for r in fleet.requests_since(mark, service="arm"))
    assert fleet.world.arm_writes == []
