"""The audit run: plan, discover and classify per work item, verify earlier remediations, remediate (enforce), report, publish."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from shared.deadline import Deadline
from shared.logs import log_event

from .discovery import Clients, plan
from .items import ItemRunner, Target
from .model import (
    ACTION_ENABLED,
    ACTION_FAILED,
    ACTION_STARTED,
    ACTION_VERIFIED,
    AuditReport,
    PendingRemediation,
    ReportRow,
    summarize,
)
from .remediation import Remediator
from .report import ReportStore
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
    publisher = default_publisher(settings) if publisher is AUTO else publisher
    effective, notes = effective_mode(settings, started)
    if store is None:
        notes.append("report not stored: AzureWebJobsStorage is not set")

    deadline = Deadline.after(settings.run_budget_seconds)  # ARM work: discovery, remediation, their retries and polls
    clients = Clients(settings.azure, settings.concurrency)
    try:
        pending_before = load_pending(store, notes)
        with deadline.applied():
            work, rows = plan(settings, clients)
        targets: list[tuple[Target, ReportRow]] = []
        still_pending: list[PendingRemediation] = []
        clusters = 0
        runner = ItemRunner(settings, clients, effective, deadline, by_subscription(pending_before))
        for result in runner.run(work, progress):
            rows.extend(result.rows)  # plan order: work items are sorted, each item's rows too
            targets.extend(result.targets)
            still_pending.extend(result.still_pending)
            clusters += result.clusters
        failures, stopped = 0, ""
        new_pending: list[PendingRemediation] = []
        if effective == "enforce":
            outcome = Remediator(settings, clients, deadline).run(targets, progress)
            failures, stopped, new_pending = outcome.failures, outcome.stopped_early, outcome.pending
        report = AuditReport(
            run_id=run_id, started_at=_iso(started), finished_at=_iso(datetime.now(UTC)), mode=settings.mode,
            effective_mode=effective, note="; ".join(notes), rows=rows,
            summary=summarize(rows, failures=failures, stopped_early=stopped), pending=still_pending + new_pending,
        )
    finally:
        clients.close()
    finish(report, store, publisher, subscriptions=len(work), clusters=clusters)
    return report


def effective_mode(settings: AuditSettings, started: datetime) -> tuple[str, list[str]]:
    """The mode this run acts in (enforce outside its window runs as report) and the notes saying why."""
    if settings.enforce and settings.window and not settings.window.contains(started):
        return "report", [f"outside the allowed window {settings.window.text!r} (UTC): enforce ran as report"]
    return settings.mode, []


def default_publisher(settings: AuditSettings) -> Any:
    from shared.publish import OutcomePublisher

    return OutcomePublisher(settings.topic) if settings.publish_events and settings.topic else None


def load_pending(store: ReportStore | None, notes: list[str]) -> list[PendingRemediation]:
    """Remediations earlier runs left running; unreadable state must not stop the audit (busy pools still show Updating)."""
    if store is None:
        return []
    try:
        return store.load_pending()
    except Exception as exc:
        notes.append(f"earlier remediations not verified: cannot read {store.pending_blob}: {type(exc).__name__}")
        log.error("cannot read the pending remediations: %s", exc)
        return []


def by_subscription(pending: list[PendingRemediation]) -> dict[str, list[PendingRemediation]]:
    grouped: dict[str, list[PendingRemediation]] = {}
    for p in pending:
        grouped.setdefault(p.subscription_id, []).append(p)
    return grouped


def finish(report: AuditReport, store: ReportStore | None, publisher: Any, *, subscriptions: int, clusters: int,
           chunks: Iterable[list[ReportRow]] | None = None) -> None:
    """Store the report and the pending remediations, log the summary line, publish the outcome events."""
    if store is not None:
        try:
            store.save_pending(report.pending)
            report.locations = store.write_report(report, chunks)
        except Exception as exc:  # storage trouble must not hide the audit's result; it is logged and reported
            report.note = "; ".join(filter(None, [report.note, f"report not stored: {type(exc).__name__}: {exc}"]))
            log.error("could not store the audit report: %s", exc)
    s = report.summary
    log_event(
        log, "audit.completed", run_id=report.run_id, mode=report.mode, effective_mode=report.effective_mode, pools=s.total,
        by_state=s.by_state, by_action=s.by_action, subscriptions=subscriptions, clusters=clusters,
        remediations_started=s.remediations_started, failures=s.failures, stopped_early=s.stopped_early or None,
        pending=len(report.pending), report=report.locations.get("json"), note=report.note or None,
    )
    if publisher is not None:
        publish(publisher, report)


def publish(publisher: Any, report: AuditReport) -> None:
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
