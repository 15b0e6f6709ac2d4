"""One work item audited: its clusters and pools read, each cluster classified as its pools arrive, compact rows out."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from shared.azure_clients import describe_error
from shared.deadline import Deadline

from .discovery import SDK_ERRORS, Clients, ClusterInfo, Progress, error_row, list_clusters, list_pools
from .model import (
    ACTION_NONE,
    ACTION_SKIPPED,
    ACTION_STARTED,
    ACTION_VERIFIED,
    ACTION_WOULD_ENABLE,
    PendingRemediation,
    PoolRecord,
    PoolState,
    ReportRow,
    WorkItem,
)
from .rules import classify
from .settings import AuditSettings


@dataclass(frozen=True)
class Target:
    """A remediable pool in the remediation plan: where it is, nothing more (the remediation re-reads the rest)."""

    subscription_id: str
    subscription_name: str
    resource_group: str
    cluster: str
    pool: str

    @property
    def cluster_key(self) -> tuple[str, str, str]:
        return (self.subscription_id, self.resource_group.lower(), self.cluster.lower())

    @property
    def resource_id(self) -> str:
        return (f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.ContainerService/managedClusters/{self.cluster}/agentPools/{self.pool}")

    def as_dict(self) -> dict[str, str]:
        return {"subscription_id": self.subscription_id, "subscription_name": self.subscription_name,
                "resource_group": self.resource_group, "cluster": self.cluster, "pool": self.pool}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Target:
        return cls(**{k: str(raw[k]) for k in ("subscription_id", "subscription_name", "resource_group", "cluster", "pool")})


@dataclass
class ItemResult:
    """A work item's outcome: rows in report order, the pools enforce may act on, and earlier remediations still running."""

    item: WorkItem
    rows: list[ReportRow] = field(default_factory=list)
    targets: list[tuple[Target, ReportRow]] = field(default_factory=list)
    still_pending: list[PendingRemediation] = field(default_factory=list)
    clusters: int = 0


def row_for(record: PoolRecord, state: PoolState, reason: str) -> ReportRow:
    return ReportRow(
        subscription_id=record.subscription_id, subscription_name=record.subscription_name,
        resource_group=record.resource_group, cluster=record.cluster, pool=record.pool, os_type=record.os_type,
        os_sku=record.os_sku, kubernetes_version=record.kubernetes_version, state=state, reason=reason,
        resource_id=record.resource_id,
    )


class ItemAuditor:
    """Classifies one work item's clusters as they are read (thread-safe), keeping compact rows only."""

    def __init__(self, settings: AuditSettings, item: WorkItem, effective_mode: str, pending: list[PendingRemediation]) -> None:
        self.settings = settings
        self.effective_mode = effective_mode
        self.result = ItemResult(item=item)
        self._pending = {p.resource_id.lower(): p for p in pending}
        self._lock = threading.Lock()
        self._unreadable = False

    def error(self, row: ReportRow) -> None:
        with self._lock:
            self.result.rows.append(row)
            self._unreadable = True

    def cluster(self, pools: list[PoolRecord]) -> None:
        """Classify a cluster's pools; verify earlier remediations; in enforce, hold a cluster that is mid-operation."""
        rows: list[ReportRow] = []
        candidates: list[tuple[Target, ReportRow]] = []
        waiting = ""
        busy = next((f"{p.pool} in this cluster is {p.provisioning_state}" for p in pools
                     if (p.provisioning_state or "").lower() != "succeeded"), "")
        for record in pools:
            decision = classify(record, self.settings)
            row = row_for(record, decision.state, decision.reason)
            if decision.state == "remediable" and self.effective_mode == "report":
                row.action = ACTION_WOULD_ENABLE
            with self._lock:
                earlier = self._pending.pop(record.resource_id.lower(), None)
            if earlier is not None and self._verify(earlier, record, row):
                waiting = f"{record.pool} in this cluster is still updating"
            rows.append(row)
            if self.effective_mode == "enforce" and row.state == "remediable" and row.action == ACTION_NONE:
                candidates.append((Target(record.subscription_id, record.subscription_name, record.resource_group,
                                          record.cluster, record.pool), row))
        # AKS runs one agent pool operation per cluster ("Another agentpool operation (… - Updating) is in progress"): a
        # cluster with any pool mid-operation — ours from an earlier run or anyone's — waits for the next run.
        hold = waiting or busy
        targets = []
        for target, row in candidates:
            if hold:
                row.action, row.outcome = ACTION_SKIPPED, f"waiting: pool {hold} (one pool per cluster at a time); next run"
            else:
                targets.append((target, row))
        with self._lock:
            self.result.rows.extend(rows)
            self.result.targets.extend(targets)

    def _verify(self, p: PendingRemediation, record: PoolRecord, row: ReportRow) -> bool:
        """A remediation an earlier run left running. Returns whether it still runs (its cluster then waits)."""
        state = (record.provisioning_state or "").lower()
        if record.streaming_enabled and state == "succeeded":
            row.action, row.outcome = ACTION_VERIFIED, f"streaming enabled; remediation started {p.started_at} completed"
        elif state not in ("succeeded", "failed", "canceled"):
            row.action, row.outcome = ACTION_STARTED, f"remediation started {p.started_at} still {record.provisioning_state}"
            with self._lock:
                self.result.still_pending.append(p)
            return True
        else:
            row.outcome = f"remediation started {p.started_at} did not take effect (pool {record.provisioning_state})"
        return False

    def finish(self) -> ItemResult:
        """Rows in report order; earlier remediations of a scope that could not be read are kept for the next run."""
        result = self.result
        result.rows.sort(key=lambda r: (r.resource_group.lower(), r.cluster.lower(), r.pool.lower()))
        if self._unreadable:
            result.still_pending.extend(self._pending.values())
        self._pending = {}
        return result


