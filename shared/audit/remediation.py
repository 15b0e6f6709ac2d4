"""Enforce: enable streaming on remediable pools carefully (ETag PUT, one pool per cluster, cap, failure threshold, budget)."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ServiceRequestError,
    ServiceResponseError,
)

from shared import azure_clients
from shared.azure_clients import describe_error, wire_text
from shared.deadline import MIN_ATTEMPT_SECONDS, Deadline, DeadlineExceeded

from .discovery import SDK_ERRORS, Clients, cluster_from_model, pool_record
from .items import Target
from .model import (
    ACTION_ENABLED,
    ACTION_FAILED,
    ACTION_SKIPPED,
    ACTION_STARTED,
    PendingRemediation,
    ReportRow,
)
from .rules import classify
from .settings import AuditSettings

log = logging.getLogger("autopilot.audit.remediation")


@dataclass
class Guard:
    """The run's safety limits, shared by every cluster worker: the remediation cap and the failure threshold."""

    cap: int
    threshold: int
    started: int = 0
    failures: int = 0
    stopped: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reserve(self) -> str | None:
        """Take one remediation slot; returns why not when none is left (or remediation has stopped)."""
        with self._lock:
            if self.stopped:
                return self.stopped
            if self.started >= self.cap:
                return f"per-run cap of {self.cap} remediation(s) reached (AUTOPILOT_AUDIT_MAX_REMEDIATIONS)"
            self.started += 1
            return None

    def release(self) -> None:
        with self._lock:
            self.started -= 1

    def fail(self) -> None:
        with self._lock:
            self.failures += 1
            if self.failures >= self.threshold and not self.stopped:
                self.stopped = (
                    f"failure threshold of {self.threshold} reached (AUTOPILOT_AUDIT_FAILURE_THRESHOLD); remediation stopped for this run"
                )


