"""Sweep values: work items (queue messages), per-registry tallies, failure lines, the run report; JSON both ways."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

ITEM_VERSION = 1
KINDS = ("registry", "repos", "deadletters")


class BadWorkItem(ValueError):
    """A queue message that is not a sweep work item (it is reported and dropped, not retried)."""


@dataclass(frozen=True)
class WorkItem:
    """One unit of queued work: plan a registry, sweep a page of repositories, or drain the dead-letter container."""

    run_id: str
    kind: str
    deadline: float  # epoch seconds: the run's time budget ends here
    mode: str  # enforce | report
    registry_id: str = ""
    registry: str = ""  # name, for reports
    login_server: str = ""
    repos: tuple[tuple[str, str | None], ...] = ()  # (repository, tag cursor to resume after or None)

    def to_json(self) -> str:
        body = asdict(self)
        body["repos"] = [list(r) for r in self.repos]
        return json.dumps({"v": ITEM_VERSION, **body}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> WorkItem:
        try:
            body = json.loads(text)
            if not isinstance(body, dict) or body.get("v") != ITEM_VERSION:
                raise BadWorkItem(f"not a version {ITEM_VERSION} sweep work item")
            item = cls(run_id=str(body["run_id"]), kind=str(body["kind"]), deadline=float(body["deadline"]),
                       mode=str(body["mode"]), registry_id=str(body.get("registry_id") or ""),
                       registry=str(body.get("registry") or ""), login_server=str(body.get("login_server") or ""),
                       repos=tuple((str(r[0]), None if r[1] is None else str(r[1])) for r in body.get("repos") or []))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise BadWorkItem(f"unreadable sweep work item: {exc}") from None
        if item.kind not in KINDS or item.mode not in ("enforce", "report"):
            raise BadWorkItem(f"unknown work item kind {item.kind!r} or mode {item.mode!r}")
        return item


@dataclass(frozen=True)
class Failure:
    """One line for the report's failures section: an image ACR refused, a registry we could not read, a poisoned item."""

    registry: str
    what: str  # repo@digest, a registry, a blob name, a work item
    code: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


MAX_FAILURE_LINES = 200  # per registry in one report; the counts stay exact


@dataclass
class Tally:
    """What one registry's sweep saw and did (summed over work items)."""

    registry: str
    login_server: str = ""
    status: str = "swept"  # swept | cannot-stream | error
    detail: str = ""
    repositories: int = 0
    tags_seen: int = 0
    digests_seen: int = 0
    already_streaming: int = 0
    started: int = 0
    in_progress: int = 0
    would_start: int = 0  # report mode
    skipped: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    retry_next_run: Counter[str] = field(default_factory=Counter)  # transient: the image stays for the next run
    dead_letters_handled: int = 0
    dead_letters_malformed: int = 0
    auto_conversion_changed: list[str] = field(default_factory=list)  # repositories (report mode: would change)
    repositories_left: int = 0  # work left for the next run (cap or time budget)
    failures: list[Failure] = field(default_factory=list)
    requests: int = 0  # data-plane requests this registry cost (from the client's counter, when known)

    def fail(self, what: str, code: str, detail: str) -> None:
        self.failed[code] += 1
        if len(self.failures) < MAX_FAILURE_LINES:
            self.failures.append(Failure(self.registry, what, code, detail))

    def merge(self, other: Tally) -> None:
        for name in ("repositories", "tags_seen", "digests_seen", "already_streaming", "started", "in_progress", "would_start",
                     "dead_letters_handled", "dead_letters_malformed", "repositories_left", "requests"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.skipped.update(other.skipped)
        self.failed.update(other.failed)
        self.retry_next_run.update(other.retry_next_run)
        self.auto_conversion_changed += [r for r in other.auto_conversion_changed if r not in self.auto_conversion_changed]
        self.failures += other.failures[: max(0, MAX_FAILURE_LINES - len(self.failures))]
        if other.login_server:
            self.login_server = other.login_server
        if other.status != "swept":
            self.status, self.detail = other.status, other.detail

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("skipped", "failed", "retry_next_run"):
            out[name] = dict(sorted(getattr(self, name).items()))
        out["failures"] = [f.as_dict() for f in self.failures]
        return out

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> Tally:
        data = dict(body)
        for name in ("skipped", "failed", "retry_next_run"):
            data[name] = Counter(data.get(name) or {})
        data["failures"] = [Failure(**f) for f in data.get("failures") or []]
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class SweepReport:
    run_id: str
    mode: str
    started_at: str
    finished_at: str = ""
    registries: list[Tally] = field(default_factory=list)
    work_items: int = 0
    poisoned_items: int = 0
    cap: int = 0
    stopped: str = ""  # why work was left: "cap of N conversions reached", "time budget of N s spent"

    def total(self, name: str) -> int:
        return sum(getattr(t, name) for t in self.registries)

    def as_dict(self) -> dict[str, Any]:
        totals = {name: self.total(name) for name in ("tags_seen", "digests_seen", "already_streaming", "started", "in_progress",
                                                      "would_start", "dead_letters_handled", "repositories_left", "requests")}
        totals["failed"] = sum(sum(t.failed.values()) for t in self.registries)
        return {"run_id": self.run_id, "mode": self.mode, "started_at": self.started_at, "finished_at": self.finished_at,
                "work_items": self.work_items, "poisoned_items": self.poisoned_items, "cap": self.cap, "stopped": self.stopped,
                "totals": totals, "registries": [t.as_dict() for t in self.registries]}
