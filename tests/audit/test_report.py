"""Report rendering (JSON, Markdown, table) and the Blob store for reports and pending remediations, against Azurite."""

from __future__ import annotations

import json
import uuid

from shared.audit.model import AuditReport, PendingRemediation, ReportRow, summarize
from shared.audit.report import ReportStore, render_markdown, render_table
from shared.storage import blob_service_client

SUB_A = "3f2a3d10-0000-4000-8000-0000000000a1"
SUB_B = "3f2a3d10-0000-4000-8000-0000000000b2"


def rows() -> list[ReportRow]:
    def row(sub, cluster, pool, state, reason, action="none", outcome=""):
        return ReportRow(sub, "prod" if sub == SUB_A else "dev", "rg", cluster, pool, "Linux", "Ubuntu", "1.30.4", state,
                         reason, action, outcome, f"/subscriptions/{sub}/resourceGroups/rg/providers/x/{cluster}/agentPools/{pool}")

    return [
        row(SUB_A, "aks1", "system", "remediable", "artifact streaming is off", "enabled", "Succeeded"),
        row(SUB_A, "aks1", "blue", "compliant", "artifact streaming is enabled"),
        row(SUB_A, "aks1", "win", "ineligible", "Windows node pool | pipes"),
        row(SUB_B, "", "", "error", "cannot list clusters: 403 AuthorizationFailed: no access"),
    ]


def report() -> AuditReport:
    r = rows()
    return AuditReport(run_id="abc123", started_at="2026-11-27T05:00:00Z", finished_at="2026-11-27T05:00:09Z",
                       mode="enforce", effective_mode="enforce", note="", rows=r, summary=summarize(r, failures=0),
                       pending=[PendingRemediation("/x/agentPools/p", SUB_A, "rg", "aks1", "p", "2026-11-27T05:00:05Z")])


def test_summary_counts_per_state_subscription_and_action():
    s = summarize(rows())
    assert s.total == 4
    assert s.by_state["remediable"] == 1 and s.by_state["compliant"] == 1 and s.by_state["error"] == 1
    assert s.by_state["busy"] == 0
    assert s.by_subscription == {SUB_A: {"remediable": 1, "compliant": 1, "ineligible": 1}, SUB_B: {"error": 1}}
    assert s.remediations_started == 1


def test_markdown_has_summary_rows_and_escapes_pipes():
    md = render_markdown(report())
    assert "| remediable | 1 |" in md and "| **total** | **4** |" in md
    assert "Windows node pool \\| pipes" in md
    assert "403 AuthorizationFailed" in md
    assert "Remediations to verify next run" in md
    assert md.count("\n| prod |") == 3


def test_table_lists_every_row_and_a_summary_line():
    text = render_table(report())
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["subscription", "resource", "group", "cluster"]
    assert sum(1 for line in lines if line.startswith(("prod", "dev"))) == 4
    assert "4 pool row(s), mode enforce" in lines[-1]


def test_store_writes_dated_and_latest_json_and_markdown(azurite):
    service = blob_service_client({"AzureWebJobsStorage": azurite.connection_string})
    container = f"audit-{uuid.uuid4().hex[:8]}"
    store = ReportStore(service, container)
    names = store.write_report(report())
    assert names["json"] == "reports/2026/11/27/050000-abc123.json"
    assert names["latest_markdown"] == "latest.md"
    client = service.get_container_client(container)
    stored = json.loads(client.download_blob("latest.json").readall())
    assert stored == json.loads(client.download_blob(names["json"]).readall())
    assert stored["summary"]["by_state"]["error"] == 1 and len(stored["rows"]) == 4
    assert stored["rows"][0]["action"] == "enabled"
    props = client.get_blob_client("latest.md").get_blob_properties()
    assert props.content_settings.content_type.startswith("text/markdown")
    assert client.download_blob("latest.md").readall().decode().startswith("# Artifact streaming audit")


def test_store_round_trips_pending_and_tolerates_garbage(azurite):
    service = blob_service_client({"AzureWebJobsStorage": azurite.connection_string})
    store = ReportStore(service, f"audit-{uuid.uuid4().hex[:8]}", shard_suffix="-shard-1-of-2")
    assert store.load_pending() == []
    pending = report().pending
    store.save_pending(pending)
    assert store.load_pending() == pending
    service.get_container_client(store.container).upload_blob(store.pending_blob, b"{not json", overwrite=True)
    assert store.load_pending() == []
    assert store.pending_blob == "state/pending-shard-1-of-2.json"