@dataclass
class RemediationResult:
    pending: list[PendingRemediation]
    failures: int
    stopped_early: str


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Remediator:
    def __init__(self, settings: AuditSettings, clients: Clients, deadline: Deadline) -> None:
        self.settings = settings
        self.clients = clients
        self.guard = Guard(cap=settings.max_remediations, threshold=settings.failure_threshold)
        self.pending: list[PendingRemediation] = []
        self._lock = threading.Lock()
        self.deadline = deadline  # the run's: no remediation starts after it, no request, retry wait or poll goes past it

    def run(self, targets: list[tuple[Target, ReportRow]], progress: Callable[[str, int, int], None] | None = None
            ) -> RemediationResult:
        """Remediate `targets` (remediable pools with their report rows): clusters in parallel, pools of a cluster in turn."""
        by_cluster: dict[tuple[str, str, str], list[tuple[Target, ReportRow]]] = defaultdict(list)
        for record, row in targets:
            by_cluster[record.cluster_key].append((record, row))
        done = [0]
        total = len(targets)

        def tick() -> None:
            with self._lock:
                done[0] += 1
                if progress:
                    progress("remediation", done[0], total)

        def work(items: list[tuple[Target, ReportRow]]) -> None:
            with self.deadline.applied():  # the deadline is per thread: applied in each cluster's worker
                one_cluster(items)

        def one_cluster(items: list[tuple[Target, ReportRow]]) -> None:
            blocked = ""
            for record, row in sorted(items, key=lambda it: it[0].pool):
                if blocked:
                    row.action, row.outcome = ACTION_SKIPPED, blocked
                else:
                    try:
                        blocked = self._one(record, row) or ""
                    except Exception as exc:  # a bug must cost one pool and a failure, never the run or the report
                        log.exception("remediation of %s crashed", record.resource_id)
                        self._fail(row, f"internal error: {type(exc).__name__}: {exc}")
                        blocked = "waiting: an earlier pool in this cluster hit an internal error; next run"
                tick()

        with ThreadPoolExecutor(max_workers=self.settings.concurrency, thread_name_prefix="audit-remediate") as pool:
            list(pool.map(work, by_cluster.values()))
        return RemediationResult(pending=self.pending, failures=self.guard.failures, stopped_early=self.guard.stopped)

    # ----------------------------------------------------------------------------------------------------- one pool
    def _fail(self, row: ReportRow, message: str) -> str | None:
        """Record a failed remediation; returns None (nothing for the cluster's other pools to wait for)."""
        self.guard.fail()
        row.action, row.outcome = ACTION_FAILED, message
        log.warning("remediation of %s failed: %s", row.resource_id, message)
        return None

    def _one(self, record: Target, row: ReportRow) -> str | None:
        """Remediate one pool. Returns why the cluster's other pools must wait (its operation still runs, or ARM said busy)."""
        if self.deadline.remaining() < MIN_ATTEMPT_SECONDS:
            row.action, row.outcome = ACTION_SKIPPED, (
                f"run time budget of {self.settings.run_budget_seconds:g}s used (AUTOPILOT_AUDIT_RUN_BUDGET_SECONDS); next run")
            return None
        refusal = self.guard.reserve()  # before any request: a capped or stopped run spends nothing more on ARM
        if refusal:
            row.action, row.outcome = ACTION_SKIPPED, refusal
            return None
        retried_412 = False
        while True:
            current, hold = self._reread(record, row)
            if current is None:
                self.guard.release()
                return hold
            lro_deadline = self.deadline.sooner(self.settings.lro_budget_seconds)
            kwargs: dict[str, Any] = {"polling": _polling(lro_deadline, self.settings.poll_seconds),
                                      "etag": current.e_tag, "match_condition": MatchConditions.IfNotModified}
            current.artifact_streaming_profile = _streaming_profile(True)
            try:
                poller = self.clients.aks(record.subscription_id).agent_pools.begin_create_or_update(
                    record.resource_group, record.cluster, record.pool, current, **kwargs)
            except ResourceModifiedError:
                if retried_412:
                    self.guard.release()
                    return self._fail(row, "412 PreconditionFailed twice: the pool keeps changing; left for the next run")
                retried_412 = True
                continue
            except ResourceExistsError as exc:
                self.guard.release()
                row.state, row.reason = "busy", f"another operation is in progress ({describe_error(exc)})"
                row.action, row.outcome = ACTION_SKIPPED, "409 from ARM: busy for this run"
                return f"waiting: ARM answered 409 for pool {record.pool} in this cluster (another operation); next run"
            except SDK_ERRORS as exc:
                self.guard.release()
                return self._fail(row, f"PUT refused: {describe_error(exc)}")
            return self._wait(poller, record, row, retried_412, lro_deadline)

    def _reread(self, record: Target, row: ReportRow) -> tuple[Any, str | None]:
        """Right before a write, read again all the rules depend on: the cluster (tags, state, sibling pools) and the pool.

        Returns the pool model to write, or (None, why the cluster's other pools wait) with the row saying why not.
        """
        client = self.clients.aks(record.subscription_id)
        try:
            mc = client.managed_clusters.get(record.resource_group, record.cluster)
            current = client.agent_pools.get(record.resource_group, record.cluster, record.pool)
        except SDK_ERRORS as exc:
            self._fail(row, f"GET failed: {describe_error(exc)}")
            return None, None
        cluster = cluster_from_model(record.subscription_id, record.subscription_name, mc)
        fresh = pool_record(cluster, current)
        decision = classify(fresh, self.settings)
        if decision.state != "remediable":
            row.state, row.reason = decision.state, decision.reason
            row.action, row.outcome = ACTION_SKIPPED, f"changed since discovery; now {decision.state}: not touched"
            return None, None
        sibling = next((p for p in mc.agent_pool_profiles or [] if p.name != record.pool
                        and str(wire_text(p.provisioning_state) or "").lower() != "succeeded"), None)
        if sibling is not None:
            state = wire_text(sibling.provisioning_state)
            wait = f"waiting: pool {sibling.name} in this cluster is {state} (one pool per cluster at a time); next run"
            row.action, row.outcome = ACTION_SKIPPED, wait
            return None, wait
        if not current.e_tag:
            row.state = "busy"
            row.reason = "ARM returned the pool without an ETag: it is not written without a concurrency guard (If-Match)"
            row.action, row.outcome = ACTION_SKIPPED, "not written: no ETag to make the PUT conditional; next run"
            return None, None
        return current, None

    def _wait(self, poller: Any, record: Target, row: ReportRow, retried_412: bool, lro_deadline: Deadline) -> str | None:
        note = " (after one 412 re-read)" if retried_412 else ""
        budget = lro_deadline.remaining()
        try:
            poller.wait(timeout=budget + 1.0)  # the polling stops itself at the deadline; the second is for its last answer
            result = poller.result(timeout=0) if poller.done() else None
        except (ServiceRequestError, ServiceResponseError) as exc:  # the budget ended the polling, or the network failed
            if lro_deadline.remaining() >= MIN_ATTEMPT_SECONDS:
                return self._fail(row, f"operation status unknown: {describe_error(exc)}")
            result = None
        except SDK_ERRORS as exc:
            return self._fail(row, f"operation failed: {describe_error(exc)}")
        if result is None:
            row.action = ACTION_STARTED
            row.outcome = f"operation still running after {budget:.1f}s; verified next run{note}"
            with self._lock:
                self.pending.append(PendingRemediation(
                    resource_id=record.resource_id, subscription_id=record.subscription_id,
                    resource_group=record.resource_group, cluster=record.cluster, pool=record.pool, started_at=_now(),
                ))
            return f"waiting: pool {record.pool} in this cluster is still updating (one pool per cluster at a time); next run"
        state = wire_text(getattr(result, "provisioning_state", None))
        profile = getattr(result, "artifact_streaming_profile", None)
        if str(state).lower() == "succeeded" and profile is not None and profile.enabled:
            row.action, row.outcome = ACTION_ENABLED, f"Succeeded{note}"
            return None
        return self._fail(row, f"operation ended {state}; streaming enabled = {getattr(profile, 'enabled', None)}")


class LroBudgetSpent(DeadlineExceeded):
    """The wait for one pool's operation reached its budget: the operation runs on in Azure, the next run verifies it."""


def _polling(deadline: Deadline, interval: float) -> Any:
    """ARM LRO polling (Retry-After honoured, capped) that ends at `deadline` instead of polling on in the background."""
    base = type(azure_clients.arm_polling(deadline, interval))

    class StopAtDeadline(base):  # type: ignore[misc,valid-type]
        def _extract_delay(self) -> float:
            if deadline.remaining() <= 0:
                raise LroBudgetSpent(f"the operation's {deadline.budget:g} s budget is spent; it is left running")
            return float(super()._extract_delay())

        def update_status(self) -> None:
            with deadline.applied():  # the poller runs on its own thread: its requests end inside the budget too
                super().update_status()

    return StopAtDeadline(timeout=interval)


def _streaming_profile(enabled: bool) -> Any:
    from azure.mgmt.containerservice.models import AgentPoolArtifactStreamingProfile

    return AgentPoolArtifactStreamingProfile(enabled=enabled)
