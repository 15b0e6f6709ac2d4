"""The audit fanned out over the Storage queue: plan → one message per batch of work items → workers → one run record → final step.

- `start_run` (the timer): plans the run, writes `runs/<run>/plan.json`, puts one message per batch of consecutive
  subscriptions (`AUTOPILOT_AUDIT_FANOUT_BATCH`) on the queue `autopilot-audit`, and one `finalize` message that comes
  back every few seconds until every message is recorded (the worker whose message completes the count on
  `runs/<run>/done`, an append blob, sends one at once).
- `handle_message` (the queue-triggered function, on any number of instances): an item message discovers and classifies
  its subscriptions and writes `runs/<run>/items/<index>.json` (compact rows, remediation targets); writing it again on a
  redelivery changes nothing. A finalize message, once all items are in (or the run budget is spent), takes the final
  step's lease (`finalizer/shard-0000`, renewed while held, lapsing if its holder dies), remediates in enforce mode — so
  the cap and one pool per cluster hold across workers — streams the report from the records in plan order and marks
  the run `runs/<run>/reported`; a finalize message for a reported run does nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from shared.deadline import Deadline
from shared.locks import BlobLeaseLock, LockBusy

from .discovery import Clients, error_row, plan
from .items import ItemResult, ItemRunner, Target
from .model import AuditReport, PendingRemediation, ReportRow, Summary, WorkItem
from .remediation import Remediator
from .report import ReportStore
from .service import (
    AUTO,
    _iso,
    by_subscription,
    default_publisher,
    default_store,
    effective_mode,
    finish,
    load_pending,
    publish,
)
from .settings import AuditSettings

log = logging.getLogger("autopilot.audit.fanout")
QUEUE_NAME = "autopilot-audit"  # the agreed work queue (poison messages go to autopilot-audit-poison)
FINALIZE_POLL_SECONDS = 5  # how soon an unfinished run's finalize message comes back
# A message may hold 64 KiB and the host base64-encodes it (host.json messageEncoding): 48 KiB of JSON. A batch whose
# pending remediations would not fit sends them in a blob instead.
MESSAGE_LIMIT = 48 * 1024
AUTO_BATCH_MESSAGES = 100  # auto batch size: at least this many messages per run (every instance's batch stays full) ...
AUTO_BATCH_MAX = 10  # ... and at most this many subscriptions per message (one invocation's deadline covers them)
_worker_clients: dict[tuple[Any, int], tuple[Clients, ThreadPoolExecutor]] = {}
_clients_lock = threading.Lock()
_finalizer_locks: dict[tuple[int, str], BlobLeaseLock] = {}
FINALIZER_LEASE_SECONDS = 60  # a finalizing instance that dies blocks the run's report for at most this long
FINALIZE_BUSY_SECONDS = 15  # how soon a finalize message that found the final step held comes back
T = TypeVar("T")
R = TypeVar("R")


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def run_prefix(run_id: str) -> str:
    return f"runs/{run_id}/"


def item_blob(run_id: str, index: int) -> str:
    return f"{run_prefix(run_id)}items/{index:06d}.json"


def start_run(settings: AuditSettings, *, store: ReportStore | None = None, queue: Any = None,
              now: datetime | None = None) -> dict[str, Any]:
    """Plan the run, write its record and enqueue its work. Returns the plan record (run id, items, mode)."""
    from shared.storage import queue_client

    store = store or default_store(settings)
    if store is None:
        raise RuntimeError("the fanned-out audit keeps its run record in AzureWebJobsStorage, which is not set")
    queue = queue or queue_client(QUEUE_NAME)
    with contextlib.suppress(ResourceExistsError):
        queue.create_queue()
    started = now or datetime.now(UTC)
    effective, notes = effective_mode(settings, started)
    pending = by_subscription(load_pending(store, notes))
    clients = Clients(settings.azure, settings.concurrency)
    try:
        with Deadline.after(settings.run_budget_seconds).applied():
            work, errors = plan(settings, clients)
    finally:
        clients.close()
    run_id = uuid.uuid4().hex[:12]
    batch = batch_size(settings.fanout_batch, len(work))
    record: dict[str, Any] = {"run_id": run_id, "started_at": _iso(started), "mode": settings.mode, "effective_mode": effective,
              "notes": notes, "deadline": time.time() + settings.run_budget_seconds, "count": -(-len(work) // batch),
              "batch": batch, "items": [w.as_dict() for w in work], "errors": [r.as_dict() for r in errors]}
    container = store.blobs()
    container.upload_blob(f"{run_prefix(run_id)}plan.json", _compact(record), overwrite=True)
    container.get_blob_client(f"{run_prefix(run_id)}done").create_append_blob()
    for index, message in enumerate(work_messages(run_id, work, record["batch"], effective, pending)):
        text = json.dumps(message)
        if len(text) > MESSAGE_LIMIT:  # many earlier remediations still running: they travel in a blob
            name = f"{run_prefix(run_id)}pending/{index:06d}.json"
            container.upload_blob(name, _compact(message.pop("pending")), overwrite=True)
            text = json.dumps({**message, "pending_blob": name})
        queue.send_message(text)
    queue.send_message(json.dumps({"kind": "finalize", "run": record["run_id"]}), visibility_timeout=1)
    log.info("audit run %s planned: %d subscription(s) in %d message(s) on queue %s", run_id, len(work), record["count"],
             QUEUE_NAME)
    return record


def batch_size(configured: int, subscriptions: int) -> int:
    """Subscriptions per work message: the setting, or (0, auto) enough messages to keep every instance busy, at most
    AUTO_BATCH_MAX each. Fewer messages are fewer storage operations (receive, delete, record, count) per subscription."""
    if configured > 0:
        return configured
    return max(1, min(AUTO_BATCH_MAX, subscriptions // AUTO_BATCH_MESSAGES))


def work_messages(run_id: str, work: list[WorkItem], batch: int, mode: str,
                  pending: dict[str, list[PendingRemediation]]) -> Iterator[dict[str, Any]]:
    """One message per batch of consecutive work items (plan order), with the earlier remediations to verify in them."""
    count = -(-len(work) // batch)
    for index in range(count):
        items = work[index * batch:(index + 1) * batch]
        yield {"kind": "item", "run": run_id, "index": index, "count": count, "items": [w.as_dict() for w in items],
               "mode": mode, "pending": [p.as_dict() for w in items for p in pending.get(w.subscription_id, [])]}


def batch_of(record: dict[str, Any], index: int) -> list[dict[str, Any]]:
    """The plan's work items (as dicts) that message `index` carries."""
    batch = int(record.get("batch") or 1)
    return list(record["items"][index * batch:(index + 1) * batch])


