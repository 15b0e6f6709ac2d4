"""The audit run: plan, discover, classify, verify earlier remediations, remediate (enforce), report, store, log, publish."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from shared.logs import log_event

from .discovery import Clients, discover, plan
from .model import (
    ACTION_ENABLED,
    ACTION_FAILED,
    ACTION_NONE,
    ACTION_SKIPPED,
    ACTION_STARTED,
    ACTION_VERIFIED,
    ACTION_WOULD_ENABLE,
    AuditReport,
    PendingRemediation,
    PoolRecord,
    PoolState,
    ReportRow,
    summarize,
)
from .remediation import Remediator
from .report import ReportStore, sort_rows
from .rules import classify
from .settings import AuditSettings

log = logging.getLogger("autopilot.audit")
EVENT_TYPE_PREFIX = "Autopilot.NodePoolAudit."
_EVENT_ACTIONS = {ACTION_ENABLED: "Enabled", ACTION_STARTED: "RemediationStarted", ACTION_FAILED: "RemediationFailed",
                  ACTION_VERIFIED: "Verified"}
AUTO: Any = object()  # "build it from the environment"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_store(settings: AuditSettings) -> ReportStore | None:
    """The report store on the app's storage account, or None when AzureWebJobsStorage is not configured at all."""
    from shared.storage import blob_service_client, configured

    if not configured():
        return None
    index, count = settings.shard
    suffix = f"-shard-{index}-of-{count}" if count > 1 else ""
    return ReportStore(blob_service_client(), settings.container, shard_suffix=suffix)


def _row(record: PoolRecord, state: PoolState, reason: str) -> ReportRow:
    return ReportRow(
        subscription_id=record.subscription_id, subscription_name=record.subscription_name,
        resource_group=record.resource_group, cluster=record.cluster, pool=record.pool, os_type=record.os_type,
        os_sku=record.os_sku, kubernetes_version=record.kubernetes_version, state=state, reason=reason,
        resource_id=record.resource_id,
    )


def run_audit(
    settings: AuditSettings,
    *,
    store: ReportStore | None = AUTO,
    publisher: Any = AUTO,
    progress: Callable[[str, int, int], None] | None = None,
    now: datetime | None = None,
) -> AuditReport:
    """One audit run. Never raises for what Azure answers: unreadable scopes and failed operations become report rows."""
    started = now or datetime.now(UTC)
    run_id = uuid.uuid4().hex[:12]
    store = default_store(settings) if store is AUTO else store
    if publisher is AUTO:
        from shared.publish import OutcomePublisher

        publisher = OutcomePublisher(settings.topic) if settings.publish_events and settings.topic else None
    effective, notes = settings.mode, []
    if settings.enforce and settings.window and not settings.window.contains(started):
        effective = "report"
        notes.append(f"outside the allowed window {settings.window.text!r} (UTC): enforce ran as report")
    if store is None:
        notes.append("report not stored: AzureWebJobsStorage is not set")

    clients = Clients(settings.azure, settings.concurrency)
    try:
        pending_before: list[PendingRemediation] = []
        if store is not None:
            try:
                pending_before = store.load_pending()
            except Exception as exc:  # unreadable state must not stop the audit; busy pools still show as Updating
                notes.append(f"earlier remediations not verified: cannot read {store.pending_blob}: {type(exc).__name__}")
                log.error("cannot read the pending remediations: %s", exc)
        work, rows = plan(settings, clients)
        found = discover(settings, clients, work, progress)
        rows += found.errors
        pairs: list[tuple[PoolRecord, ReportRow]] = []
        for record in found.pools:
            decision = classify(record, settings)
            row = _row(record, decision.state, decision.reason)
            if decision.state == "remediable" and effective == "report":
                row.action = ACTION_WOULD_ENABLE
            pairs.append((record, row))
        still_pending, waiting_clusters = _verify(pending_before, pairs, rows)

        failures, stopped = 0, ""
        new_pending: list[PendingRemediation] = []
        if effective == "enforce":
            # AKS runs one agent pool operation per cluster at a time ("Another agentpool operation (… - Updating) is in
            # progress"): a cluster with any pool mid-operation — ours from an earlier run or anyone's — waits for next run.
            busy_siblings = {r.cluster_key: f"{r.pool} in this cluster is {r.provisioning_state}" for r in found.pools
                             if (r.provisioning_state or "").lower() != "succeeded"}
            busy_siblings.update({k: f"{pool} in this cluster is still updating" for k, pool in waiting_clusters.items()})
            targets = []
            for record, row in pairs:
                if row.state != "remediable" or row.action != ACTION_NONE:
                    continue
                if record.cluster_key in busy_siblings:
                    row.action, row.outcome = ACTION_SKIPPED, (
                        f"waiting: pool {busy_siblings[record.cluster_key]} (one pool per cluster at a time); next run")
                    continue
                targets.append((record, row))
            result = Remediator(settings, clients).run(targets, progress)
            failures, stopped, new_pending = result.failures, result.stopped_early, result.pending
        rows = sort_rows(rows + [row for _, row in pairs])
        pending_after = still_pending + new_pending
        report = AuditReport(
            run_id=run_id, started_at=_iso(started), finished_at=_iso(datetime.now(UTC)), mode=settings.mode,
            effective_mode=effective, note="; ".join(notes), rows=rows,
            summary=summarize(rows, failures=failures, stopped_early=stopped), pending=pending_after,
        )
    finally:
        clients.close()

    if store is not None:
        try:
            store.save_pending(pending_after)
            report.locations = store.write_report(report)
        except Exception as exc:  # storage trouble must not hide the audit's result; it is logged and reported
            report.note = "; ".join(filter(None, [report.note, f"report not stored: {type(exc).__name__}: {exc}"]))
            log.error("could not store the audit report: %s", exc)
    log_event(
        log, "audit.completed", run_id=run_id, mode=settings.mode, effective_mode=effective, pools=report.summary.total,
        by_state=report.summary.by_state, by_action=report.summary.by_action, subscriptions=len(work),
        clusters=found.clusters, remediations_started=report.summary.remediations_started, failures=failures,
        stopped_early=stopped or None, pending=len(pending_after), report=report.locations.get("json"), note=report.note or None,
    )
    if publisher is not None:
        _publish(publisher, report)
    return report


