"""Push-path outcomes as values: created, already-streaming, in-progress, skipped(reason), failed(code); one log line each."""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields, replace
from typing import Any, Final, Literal, get_args

from ..logs import log_event

log = logging.getLogger("autopilot.push")

OutcomeKind = Literal["created", "already-streaming", "in-progress", "skipped", "failed"]
CREATED: Final = "created"
ALREADY_STREAMING: Final = "already-streaming"
IN_PROGRESS: Final = "in-progress"
SKIPPED: Final = "skipped"
FAILED: Final = "failed"
KINDS: tuple[OutcomeKind, ...] = get_args(OutcomeKind)
Mode = Literal["enforce", "report"]

# Skip reasons (stable codes; the detail says what was seen)
R_EVENT_TYPE = "event-type"
R_MALFORMED = "malformed"
R_UNTAGGED = "untagged"
R_MEDIA_TYPE = "media-type"
R_STREAMING_ARTIFACT = "streaming-artifact"
R_REGISTRY_NOT_ALLOWED = "registry-not-allowed"
R_FILTERED = "filtered"
R_REGISTRY_INELIGIBLE = "registry-cannot-stream"
R_PLATFORM = "platform"
R_NOT_RUNNABLE = "not-runnable"
R_TOO_LARGE = "too-large"
R_REPORT_MODE = "report-mode"
R_NOT_FOUND = "not-found"
R_AUTO_CONVERSION = "auto-conversion"

EVENT_TYPE_PREFIX = "Autopilot.ArtifactStreaming."  # outcome CloudEvent types: Autopilot.ArtifactStreaming.Created, ...

# CLI exit codes: distinguish what happened without parsing output
EXIT_CODES: dict[OutcomeKind, int] = {CREATED: 0, IN_PROGRESS: 0, ALREADY_STREAMING: 10, SKIPPED: 20, FAILED: 30}


@dataclass(frozen=True)
class Outcome:
    """What the push path did with one image (or one event)."""

    outcome: OutcomeKind
    registry: str | None = None
    repository: str | None = None
    tag: str | None = None
    digest: str | None = None
    reason: str | None = None  # for skipped: a stable code (R_*)
    code: str | None = None  # for failed: the service's error code (e.g. UNSUPPORTED_PLATFORM, AuthorizationFailed)
    detail: str | None = None  # human sentence: what was seen, what to do
    operation_id: str | None = None
    duration_ms: float | None = None
    event_id: str | None = None
    mode: Mode | None = None

    def __post_init__(self) -> None:
        if self.outcome not in KINDS:
            raise ValueError(f"unknown outcome {self.outcome!r}")

    def with_(self, **changes: Any) -> Outcome:
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The set fields (all flat values: no deep copy needed, unlike dataclasses.asdict)."""
        return {f.name: value for f in fields(self) if (value := getattr(self, f.name)) is not None}

    @property
    def subject(self) -> str:
        ref = f"@{self.digest}" if not self.tag and self.digest else f":{self.tag}" if self.tag else ""
        return f"{self.registry or '?'}/{self.repository or '?'}{ref}"

    @property
    def event_type(self) -> str:
        return EVENT_TYPE_PREFIX + "".join(part.capitalize() for part in self.outcome.split("-"))

    def log(self, logger: logging.Logger = log) -> None:
        level = logging.WARNING if self.outcome == FAILED else logging.INFO
        fields = self.as_dict()
        kind = fields.pop("outcome")
        log_event(logger, "push.outcome", level=level, outcome=kind, **fields)


def skipped(reason: str, detail: str, **fields: Any) -> Outcome:
    return Outcome(SKIPPED, reason=reason, detail=detail, **fields)


def failed(code: str, detail: str, **fields: Any) -> Outcome:
    return Outcome(FAILED, code=code, detail=detail, **fields)


class TransientError(RuntimeError):
    """A failure that a later attempt may not see (429/5xx after retries, timeouts, UNKNOWN_ERROR, a fresh RESOURCE_NOT_FOUND).

    The function lets it propagate so the host answers 500 and Event Grid redelivers (and finally dead-letters).
    """

    def __init__(self, message: str, code: str = "TRANSIENT") -> None:
        self.code = code
        super().__init__(message)
