"""The push-path domain service: one ImagePushed event (or one operator request) → one Outcome, the cheapest way, exactly once."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import AzureError

from ..acr import AcrClient, AcrError, Operation, TokenCache, client_for
from ..acr.listing import ManifestAttributes
from ..deadline import Deadline
from ..locks import KeyLock, LockBusy
from ..logs import log_event
from ..mediatypes import STREAMING_ARTIFACT_TYPE
from ..publish import OutcomePublisher
from ..settings import Env
from . import outcomes as o
from .checks import AUTHENTICATION, ImageVerdict, RegistryChecker, check_manifest, check_platform
from .events import ImagePushed, RegistryRef, Rejection, parse_event
from .outcomes import Outcome, TransientError
from .settings import PUBLISH_SECONDS, PushSettings

log = logging.getLogger("autopilot.push")

PERMANENT_CONVERSION_FAILURES = frozenset({
    "UNSUPPORTED_PLATFORM", "NO_SUPPORTED_PLATFORM_FOUND", "UNSUPPORTED_MEDIATYPE", "UNSUPPORTED_ARTIFACT_TYPE", "IMAGE_NOT_RUNNABLE",
})


@dataclass(frozen=True)
class ImageTarget:
    """What to make streamable: an image in a registry, by digest (and the tag that brought us here, if any)."""

    registry: RegistryRef
    repository: str
    digest: str | None  # None: resolve `tag` first (operator CLI)
    tag: str | None = None
    login_server: str | None = None
    pushed_at: datetime | None = None
    event_id: str | None = None
    fresh_push: bool = False  # from an ImagePushed event (ACR's auto-conversion applies to new pushes only)

    @classmethod
    def from_event(cls, event: ImagePushed) -> ImageTarget:
        return cls(event.registry, event.repository, event.digest, event.tag, event.login_server, event.pushed_at,
                   event.event_id, fresh_push=True)


class PushService:
    """Build once per instance (`PushService.from_env()`), share across invocations; every method is thread-safe.

    The token cache and publisher are injectable so tests can run several "instances" in one process (separate caches).
    """

    def __init__(self, settings: PushSettings, *, publisher: OutcomePublisher | None = None,
                 token_cache: TokenCache | None = None) -> None:
        self.settings = settings
        self.registries = RegistryChecker(settings.azure, settings.registry_cache_seconds)
        self._locks: KeyLock | None = None
        self._locks_guard = threading.Lock()
        self.publisher = publisher
        self.token_cache = token_cache
        self._repo_settings: dict[tuple[str, str], tuple[float, bool]] = {}  # (login server, repo) -> (expires, auto-converts)
        self._repo_guard = threading.Lock()

    @classmethod
    def from_env(cls, env: Env | None = None, **kwargs: Any) -> PushService:
        settings = PushSettings.from_env(env)
        kwargs.setdefault("publisher", OutcomePublisher(settings.topic) if settings.topic else None)
        return cls(settings, **kwargs)

    # ------------------------------------------------------------------ collaborators
    def _aad_token(self) -> str:
        from ..azure_clients import credential

        return credential().get_token(f"{self.settings.azure.acr_audience}/.default").token

    @property
    def locks(self) -> KeyLock:
        with self._locks_guard:
            if self._locks is None:
                from ..locks import BlobLeaseLock
                from ..storage import blob_service_client

                self._locks = BlobLeaseLock(blob_service_client(), self.settings.lock_container, self.settings.lock_seconds)
            return self._locks

    def acr(self, login_server: str) -> AcrClient:
        return client_for(login_server, self._aad_token, token_cache=self.token_cache, timeout=self.settings.request_timeout_seconds,
                          retry_total=self.settings.http_retries)

    # ------------------------------------------------------------------ entry points
    def handle_event(self, raw: Any, *, announce: bool = True) -> Outcome:
        """One delivered event → one Outcome (logged, published). Raises TransientError when a redelivery may succeed.

        `announce=False` (callers that report in aggregate: the sweep's dead letters) skips the log line and outcome event."""
        started = time.monotonic()
        parsed = parse_event(raw)
        if isinstance(parsed, Rejection):
            outcome = o.skipped(parsed.reason, parsed.detail, event_id=parsed.event_id, registry=parsed.registry,
                                repository=parsed.repository, tag=parsed.tag, digest=parsed.digest)
        elif not self.settings.registries.may_allow(parsed.registry):  # by resource ID or name; login servers after ARM answers
            outcome = o.skipped(o.R_REGISTRY_NOT_ALLOWED, f"registry {parsed.registry.name} is not in AUTOPILOT_PUSH_REGISTRIES",
                                **self._ids(ImageTarget.from_event(parsed)))
        elif (why := self.settings.filters.decide(parsed.repository, parsed.tag)) is not None:
            outcome = o.skipped(o.R_FILTERED, why, **self._ids(ImageTarget.from_event(parsed)))
        else:
            return self.stream(ImageTarget.from_event(parsed), started=started, announce=announce)
        return self._finish(outcome, started, announce)

    def stream(self, target: ImageTarget, wait_seconds: float | None = None, report: bool | None = None,
               started: float | None = None, announce: bool = True) -> Outcome:
        """Make one image streamable (the event path, the operator CLI, the sweep). Raises TransientError for retryable failures.

        The one decision-and-creation entry point: the sweep calls it per digest with `announce=False` (no per-image log line
        or outcome event; it reports in aggregate) and the same exactly-once lease."""
        started = time.monotonic() if started is None else started
        report = self.settings.report_only if report is None else report
        wait = self.settings.wait_seconds if wait_seconds is None else wait_seconds
        budget = self.settings.deadline_seconds + wait  # the function's wait is at most 540 s: inside functionTimeout
        deadline = Deadline(started + budget, budget)  # every request, retry, lease wait and poll below ends by then
        try:
            with deadline.applied():
                outcome = self._stream(target, wait, report)
        except LockBusy as exc:
            log_event(log, "push.retry", level=logging.WARNING, code="LOCK_BUSY", detail=str(exc), **self._ids(target))
            raise TransientError(str(exc), code="LOCK_BUSY") from None
        except TransientError as exc:
            log_event(log, "push.retry", level=logging.WARNING, code=exc.code, detail=str(exc),
                      duration_ms=round((time.monotonic() - started) * 1000, 1), **self._ids(target))
            raise
        except AcrError as exc:
            if exc.transient:
                log_event(log, "push.retry", level=logging.WARNING, code=exc.code or exc.status, detail=str(exc),
                          duration_ms=round((time.monotonic() - started) * 1000, 1), **self._ids(target))
                raise TransientError(str(exc), code=str(exc.code or exc.status or "TRANSIENT")) from None
            outcome = o.failed(exc.code or f"HTTP_{exc.status}", str(exc), **self._ids(target))
        except (AzureError, OSError) as exc:  # the lock's storage account, ARM transport: retry later, say what failed
            code = type(exc).__name__
            log_event(log, "push.retry", level=logging.WARNING, code=code, detail=str(exc)[:300],
                      duration_ms=round((time.monotonic() - started) * 1000, 1), **self._ids(target))
            raise TransientError(f"{code}: {str(exc)[:300]}", code=code) from None
        return self._finish(outcome.with_(mode="report" if report else "enforce"), started, announce)

    # ------------------------------------------------------------------ the decision
    @staticmethod
    def _ids(target: ImageTarget) -> dict[str, Any]:
        return {"registry": target.registry.name, "repository": target.repository, "tag": target.tag, "digest": target.digest,
                "event_id": target.event_id}

    def _fresh(self, target: ImageTarget) -> bool:
        """Whether the push is recent enough that 'not found' may only be replication lag."""
        if target.pushed_at is None:
            return True
        age = time.time() - target.pushed_at.astimezone(UTC).timestamp()
        return age < self.settings.not_found_window_seconds

    def _not_found(self, target: ImageTarget, what: str) -> Outcome:
        if self._fresh(target):
            raise TransientError(f"{what} not found shortly after the push (replication lag?); retry later", code="RESOURCE_NOT_FOUND")
        return o.skipped(o.R_NOT_FOUND, f"{what} no longer exists in the registry (deleted after the push?)", **self._ids(target))

    def _stream(self, target: ImageTarget, wait_seconds: float, report: bool) -> Outcome:
        info = self.registries.info(target.registry)
        if target.fresh_push and not self.settings.registries.allows(target.registry, info.login_server):
            # the one allow-list decision by login server: ARM's, never the event's request.host
            return o.skipped(o.R_REGISTRY_NOT_ALLOWED, f"registry {target.registry.name} ({info.login_server}) is not in "
                             "AUTOPILOT_PUSH_REGISTRIES", **self._ids(target))
        if info.error_code == AUTHENTICATION:
            # Our credential got no token (identity endpoint down, role or client ID misconfigured): nothing is known about the
            # image, so let Event Grid redeliver and finally dead-letter rather than acknowledge and lose the push.
            raise TransientError(info.error_detail or "authentication failed", code=AUTHENTICATION)
        if info.error_code:
            return o.failed(info.error_code, info.error_detail or "ARM refused the registry read", **self._ids(target))
        if (why := info.cannot_stream) is not None:
            return o.skipped(o.R_REGISTRY_INELIGIBLE, why, **self._ids(target))
        # The identity's tokens go only to the login server ARM names for the registry: never the event's request.host.
        login_server = info.login_server
        if not login_server:
            raise TransientError(f"ARM's answer for registry {target.registry.name} has no loginServer; the event's host "
                                 f"({target.login_server or 'none'}) is not trusted with a token; retry later", code="NO_LOGIN_SERVER")
        if target.login_server and target.login_server != login_server:
            log_event(log, "push.login_server_mismatch", level=logging.WARNING, event_host=target.login_server,
                      arm_login_server=login_server, registry=target.registry.name)
        acr = self.acr(login_server)
        repo = target.repository
        ids = self._ids(target)

        # Cheapest exit first: an image (or index) that already streams costs one request. ACR attaches the streaming artifact
        # to the digest the conversion was asked for, an index included (docs/push-path.md: inferred from a capture).
        digest = target.digest
        if digest is not None and self._streams(acr, target, digest):
            return Outcome(o.ALREADY_STREAMING, detail="a streaming artifact refers to this digest", **ids)

        try:
            manifest = acr.manifest(repo, digest or target.tag or "")
        except AcrError as exc:
            if exc.status == 404:
                return self._not_found(target, f"manifest {repo}@{digest or target.tag}")
            raise
        if digest is None:  # the operator CLI by tag: the tag's digest is known now
            digest = manifest.digest
            target = ImageTarget(target.registry, repo, digest, target.tag, login_server, target.pushed_at, target.event_id,
                                 target.fresh_push)
            ids = self._ids(target)
            if self._streams(acr, target, digest):
                return Outcome(o.ALREADY_STREAMING, detail="a streaming artifact refers to this digest", **ids)
        verdict = check_manifest(manifest, self.settings.max_image_bytes)
        if not verdict.ok:
            return o.skipped(verdict.reason or "unsupported", verdict.detail or "", code=verdict.code, **ids)
        if not verdict.is_index:
            try:
                platform = self._platform(acr, repo, digest, verdict)
            except AcrError as exc:
                if exc.status == 404:
                    return self._not_found(target, f"manifest attributes or config blob of {repo}@{digest}")
                raise
            verdict = check_platform(*platform)
            if not verdict.ok:
                return o.skipped(verdict.reason or "unsupported", verdict.detail or "", code=verdict.code, **ids)

        # ACR converts new pushes to a repository with convertPushedImages itself, possibly a moment after the push: a POST of
        # ours could start a second conversion. Leave those to ACR (the setting is cached per repository). Existing images are
        # never auto-converted, so the operator CLI still converts them.
        if target.fresh_push and self._auto_converts(acr, repo):
            return o.skipped(o.R_AUTO_CONVERSION, "the repository converts pushed images itself (convertPushedImages=true); "
                             "ACR creates the streaming artifact", **ids)

        if report:
            existing = self._latest_operation(acr, repo, digest)
            if existing is not None and existing.in_flight:
                return Outcome(o.IN_PROGRESS, operation_id=existing.id, mode="report",
                               detail=f"report mode: conversion {existing.id} is already {existing.status}", **ids)
            return o.skipped(o.R_REPORT_MODE, "report mode: would create the streaming artifact (AUTOPILOT_PUSH_MODE=report)",
                             mode="report", **ids)

        # Exactly once across instances: serialise on (registry, repository, digest), then re-check under the lock.
        with self.locks.hold(f"{target.registry.name}/{repo}/{digest}") as held:
            existing = self._latest_operation(acr, repo, digest)
            decision = self._reuse(existing, target)
            if decision is None:
                held.ensure()  # the lease is renewed while held; refuse to POST if it may have lapsed meanwhile
                op = acr.create_streaming(repo, digest)
        if decision is not None:
            if wait_seconds > 0 and existing is not None and existing.in_flight and decision.outcome == o.IN_PROGRESS:
                # Wait mode keeps the event unacknowledged until the conversion ends, whoever started it: this delivery may
                # be Event Grid's redelivery of one whose invocation is still waiting (a delivery times out after 30 s, a
                # transient error while polling) or another tag of the digest. Acknowledging it now would leave nobody to
                # retry the conversion if it then ends UNKNOWN_ERROR (found by bench/push_soak.py).
                return self._wait(acr, decision, existing, wait_seconds, target,
                                  succeeded=Outcome(o.ALREADY_STREAMING, operation_id=existing.id, **ids))
            return decision
        created = Outcome(o.CREATED, operation_id=op.id, detail=f"conversion {op.id} started ({op.status})", **ids)
        return self._wait(acr, created, op, wait_seconds, target) if wait_seconds > 0 else created

    @staticmethod
    def _platform(acr: AcrClient, repository: str, digest: str, verdict: ImageVerdict) -> tuple[Any, Any]:
        """(os, architecture) of a single-platform image: ACR's manifest attributes carry them (one registry request, where
        the config blob costs the registry's 307 plus the storage read); only when they do not is the config read."""
        attributes = ManifestAttributes.from_body(acr.manifest_attributes(repository, digest))
        if attributes.os and attributes.architecture:
            return attributes.os, attributes.architecture
        config = acr.blob_json(repository, verdict.config_digest or "", size=verdict.config_size)
        return config.get("os"), config.get("architecture")

    def _auto_converts(self, acr: AcrClient, repository: str) -> bool:
        key = (acr.login_server, repository)
        now = time.monotonic()
        with self._repo_guard:
            hit = self._repo_settings.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            value = acr.auto_conversion(repository)
        except AcrError as exc:
            if exc.status != 404:
                raise
            value = False
        with self._repo_guard:
            self._repo_settings[key] = (now + self.settings.registry_cache_seconds, value)
        return value

    def _streams(self, acr: AcrClient, target: ImageTarget, digest: str) -> bool:
        try:
            return bool(acr.referrers(target.repository, digest, STREAMING_ARTIFACT_TYPE))
        except AcrError as exc:
            if exc.status == 404:
                return False  # unknown repository/manifest: the manifest read decides (replication lag or deleted)
            raise

    @staticmethod
    def _latest_operation(acr: AcrClient, repository: str, digest: str) -> Operation | None:
        """The digest's latest conversion; for a failed one, with its error code (`/_streaming/{digest}` shows only id and
        status, the operation itself says why): a permanent refusal is then reported, not retried every day."""
        existing = acr.streaming_operation(repository, digest)
        if existing is not None and existing.status == "Failed" and existing.error_code is None and existing.id:
            existing = acr.operation(repository, existing.id)
        return existing

    def _reuse(self, existing: Operation | None, target: ImageTarget) -> Outcome | None:
        """What an existing conversion of the digest means: reuse it, trust it, give up, or (None) start a new one."""
        if existing is None:
            return None
        ids = self._ids(target)
        if existing.in_flight:
            return Outcome(o.IN_PROGRESS, operation_id=existing.id, detail=f"conversion {existing.id} is {existing.status}", **ids)
        if existing.status == "Succeeded":
            return Outcome(o.ALREADY_STREAMING, operation_id=existing.id, detail=f"conversion {existing.id} succeeded", **ids)
        if existing.status == "Failed" and existing.error_code in PERMANENT_CONVERSION_FAILURES:
            return o.failed(existing.error_code or "CONVERSION_FAILED", f"ACR refused to convert: {existing.details or existing.status}",
                            operation_id=existing.id, **ids)
        return None  # Canceled, UNKNOWN_ERROR, RESOURCE_NOT_FOUND: a new attempt may succeed

    def _wait(self, acr: AcrClient, created: Outcome, op: Operation, budget: float, target: ImageTarget,
              succeeded: Outcome | None = None) -> Outcome:
        """Poll `op` up to `budget` s: `succeeded` (default `created`) when it succeeds, TransientError when a new attempt may
        succeed, failed() when ACR refused, `created` still running when the budget ends."""
        deadline = time.monotonic() + budget
        current = op
        delay = 0.25
        while time.monotonic() < deadline:
            time.sleep(min(delay, max(0.05, deadline - time.monotonic())))
            if time.monotonic() >= deadline:
                break
            delay = min(delay * 1.5, 5.0)
            current = acr.operation(target.repository, op.id)
            if current.status == "Succeeded":
                return (succeeded or created).with_(detail=f"conversion {op.id} succeeded")
            if current.status in ("Failed", "Canceled"):
                code = current.error_code or current.status.upper()
                if code == "UNKNOWN_ERROR" or (code == "RESOURCE_NOT_FOUND" and self._fresh(target)) or code == "CANCELED":
                    raise TransientError(f"conversion {op.id} ended {current.status} ({code}); a new attempt may succeed", code=code)
                return o.failed(code, f"conversion {op.id} failed: {current.details or code}", operation_id=op.id,
                                **self._ids(target))
        return created.with_(detail=f"conversion {op.id} still {current.status} after waiting {budget:g} s")

    # ------------------------------------------------------------------ finishing
    def _finish(self, outcome: Outcome, started: float, announce: bool = True) -> Outcome:
        outcome = outcome.with_(duration_ms=round((time.monotonic() - started) * 1000, 1),
                                mode=outcome.mode or self.settings.mode)
        if not announce:
            return outcome
        outcome.log(log)
        if self.publisher is not None:
            try:
                with Deadline.after(PUBLISH_SECONDS).applied():  # its own small budget: the work is done either way
                    self.publisher.publish(outcome.event_type, outcome.subject, outcome.as_dict())
            except Exception as exc:  # a lost notification must not undo or repeat the work
                log_event(log, "push.publish_failed", level=logging.WARNING, error=type(exc).__name__, outcome=outcome.outcome)
        return outcome

    # ------------------------------------------------------------------ operator helpers
    def list_referrers(self, target: ImageTarget) -> list[dict[str, Any]]:
        """Streaming referrers of an image or index (ACR attaches them to the pushed digest), for the CLI and the demo.

        Raises AcrError when ARM refused the registry read (with ARM's code and what to do).
        """
        info = self.registries.info(target.registry)
        if info.error_code:
            raise AcrError(info.error_detail or "ARM refused the registry read", code=info.error_code)
        login_server = info.login_server  # ARM's only: a token never goes to a host ARM does not name
        if not login_server:
            raise AcrError(f"ARM's answer for registry {target.registry.name} has no loginServer; retry later", code="NO_LOGIN_SERVER",
                           transient=True)
        acr = self.acr(login_server)
        digest = target.digest or acr.manifest(target.repository, target.tag or "").digest
        return acr.referrers(target.repository, digest, STREAMING_ARTIFACT_TYPE)