def handle_message(settings: AuditSettings, message: dict[str, Any], *, store: ReportStore | None = None,
                   queue: Any = None, publisher: Any = AUTO) -> AuditReport | None:
    """One queue message: a work item (→ its record) or the finalize step (→ the report, when the run is complete)."""
    store = store or default_store(settings)
    if store is None:
        raise RuntimeError("the fanned-out audit keeps its run record in AzureWebJobsStorage, which is not set")
    kind = message.get("kind")
    if kind == "item":
        result = process_item(settings, store, message)
        if _count_done(store, message, result) == int(message["count"]):  # the last item in: finalize now rather than at the next poll
            _requeue(queue, str(message["run"]), delay=0)
        return None
    if kind == "finalize":
        return finalize(settings, store, str(message["run"]), queue=queue, publisher=publisher)
    raise ValueError(f"not an audit work message (kind {kind!r}); expected 'item' or 'finalize'")


def worker_clients(settings: AuditSettings) -> tuple[Clients, ThreadPoolExecutor]:
    """The worker process's clients and request threads, shared by all its concurrent invocations (host.json batchSize):
    one connection pool (no TLS handshake per message) and AUTOPILOT_AUDIT_CONCURRENCY requests in flight per instance,
    however many invocations run — each invocation's pages queue on the same threads."""
    key = (settings.azure, settings.concurrency)
    with _clients_lock:
        shared = _worker_clients.get(key)
        if shared is None:
            shared = _worker_clients[key] = (
                Clients(settings.azure, settings.concurrency),
                ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="audit-worker"))
        return shared


def process_item(settings: AuditSettings, store: ReportStore, message: dict[str, Any]) -> ItemResult:
    """Audit a message's work items (in plan order) and write their record: rows, remediation targets, pending ones."""
    raw_items = message.get("items") or [message["item"]]  # "item": a message queued by a planner before batches
    items = [WorkItem(str(i["subscription_id"]), str(i.get("display_name") or "")) for i in raw_items]
    pending: dict[str, list[PendingRemediation]] = {}
    for p in message_pending(store, message):
        pending.setdefault(p.subscription_id, []).append(p)
    deadline = Deadline.after(settings.run_budget_seconds)  # this invocation's: its subscriptions' requests and retries
    clients, threads = worker_clients(settings)
    runner = ItemRunner(settings, clients, str(message["mode"]), deadline, pending, executor=threads)
    result = ItemResult(item=items[0])
    for part in runner.run(items):
        result.rows += part.rows
        result.targets += part.targets
        result.still_pending += part.still_pending
        result.clusters += part.clusters
    body = {"rows": [r.as_dict() for r in result.rows], "targets": [t.as_dict() for t, _ in result.targets],
            "still_pending": [p.as_dict() for p in result.still_pending], "clusters": result.clusters}
    store.blobs().upload_blob(item_blob(str(message["run"]), int(message["index"])), _compact(body), overwrite=True)
    return result