def _verify(pending: list[PendingRemediation], pairs: list[tuple[PoolRecord, ReportRow]], rows: list[ReportRow]
            ) -> tuple[list[PendingRemediation], dict[tuple[str, str, str], str]]:
    """Check remediations earlier runs left running. Returns those still running and the clusters they keep busy."""
    by_id = {p.resource_id.lower(): p for p in pending}
    still: list[PendingRemediation] = []
    waiting: dict[tuple[str, str, str], str] = {}
    for record, row in pairs:
        p = by_id.pop(record.resource_id.lower(), None)
        if p is None:
            continue
        settled = (record.provisioning_state or "").lower() in ("succeeded", "failed", "canceled")
        if record.streaming_enabled and (record.provisioning_state or "").lower() == "succeeded":
            row.action, row.outcome = ACTION_VERIFIED, f"streaming enabled; remediation started {p.started_at} completed"
        elif not settled:
            row.action, row.outcome = ACTION_STARTED, f"remediation started {p.started_at} still {record.provisioning_state}"
            still.append(p)
            waiting[record.cluster_key] = record.pool
        else:
            row.outcome = f"remediation started {p.started_at} did not take effect (pool {record.provisioning_state})"
    unreadable = {r.subscription_id for r in rows if r.state == "error"}
    still += [p for p in by_id.values() if p.subscription_id in unreadable]  # cannot tell yet: keep it for the next run
    return still, waiting


def _publish(publisher: Any, report: AuditReport) -> None:
    events: list[tuple[str, str, dict[str, Any]]] = [
        (EVENT_TYPE_PREFIX + _EVENT_ACTIONS[r.action], r.resource_id,
         {"run_id": report.run_id, "state": r.state, "reason": r.reason, "action": r.action, "outcome": r.outcome,
          "subscription_id": r.subscription_id, "resource_group": r.resource_group, "cluster": r.cluster, "pool": r.pool})
        for r in report.rows if r.action in _EVENT_ACTIONS
    ]
    events.append((EVENT_TYPE_PREFIX + "Completed", f"/autopilot/audit/{report.run_id}",
                   {"run_id": report.run_id, "mode": report.effective_mode, "summary": report.summary.as_dict(),
                    "report": report.locations.get("json")}))
    try:
        publisher.publish_many(events)
    except Exception as exc:  # events are optional: a topic outage must not fail the audit
        log.warning("could not publish %d audit event(s): %s", len(events), exc)
