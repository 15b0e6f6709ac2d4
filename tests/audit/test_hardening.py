"""Issue 9, audit items, against the emulator: what the rules depend on is re-read right before a write, Arm64 pools are
ineligible, untrusted text cannot break or inject into the Markdown report, no write without an ETag."""

from __future__ import annotations

import copy
import re
import time
from typing import Any

from emulator import Emulator
from shared.audit.report import COLUMNS
from shared.storage import blob_service_client

from .test_audit_emulator import FLEET, SUB_B, audit, on_request, pool_of, rows_by_key, settings, writes


def test_cluster_excluded_after_discovery_is_not_written(make_emulator):
    emu = make_emulator(copy.deepcopy(FLEET))
    listing = "/managedClusters/aks-b1/agentPools"

    def tag_cluster_after_listing(rec: dict[str, Any]) -> None:
        if rec["method"] == "GET" and rec["path"].endswith(listing):
            next(c for c in emu.world.clusters.values() if c.name == "aks-b1").tags = {"artifact-streaming": "off"}

    on_request(emu, tag_cluster_after_listing)
    report = audit(settings(AUTOPILOT_AUDIT_MODE="enforce", AUTOPILOT_AUDIT_SUBSCRIPTIONS=SUB_B))
    assert writes(emu) == []
    rows = rows_by_key(report)
    for pool in ("system", "user"):
        row = rows[("aks-b1", pool)]
        assert row.state == "excluded" and "cluster tag artifact-streaming=off" in row.reason
        assert row.action == "skipped" and "changed since discovery" in row.outcome


ARM_FLEET: dict[str, Any] = {"settings": {"lro_seconds": 0.2}, "subscriptions": [{"id": SUB_B, "name": "dev", "clusters": [
    {"name": "aks-arm", "resource_group": "rg-arm", "pools": [
        {"name": "system", "mode": "System", "artifact_streaming": False},
        {"name": "ampere", "vm_size": "Standard_D4ps_v5", "artifact_streaming": False},
        {"name": "cobalt", "vm_size": "Standard_E8pds_v6"},
        {"name": "custom", "vm_size": "Standard_Z2_v1", "artifact_streaming": False},
    ]}]}]}


def test_arm64_pools_are_ineligible_and_the_list_extends(make_emulator):
    emu = make_emulator(copy.deepcopy(ARM_FLEET))
    report = audit(settings(AUTOPILOT_AUDIT_MODE="enforce", AUTOPILOT_AUDIT_ARM64_VM_SIZES="Standard_Z*_v1"))
    rows = rows_by_key(report)
    for pool, size in (("ampere", "Standard_D4ps_v5"), ("cobalt", "Standard_E8pds_v6"), ("custom", "Standard_Z2_v1")):
        assert rows[("aks-arm", pool)].state == "ineligible", pool
        assert f"VM size {size} is Arm64" in rows[("aks-arm", pool)].reason
    assert rows[("aks-arm", "system")].action == "enabled"
    assert writes(emu) == [("aks-arm", "system")]


HOSTILE = "evil\r\n| x | <script>alert(1)</script> [click](https://evil.example) ![i](x) `code` *b* _i_ &amp; www.evil.example"


def test_untrusted_text_is_escaped_in_the_markdown_report(make_emulator):
    scenario = copy.deepcopy(FLEET)
    scenario["subscriptions"] = [copy.deepcopy(FLEET["subscriptions"][1])]
    scenario["subscriptions"][0]["name"] = HOSTILE
    scenario["subscriptions"][0]["clusters"][0]["pools"][1]["tags"] = {"owner-exclude": "<img src=x onerror=alert(1)>|\r"}
    make_emulator(scenario)
    report = audit(settings(AUTOPILOT_AUDIT_EXCLUDE_TAG="owner-exclude"))
    assert any(r.subscription_name == HOSTILE for r in report.rows)  # the JSON keeps the value as it is
    md = blob_service_client().get_container_client("audit-test").download_blob("latest.md").readall().decode()
    assert "\r" not in md
    for raw in ("<script", "<img", "](", "![", "`code`", "*b*", "_i_", "https://", "www.evil"):
        assert raw not in md, raw
    assert "&amp;amp;" in md and "&lt;script&gt;" in md
    lines = md.splitlines()
    start = lines.index("## Node pools") + 2
    table = [line for line in lines[start:] if line.startswith("|")]
    assert len(table) == 2 + len(report.rows)  # header, rule, one line per row: nothing broke out of a row
    for line in table:
        assert len(re.findall(r"(?<!\\)\|", line)) == len(COLUMNS) + 1, line
    per_sub = [line for line in lines if "evil" in line and line.startswith("|")]
    assert per_sub and all(len(re.findall(r"(?<!\\)\|", line)) in (len(COLUMNS) + 1, 9) for line in per_sub)


def test_a_pool_without_an_etag_is_not_written(make_emulator):
    emu: Emulator = make_emulator(copy.deepcopy(FLEET))
    pool_of(emu, "aks-b1", "user").extra["eTag"] = None  # ARM answers the pool without an ETag
    mark = emu.request_mark()
    report = audit(settings(AUTOPILOT_AUDIT_MODE="enforce", AUTOPILOT_AUDIT_SUBSCRIPTIONS=SUB_B))
    row = rows_by_key(report)[("aks-b1", "user")]
    assert row.state == "busy" and "without an ETag" in row.reason and row.action == "skipped"
    puts = [r for r in emu.requests_since(mark, service="arm") if r["method"] == "PUT"]
    assert not any(r["path"].endswith("/agentPools/user") for r in puts)
    assert ("aks-b1", "user") not in writes(emu) and ("aks-b1", "system") in writes(emu)
    assert report.summary.failures == 0


def test_a_day_long_retry_after_ends_inside_the_run_budget(make_emulator):
    # ARM throttles every pool listing with Retry-After: 86400. azure-core alone would sleep a day; the run's deadline and
    # the capped Retry-After give the answer back at once: the clusters are error rows and the run ends, reported.
    scenario = copy.deepcopy(FLEET)
    scenario["faults"] = {"rules": [{"match": "arm.agentpools", "error_rate": 1.0, "statuses": [429], "retry_after": 86400}]}
    emu = make_emulator(scenario)
    started = time.monotonic()
    report = audit(settings(AUTOPILOT_AUDIT_SUBSCRIPTIONS=SUB_B, AUTOPILOT_AUDIT_RUN_BUDGET_SECONDS="60"))
    assert time.monotonic() - started < 60
    errors = [r for r in report.rows if r.state == "error"]
    assert {r.cluster for r in errors} == {"aks-b1", "aks-b2"} and all("429" in r.reason for r in errors)
    statuses = [r["status"] for r in emu.requests_since(0, service="arm") if "/agentPools" in r["path"]]
    assert statuses and set(statuses) == {429} and len(statuses) == 2  # one attempt each: no retry into the Retry-After
