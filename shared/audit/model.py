"""Audit path values: what discovery found (PoolRecord), what the rules decided (Decision), and what the report holds."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

# Pool states, in the order the report lists them. `error` is a subscription or cluster that could not be read.
PoolState = Literal["compliant", "remediable", "ineligible", "busy", "stopped", "excluded", "error"]
STATES: tuple[PoolState, ...] = get_args(PoolState)

# Actions taken on a pool in one run.
ACTION_NONE = "none"
ACTION_ENABLED = "enabled"  # PUT accepted and the operation finished within the time budget
ACTION_STARTED = "remediation-started"  # PUT accepted; the operation was still running at the budget; verified next run
ACTION_WOULD_ENABLE = "would-enable"  # report mode (or enforce outside the window): what enforce would do
ACTION_SKIPPED = "skipped"  # enforce chose not to touch it this run (cap, failure threshold, cluster busy...)
ACTION_FAILED = "failed"
ACTION_VERIFIED = "verified"  # a remediation started by an earlier run is now done


@dataclass(frozen=True)
class WorkItem:
    """One unit of the audit plan: a subscription to audit. Shards split the plan; workers take items independently."""

    subscription_id: str
    display_name: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"subscription_id": self.subscription_id, "display_name": self.display_name}


@dataclass
class PoolRecord:
    """One agent pool as discovery saw it (the facts the rules need)."""

    subscription_id: str
    resource_group: str
    cluster: str
    pool: str
    os_type: str | None = None
    os_sku: str | None = None
    kubernetes_version: str | None = None  # the pool's current orchestrator version (falls back to the cluster's)
    provisioning_state: str | None = None
    power_state: str | None = None
    streaming_enabled: bool | None = None  # None: the profile is null
    workload_runtime: str | None = None
    pool_tags: dict[str, str] = field(default_factory=dict)
    cluster_tags: dict[str, str] = field(default_factory=dict)
    cluster_provisioning_state: str | None = None
    cluster_power_state: str | None = None
    etag: str | None = None
    subscription_name: str = ""
    vm_size: str | None = None

    @property
    def cluster_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.ContainerService/managedClusters/{self.cluster}"
        )

    @property
    def resource_id(self) -> str:
        return f"{self.cluster_id}/agentPools/{self.pool}"

    @property
    def cluster_key(self) -> tuple[str, str, str]:
        return (self.subscription_id, self.resource_group.lower(), self.cluster.lower())


@dataclass(frozen=True)
class Decision:
    state: PoolState
    reason: str
    rule: str  # the name of the rule that decided


@dataclass(slots=True)
class ReportRow:
    subscription_id: str
    subscription_name: str
    resource_group: str
    cluster: str
    pool: str
    os_type: str | None
    os_sku: str | None
    kubernetes_version: str | None
    state: PoolState
    reason: str
    action: str = ACTION_NONE
    outcome: str = ""  # what the operation did (or the error), empty when nothing was attempted
    resource_id: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ROW_FIELDS}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ReportRow:
        values: dict[str, Any] = {k: raw.get(k) for k in ROW_FIELDS}
        return cls(**values)


ROW_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ReportRow))


@dataclass
class Summary:
    total: int
    by_state: dict[str, int]
    by_subscription: dict[str, dict[str, int]]
    by_action: dict[str, int]
    remediations_started: int = 0
    failures: int = 0
    stopped_early: str = ""  # why enforce stopped remediating (failure threshold), empty otherwise

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PendingRemediation:
    """A remediation whose operation outlived the run's time budget; the next run verifies it."""

    resource_id: str
    subscription_id: str
    resource_group: str
    cluster: str
    pool: str
    started_at: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AuditReport:
    run_id: str
    started_at: str  # ISO 8601 UTC
    finished_at: str
    mode: str  # the configured mode
    effective_mode: str  # report when enforce ran outside its window
    note: str
    rows: list[ReportRow]
    summary: Summary
    pending: list[PendingRemediation] = field(default_factory=list)
    locations: dict[str, str] = field(default_factory=dict)  # where the report was stored (json, markdown, latest...)

    def as_dict(self, rows: bool = True) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "mode": self.mode,
            "effective_mode": self.effective_mode,
            "note": self.note,
            "summary": self.summary.as_dict(),
            "rows": [r.as_dict() for r in self.rows] if rows else [],
            "pending": [p.as_dict() for p in self.pending],
        }


class Tally:
    """The summary's counts, taken row by row as the rows stream past (the rows need not be held)."""

    def __init__(self) -> None:
        self.total = 0
        self.by_state: dict[str, int] = {s: 0 for s in STATES}
        self.by_subscription: dict[str, dict[str, int]] = {}
        self.by_action: dict[str, int] = {}
        self.names: dict[str, str] = {}  # subscription id → display name, for the report's per-subscription table

    def add(self, row: ReportRow) -> None:
        self.total += 1
        self.names[row.subscription_id] = row.subscription_name
        self.by_state[row.state] = self.by_state.get(row.state, 0) + 1
        sub = self.by_subscription.setdefault(row.subscription_id, {})
        sub[row.state] = sub.get(row.state, 0) + 1
        self.by_action[row.action] = self.by_action.get(row.action, 0) + 1

    def summary(self, failures: int = 0, stopped_early: str = "") -> Summary:
        return Summary(
            total=self.total,
            by_state=dict(self.by_state),
            by_subscription={k: dict(v) for k, v in self.by_subscription.items()},
            by_action=dict(self.by_action),
            remediations_started=self.by_action.get(ACTION_ENABLED, 0) + self.by_action.get(ACTION_STARTED, 0),
            failures=failures,
            stopped_early=stopped_early,
        )


def summarize(rows: list[ReportRow], failures: int = 0, stopped_early: str = "") -> Summary:
    tally = Tally()
    for row in rows:
        tally.add(row)
    return tally.summary(failures, stopped_early)
