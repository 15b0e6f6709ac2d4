"""Audit path trigger adapter: a timer (schedule from AUTOPILOT_AUDIT_SCHEDULE, default hourly) → shared.audit service."""

from __future__ import annotations

import logging
import os

import azure.functions as func

from shared.audit.settings import DEFAULT_SCHEDULE, AuditSettings

log = logging.getLogger("autopilot.audit.function")
SCHEDULE_SETTING = "AUTOPILOT_AUDIT_SCHEDULE"

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
    from shared.audit.service import run_audit

    if timer.past_due:
        log.warning("audit timer is past due; running now")
    report = run_audit(AuditSettings.from_env())
    summary = report.summary
    if summary.total and summary.by_state.get("error", 0) == summary.total:
        # Nothing could be read: fail the invocation so it shows (and alerts) as a failure, with the first reason.
        raise RuntimeError(f"audit run {report.run_id} could not read anything: {report.rows[0].reason}")
    if summary.failures:
        log.warning("audit run %s: %d remediation failure(s)", report.run_id, summary.failures)