class ItemRunner:
    """Audits work items concurrently (at most `concurrency` ARM requests at a time) and yields their results in plan order.

    A bounded window of items is in flight: a subscription's clusters are listed, then each cluster's pools, every request a
    task on the same pool of workers, so no worker waits on another; results come back in plan order so a report can be
    written as they arrive, and what is held at any moment is the window, not the estate.
    """

    def __init__(self, settings: AuditSettings, clients: Clients, effective_mode: str, deadline: Deadline,
                 pending: dict[str, list[PendingRemediation]] | None = None, executor: ThreadPoolExecutor | None = None) -> None:
        self.settings = settings
        self.clients = clients
        self.effective_mode = effective_mode
        self.deadline = deadline  # every request, retry wait and poll of the discovery ends inside it
        self.pending = pending or {}  # earlier remediations to verify, by subscription id
        # Whose threads send the requests: the runner's own (`concurrency` of them), or an instance-wide pool shared with
        # other runners (a fan-out worker's concurrent invocations). Its tasks never wait on each other, so sharing is safe.
        self.executor = executor

    def run(self, work: list[WorkItem], progress: Progress | None = None) -> Iterator[ItemResult]:
        if self.executor is not None:
            yield from self._run(self.executor, work, progress)
            return
        with ThreadPoolExecutor(max_workers=self.settings.concurrency, thread_name_prefix="audit-discovery") as pool:
            yield from self._run(pool, work, progress)

    def _run(self, pool: ThreadPoolExecutor, work: list[WorkItem], progress: Progress | None) -> Iterator[ItemResult]:
        window_size = max(4, 4 * self.settings.concurrency)
        window: deque[Future[ItemResult]] = deque()
        upcoming = iter(work)
        for item in upcoming:
            window.append(self._start(pool, item))
            if len(window) >= window_size:
                break
        done = 0
        while window:
            result = window.popleft().result()
            following = next(upcoming, None)
            if following is not None:
                window.append(self._start(pool, following))
            done += 1
            if progress:
                progress("subscriptions", done, len(work))
            yield result

    def _start(self, pool: ThreadPoolExecutor, item: WorkItem) -> Future[ItemResult]:
        done: Future[ItemResult] = Future()
        auditor = ItemAuditor(self.settings, item, self.effective_mode, self.pending.get(item.subscription_id, []))
        by_profiles = self.settings.pool_source == "cluster"

        def clusters() -> None:
            try:
                found = list(list_clusters(self.clients, item, by_profiles))
            except SDK_ERRORS as exc:
                auditor.error(error_row(item.subscription_id, "", "", f"cannot list clusters: {describe_error(exc)}",
                                        item.display_name))
                found = []
            auditor.result.clusters = len(found)
            if by_profiles or not found:
                for cluster in found:
                    auditor.cluster(list_pools(self.clients, cluster))
                done.set_result(auditor.finish())
                return
            remaining = [len(found)]
            lock = threading.Lock()
            for cluster in found:
                pool.submit(guarded, pools, cluster, remaining, lock)

        def pools(cluster: ClusterInfo, remaining: list[int], lock: threading.Lock) -> None:
            try:
                auditor.cluster(list_pools(self.clients, cluster))
            except SDK_ERRORS as exc:
                auditor.error(error_row(cluster.subscription_id, cluster.resource_group, cluster.name,
                                        f"cannot list node pools: {describe_error(exc)}", cluster.subscription_name))
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                done.set_result(auditor.finish())

        def guarded(task: Any, *args: Any) -> None:
            try:
                with self.deadline.applied():  # the deadline is per thread: applied in each worker
                    task(*args)
            except BaseException as exc:  # a bug must surface in the run, not hang it waiting for this item
                if not done.done():
                    done.set_exception(exc)
                raise

        pool.submit(guarded, clusters)
        return done
