"""Event Grid: the registry system topic (webhook delivery with handshake, retries, dead-lettering) and custom topics."""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import aiohttp
from aiohttp import web

from ..model import EventSubscription, Registry
from ..scenario import ScenarioError, add_event_subscription
from ..tokens import bearer
from ..web import Context, bound, json_response, read_json
from .identity import audience_ok

# ------------------------------------------------------------------------------------------------ constants (wire facts)

EVENT_TYPE_PREFIX = "Microsoft.ContainerRegistry."
ACTIONS = {"ImagePushed": ("push", "PUT"), "ImageDeleted": ("delete", "DELETE"),
           "ChartPushed": ("chart_push", "PUT"), "ChartDeleted": ("chart_delete", "DELETE")}
DATA_VERSION = "2.0"  # current ACR payloads (with data.location); older ones said 1.0
METADATA_VERSION = "1"
VALIDATION_EVENT_TYPE = "Microsoft.EventGrid.SubscriptionValidationEvent"
WEBHOOK_ORIGIN = "eventgrid.azure.net"  # what Event Grid sends as WebHook-Request-Origin
EVENTGRID_AUDIENCE = "https://eventgrid.azure.net"
PUBLISH_API_VERSION = "2018-01-01"
MAX_PUBLISH_BYTES = 1024 * 1024  # 1 MB per publish request (and per event)
# The documented retry schedule (after the first attempt); scaled by retry_base_seconds / 10 so tests keep its shape.
RETRY_SCHEDULE_SECONDS = (10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600)
DELIVERY_TIMEOUT_SECONDS = 30.0  # Event Grid waits 30 s for a webhook's answer
# Webhook answers Event Grid does not retry: dead-lettered at once (or dropped without dead-lettering).
NON_RETRIED_STATUSES = {400, 401, 403, 413}  # webhooks
NON_RETRIED_STATUSES_AZURE_RESOURCES = {400, 403, 413}  # AzureFunction and other Azure resource endpoints
ENDPOINT_TYPES = ("WebHook", "AzureFunction")
OUTCOMES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 408: "TimedOut", 413: "PayloadTooLarge",
            503: "Busy"}
EVENTGRID_CONTENT_TYPE = "application/json; charset=utf-8"
CLOUDEVENT_CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"  # one event per request (no output batching)
CLOUDEVENT_BATCH_CONTENT_TYPE = "application/cloudevents-batch+json; charset=utf-8"
DEFAULT_TOPIC = "autopilot-outcomes"
TOPIC_SCHEMAS = ("EventGridSchema", "CloudEventSchemaV1_0")


def event_time(ts: float | None = None) -> str:
    """Event Grid's timestamp format: seven fractional digits and Z (e.g. 2021-09-08T06:37:45.6609948Z)."""
    ts = time.time() if ts is None else ts
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int((ts % 1) * 1e7):07d}Z"


def _report_suffix() -> str:
    return (f" Report '{uuid.uuid4()}:7:{time.strftime('%m/%d/%Y %I:%M:%S %p', time.gmtime())} (UTC)' to our forums for "
            "assistance or raise a support ticket.")


def eg_error(status: int, code: str, message: str, detail_code: str | None = None) -> web.Response:
    """Event Grid data-plane error envelope: {"error": {"code", "message", "details": [...]}}."""
    message = message + _report_suffix()
    err: dict[str, Any] = {"code": code, "message": message}
    if detail_code:
        err["details"] = [{"code": detail_code, "message": message}]
    return json_response(status, {"error": err})


# ------------------------------------------------------------------------------------------------ registry events


@dataclass
class SystemEvent:
    """One registry event, renderable in both delivery schemas (same id in both)."""

    id: str
    event_type: str  # full name, Microsoft.ContainerRegistry.ImagePushed
    topic: str
    subject: str
    time: str
    data: dict[str, Any]

    def eventgrid(self) -> dict[str, Any]:
        return {
            "id": self.id, "topic": self.topic, "subject": self.subject, "eventType": self.event_type,
            "data": self.data, "dataVersion": DATA_VERSION, "metadataVersion": METADATA_VERSION, "eventTime": self.time,
        }

    def cloudevent(self) -> dict[str, Any]:
        return {"source": self.topic, "subject": self.subject, "type": self.event_type, "time": self.time, "id": self.id,
                "data": self.data, "specversion": "1.0"}

    def render(self, schema: str) -> dict[str, Any]:
        return self.cloudevent() if schema == "CloudEventSchemaV1_0" else self.eventgrid()


