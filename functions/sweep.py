"""Sweep trigger adapters: a timer that plans and enqueues, a queue worker per work item, a poison-queue handler → shared.sweep."""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

import azure.functions as func

from shared.sweep.settings import DEFAULT_SCHEDULE, POISON_QUEUE, QUEUE, SweepSettings

if TYPE_CHECKING:
    from shared.sweep.service import SweepService

log = logging.getLogger("autopilot.sweep.function")
SCHEDULE_SETTING = "AUTOPILOT_SWEEP_SCHEDULE"

# Validate every sweep setting when the worker indexes the app: a bad value fails start-up with a message naming it.
SweepSettings.from_env()
SCHEDULE = f"%{SCHEDULE_SETTING}%" if (os.environ.get(SCHEDULE_SETTING) or "").strip() else DEFAULT_SCHEDULE

bp = func.Blueprint()
_service: SweepService | None = None
_lock = threading.Lock()


def service() -> SweepService:
    """One service per instance, sharing the push path's caches (tokens, registries, clients) across work items."""
    global _service
    with _lock:
        if _service is None:
            from shared.sweep.service import SweepService

            _service = SweepService.from_env()
        return _service


@bp.function_name("sweep_plan")
@bp.timer_trigger(arg_name="timer", schedule=SCHEDULE, run_on_startup=False, use_monitor=True)
def sweep_plan(timer: func.TimerRequest) -> None:
    """Plans the run (one work item per registry, plus the dead letters) and enqueues it; the queue workers do the work."""
    if timer.past_due:
        log.warning("sweep timer is past due; planning now")
    service().start_run()


@bp.function_name("sweep_work")
@bp.queue_trigger(arg_name="msg", queue_name=QUEUE, connection="AzureWebJobsStorage")
def sweep_work(msg: func.QueueMessage) -> None:
    """One work item. An exception fails the invocation: the queue retries it after its visibility timeout, then poisons it."""
    service().process_message(msg.get_body().decode("utf-8"), msg.id or "")


@bp.function_name("sweep_poison")
@bp.queue_trigger(arg_name="msg", queue_name=POISON_QUEUE, connection="AzureWebJobsStorage")
def sweep_poison(msg: func.QueueMessage) -> None:
    """A work item the queue gave up on: a report line with its last error, and the run's report if it was the last item."""
    service().process_poison(msg.get_body().decode("utf-8"), msg.id or "")