def message_pending(store: ReportStore, message: dict[str, Any]) -> list[PendingRemediation]:
    """The earlier remediations a message's subscriptions have running: in the message, or in the blob it names."""
    raw = message.get("pending") or []
    name = message.get("pending_blob")
    if name:
        if not str(name).startswith(run_prefix(str(message["run"]))):
            raise ValueError(f"audit message names pending blob {name!r} outside its run's record; not read")
        raw = json.loads(store.blobs().download_blob(str(name)).readall())
    return [PendingRemediation(**p) for p in raw]


def ordered_map(fn: Callable[[T], R], items: list[T], workers: int) -> Iterator[R]:
    """`fn` over `items` on `workers` threads, results in order, with at most 2 × workers results held at a time."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="audit-records") as pool:
        window: deque[Future[R]] = deque()
        upcoming = iter(items)
        for item in upcoming:
            window.append(pool.submit(fn, item))
            if len(window) >= 2 * workers:
                break
        while window:
            result = window.popleft().result()
            following = next(upcoming, None)
            if following is not None:
                window.append(pool.submit(fn, following))
            yield result


def finalize(settings: AuditSettings, store: ReportStore, run_id: str, *, queue: Any = None,
             publisher: Any = AUTO) -> AuditReport | None:
    """The final step: once every item is recorded (or the run budget is spent), one instance turns the record into
    the remediation plan and the report. Returns None when it is not time yet (a new finalize message is queued) or another
    instance has the final step, and when the run is already reported (one request: the run record is not read)."""
    container = store.blobs()
    prefix = run_prefix(run_id)
    if _reported(container, prefix):
        return None
    record = json.loads(container.download_blob(f"{prefix}plan.json").readall())
    present = {b.name for b in container.list_blobs(name_starts_with=f"{prefix}items/")}
    if len(present) < record["count"] and time.time() < record["deadline"]:
        _requeue(queue, run_id)
        return None
    try:
        with finalizer_lock(store).hold(f"finalizer/{store.container}") as held:
            if _reported(container, prefix):  # another instance finished it while this one waited for its message
                return None
            held.ensure()
            report = _finalize(settings, store, record, present, publisher)
            container.upload_blob(f"{prefix}reported", b"", overwrite=True)
            return report
    except LockBusy:
        # Another instance is finalizing (this run or another): look again later. If that instance dies, its lease lapses
        # within FINALIZER_LEASE_SECONDS and this run's next finalize message takes over.
        log.info("audit run %s: another instance holds the final step; looking again in %d s", run_id, FINALIZE_BUSY_SECONDS)
        _requeue(queue, run_id, delay=FINALIZE_BUSY_SECONDS)
        return None


def finalizer_lock(store: ReportStore) -> BlobLeaseLock:
    """The final step's lock: one lease blob per report container, renewed while held, lapsing when its holder dies."""
    key = (id(store.service), store.container)
    with _clients_lock:
        lock = _finalizer_locks.get(key)
        if lock is None:
            lock = _finalizer_locks[key] = BlobLeaseLock(store.service, container=store.container,
                                                         lease_seconds=FINALIZER_LEASE_SECONDS, wait_seconds=0, shards=1)
        return lock


def _reported(container: Any, prefix: str) -> bool:
    try:
        container.get_blob_client(f"{prefix}reported").get_blob_properties()
    except ResourceNotFoundError:
        return False
    log.info("audit run %s is already reported", prefix.split("/")[1])
    return True


def _count_done(store: ReportStore, message: dict[str, Any], result: ItemResult | None = None) -> int:
    """Count a recorded item on the run's append blob; each append answers with the number of appends so far (atomic).

    The line also says what the item's record holds for the final step's first pass (clusters, targets, earlier
    remediations still running), so that pass reads only the records that have targets or pending remediations."""
    blob = store.blobs().get_blob_client(f"{run_prefix(str(message['run']))}done")
    line: dict[str, int] = {"index": int(message["index"])}
    if result is not None:
        line.update(clusters=result.clusters, targets=len(result.targets), pending=len(result.still_pending))
    answer = blob.append_block(_compact(line) + b"\n")
    return int(answer.get("blob_committed_block_count") or 0)