def build_system_event(event_type: str, registry: Registry, emitted: dict[str, Any]) -> SystemEvent:
    """Turn what the data plane emitted (repository, digest, mediaType, size, length, tag?) into ACR's Event Grid event.

    Optional keys an emitter may add: useragent, request_id. A push or delete by digest has no tag: the subject is then
    the bare repository name and target carries no tag, as ACR sends it.
    """
    short = event_type.removeprefix(EVENT_TYPE_PREFIX)
    action, method = ACTIONS.get(short, (short.lower(), "PUT"))
    now = time.time()
    event_id = str(uuid.uuid4())
    target: dict[str, Any] = {"mediaType": emitted.get("mediaType")}
    for key in ("size", "digest", "length", "repository", "tag", "name", "version"):
        if emitted.get(key) is not None:
            target[key] = emitted[key]
    repository = emitted.get("repository", "")
    tag = emitted.get("tag")
    data: dict[str, Any] = {
        "id": event_id,
        "timestamp": event_time(now - 0.2),
        "action": action,
        "location": registry.location,
        "target": target,
    }
    if not short.startswith("Chart"):  # chart events carry no request object
        data["request"] = {
            "id": str(emitted.get("request_id") or uuid.uuid4()),
            "host": registry.login_server or f"{registry.name}.azurecr.io",
            "method": method,
            "useragent": emitted.get("useragent") or "docker/27.3.1 go/go1.22.7 git-commit/41ca978 kernel/6.8.0 os/linux arch/amd64",
        }
    subject = f"{repository}:{tag}" if tag else repository
    if short.startswith("Chart") and emitted.get("name"):
        subject = f"{emitted['name']}:{emitted.get('version', '')}"
    return SystemEvent(id=event_id, event_type=EVENT_TYPE_PREFIX + short, topic=registry.resource_id, subject=subject,
                       time=event_time(now), data=data)


# ------------------------------------------------------------------------------------------------ delivery records


@dataclass
class DeliveryAttempt:
    """One POST (or handshake) Event Grid made to a webhook."""

    event_id: str
    subscription: str
    attempt: int  # 1-based; the aeg-delivery-count header is attempt - 1
    status: int  # HTTP status; 0 when no answer (connection refused, reset, timeout)
    outcome: str  # Success | BadRequest | ... | GenericError | TimedOut | ValidationFailed
    time: float
    duplicate: bool = False  # the extra copy of an at-least-once duplicate delivery
    kind: str = "Notification"  # Notification | SubscriptionValidation | CloudEventsValidation
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Pending:
    event: SystemEvent
    sub: EventSubscription
    duplicate: bool = False
    attempts: int = 0
    published: float = field(default_factory=time.time)
    last_status: int = 0
    last_outcome: str = ""
    last_time: float = 0.0


@dataclass
class Topic:
    """A custom topic: its access key, input schema, and every event accepted."""

    name: str
    input_schema: str = "CloudEventSchemaV1_0"
    key: str = field(default_factory=lambda: base64.b64encode(secrets.token_bytes(32)).decode())
    events: list[dict[str, Any]] = field(default_factory=list)  # each: {"event", "auth": key|sas|token, "received": ts}

    @property
    def resource_id_suffix(self) -> str:
        return f"/providers/Microsoft.EventGrid/topics/{self.name}"


def check_subscription(sub: EventSubscription, where: str = "event subscription") -> None:
    """Reject what ARM would reject when the subscription is created (maxDeliveryAttempts 1-30, a webhook URL)."""
    if not 1 <= sub.max_delivery_attempts <= 30:
        raise ScenarioError(f"{where}.max_delivery_attempts: {sub.max_delivery_attempts} is outside 1-30 (Event Grid's limits)")
    if not sub.endpoint.startswith(("https://", "http://127.0.0.1", "http://localhost")):
        raise ScenarioError(f"{where}.endpoint: {sub.endpoint!r} must be an https:// URL (or http:// on 127.0.0.1 for local "
                            "receivers; real Event Grid accepts https only)")
    if sub.retry_base_seconds <= 0 or sub.retry_max_seconds <= 0:
        raise ScenarioError(f"{where}.retry_base_seconds/retry_max_seconds must be positive")
    if not 0.0 <= sub.duplicate_rate <= 1.0:
        raise ScenarioError(f"{where}.duplicate_rate must be between 0 and 1")
    if sub.endpoint_type not in ENDPOINT_TYPES:
        raise ScenarioError(f"{where}.endpoint_type: {sub.endpoint_type!r} is not one of {', '.join(ENDPOINT_TYPES)}")


