"""Audit path settings (`AUTOPILOT_AUDIT_*`): parsed and validated once, at start-up, with errors naming the setting."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from shared.publish import TopicSettings
from shared.settings import AzureSettings, Env, SettingsError

DEFAULT_SCHEDULE = "0 0 * * * *"  # NCRONTAB (second minute hour day month day-of-week): hourly, on the hour
# The documented minimum: "This feature requires Kubernetes version 1.25 or later" (AKS artifact streaming page).
DOCUMENTED_MIN_KUBERNETES = "1.25"
# OS SKUs whose support for artifact streaming is not documented today (Ubuntu 24.04, Azure Linux 3). Operators who have
# confirmed support for their region can clear the list with AUTOPILOT_AUDIT_UNSUPPORTED_OS_SKUS="" ... or "none".
DEFAULT_UNSUPPORTED_OS_SKUS = ("Ubuntu2404", "AzureLinux3")
DEFAULT_EXCLUDE_TAG = "artifact-streaming=off"
DEFAULT_CONTAINER = "autopilot-audit"

_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CRON_NAMES = {
    4: {m: i + 1 for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))},
    5: {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))},
}
_CRON_FIELDS = (("second", 0, 59), ("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12), ("day-of-week", 0, 6))


def validate_ncrontab(expr: str) -> str:
    """Check a six-field NCRONTAB expression as the Functions timer trigger reads it; returns it, or raises ValueError."""
    parts = expr.split()
    if len(parts) != 6:
        raise ValueError(
            f"{expr!r} has {len(parts)} field(s); NCRONTAB needs 6: second minute hour day month day-of-week "
            f"(e.g. {DEFAULT_SCHEDULE!r} for hourly)"
        )
    for index, (part, (name, low, high)) in enumerate(zip(parts, _CRON_FIELDS, strict=True)):
        names = _CRON_NAMES.get(index, {})
        for item in part.split(","):
            base, _, step = item.partition("/")
            if step and (not step.isdigit() or int(step) == 0):
                raise ValueError(f"{expr!r}: the {name} field has a bad step {step!r}")
            if base == "*":
                continue
            bounds = base.split("-")
            if len(bounds) > 2 or not all(bounds):
                raise ValueError(f"{expr!r}: the {name} field has a malformed item {item!r}")
            values = []
            for bound in bounds:
                value = names.get(bound.lower()) if not bound.isdigit() else int(bound)
                if value is None or not low <= value <= high:
                    raise ValueError(f"{expr!r}: {bound!r} is not a valid {name} ({low}-{high})")
                values.append(value)
            if len(values) == 2 and values[0] > values[1]:
                raise ValueError(f"{expr!r}: the {name} range {base!r} runs backwards")
    return expr


@dataclass(frozen=True)
class Window:
    """Allowed UTC window for changes: days of the week (0 = Monday) and an hour range [start, end), which may wrap midnight."""

    days: frozenset[int]
    start_hour: int
    end_hour: int
    text: str

    def contains(self, moment: datetime) -> bool:
        """Is `moment` (UTC) inside? A window that wraps midnight belongs to the day it starts: `Fri 22-06` covers Sat 03:00."""
        hour, day = moment.hour, moment.weekday()
        if self.start_hour == self.end_hour % 24:  # 00-24, 06-06: the whole day
            return day in self.days
        if self.start_hour < self.end_hour:
            return day in self.days and self.start_hour <= hour < self.end_hour
        if hour >= self.start_hour:
            return day in self.days
        return hour < self.end_hour and (day - 1) % 7 in self.days

    @classmethod
    def parse(cls, text: str) -> Window:
        """`[DAYS] HH-HH` in UTC, e.g. `Mon-Fri 09-17`, `Sat,Sun 00-24`, `22-06`. DAYS: names, lists and ranges."""
        match = re.fullmatch(r"\s*(?:([A-Za-z,\- ]+?)\s+)?(\d{1,2})(?::00)?\s*-\s*(\d{1,2})(?::00)?\s*(?:UTC)?\s*", text)
        if not match:
            raise ValueError(f"{text!r} is not '[DAYS] HH-HH' in UTC (e.g. 'Mon-Fri 09-17' or '22-06')")
        days_text, start, end = match.group(1), int(match.group(2)), int(match.group(3))
        if not (0 <= start <= 23 and 0 <= end <= 24):
            raise ValueError(f"{text!r}: hours must be 0-23 (start) and 0-24 (end)")
        days: set[int] = set()
        if days_text:
            for item in days_text.replace(" ", "").lower().split(","):
                first, _, last = item.partition("-")
                try:
                    a = _DAY_NAMES.index(first[:3])
                    b = _DAY_NAMES.index(last[:3]) if last else a
                except ValueError:
                    raise ValueError(f"{text!r}: {item!r} is not a day or day range (Mon..Sun)") from None
                days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
        else:
            days = set(range(7))
        return cls(days=frozenset(days), start_hour=start, end_hour=end, text=text.strip())


@dataclass(frozen=True)
class ExcludeTag:
    """A tag that excludes a cluster or pool: `name` (any value) or `name=value` (value compared case-insensitively)."""

    name: str
    value: str | None

    def matches(self, tags: dict[str, str] | None) -> str | None:
        for key, value in (tags or {}).items():
            if key.lower() == self.name.lower() and (self.value is None or str(value).lower() == self.value.lower()):
                return f"{key}={value}"
        return None


@dataclass(frozen=True)
class AuditSettings:
    mode: str = "report"  # report | enforce
    schedule: str = DEFAULT_SCHEDULE
    subscriptions: tuple[str, ...] = ()  # empty: every subscription the identity can read
    max_remediations: int = 10
    failure_threshold: int = 3
    window: Window | None = None
    exclude_tag: ExcludeTag | None = field(default_factory=lambda: ExcludeTag("artifact-streaming", "off"))
    exclude: tuple[str, ...] = ()  # resource IDs or globs (case-insensitive) of clusters or pools
    unsupported_os_skus: tuple[str, ...] = DEFAULT_UNSUPPORTED_OS_SKUS
    arm64_vm_sizes: tuple[str, ...] = ()  # more Arm64 VM sizes (names or globs) beyond those Azure's naming marks with `p`
    min_kubernetes: tuple[int, int] = (1, 25)
    concurrency: int = 8
    lro_budget_seconds: float = 120.0
    run_budget_seconds: float = 420.0  # no new remediation starts after this; keeps a run inside host.json functionTimeout (10 min)
    poll_seconds: float = 10.0
    container: str = DEFAULT_CONTAINER
    shard: tuple[int, int] = (0, 1)  # (index, count): this run audits the subscriptions whose stable hash % count == index
    publish_events: bool = True
    fanout: bool = False  # true: the timer plans and queues the work items; queue-triggered workers audit them
    fanout_batch: int = 0  # subscriptions per work message; 0: auto (shared.audit.fanout.batch_size)
    pool_source: str = "agentpools"  # agentpools: list each cluster's pools | cluster: the agentPoolProfiles of the cluster list
    topic: TopicSettings | None = None  # where outcome events go (AUTOPILOT_TOPIC_*); None: not published
    azure: AzureSettings = field(default_factory=AzureSettings)

    @property
    def enforce(self) -> bool:
        return self.mode == "enforce"

    @classmethod
    def from_env(cls, env: Env | None = None) -> AuditSettings:
        env = env or Env()
        schedule = env.str("AUTOPILOT_AUDIT_SCHEDULE", DEFAULT_SCHEDULE) or DEFAULT_SCHEDULE
        try:
            validate_ncrontab(schedule)
        except ValueError as exc:
            raise SettingsError("AUTOPILOT_AUDIT_SCHEDULE", str(exc)) from None
        subs = []
        for item in env.list("AUTOPILOT_AUDIT_SUBSCRIPTIONS"):
            subs.append(parse_subscription_id(item, "AUTOPILOT_AUDIT_SUBSCRIPTIONS"))
        window_text = env.str("AUTOPILOT_AUDIT_WINDOW")
        window = None
        if window_text:
            try:
                window = Window.parse(window_text)
            except ValueError as exc:
                raise SettingsError("AUTOPILOT_AUDIT_WINDOW", str(exc)) from None
        tag_text = (env.str("AUTOPILOT_AUDIT_EXCLUDE_TAG") or "") if env.is_set("AUTOPILOT_AUDIT_EXCLUDE_TAG") else DEFAULT_EXCLUDE_TAG
        exclude_tag = None
        if tag_text and tag_text.lower() != "none":
            name, sep, value = tag_text.partition("=")
            if not name.strip():
                raise SettingsError("AUTOPILOT_AUDIT_EXCLUDE_TAG", f"{tag_text!r} has no tag name (use 'name' or 'name=value')")
            exclude_tag = ExcludeTag(name.strip(), value.strip() if sep else None)
        if env.is_set("AUTOPILOT_AUDIT_UNSUPPORTED_OS_SKUS"):
            skus = tuple(s for s in env.list("AUTOPILOT_AUDIT_UNSUPPORTED_OS_SKUS") if s.lower() != "none")
        else:
            skus = DEFAULT_UNSUPPORTED_OS_SKUS
        arm64 = tuple(env.list("AUTOPILOT_AUDIT_ARM64_VM_SIZES"))
        for entry in arm64:
            if not re.fullmatch(r"[A-Za-z0-9_*?\[\]-]+", entry):
                raise SettingsError("AUTOPILOT_AUDIT_ARM64_VM_SIZES",
                                    f"{entry!r} is not a VM size or glob (e.g. Standard_D4ps_v5 or Standard_*p*_v7)")
        min_text = env.str("AUTOPILOT_AUDIT_MIN_KUBERNETES", DOCUMENTED_MIN_KUBERNETES) or DOCUMENTED_MIN_KUBERNETES
        min_version = parse_version(min_text)
        if min_version is None:
            raise SettingsError("AUTOPILOT_AUDIT_MIN_KUBERNETES", f"{min_text!r} is not a version like 1.25")
        shard_text = env.str("AUTOPILOT_AUDIT_SHARD", "0/1") or "0/1"
        shard_match = re.fullmatch(r"(\d+)/(\d+)", shard_text)
        if not shard_match or int(shard_match.group(2)) < 1 or int(shard_match.group(1)) >= int(shard_match.group(2)):
            raise SettingsError("AUTOPILOT_AUDIT_SHARD", f"{shard_text!r} is not INDEX/COUNT with 0 <= INDEX < COUNT (e.g. 0/4)")
        exclude = tuple(env.list("AUTOPILOT_AUDIT_EXCLUDE"))
        for entry in exclude:
            if not (entry.lower().startswith("/subscriptions/") or entry.startswith("*")):
                raise SettingsError(
                    "AUTOPILOT_AUDIT_EXCLUDE",
                    f"{entry!r} is not a resource ID or glob; use e.g. /subscriptions/*/resourceGroups/rg-legacy/* or "
                    "*/managedClusters/aks-legacy or */managedClusters/*/agentPools/gpu*",
                )
        container = env.container_name("AUTOPILOT_AUDIT_CONTAINER", DEFAULT_CONTAINER)
        return cls(
            mode=env.choice("AUTOPILOT_AUDIT_MODE", ("report", "enforce"), "report"),
            schedule=schedule,
            subscriptions=tuple(dict.fromkeys(subs)),
            max_remediations=env.number("AUTOPILOT_AUDIT_MAX_REMEDIATIONS", 10, int, minimum=0),
            failure_threshold=env.number("AUTOPILOT_AUDIT_FAILURE_THRESHOLD", 3, int, minimum=1),
            window=window,
            exclude_tag=exclude_tag,
            exclude=exclude,
            unsupported_os_skus=skus,
            arm64_vm_sizes=arm64,
            min_kubernetes=min_version,
            concurrency=env.number("AUTOPILOT_AUDIT_CONCURRENCY", 8, int, minimum=1, maximum=64),
            lro_budget_seconds=env.number("AUTOPILOT_AUDIT_LRO_BUDGET_SECONDS", 120.0, float, minimum=0),
            run_budget_seconds=env.number("AUTOPILOT_AUDIT_RUN_BUDGET_SECONDS", 420.0, float, minimum=0),
            poll_seconds=env.number("AUTOPILOT_AUDIT_POLL_SECONDS", 10.0, float, minimum=0.05),
            container=container,
            shard=(int(shard_match.group(1)), int(shard_match.group(2))),
            publish_events=env.bool("AUTOPILOT_AUDIT_PUBLISH_EVENTS", True),
            fanout=env.bool("AUTOPILOT_AUDIT_FANOUT", False),
            fanout_batch=env.number("AUTOPILOT_AUDIT_FANOUT_BATCH", 0, int, minimum=0, maximum=100),
            pool_source=env.choice("AUTOPILOT_AUDIT_POOL_SOURCE", ("agentpools", "cluster"), "agentpools"),
            topic=TopicSettings.from_env(env),
            azure=AzureSettings.from_env(env),
        )


def parse_subscription_id(text: str, setting: str) -> str:
    try:
        return str(uuid.UUID(text.strip()))
    except ValueError:
        raise SettingsError(setting, f"{text!r} is not a subscription id (a GUID such as 00000000-0000-0000-0000-000000000000)") from None


def parse_version(text: str | None) -> tuple[int, int] | None:
    """`1.30.4` → (1, 30); None when it is not a version."""
    match = re.match(r"^\s*v?(\d+)\.(\d+)", text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None
