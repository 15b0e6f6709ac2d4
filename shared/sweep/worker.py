"""One sweep work item's work: list a registry's repositories, or walk a page of repositories tag by tag through the push path."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from ..acr import AcrClient, AcrError, listing
from ..push import outcomes as o
from ..push.events import RegistryRef
from ..push.outcomes import Outcome, TransientError
from ..push.service import ImageTarget, PushService
from .model import Tally, WorkItem
from .settings import SweepSettings

log = logging.getLogger("autopilot.sweep")
STOP_CAP = "cap"
STOP_BUDGET = "budget"
STOP_SLICE = "slice"  # this item ran its share of time: the rest continues in a new item of the same run


@dataclass
class ItemResult:
    """What one work item did: its tally, the items it planned, where it stopped and what it left."""

    tally: Tally
    follow_ups: list[WorkItem] = field(default_factory=list)
    stopped: str = ""  # "" | cap | budget
    finished_repos: list[str] = field(default_factory=list)
    left: dict[str, str | None] = field(default_factory=dict)  # repository -> tag cursor (resume after it)


def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def count(tally: Tally, outcome: Outcome, what: str) -> bool:
    """Add one push-path outcome to the tally; True when a conversion was started."""
    if outcome.outcome == o.CREATED:
        tally.started += 1
        return True
    if outcome.outcome == o.ALREADY_STREAMING:
        tally.already_streaming += 1
    elif outcome.outcome == o.IN_PROGRESS:
        tally.in_progress += 1
    elif outcome.outcome == o.SKIPPED and outcome.reason == o.R_REPORT_MODE:
        tally.would_start += 1
    elif outcome.outcome == o.SKIPPED:
        tally.skipped[outcome.reason or "skipped"] += 1
    else:
        tally.fail(what, outcome.code or "FAILED", outcome.detail or "")
    return False


class RepoWalker:
    """Walks the repositories of one `repos` work item, newest tags first, one push-path decision per digest."""

    def __init__(self, settings: SweepSettings, push: PushService, item: WorkItem, started: Callable[[int], int]) -> None:
        """`started(n)` adds n conversions to the run's count and returns the run's total (shared across workers)."""
        self.settings, self.push, self.item = settings, push, item
        self.ref = RegistryRef.parse(item.registry_id)
        self._started = started
        self._run_started = started(0)
        self._slice_ends = time.time() + settings.item_seconds
        self._decided = 0  # digests decided by this item: it always makes progress before it slices

    def stop_reason(self) -> str:
        now = time.time()
        if now >= self.item.deadline:
            return STOP_BUDGET
        if self.item.mode == "enforce" and self._run_started >= self.settings.max_conversions:
            return STOP_CAP
        if now >= self._slice_ends and self._decided:
            return STOP_SLICE
        return ""

    def run(self, acr: AcrClient) -> ItemResult:
        result = ItemResult(Tally(registry=self.item.registry, login_server=self.item.login_server))
        for repo, cursor in self.item.repos:
            result.stopped = result.stopped or self.stop_reason()
            if result.stopped:
                result.left[repo] = cursor
                continue
            self._run_started = self._started(0)  # the run's count as other workers left it
            cursor, stopped = self.walk(acr, repo, cursor, result.tally)
            if stopped:
                result.stopped, result.left[repo] = stopped, cursor
            else:
                result.tally.repositories += 1
                result.finished_repos.append(repo)
        result.tally.repositories_left = 0 if result.stopped == STOP_SLICE else len(result.left)
        return result

    def walk(self, acr: AcrClient, repo: str, cursor: str | None, tally: Tally) -> tuple[str | None, str]:
        """Sweep one repository from `cursor` on; (new cursor, stop reason or "")."""
        if self.settings.auto_convert and self.settings.wants_auto_conversion(repo):
            self.auto_convert(acr, repo, tally)
        seen: set[str] = set()
        try:
            for page in listing.tags(acr, repo, n=self.settings.page_size, last=cursor):
                for tag in page.items:
                    if tag.digest not in seen:
                        if stopped := self.stop_reason():
                            return cursor, stopped
                        self.decide(acr, repo, tag, seen, tally)
                    tally.tags_seen += 1
                    cursor = tag.name
        except AcrError as exc:
            if exc.transient:
                raise  # the queue retries the item (and finally poisons it, with a report line)
            if exc.status == 404:
                tally.skipped["repository-gone"] += 1  # deleted since the catalog was listed
            else:
                tally.fail(repo, exc.code or f"HTTP_{exc.status}", f"cannot list the tags of {repo}: {exc}")
        return cursor, ""

    def decide(self, acr: AcrClient, repo: str, tag: listing.TagInfo, seen: set[str], tally: Tally) -> None:
        """One digest: the push path's own decision and creation (its lease makes it exactly once)."""
        if self.settings.push.filters.decide(repo, tag.name) is not None:
            tally.skipped["filtered"] += 1  # per tag: another tag of the same digest may still pass the filters
            return
        seen.add(tag.digest)
        self._decided += 1
        tally.digests_seen += 1
        assert self.ref is not None
        target = ImageTarget(self.ref, repo, tag.digest, tag.name, acr.login_server, _when(tag.last_update), fresh_push=False)
        try:
            outcome = self.push.stream(target, wait_seconds=0, report=self.item.mode == "report", announce=False)
        except TransientError as exc:
            tally.retry_next_run[exc.code] += 1
            return
        if count(tally, outcome, f"{repo}@{tag.digest}"):
            self._run_started = self._started(1)

    def auto_convert(self, acr: AcrClient, repo: str, tally: Tally) -> None:
        """convertPushedImages=true on a repository matching AUTOPILOT_SWEEP_AUTO_CONVERT (report mode: say it would)."""
        try:
            if acr.auto_conversion(repo):
                return
            if self.item.mode == "enforce":
                listing.set_auto_conversion(acr, repo, True)
            tally.auto_conversion_changed.append(repo)
        except AcrError as exc:
            tally.fail(repo, exc.code or f"HTTP_{exc.status}", f"cannot set convertPushedImages on {repo}: {exc}")


def list_repositories(settings: SweepSettings, acr: AcrClient, tally: Tally) -> list[str] | None:
    """Every repository of the registry (`/v2/_catalog`, paged); None when the identity cannot list it (a report row)."""
    names: list[str] = []
    try:
        for page in listing.catalog(acr, n=settings.page_size):
            names += page.items
    except AcrError as exc:
        if exc.transient:
            raise
        tally.status = "error"
        tally.detail = (f"cannot list the repositories of {acr.login_server}: {exc}; grant the identity AcrPull (or the "
                        "Catalog Lister role on ABAC registries)")
        return None
    return names