class ValidationFailed(Exception):
    """The endpoint did not complete Event Grid's validation handshake."""


# ------------------------------------------------------------------------------------------------ the service


class EventGrid:
    """Routes registry events to webhook subscriptions and holds the custom topics. Lives on the emulator loop."""

    def __init__(self, ctx: Context, max_in_flight: int = 16) -> None:
        self.ctx = ctx
        self.world = ctx.world
        self.topics: dict[str, Topic] = {DEFAULT_TOPIC: Topic(DEFAULT_TOPIC)}
        self.attempts: list[DeliveryAttempt] = []
        self.dead_letters: list[dict[str, Any]] = []  # {"subscription", "path", "event"}
        self.dropped: list[dict[str, Any]] = []  # undeliverable without dead-lettering
        self.events: list[SystemEvent] = []  # every registry event published to the system topics
        self.max_in_flight = max_in_flight
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._sem: asyncio.Semaphore | None = None
        self._session: aiohttp.ClientSession | None = None
        self._validation_locks: dict[str, asyncio.Lock] = {}
        self._idle: asyncio.Event | None = None

    # -------------------------------------------------------------- intake
    def on_world_event(self, event_type: str, registry: Registry, data: dict[str, Any]) -> None:
        """World listener: called by the data plane (on the loop, or from another thread)."""
        event = build_system_event(event_type, registry, data)
        loop = self.ctx.loop
        if loop is None or not loop.is_running():
            with self._lock:
                self.events.append(event)  # before start: recorded, nothing to deliver to yet
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._route(event)
        else:
            loop.call_soon_threadsafe(self._route, event)

    def _route(self, event: SystemEvent) -> None:
        with self._lock:
            self.events.append(event)
        registry_id = event.topic.lower()
        for sub in list(self.world.event_subscriptions.values()):
            reg = self.world.registries.get(sub.registry)
            if reg is None or reg.resource_id.lower() != registry_id:
                continue
            if sub.included_event_types and event.event_type not in sub.included_event_types:
                continue
            self._spawn(_Pending(event=event, sub=sub))
            if sub.duplicate_rate and self._draw(f"dup|{sub.name}|{event.id}") < sub.duplicate_rate:
                self._spawn(_Pending(event=event, sub=sub, duplicate=True))

    def _draw(self, key: str) -> float:
        digest = hashlib.sha256(f"{self.world.seed}|{key}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    def _spawn(self, pending: _Pending) -> None:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.max_in_flight)
        if self._idle is None:
            self._idle = asyncio.Event()
        self._idle.clear()
        task = asyncio.get_running_loop().create_task(self._deliver(pending))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not self._tasks and self._idle is not None:
            self._idle.set()

    # -------------------------------------------------------------- delivery
    def retry_delay(self, sub: EventSubscription, attempt: int, event_id: str) -> float:
        """Delay before attempt `attempt + 1`: the documented schedule scaled to retry_base_seconds, ±10 % seeded jitter."""
        scale = sub.retry_base_seconds / RETRY_SCHEDULE_SECONDS[0]
        step = RETRY_SCHEDULE_SECONDS[min(attempt - 1, len(RETRY_SCHEDULE_SECONDS) - 1)]
        delay = min(step * scale, sub.retry_max_seconds)
        jitter = 0.9 + 0.2 * self._draw(f"jitter|{sub.name}|{event_id}|{attempt}")
        return delay * jitter

    def delivery_timeout(self, sub: EventSubscription) -> float:
        scale = sub.retry_base_seconds / RETRY_SCHEDULE_SECONDS[0]
        return max(2.0, min(DELIVERY_TIMEOUT_SECONDS, DELIVERY_TIMEOUT_SECONDS * scale))

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            ssl_ctx = self.ctx.extras.get("ssl_client_context")
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_ctx, limit=self.max_in_flight))
        return self._session

    async def _deliver(self, p: _Pending) -> None:
        sub = p.sub
        while True:
            if sub.name not in self.world.event_subscriptions:
                return  # subscription removed while the event waited: Event Grid drops it
            p.attempts += 1
            status, outcome, error = 0, "GenericError", ""
            assert self._sem is not None
            decision = self.ctx.faults.decide("eventgrid.delivery", "POST", f"/{sub.name}")
            if decision.latency_s:  # Event Grid itself slow to dispatch (only latency applies to this class)
                await asyncio.sleep(decision.latency_s)
            async with self._sem:
                try:
                    await self.ensure_validated(sub)
                    status, outcome, error = await self._post(p)
                except ValidationFailed as exc:
                    status, outcome, error = 0, "ValidationFailed", str(exc)
            p.last_status, p.last_outcome, p.last_time = status, outcome, time.time()
            self._record(DeliveryAttempt(event_id=p.event.id, subscription=sub.name, attempt=p.attempts, status=status,
                                         outcome=outcome, time=p.last_time, duplicate=p.duplicate, error=error))
            if outcome == "Success":
                return
            if status in (NON_RETRIED_STATUSES if sub.endpoint_type == "WebHook" else NON_RETRIED_STATUSES_AZURE_RESOURCES):
                self._undeliverable(p, f"UndeliverableDueToHttp{OUTCOMES[status]}")
                return
            if p.attempts >= sub.max_delivery_attempts:
                self._undeliverable(p, "MaxDeliveryAttemptsExceeded")
                return
            await asyncio.sleep(self.retry_delay(sub, p.attempts, p.event.id))

    async def _post(self, p: _Pending) -> tuple[int, str, str]:
        sub = p.sub
        cloud = sub.schema == "CloudEventSchemaV1_0"
        rendered = p.event.render(sub.schema)
        body = json.dumps(rendered if cloud else [rendered]).encode()
        headers = {
            "Content-Type": CLOUDEVENT_CONTENT_TYPE if cloud else EVENTGRID_CONTENT_TYPE,
            "aeg-event-type": "Notification",
            "aeg-subscription-name": sub.name.upper(),
            "aeg-delivery-count": str(p.attempts - 1),
            "aeg-metadata-version": METADATA_VERSION,
        }
        if not cloud:
            headers["aeg-data-version"] = DATA_VERSION
        try:
            async with self._client().post(sub.endpoint, data=body, headers=headers,
                                           timeout=aiohttp.ClientTimeout(total=self.delivery_timeout(sub))) as resp:
                await resp.read()
                status = resp.status
        except TimeoutError:
            return 0, "TimedOut", "no answer within the delivery timeout"
        except (aiohttp.ClientError, OSError) as exc:
            return 0, "GenericError", f"{type(exc).__name__}: {exc}"
        if 200 <= status < 300:
            return status, "Success", ""
        return status, OUTCOMES.get(status, "GenericError"), ""

    async def ensure_validated(self, sub: EventSubscription) -> None:
        """The handshake before the first delivery: SubscriptionValidation event (Event Grid schema) or OPTIONS (CloudEvents)."""
        if sub.validated or sub.endpoint_type == "AzureFunction":
            return  # an AzureFunction destination is an Azure resource Event Grid is authorised to call: no handshake
        lock = self._validation_locks.setdefault(sub.name, asyncio.Lock())
        async with lock:
            if sub.validated:
                return
            try:
                if sub.schema == "CloudEventSchemaV1_0":
                    await self._validate_cloudevents(sub)
                else:
                    await self._validate_eventgrid(sub)
            except ValidationFailed as exc:
                self._record(DeliveryAttempt(event_id="", subscription=sub.name, attempt=0, status=0, outcome="ValidationFailed",
                                             time=time.time(), kind="SubscriptionValidation", error=str(exc)))
                raise
            sub.validated = True

    async def _validate_eventgrid(self, sub: EventSubscription) -> None:
        reg = self.world.registries[sub.registry]
        code = str(uuid.uuid4()).upper()
        event = {
            "id": str(uuid.uuid4()),
            "topic": reg.resource_id,
            "subject": "",
            "data": {
                "validationCode": code,
                "validationUrl": (f"https://rp-{reg.location}.eventgrid.azure.net:553/eventsubscriptions/{sub.name}/validate"
                                  f"?id={code}&t={event_time()}&apiVersion=2025-02-15&token={secrets.token_urlsafe(16)}"),
            },
            "eventType": VALIDATION_EVENT_TYPE,
            "eventTime": event_time(),
            "metadataVersion": METADATA_VERSION,
            "dataVersion": "2",
        }
        headers = {"Content-Type": EVENTGRID_CONTENT_TYPE, "aeg-event-type": "SubscriptionValidation",
                   "aeg-subscription-name": sub.name.upper(), "aeg-delivery-count": "0",
                   "aeg-data-version": "2", "aeg-metadata-version": METADATA_VERSION}
        try:
            async with self._client().post(sub.endpoint, data=json.dumps([event]).encode(), headers=headers,
                                           timeout=aiohttp.ClientTimeout(total=self.delivery_timeout(sub))) as resp:
                raw = await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise ValidationFailed(f"Webhook validation handshake failed for {sub.endpoint}: {type(exc).__name__}: {exc}") from exc
        answer = None
        try:
            answer = json.loads(raw).get("validationResponse") if status == 200 else None
        except (ValueError, AttributeError):
            answer = None
        if status != 200 or str(answer) != code:
            raise ValidationFailed(
                f"Webhook validation handshake failed for {sub.endpoint}: http status {status}, expected 200 with "
                f'{{"validationResponse": "{code}"}}, got {raw[:200]!r}')

    async def _validate_cloudevents(self, sub: EventSubscription) -> None:
        headers = {"WebHook-Request-Origin": WEBHOOK_ORIGIN, "WebHook-Request-Rate": "120"}
        try:
            async with self._client().options(sub.endpoint, headers=headers,
                                              timeout=aiohttp.ClientTimeout(total=self.delivery_timeout(sub))) as resp:
                await resp.read()
                status = resp.status
                allowed = resp.headers.get("WebHook-Allowed-Origin", "")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise ValidationFailed(f"CloudEvents abuse-protection handshake failed for {sub.endpoint}: {exc}") from exc
        if status != 200 or allowed.strip() not in (WEBHOOK_ORIGIN, "*"):
            raise ValidationFailed(
                f"CloudEvents abuse-protection handshake failed for {sub.endpoint}: OPTIONS answered {status} with "
                f"WebHook-Allowed-Origin {allowed!r}; expected 200 and {WEBHOOK_ORIGIN!r} (or '*')")

    def _record(self, attempt: DeliveryAttempt) -> None:
        with self._lock:
            self.attempts.append(attempt)

    def _undeliverable(self, p: _Pending, reason: str) -> None:
        """Dead-letter as Event Grid writes it: a JSON array with the event plus delivery facts, one blob per event."""
        record = {
            **p.event.render(p.sub.schema),
            "deadLetterReason": reason,
            "deliveryAttempts": p.attempts,
            "lastDeliveryOutcome": p.last_outcome,
            "publishTime": event_time(p.published),
            "lastDeliveryAttemptTime": event_time(p.last_time),
            "lastHttpStatusCode": p.last_status,
        }
        if not p.sub.dead_letter:
            with self._lock:
                self.dropped.append({"subscription": p.sub.name, "event": record})
            return
        t = time.gmtime(p.last_time)
        folder = self.ctx.state_dir / "deadletter" / p.sub.name / time.strftime("%Y/%m/%d/%H", t)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{uuid.uuid4()}.json"
        path.write_text(json.dumps([record], indent=2))
        with self._lock:
            self.dead_letters.append({"subscription": p.sub.name, "path": str(path), "event": record})

    # -------------------------------------------------------------- control (loop side)
    async def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until nothing is queued, in flight or waiting to retry. True if idle within `timeout`."""
        await asyncio.sleep(0)  # let events emitted via call_soon_threadsafe get routed first
        if not self._tasks:
            return True
        assert self._idle is not None
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def wait_idle_blocking(self, timeout: float = 30.0) -> bool:
        """`wait_idle` from any thread other than the emulator loop (tests, the demo)."""
        assert self.ctx.loop is not None
        return asyncio.run_coroutine_threadsafe(self.wait_idle(timeout), self.ctx.loop).result(timeout + 5)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def add_subscription(self, raw: dict[str, Any]) -> EventSubscription:
        """Register a subscription at run time (no handshake here: it happens before its first delivery)."""
        sub = add_event_subscription(self.world, dict(raw), where="event subscription")
        try:
            check_subscription(sub)
        except ScenarioError:
            self.world.event_subscriptions.pop(sub.name, None)
            raise
        return sub

    def add_topic(self, name: str, input_schema: str = "CloudEventSchemaV1_0") -> Topic:
        if input_schema not in TOPIC_SCHEMAS:
            raise ValueError(f"input_schema must be one of {TOPIC_SCHEMAS}, got {input_schema!r}")
        if not name or not all(c.isalnum() or c == "-" for c in name) or not 3 <= len(name) <= 50:
            raise ValueError(f"topic name {name!r} must be 3-50 characters of letters, digits and '-'")
        topic = self.topics[name] = Topic(name, input_schema)
        return topic

    def topic_url(self, name: str) -> str:
        return f"{self.ctx.management_url}/topics/{name}/api/events"

    def delivery_attempts(self, subscription: str | None = None) -> list[DeliveryAttempt]:
        with self._lock:
            return [a for a in self.attempts if subscription is None or a.subscription == subscription]

    def topic_events(self, name: str = DEFAULT_TOPIC) -> list[dict[str, Any]]:
        with self._lock:
            return [e["event"] for e in self.topics[name].events]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    # -------------------------------------------------------------- custom topic publishing
    def check_publish(self, request: web.Request, topic: Topic, raw: bytes) -> web.Response | list[dict[str, Any]]:
        """Validate a publish as Event Grid does; returns the error response or the accepted events."""
        auth = self._authenticate(request, topic)
        if isinstance(auth, web.Response):
            return auth
        if request.query.get("api-version") is None:
            return eg_error(400, "BadRequest", "The request is missing the required 'api-version' query parameter.",
                            "MissingApiVersionParameter")
        if request.query.get("api-version") != PUBLISH_API_VERSION:
            return eg_error(400, "BadRequest", f"The api-version '{request.query.get('api-version')}' is invalid. "
                            f"The supported versions are '{PUBLISH_API_VERSION}'.", "InvalidApiVersionParameter")
        if len(raw) > MAX_PUBLISH_BYTES:
            return eg_error(413, "RequestEntityTooLarge", f"The maximum size ({MAX_PUBLISH_BYTES}) has been exceeded.")
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        cloud = topic.input_schema == "CloudEventSchemaV1_0"
        if cloud and content_type not in ("application/cloudevents+json", "application/cloudevents-batch+json"):
            return eg_error(415, "UnsupportedMediaType", "The Content-Type header is either missing or it doesn't have a valid "
                            "value. The content type header must either be application/cloudevents+json; charset=utf-8 or "
                            "application/cloudevents-batch+json; charset=UTF-8.")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return eg_error(400, "BadRequest", f"Unexpected character encountered while parsing value: {exc}.", "InputJsonInvalid")
        if cloud and content_type == "application/cloudevents+json":
            if not isinstance(body, dict):
                return eg_error(400, "BadRequest", "Unexpected token when reading JSON. Expected: StartObject, actual: "
                                f"{_json_token(body)}.", "InputJsonInvalid")
            body = [body]
        elif not isinstance(body, list):
            return eg_error(400, "BadRequest", f"Unexpected token when reading JSON. Expected: StartArray, actual: {_json_token(body)}.",
                            "InputJsonInvalid")
        for index, event in enumerate(body):
            problem = _check_cloudevent(event) if cloud else _check_eventgrid_event(event, topic)
            if problem:
                return eg_error(400, "BadRequest", f"{problem} (event index {index}).", "InputJsonInvalid")
            if len(json.dumps(event).encode()) > MAX_PUBLISH_BYTES:
                return eg_error(413, "RequestEntityTooLarge", f"The event at index {index} exceeds the maximum size "
                                f"({MAX_PUBLISH_BYTES}).")
        return body

    def _authenticate(self, request: web.Request, topic: Topic) -> web.Response | str:
        key = request.headers.get("aeg-sas-key")
        if key is not None:
            if secrets.compare_digest(key.encode(), topic.key.encode()):
                return "key"
            return eg_error(401, "Unauthorized", f"The request authorization key is not authorized for "
                            f"{request.host.upper()}. This is due to the reason: InvalidSignature.")
        token = bearer(request.headers.get("Authorization"))
        if token is not None:
            claims = self.ctx.tokens.verify(token)
            if claims is None:
                return eg_error(401, "Unauthorized", "The access token is invalid or has expired.")
            if not audience_ok(claims, EVENTGRID_AUDIENCE):
                return eg_error(401, "Unauthorized", f"The access token audience {claims.get('aud')!r} is not "
                                f"{EVENTGRID_AUDIENCE!r}.")
            return "token"
        sas = request.headers.get("aeg-sas-token")
        if sas is not None:
            problem = check_sas(sas, topic.key, self.topic_url(topic.name))
            if problem:
                return eg_error(401, "Unauthorized", f"The request authorization token is not authorized for "
                                f"{request.host.upper()}. This is due to the reason: {problem}.")
            return "sas"
        return eg_error(401, "Unauthorized", "Request must contain one of the following authorization signature: "
                        "aeg-sas-token, aeg-sas-key.")


def check_sas(token: str, key: str, topic_url: str) -> str | None:
    """Verify an `aeg-sas-token` (`r=<resource>&e=<expiry>&s=<signature>`, HMAC-SHA256 with the topic key); None if valid."""
    parts = dict(p.split("=", 1) for p in token.split("&") if "=" in p)
    if not {"r", "e", "s"} <= set(parts):
        return "MalformedToken"
    unsigned = f"r={parts['r']}&e={parts['e']}"
    expected = base64.b64encode(hmac.new(base64.b64decode(key), unsigned.encode("ascii"), hashlib.sha256).digest()).decode()
    if not hmac.compare_digest(expected, unquote(parts["s"])):
        return "InvalidSignature"
    try:
        expiry = datetime.datetime.fromisoformat(unquote(parts["e"]))
    except ValueError:
        return "MalformedToken"
    if expiry.tzinfo is None:
        expiry = expiry.replace(tzinfo=datetime.UTC)
    if expiry < datetime.datetime.now(datetime.UTC):
        return "TokenExpired"
    if not unquote(parts["r"]).lower().startswith(topic_url.lower()):
        return "InvalidResource"
    return None


def _json_token(value: Any) -> str:
    return {dict: "StartObject", list: "StartArray", str: "String", int: "Integer", float: "Float",
            bool: "Boolean"}.get(type(value), "Null")


def _check_eventgrid_event(event: Any, topic: Topic) -> str | None:
    if not isinstance(event, dict):
        return f"Unexpected token when reading JSON. Expected: StartObject, actual: {_json_token(event)}"
    if "specversion" in event:
        return ("This resource is configured to receive event in 'EventGridEvent' schema. The JSON received does not "
                "conform to the expected schema. Token Expected: StartObject, Actual Token Received: specversion")
    for prop in ("id", "subject", "eventType", "eventTime", "dataVersion"):
        value = event.get(prop)
        if value is None or (isinstance(value, str) and not value.strip() and prop != "dataVersion"):
            return f"Required property '{prop}' was not set"
    topic_value = event.get("topic")
    if topic_value and not str(topic_value).endswith(topic.resource_id_suffix):
        return f"Property 'topic' was found to be set to '{topic_value}', but was expected to either be null/empty or the topic"
    return None


def _check_cloudevent(event: Any) -> str | None:
    if not isinstance(event, dict):
        return f"Unexpected token when reading JSON. Expected: StartObject, actual: {_json_token(event)}"
    if "eventType" in event and "type" not in event:
        return ("This resource is configured to receive event in 'CloudEventV10' schema. The JSON received does not "
                "conform to the expected schema.")
    for prop in ("id", "source", "type", "specversion"):
        value = event.get(prop)
        if value is None or (isinstance(value, str) and not value.strip()):
            return f"Required property '{prop}' was not set"
    if event["specversion"] != "1.0":
        return f"The value '{event['specversion']}' of property 'specversion' is not supported; expected '1.0'"
    return None


# ------------------------------------------------------------------------------------------------ routing


def classify(path: str) -> str | None:
    if path.startswith("/topics/"):
        return "eventgrid.publish"
    if path.startswith("/_emulator/eventgrid"):
        return "admin.eventgrid"
    return None


async def publish(ctx: Context, request: web.Request) -> web.Response:
    eg: EventGrid = ctx.extras["eventgrid"]
    topic = eg.topics.get(request.match_info["topic"])
    if topic is None:
        return eg_error(404, "NotFound", f"The topic '{request.match_info['topic']}' does not exist.")
    raw = await request.read()
    result = eg.check_publish(request, topic, raw)
    if isinstance(result, web.Response):
        return result
    auth = "key" if "aeg-sas-key" in request.headers else "sas" if "aeg-sas-token" in request.headers else "token"
    now = time.time()
    with eg._lock:
        topic.events.extend({"event": e, "auth": auth, "received": now} for e in result)
    return web.Response(status=200)


async def add_subscription(ctx: Context, request: web.Request) -> web.Response:
    eg: EventGrid = ctx.extras["eventgrid"]
    try:
        raw = await read_json(request)
        if not isinstance(raw, dict):
            raise ValueError("the body must be a JSON object with the event subscription's fields")
        validate = bool(raw.pop("validate", True))
        sub = eg.add_subscription(raw)
    except (ValueError, TypeError, ScenarioError) as exc:
        return json_response(400, {"error": str(exc)})
    if validate:
        # As `az eventgrid event-subscription create`: the handshake happens now; failure means no subscription.
        try:
            await eg.ensure_validated(sub)
        except ValidationFailed as exc:
            ctx.world.event_subscriptions.pop(sub.name, None)
            return json_response(400, {"error": str(exc)})
    return json_response(201, _sub_dict(sub))


async def list_subscriptions(ctx: Context, request: web.Request) -> web.Response:
    return json_response(200, {"value": [_sub_dict(s) for s in ctx.world.event_subscriptions.values()]})


async def remove_subscription(ctx: Context, request: web.Request) -> web.Response:
    sub = ctx.world.event_subscriptions.pop(request.match_info["name"], None)
    return json_response(200 if sub else 404, {"removed": sub is not None})


async def deliveries(ctx: Context, request: web.Request) -> web.Response:
    eg: EventGrid = ctx.extras["eventgrid"]
    rows = [a.as_dict() for a in eg.delivery_attempts(request.query.get("subscription"))]
    return json_response(200, {"value": rows, "pending": eg.pending})


async def idle(ctx: Context, request: web.Request) -> web.Response:
    eg: EventGrid = ctx.extras["eventgrid"]
    try:
        timeout = float(request.query.get("timeout", "30"))
    except ValueError:
        return json_response(400, {"error": "timeout must be a number of seconds"})
    ok = await eg.wait_idle(timeout)
    return json_response(200 if ok else 408, {"idle": ok, "pending": eg.pending})


async def dead_letters(ctx: Context, request: web.Request) -> web.Response:
    eg: EventGrid = ctx.extras["eventgrid"]
    name = request.query.get("subscription")
    with eg._lock:
        rows = [d for d in eg.dead_letters if name is None or d["subscription"] == name]
    return json_response(200, {"value": rows})


async def add_topic(ctx: Context, request: web.Request) -> web.Response:
    eg: EventGrid = ctx.extras["eventgrid"]
    try:
        raw = await read_json(request)
        topic = eg.add_topic(str(raw["name"]), str(raw.get("input_schema", "CloudEventSchemaV1_0")))
    except (KeyError, ValueError, TypeError) as exc:
        return json_response(400, {"error": f"expected {{'name', 'input_schema'?}}: {exc}"})
    return json_response(201, {"name": topic.name, "endpoint": eg.topic_url(topic.name), "key": topic.key,
                               "input_schema": topic.input_schema})


async def topic_events(ctx: Context, request: web.Request) -> web.Response:
    eg: EventGrid = ctx.extras["eventgrid"]
    topic = eg.topics.get(request.match_info["topic"])
    if topic is None:
        return json_response(404, {"error": f"no topic {request.match_info['topic']!r}"})
    with eg._lock:
        rows = list(topic.events)
    return json_response(200, {"value": rows})


ADMIN = "/_emulator/eventgrid"
ROUTES = [
    ("POST", "/topics/{topic}/api/events", publish),
    ("POST", f"{ADMIN}/subscriptions", add_subscription),
    ("GET", f"{ADMIN}/subscriptions", list_subscriptions),
    ("DELETE", f"{ADMIN}/subscriptions/{{name}}", remove_subscription),
    ("GET", f"{ADMIN}/deliveries", deliveries),
    ("GET", f"{ADMIN}/idle", idle),
    ("GET", f"{ADMIN}/deadletters", dead_letters),
    ("POST", f"{ADMIN}/topics", add_topic),
    ("GET", f"{ADMIN}/topics/{{topic}}/events", topic_events),
]


def setup(app: web.Application, ctx: Context) -> None:
    """Event Grid on the management app: the topics' publish endpoint and the control API (ROUTES)."""
    for i, sub in enumerate(ctx.world.event_subscriptions.values()):
        check_subscription(sub, where=f"eventgrid.subscriptions[{i}]")
    eg = EventGrid(ctx)
    ctx.extras["eventgrid"] = eg
    ctx.world.add_listener(eg.on_world_event)
    default = eg.topics[DEFAULT_TOPIC]
    ctx.extras.setdefault("endpoints", {})["eventgrid"] = {
        "topics": {DEFAULT_TOPIC: eg.topic_url(DEFAULT_TOPIC)},
        "admin": f"{ctx.management_url}/_emulator/eventgrid",
    }
    ctx.extras.setdefault("env", {}).update({
        "AUTOPILOT_TOPIC_ENDPOINT": eg.topic_url(DEFAULT_TOPIC),
        "AUTOPILOT_TOPIC_KEY": default.key,
    })

    async def on_cleanup(_app: web.Application) -> None:
        await eg.close()

    app.on_cleanup.append(on_cleanup)
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, bound(handler, ctx))


def _sub_dict(sub: EventSubscription) -> dict[str, Any]:
    return dict(sub.__dict__)


