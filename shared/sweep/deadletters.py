"""Event Grid dead letters: read the container's blobs, replay each push event through the push path, move handled blobs aside."""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from ..push.outcomes import TransientError
from ..push.service import PushService
from .model import Tally
from .worker import count

log = logging.getLogger("autopilot.sweep.deadletters")
HANDLED = "handled/"  # Event Grid writes upper-case {TOPIC}/{SUBSCRIPTION}/… names: these prefixes never collide
MALFORMED = "malformed/"
MAX_BLOB_BYTES = 4 * 1024 * 1024  # one dead-letter blob holds a few events of ~1 KB; anything far larger is not one


@dataclass
class DeadLetterResult:
    tallies: dict[str, Tally] = field(default_factory=dict)
    blobs_seen: int = 0
    blobs_left: int = 0  # kept for the next run (a transient failure)

    def tally(self, registry: str) -> Tally:
        return self.tallies.setdefault(registry, Tally(registry=registry))


def _events(raw: bytes) -> list[dict[str, Any]]:
    """The events of one dead-letter blob: a JSON array of Event Grid (or CloudEvents) events with delivery facts."""
    body = json.loads(raw)
    if isinstance(body, dict):
        body = [body]
    if not isinstance(body, list) or not body or not all(isinstance(e, dict) for e in body):
        raise ValueError("expected a JSON array of events, as Event Grid dead-letters them")
    return body


class DeadLetters:
    """The dead-letter container (AUTOPILOT_DEADLETTER_CONTAINER) of the app's storage account."""

    def __init__(self, service: Any, container: str, push: PushService) -> None:
        self.container = service.get_container_client(container)
        self.name = container
        self.push = push

    def _pending(self) -> list[str]:
        try:
            return [b.name for b in self.container.list_blobs()
                    if not b.name.startswith((HANDLED, MALFORMED)) and b.name.endswith(".json")]
        except ResourceNotFoundError:
            return []  # not created yet (the deploy side creates it): nothing was dead-lettered

    def _move(self, name: str, raw: bytes | None, prefix: str) -> None:
        """Set a blob aside under `prefix` (a server-side copy when we did not read it: an oversized one)."""
        with contextlib.suppress(ResourceExistsError):
            if raw is None:
                self.container.get_blob_client(prefix + name).start_copy_from_url(self.container.get_blob_client(name).url,
                                                                                  requires_sync=True)
            else:
                self.container.upload_blob(prefix + name, raw, overwrite=False)
        with contextlib.suppress(ResourceNotFoundError):
            self.container.delete_blob(name)

    def run(self, report_only: bool) -> DeadLetterResult:
        """Handle every dead letter (report mode: count them, touch nothing). Transient failures keep the blob for next run."""
        result = DeadLetterResult()
        for name in self._pending():
            result.blobs_seen += 1
            try:
                # The first GET asks for at most the cap + 1 byte, so an oversized blob is never read in whole.
                downloader = self.container.download_blob(name, offset=0, length=MAX_BLOB_BYTES + 1)
                size = downloader.properties.size or 0
                raw = b"" if size > MAX_BLOB_BYTES else downloader.readall()
            except ResourceNotFoundError:
                continue  # another worker handled it
            try:
                if not raw:
                    raise ValueError(f"{size} bytes is not a dead-letter blob (empty, or over {MAX_BLOB_BYTES})")
                events = _events(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                tally = result.tally("(dead letters)")
                tally.dead_letters_malformed += 1
                tally.fail(f"{self.name}/{name}", "MALFORMED_DEAD_LETTER", f"{exc}; moved to {self.name}/{MALFORMED}{name}")
                if not report_only:
                    self._move(name, raw or None, MALFORMED)
                continue
            if report_only:
                result.tally("(dead letters)").skipped["dead-letter-report-mode"] += len(events)
                continue
            if self._replay(name, events, result):
                self._move(name, raw, HANDLED)
            else:
                result.blobs_left += 1
        return result

    def _replay(self, name: str, events: list[dict[str, Any]], result: DeadLetterResult) -> bool:
        """Each event through the push path's own handler; False when one failed transiently (keep the blob)."""
        done = True
        for event in events:
            try:
                outcome = self.push.handle_event(event, announce=False)
            except TransientError as exc:
                result.tally("(dead letters)").retry_next_run[exc.code] += 1
                done = False
                continue
            tally = result.tally(outcome.registry or "(dead letters)")
            tally.dead_letters_handled += 1
            count(tally, outcome, f"{outcome.repository}@{outcome.digest} (dead letter {name})")
            log.info("dead letter %s: %s %s", name, outcome.outcome, outcome.subject)
        return done
