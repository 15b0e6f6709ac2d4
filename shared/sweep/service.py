"""The sweep's domain service: plan a run (registries → work items), do one work item, and write the run's report when it ends."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from ..logs import log_event
from ..publish import OutcomePublisher
from ..push.outcomes import EVENT_TYPE_PREFIX
from ..push.service import PushService
from ..settings import Env
from . import scope
from .deadletters import DeadLetters
from .model import BadWorkItem, SweepReport, Tally, WorkItem
from .report import render_json, render_markdown, summary_line
from .settings import QUEUE, SweepSettings
from .store import SweepStore
from .worker import STOP_BUDGET, STOP_SLICE, ItemResult, RepoWalker, list_repositories

log = logging.getLogger("autopilot.sweep")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def message_key(body: str) -> str:
    """A stable key for a queue message's content (the poison copy has a new message id, the same content)."""
    return hashlib.sha256(body.encode()).hexdigest()[:32]


class SweepService:
    """Build once per instance (`SweepService.from_env()`); thread-safe. Storage (state, reports, queue) is optional only for
    report-mode CLI runs."""

    def __init__(self, settings: SweepSettings, *, push: PushService | None = None, publisher: OutcomePublisher | None = None,
                 blob_service: Any = None, queue: Any = None, use_storage: bool = True) -> None:
        self.settings = settings
        self.push = push or PushService(settings.push)
        self.publisher = publisher
        self._blob_service, self._queue, self.use_storage = blob_service, queue, use_storage
        self._store: SweepStore | None = None
        self._guard = threading.Lock()

    @classmethod
    def from_env(cls, env: Env | None = None, **kwargs: Any) -> SweepService:
        settings = SweepSettings.from_env(env)
        kwargs.setdefault("publisher", OutcomePublisher(settings.push.topic) if settings.push.topic else None)
        return cls(settings, **kwargs)

    # ------------------------------------------------------------------ collaborators
    @property
    def blob_service(self) -> Any:
        if self._blob_service is None:
            from ..storage import blob_service_client

            self._blob_service = blob_service_client()
        return self._blob_service

    @property
    def store(self) -> SweepStore | None:
        with self._guard:
            if self._store is None and self.use_storage:
                self._store = SweepStore(self.blob_service, self.settings.container)
            return self._store

    @property
    def queue(self) -> Any:
        with self._guard:
            if self._queue is None:
                from ..storage import queue_client

                self._queue = queue_client(QUEUE)
            return self._queue

    def _enqueue(self, run_id: str, items: list[WorkItem]) -> None:
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        if not items:
            return
        assert self.store is not None
        self.store.plan_items(run_id, len(items))  # counted before they exist, so the run cannot look finished early
        for item in items:
            try:
                self.queue.send_message(item.to_json())
            except ResourceNotFoundError:  # a new storage account: the queue is created on first use
                with contextlib.suppress(ResourceExistsError):
                    self.queue.create_queue()
                self.queue.send_message(item.to_json())

    # ------------------------------------------------------------------ planning
    def plan(self, names: Iterable[str] = (), mode: str | None = None) -> tuple[str, list[WorkItem], list[Tally]]:
        """(run id, first work items, report rows for registries not walked). Raises scope.UnknownRegistry."""
        mode = mode or self.settings.mode
        run_id = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        deadline = time.time() + self.settings.time_budget_seconds
        targets, rows = scope.resolve(self.settings, self.push.registries, names)
        items = [WorkItem(run_id, "registry", deadline, mode, registry_id=t.ref.resource_id, registry=t.name,
                          login_server=t.login_server) for t in targets]
        items.append(WorkItem(run_id, "deadletters", deadline, mode))
        if self.store is not None:
            self.store.write_run(run_id, {"run_id": run_id, "mode": mode, "started_at": _now(), "cap": self.settings.max_conversions,
                                          "rows": [r.as_dict() for r in rows]})
        return run_id, items, rows

    def running(self) -> str | None:
        """The previous run when it has not ended yet and its time budget (plus a margin for the last items) is not over."""
        store = self.store
        assert store is not None
        current, _ = store.read("state/current.json")
        if not current:
            return None
        progress = store.progress(str(current.get("run_id")))
        unfinished = int(progress.get("done", 0)) < int(progress.get("planned", 0))
        return str(current["run_id"]) if unfinished and time.time() < float(current.get("deadline", 0)) + 600 else None

    def start_run(self, names: Iterable[str] = (), mode: str | None = None) -> str | None:
        """The timer: plan and enqueue (one item per registry, plus the dead letters); the queue workers do the rest.
        Returns None (and plans nothing) while the previous run is still working: two runs would walk the same work."""
        if (previous := self.running()) is not None:
            log_event(log, "sweep.skipped", level=logging.WARNING, previous_run=previous,
                      detail="the previous sweep run is still working; this tick plans nothing")
            return None
        run_id, items, rows = self.plan(names, mode)
        assert self.store is not None
        self.store.write("state/current.json", {"run_id": run_id, "deadline": items[0].deadline})
        self._enqueue(run_id, items)
        log_event(log, "sweep.planned", run_id=run_id, registries=len(items) - 1, not_walked=len(rows), queue=QUEUE)
        return run_id

    # ------------------------------------------------------------------ one work item
    def _counter(self, run_id: str) -> Callable[[int], int]:
        store = self.store
        if store is not None:
            return lambda n: store.add_started(run_id, n) if n else store.conversions_started(run_id)
        total = [0]
        lock = threading.Lock()

        def local(n: int) -> int:
            with lock:
                total[0] += n
                return total[0]

        return local

    def work(self, item: WorkItem, counter: Callable[[int], int] | None = None) -> list[ItemResult]:
        if item.kind == "deadletters":
            dead = DeadLetters(self.blob_service, self.settings.deadletter_container, self.push).run(item.mode == "report")
            return [ItemResult(t) for t in dead.tallies.values()]
        acr = self.push.acr(item.login_server)
        if item.kind == "registry":
            return [self._plan_registry(item, acr)]
        result = RepoWalker(self.settings, self.push, item, counter or self._counter(item.run_id)).run(acr)
        if result.stopped == STOP_SLICE:  # continue in this run, from the cursors, on whichever instance takes it
            result.follow_ups.append(WorkItem(item.run_id, "repos", item.deadline, item.mode, item.registry_id, item.registry,
                                              item.login_server, tuple(result.left.items())))
            result.stopped = ""
        store = self.store
        if store is not None and item.mode == "enforce":
            def advance(state: dict[str, Any]) -> dict[str, Any]:
                pending = dict(state.get("pending") or {})
                for repo in result.finished_repos:
                    pending.pop(repo, None)
                pending.update(result.left)
                return {**state, "pending": pending}

            store.update_registry_state(item.registry_id, advance)
        return [result]

    def _plan_registry(self, item: WorkItem, acr: Any) -> ItemResult:
        """A registry's repositories in pages of work: what the last run left (resume), else the whole catalog afresh."""
        result = ItemResult(Tally(registry=item.registry, login_server=item.login_server))
        store = self.store if item.mode == "enforce" else None
        pending = (store.registry_state(item.registry_id).get("pending") or {}) if store is not None else {}
        if pending:
            repos = sorted(pending.items())
            log_event(log, "sweep.resume", run_id=item.run_id, registry=item.registry, repositories=len(repos))
        else:
            names = list_repositories(self.settings, acr, result.tally)
            if names is None:
                return result
            repos = [(n, None) for n in names]
            if store is not None:
                store.update_registry_state(item.registry_id, lambda s: {"generation": item.run_id, "started_at": _now(),
                                                                         "pending": dict.fromkeys(names)})
        size = self.settings.repositories_per_item
        result.follow_ups = [WorkItem(item.run_id, "repos", item.deadline, item.mode, item.registry_id, item.registry,
                                      item.login_server, tuple(repos[i:i + size])) for i in range(0, len(repos), size)]
        return result

    # ------------------------------------------------------------------ the queue worker's entry points
    def process_message(self, body: str, item_id: str) -> SweepReport | None:
        """One queue message. Raises on failures worth a retry (the queue retries, then poisons); returns the report when
        this item was the run's last."""
        try:
            item = WorkItem.from_json(body)
        except BadWorkItem as exc:
            log_event(log, "sweep.bad_item", level=logging.ERROR, message_id=item_id, detail=str(exc), body=body[:200])
            return None  # acknowledged: retrying cannot make it readable
        store = self.store
        assert store is not None, "the queue worker needs AzureWebJobsStorage"
        try:
            results = self.work(item)
            follow_ups = [f for r in results for f in r.follow_ups]
            self._enqueue(item.run_id, follow_ups)
        except Exception as exc:
            store.write_error(message_key(body), f"{type(exc).__name__}: {str(exc)[:1500]}")
            raise
        stopped = next((r.stopped for r in results if r.stopped), "")
        store.write_result(item.run_id, item_id, [r.tally for r in results], {"kind": item.kind, "stopped": stopped})
        return self.finish(item.run_id) if store.item_done(item.run_id) else None

    def process_poison(self, body: str, item_id: str, attempts: int | None = None) -> SweepReport | None:
        """A work item the queue gave up on: one report line with its last error; its repositories stay for the next run."""
        try:
            item = WorkItem.from_json(body)
        except BadWorkItem as exc:
            log_event(log, "sweep.bad_item", level=logging.ERROR, message_id=item_id, detail=str(exc), body=body[:200])
            return None
        store = self.store
        assert store is not None
        error = store.error(message_key(body)) or "no error recorded (the worker stopped before it could write one)"
        tally = Tally(registry=item.registry or "(dead letters)", login_server=item.login_server)
        what = f"work item {item.kind}" + (f" ({len(item.repos)} repositories from {item.repos[0][0]})" if item.repos else "")
        tries = f"{attempts} time(s)" if attempts else "as often as the queue allows (host.json maxDequeueCount)"
        tally.fail(what, "WORK_ITEM_POISONED", f"failed {tries}, moved to {QUEUE}-poison; last error: {error}; its work is "
                   "picked up again next run")
        tally.repositories_left = len(item.repos)
        log_event(log, "sweep.poisoned", level=logging.ERROR, run_id=item.run_id, kind=item.kind, registry=item.registry,
                  error=error[:300])
        store.write_result(item.run_id, f"poison-{item_id}", [tally], {"kind": item.kind, "poisoned": True})
        return self.finish(item.run_id) if store.item_done(item.run_id, poisoned=True) else None

    # ------------------------------------------------------------------ the report
    def assemble(self, run: dict[str, Any], results: list[dict[str, Any]], poisoned: int = 0) -> SweepReport:
        tallies: dict[str, Tally] = {}
        for row in run.get("rows") or []:
            t = Tally.from_dict(row)
            tallies[t.registry] = t
        stopped = set()
        for result in results:
            stopped.add(result.get("stopped") or "")
            for raw in result.get("tallies") or []:
                t = Tally.from_dict(raw)
                tallies.setdefault(t.registry, Tally(registry=t.registry)).merge(t)
        reasons = {"cap": f"cap of {run.get('cap', self.settings.max_conversions)} conversions reached",
                   STOP_BUDGET: f"time budget of {self.settings.time_budget_seconds:g} s spent"}
        return SweepReport(run_id=str(run.get("run_id")), mode=str(run.get("mode") or self.settings.mode),
                           started_at=str(run.get("started_at") or _now()), finished_at=_now(),
                           registries=sorted(tallies.values(), key=lambda t: t.registry), work_items=len(results),
                           poisoned_items=poisoned, cap=int(run.get("cap") or self.settings.max_conversions),
                           stopped="; ".join(reasons[s] for s in sorted(stopped) if s in reasons))

    def finish(self, run_id: str) -> SweepReport:
        store = self.store
        assert store is not None
        report = self.assemble(store.run(run_id), store.results(run_id), int(store.progress(run_id).get("poisoned", 0)))
        self.publish_report(report)
        return report

    def publish_report(self, report: SweepReport) -> dict[str, str]:
        """Store JSON + Markdown (when storage is configured), log the one summary line, publish the outcome events."""
        names: dict[str, str] = {}
        if self.store is not None:
            names = self.store.write_report(report.started_at, report.run_id,
                                            {"json": render_json(report), "markdown": render_markdown(report)})
        totals = report.as_dict()["totals"]
        log_event(log, "sweep.summary", run_id=report.run_id, mode=report.mode, registries=len(report.registries),
                  **totals, poisoned_items=report.poisoned_items, stopped=report.stopped or None,
                  report=names.get("json"), summary=summary_line(report))
        if self.publisher is not None:
            events = [(EVENT_TYPE_PREFIX + "SweepRegistry", f"sweep/{report.run_id}/{t.registry}",
                       {"run_id": report.run_id, **t.as_dict()}) for t in report.registries]
            events.append((EVENT_TYPE_PREFIX + "SweepCompleted", f"sweep/{report.run_id}",
                           {"run_id": report.run_id, "mode": report.mode, **totals, "report": names.get("json")}))
            try:
                self.publisher.publish_many(events)
            except Exception as exc:  # a lost notification must not undo the run
                log_event(log, "sweep.publish_failed", level=logging.WARNING, error=type(exc).__name__)
        return names

    # ------------------------------------------------------------------ the operator CLI: the same work, in this process
    def run_inline(self, names: Iterable[str] = (), mode: str | None = None) -> SweepReport:
        run_id, items, rows = self.plan(names, mode)
        counter = self._counter(run_id)
        todo = deque(items)
        results: list[dict[str, Any]] = []
        while todo:
            item = todo.popleft()
            for r in self.work(item, counter):
                todo.extend(r.follow_ups)
                results.append({"tallies": [r.tally.as_dict()], "stopped": r.stopped})
        run = {"run_id": run_id, "mode": mode or self.settings.mode, "cap": self.settings.max_conversions,
               "rows": [r.as_dict() for r in rows]}
        if self.store is not None:
            run["started_at"] = self.store.run(run_id).get("started_at")
        report = self.assemble(run, results)
        self.publish_report(report)
        return report