def _done_summaries(container: Any, run_id: str) -> dict[int, int]:
    try:
        text = container.download_blob(f"{run_prefix(run_id)}done").readall().decode()
    except ResourceNotFoundError:
        return {}
    return plain_items(text)


def plain_items(done: str) -> dict[int, int]:
    """Item index → its clusters, from the run's `done` lines, for the items whose every recording (a redelivery appends
    again) had neither targets nor pending remediations: the first pass need not read those records. Anything else
    (an item with targets, recordings that disagree, a line that cannot be read) is read."""
    seen: dict[int, set[tuple[int, int, int]]] = {}
    for raw in done.splitlines():
        try:
            line = json.loads(raw)
            seen.setdefault(int(line["index"]), set()).add((int(line["clusters"]), int(line["targets"]), int(line["pending"])))
        except (ValueError, KeyError, TypeError):
            continue
    return {index: next(iter(kinds))[0] for index, kinds in seen.items()
            if len(kinds) == 1 and next(iter(kinds))[1:] == (0, 0)}


def _requeue(queue: Any, run_id: str, delay: int = FINALIZE_POLL_SECONDS) -> None:
    from shared.storage import queue_client

    (queue or queue_client(QUEUE_NAME)).send_message(json.dumps({"kind": "finalize", "run": run_id}), visibility_timeout=delay)


def _finalize(settings: AuditSettings, store: ReportStore, record: dict[str, Any], present: set[str],
              publisher: Any) -> AuditReport:
    container = store.blobs()
    run_id = record["run_id"]
    indices = list(range(record["count"]))

    def read(index: int) -> dict[str, Any] | None:
        name = item_blob(run_id, index)
        return json.loads(container.download_blob(name).readall()) if name in present else None

    # Pass 1: the remediation plan (targets) and what earlier remediations still run; rows are not held. Records that
    # have neither (every record of a report run without earlier remediations) are not read here.
    targets: list[tuple[Target, ReportRow]] = []
    still: list[PendingRemediation] = []
    plain = {i: n for i, n in _done_summaries(container, run_id).items() if item_blob(run_id, i) in present}
    clusters = sum(plain.values())
    for body in ordered_map(read, [i for i in indices if i not in plain], settings.concurrency):
        if body is None:
            continue
        wanted = {Target.from_dict(t).resource_id.lower(): Target.from_dict(t) for t in body["targets"]}
        for raw in body["rows"]:
            target = wanted.get(str(raw.get("resource_id") or "").lower())
            if target is not None:
                targets.append((target, ReportRow.from_dict(raw)))
        still += [PendingRemediation(**p) for p in body["still_pending"]]
        clusters += int(body["clusters"])
    failures, stopped, new_pending = 0, "", []
    if record["effective_mode"] == "enforce":
        clients = Clients(settings.azure, settings.concurrency)
        try:
            outcome = Remediator(settings, clients, Deadline.after(settings.run_budget_seconds)).run(targets, None)
        finally:
            clients.close()
        failures, stopped, new_pending = outcome.failures, outcome.stopped_early, outcome.pending
    changed = {row.resource_id.lower(): row for _, row in targets}
    events: list[ReportRow] = []

    def chunks() -> Iterator[list[ReportRow]]:
        yield [ReportRow.from_dict(r) for r in record["errors"]]
        for index, body in enumerate(ordered_map(read, indices, settings.concurrency)):
            if body is None:
                yield [error_row(item["subscription_id"], "", "", "work item not processed within the run budget "
                                 "(AUTOPILOT_AUDIT_RUN_BUDGET_SECONDS); see the autopilot-audit-poison queue", item["display_name"])
                       for item in batch_of(record, index)]
                continue
            rows = [changed.get(str(r.get("resource_id") or "").lower()) or ReportRow.from_dict(r) for r in body["rows"]]
            events.extend(r for r in rows if r.action in ("enabled", "remediation-started", "failed", "verified"))
            yield rows

    report = AuditReport(
        run_id=run_id, started_at=record["started_at"], finished_at="", mode=record["mode"],
        effective_mode=record["effective_mode"], note="; ".join(record["notes"]), rows=[],
        summary=Summary(0, {}, {}, {}, failures=failures, stopped_early=stopped), pending=still + new_pending,
    )
    report.finished_at = _iso(datetime.now(UTC))
    finish(report, store, None, subscriptions=record["count"], clusters=clusters, chunks=chunks())
    report.rows = events  # what the outcome events are about (the full rows are in the stored report)
    if publisher is AUTO:
        publisher = default_publisher(settings)
    if publisher is not None:
        publish(publisher, report)
    return report
