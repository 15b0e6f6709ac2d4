"""Invocation deadlines: one monotonic budget per invocation that every HTTP attempt, retry wait and poll of every client respects."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import ServiceRequestTimeoutError
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import RetryPolicy
from azure.core.pipeline.transport import HttpTransport

DEFAULT_RETRY_AFTER_MAX = 30.0  # a longer Retry-After ends the in-invocation retries: the caller retries later instead
MIN_ATTEMPT_SECONDS = 0.5  # an attempt with less left than this is not started


class DeadlineExceeded(ServiceRequestTimeoutError):
    """The invocation's deadline came before a request could be (re)sent. A ServiceRequestError, so every caller that
    treats a connection failure as transient (retry later, redeliver) treats this the same way."""


@dataclass(frozen=True)
class Deadline:
    """A point in monotonic time by which an invocation must be done. `Deadline.after(25)`; `with deadline.applied():`
    makes it the deadline of every Azure client call made in that block on this thread (see `current()`)."""

    expires: float  # time.monotonic() value
    budget: float  # seconds it was given (for messages)

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, seconds)

    def remaining(self) -> float:
        return max(0.0, self.expires - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.expires

    def cap(self, seconds: float) -> float:
        """`seconds`, or what is left of the deadline if that is less."""
        return min(seconds, self.remaining())

    def sooner(self, seconds: float) -> Deadline:
        """This deadline or one `seconds` from now, whichever comes first (a sub-budget, e.g. for work under a lease)."""
        other = Deadline.after(seconds)
        return other if other.expires < self.expires else self

    def check(self, what: str) -> None:
        """Raise DeadlineExceeded when less than MIN_ATTEMPT_SECONDS is left for `what`."""
        if self.expires - time.monotonic() < MIN_ATTEMPT_SECONDS:
            raise DeadlineExceeded(f"the invocation's {self.budget:g} s deadline leaves no time for {what}")

    @contextmanager
    def applied(self) -> Iterator[Deadline]:
        token = _current.set(self)
        try:
            yield self
        finally:
            _current.reset(token)


_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("autopilot_deadline", default=None)


def current() -> Deadline | None:
    """The deadline applied on this thread (None: no deadline, only the clients' own timeouts and retry totals)."""
    return _current.get()


def _deadline_of(options: dict[str, Any]) -> Deadline | None:
    explicit = options.pop("deadline", None)
    return explicit if isinstance(explicit, Deadline) else current()


class DeadlineRetryPolicy(RetryPolicy):
    """azure-core's RetryPolicy (Retry-After honoured, backoff, retry total) bounded in time:

    - a `Retry-After` longer than `retry_after_max` is not waited for: the answer (429/503) goes back to the caller, who
      reports a transient failure (Event Grid redelivers; the audit reports the pool busy);
    - no wait, and no attempt, goes past the deadline (the request option `deadline=`, else `current()`): the retry's
      overall timeout is what is left of it, and each attempt's connect and read timeouts are capped to that.
    """

    def __init__(self, *, retry_after_max: float = DEFAULT_RETRY_AFTER_MAX, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.retry_after_max = retry_after_max

    def configure_retries(self, options: dict[str, Any]) -> dict[str, Any]:
        deadline = _deadline_of(options)
        settings = super().configure_retries(options)
        settings["deadline"] = deadline
        if deadline is not None:
            settings["timeout"] = min(settings["timeout"], deadline.remaining())
        return settings

    def _wait_for(self, settings: dict[str, Any], response: PipelineResponse[Any, Any] | None) -> float:
        retry_after = self.get_retry_after(response) if response is not None else None
        return retry_after if retry_after else self.get_backoff_time(settings)

    def _fits(self, settings: dict[str, Any], wait: float) -> bool:
        deadline: Deadline | None = settings.get("deadline")
        return deadline is None or wait + MIN_ATTEMPT_SECONDS <= deadline.remaining()

    def is_retry(self, settings: dict[str, Any], response: PipelineResponse[Any, Any]) -> bool:
        if not super().is_retry(settings, response):
            return False
        retry_after = self.get_retry_after(response)
        if retry_after is not None and retry_after > self.retry_after_max:
            return False  # a day's Retry-After: give the answer back now, a later delivery or run tries again
        return self._fits(settings, self._wait_for(settings, response))

    def sleep(self, settings: dict[str, Any], transport: HttpTransport[Any, Any],
              response: PipelineResponse[Any, Any] | None = None) -> None:
        wait = min(self._wait_for(settings, response), self.retry_after_max)
        deadline: Deadline | None = settings.get("deadline")
        if deadline is not None:
            wait = deadline.cap(wait)
        if wait > 0:
            transport.sleep(wait)

    def _configure_timeout(self, request: PipelineRequest[Any], absolute_timeout: float, is_response_error: bool) -> None:
        super()._configure_timeout(request, absolute_timeout, is_response_error)
        # azure-core caps only the connect timeout to what is left; the read timeout too, or one slow answer outlives it
        config = getattr(request.context.transport, "connection_config", None)
        read_timeout = request.context.options.get("read_timeout") or getattr(config, "read_timeout", None)
        if isinstance(read_timeout, int | float) and absolute_timeout < read_timeout:
            request.context.options["read_timeout"] = absolute_timeout


def deadline_polling_interval(interval: float, retry_after_max: float = DEFAULT_RETRY_AFTER_MAX) -> float:
    """An LRO poll delay bounded by `retry_after_max` and the current deadline (for a custom polling method's delay)."""
    delay = min(interval, retry_after_max)
    deadline = current()
    return deadline.cap(delay) if deadline is not None else delay
