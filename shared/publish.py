"""Outcome events: CloudEvents 1.0 to the optional Event Grid custom topic (AUTOPILOT_TOPIC_ENDPOINT), key or managed identity."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .settings import Env, SettingsError

log = logging.getLogger("autopilot.publish")

EVENT_SOURCE = "/autopilot/artifact-streaming"  # CloudEvent `source` of every outcome event
MAX_BATCH_BYTES = 900_000  # under Event Grid's 1 MB per publish request, leaving room for the envelope


@dataclass(frozen=True)
class TopicSettings:
    """Where outcome events go: an Event Grid custom topic endpoint and, optionally, its access key."""

    endpoint: str
    key: str | None = None  # None: authenticate with the app's managed identity (Event Grid Data Sender role)

    @classmethod
    def from_env(cls, env: Env | None = None) -> TopicSettings | None:
        env = env or Env()
        endpoint = env.str("AUTOPILOT_TOPIC_ENDPOINT")
        key = env.str("AUTOPILOT_TOPIC_KEY")
        if endpoint is None:
            if key is not None:
                raise SettingsError("AUTOPILOT_TOPIC_KEY", "is set but AUTOPILOT_TOPIC_ENDPOINT is not; set both or neither")
            return None
        if not endpoint.startswith("https://"):
            raise SettingsError(
                "AUTOPILOT_TOPIC_ENDPOINT",
                f"{endpoint!r} must be the topic's https:// endpoint (e.g. https://mytopic.eastus-1.eventgrid.azure.net/api/events)",
            )
        return cls(endpoint=endpoint, key=key)


@dataclass(frozen=True)
class OutgoingEvent:
    event_type: str
    subject: str
    data: dict[str, Any]


class OutcomePublisher:
    """Publishes outcome CloudEvents to one custom topic. Build it with `from_env()`, which returns None when no topic is set.

    Thread-safe: the underlying client is created lazily once and shared by every caller.
    """

    def __init__(self, settings: TopicSettings) -> None:
        self.settings = settings
        self._client: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, env: Env | None = None) -> OutcomePublisher | None:
        settings = TopicSettings.from_env(env)
        return cls(settings) if settings else None

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                # azure-eventgrid 4.22's EventGridPublisherClient drops every keyword argument (transport, timeouts,
                # retries) when it wraps the basic-topic client; the wrapped client takes them, so it is built directly.
                from azure.eventgrid._legacy import EventGridPublisherClient

                if self.settings.key:
                    from azure.core.credentials import AzureKeyCredential

                    credential: Any = AzureKeyCredential(self.settings.key)
                else:
                    from .azure_clients import credential as process_credential

                    credential = process_credential()
                from .azure_clients import TOPIC_PROFILE, client_kwargs

                # explicit timeouts, no retry (its RetryPolicy would sleep any Retry-After): an unresponsive topic costs
                # seconds, never the push that already finished; a lost notification is logged (push.publish_failed)
                self._client = EventGridPublisherClient(self.settings.endpoint, credential, **client_kwargs(TOPIC_PROFILE))
            return self._client

    def publish(self, event_type: str, subject: str, data: dict[str, Any]) -> None:
        """Send one CloudEvent. Raises azure.core exceptions on failure (callers decide whether that is fatal)."""
        self.publish_many([OutgoingEvent(event_type, subject, data)])

    def publish_many(self, events: Iterable[OutgoingEvent | tuple[str, str, dict[str, Any]]]) -> int:
        """Send several CloudEvents in one request; items are OutgoingEvent or (event_type, subject, data). Returns the count."""
        batches: list[list[Any]] = [[]]
        size = 0
        now = datetime.now(UTC).isoformat()
        for item in events:
            ev = item if isinstance(item, OutgoingEvent) else OutgoingEvent(*item)
            # The SDK's documented dict form of a CloudEvent (sent as is): the model objects cost ~1 ms each to serialize.
            cloud_event = {"specversion": "1.0", "id": str(uuid.uuid4()), "source": EVENT_SOURCE, "type": ev.event_type,
                           "subject": ev.subject, "time": now, "datacontenttype": "application/json", "data": ev.data}
            approx = len(json.dumps(ev.data, default=str)) + len(ev.subject) + len(ev.event_type) + 200
            if batches[-1] and size + approx > MAX_BATCH_BYTES:  # Event Grid takes at most 1 MB per publish request
                batches.append([])
                size = 0
            batches[-1].append(cloud_event)
            size += approx
        sent = 0
        for batch in batches:
            if batch:
                self._get_client().send(batch)
                sent += len(batch)
        return sent
