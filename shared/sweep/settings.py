"""Sweep settings (`AUTOPILOT_SWEEP_*`, `AUTOPILOT_DEADLETTER_CONTAINER`): read and validated once, errors name the setting."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from ..audit.settings import validate_ncrontab
from ..push.settings import PushSettings
from ..settings import Env, SettingsError

DEFAULT_SCHEDULE = "0 30 2 * * *"  # NCRONTAB: daily at 02:30 UTC
QUEUE = "autopilot-sweep"  # the agreed work queue (its poison queue is autopilot-sweep-poison, as Functions names it)
POISON_QUEUE = f"{QUEUE}-poison"
GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass(frozen=True)
class SweepSettings:
    mode: str = "enforce"  # enforce: start conversions | report: say what would be started, start nothing
    schedule: str = DEFAULT_SCHEDULE
    subscriptions: tuple[str, ...] = ()  # where to find registries when the push allow-list names none by resource ID
    max_conversions: int = 1000  # conversions started per run, across every worker
    time_budget_seconds: float = 3000.0  # after this long from the plan, workers stop and leave the rest for the next run
    page_size: int = 100  # tags (and repositories) per listing request
    repositories_per_item: int = 10  # repositories per queue work item: the unit the sweep scales out by
    item_seconds: float = 240.0  # one invocation's share of time (well inside functionTimeout); the rest continues in a new item
    container: str = "autopilot-sweep"  # reports and the resumable state, in the app's storage account
    deadletter_container: str = "eventgrid-deadletter"  # where Event Grid dead-letters undeliverable push events
    auto_convert: tuple[str, ...] = ()  # repository globs that should have convertPushedImages=true (empty: off)
    push: PushSettings = field(default_factory=PushSettings)

    @property
    def report_only(self) -> bool:
        return self.mode == "report"

    def wants_auto_conversion(self, repository: str) -> bool:
        return any(fnmatch.fnmatchcase(repository, glob) for glob in self.auto_convert)

    @classmethod
    def from_env(cls, env: Env | None = None) -> SweepSettings:
        env = env or Env()
        schedule = env.str("AUTOPILOT_SWEEP_SCHEDULE", DEFAULT_SCHEDULE) or DEFAULT_SCHEDULE
        try:
            validate_ncrontab(schedule)
        except ValueError as exc:
            raise SettingsError("AUTOPILOT_SWEEP_SCHEDULE", str(exc)) from None
        subs = tuple(s.lower() for s in env.list("AUTOPILOT_SWEEP_SUBSCRIPTIONS"))
        for sub in subs:
            if not GUID_RE.match(sub):
                raise SettingsError("AUTOPILOT_SWEEP_SUBSCRIPTIONS", f"{sub!r} is not a subscription ID (a GUID)")
        globs = tuple(env.list("AUTOPILOT_SWEEP_AUTO_CONVERT"))
        for glob in globs:
            if ":" in glob or not glob:
                raise SettingsError("AUTOPILOT_SWEEP_AUTO_CONVERT", f"{glob!r} is not a repository glob (examples: prod/*, web/frontend; "
                                    "no tag: the setting is per repository)")
        return cls(
            mode=env.choice("AUTOPILOT_SWEEP_MODE", ("enforce", "report"), "enforce"),
            schedule=schedule,
            subscriptions=subs,
            max_conversions=env.number("AUTOPILOT_SWEEP_MAX_CONVERSIONS", 1000, int, minimum=0, maximum=1_000_000),
            time_budget_seconds=env.number("AUTOPILOT_SWEEP_TIME_BUDGET_SECONDS", 3000.0, float, minimum=10, maximum=86_400),
            page_size=env.number("AUTOPILOT_SWEEP_PAGE_SIZE", 100, int, minimum=1, maximum=1000),
            repositories_per_item=env.number("AUTOPILOT_SWEEP_REPOSITORIES_PER_ITEM", 10, int, minimum=1, maximum=500),
            item_seconds=env.number("AUTOPILOT_SWEEP_ITEM_SECONDS", 240.0, float, minimum=0.0, maximum=3600),
            container=env.container_name("AUTOPILOT_SWEEP_CONTAINER", "autopilot-sweep"),
            deadletter_container=env.container_name("AUTOPILOT_DEADLETTER_CONTAINER", "eventgrid-deadletter"),
            auto_convert=globs,
            push=PushSettings.from_env(env),
        )
