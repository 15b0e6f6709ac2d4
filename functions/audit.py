"""Audit path trigger adapters: a timer (AUTOPILOT_AUDIT_SCHEDULE) runs or plans the audit; a queue trigger takes its work items."""

from __future__ import annotations

import logging
import os

import azure.functions as func

from shared.audit.settings import DEFAULT_SCHEDULE, AuditSettings

log = logging.getLogger("autopilot.audit.function")
SCHEDULE_SETTING = "AUTOPILOT_AUDIT_SCHEDULE"
QUEUE_NAME = "autopilot-audit"  # shared.audit.fanout.QUEUE_NAME (not imported here: indexing stays light)

# Validate every audit setting when the worker indexes the app, so a bad value fails start-up with a message naming it
# instead of failing at the first tick an hour later.
AuditSettings.from_env()

# The schedule is a binding expression resolved by the host from the app setting; when the setting is absent the host
# could not resolve %…%, so the default is written in instead.
SCHEDULE = f"%{SCHEDULE_SETTING}%" if (os.environ.get(SCHEDULE_SETTING) or "").strip() else DEFAULT_SCHEDULE

bp = func.Blueprint()


@bp.function_name("audit_node_pools")
@bp.timer_trigger(arg_name="timer", schedule=SCHEDULE, run_on_startup=False, use_monitor=True)
def audit_node_pools(timer: func.TimerRequest) -> None:
    if timer.past_due:
        log.warning("audit timer is past due; running now")
    settings = AuditSettings.from_env()
    if settings.fanout:  # AUTOPILOT_AUDIT_FANOUT: plan here, the queue-triggered workers do the rest
        from shared.audit.fanout import start_run

        start_run(settings)
        return
    from shared.audit.service import run_audit

    report = run_audit(settings)
    summary = report.summary
    if summary.total and summary.by_state.get("error", 0) == summary.total:
        # Nothing could be read: fail the invocation so it shows (and alerts) as a failure, with the first reason.
        raise RuntimeError(f"audit run {report.run_id} could not read anything: {report.rows[0].reason}")
    if summary.failures:
        log.warning("audit run %s: %d remediation failure(s)", report.run_id, summary.failures)


@bp.function_name("audit_work_item")
@bp.queue_trigger(arg_name="msg", queue_name=QUEUE_NAME, connection="AzureWebJobsStorage")
def audit_work_item(msg: func.QueueMessage) -> None:
    """One message of a fanned-out audit run: a subscription to audit, or the run's final step."""
    from shared.audit.fanout import handle_message

    # A message the planner did not send raises (ValueError): after maxDequeueCount attempts the host moves it, unchanged,
    # to autopilot-audit-poison, where it can be read.
    body = msg.get_json()
    if not isinstance(body, dict):
        raise ValueError(f"audit queue message {msg.id} is not a JSON object; expected one sent by the audit planner")
    report = handle_message(AuditSettings.from_env(), body)
    if report is not None and report.summary.failures:
        log.warning("audit run %s: %d remediation failure(s)", report.run_id, report.summary.failures)
