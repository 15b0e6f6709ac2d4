"""The Functions host's Storage queue trigger, for the host stand-in (emulator/funchost.py): poll, invoke, retry, poison.

What the real host (Microsoft.Azure.WebJobs.Extensions.Storage.Queues 5.x) does, and so what this does:
- host.json `extensions.queues`: batchSize (16), newBatchThreshold (batchSize/2), maxDequeueCount (5), visibilityTimeout
  (00:00:00: the delay before a failed message is retried), maxPollingInterval (00:01:00), messageEncoding (base64).
- Polling backs off exponentially from 100 ms to maxPollingInterval while the queue is empty and resets when it finds work.
- A batch of up to batchSize messages is dequeued (hidden for 10 minutes, renewed while the function runs) and invoked in
  parallel; a new batch is fetched as soon as the messages in flight drop to newBatchThreshold (the listener waits for a
  completion, it does not back off while it is busy).
- Success deletes the message. Failure makes it visible again after visibilityTimeout; a failure at dequeue count
  >= maxDequeueCount, or a message dequeued more than maxDequeueCount times (a crashed worker never reported it), moves it to
  `<queue>-poison` (created on demand) with the same content. A body that is not valid base64 fails like an exception.
- The function gets a func.QueueMessage with id, body, dequeue_count, insertion/expiration/next-visible times, pop receipt.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import re
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from azure.functions import meta

if TYPE_CHECKING:
    from .funchost import FunctionsHost, IndexedFunction, Invocation

log = logging.getLogger("emulator.funchost.queues")

QUEUE_TRIGGER = "queueTrigger"
LEASE_SECONDS = 600  # the host hides a dequeued message for 10 minutes and renews that while the function runs
MIN_POLL_SECONDS = 0.1
_TIMESPAN_RE = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d+))?$")


def _seconds(value: Any, default: float, what: str) -> float:
    if value in (None, ""):
        return default
    match = _TIMESPAN_RE.match(str(value).strip())
    if not match:
        raise ValueError(f"host.json extensions.queues.{what} {value!r} is not a TimeSpan like 00:00:30")
    days, hours, minutes, secs, frac = match.groups()
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(secs) + float(f"0.{frac or 0}")


@dataclass(frozen=True)
class QueueOptions:
    """host.json `extensions.queues`, with the extension's defaults."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0
    max_polling_interval: float = 60.0
    message_encoding: str = "base64"

    @classmethod
    def from_host_json(cls, host_json: Path) -> QueueOptions:
        try:
            raw = json.loads(host_json.read_text())
        except (OSError, ValueError):
            return cls()
        queues = ((raw.get("extensions") or {}).get("queues") or {}) if isinstance(raw, dict) else {}
        batch = int(queues.get("batchSize", 16))
        if not 1 <= batch <= 32:
            raise ValueError(f"host.json extensions.queues.batchSize {batch} must be between 1 and 32")
        encoding = str(queues.get("messageEncoding", "base64")).lower()
        if encoding not in ("base64", "none"):
            raise ValueError(f"host.json extensions.queues.messageEncoding {encoding!r} must be base64 or none")
        return cls(
            batch_size=batch,
            new_batch_threshold=int(queues.get("newBatchThreshold", batch // 2)),
            max_dequeue_count=max(1, int(queues.get("maxDequeueCount", 5))),
            visibility_timeout=_seconds(queues.get("visibilityTimeout"), 0.0, "visibilityTimeout"),
            max_polling_interval=max(MIN_POLL_SECONDS, _seconds(queues.get("maxPollingInterval"), 60.0, "maxPollingInterval")),
            message_encoding=encoding,
        )


def queue_service_for(connection: str, env: Any = None) -> Any:
    """The queue service a trigger's `connection` names: a connection string setting, or `<name>__queueServiceUri` /
    `<name>__accountName` with DefaultAzureCredential (identity-based connections)."""
    from azure.storage.queue import QueueServiceClient

    env = os.environ if env is None else env
    conn = (env.get(connection) or "").strip()
    if conn:
        return QueueServiceClient.from_connection_string(conn)
    uri = (env.get(f"{connection}__queueServiceUri") or "").strip()
    account = (env.get(f"{connection}__accountName") or "").strip()
    if not uri and account:
        uri = f"https://{account}.queue.core.windows.net"
    if not uri:
        raise ValueError(f"Storage account connection string '{connection}' does not exist. Make sure that it is a defined "
                         "App Setting.")
    from azure.identity import DefaultAzureCredential

    return QueueServiceClient(account_url=uri, credential=DefaultAzureCredential())


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


class QueueListener:
    """Polls one queue for one queue-triggered function of a FunctionsHost, on its own thread."""

    def __init__(self, host: FunctionsHost, fn: IndexedFunction, options: QueueOptions, env: Any = None) -> None:
        from azure.core.exceptions import ResourceExistsError

        self.host, self.fn, self.options = host, fn, options
        self.queue_name = str(fn.trigger_settings.get("queueName") or "").lower()
        service = queue_service_for(str(fn.trigger_settings.get("connection") or "AzureWebJobsStorage"), env)
        self.queue = service.get_queue_client(self.queue_name)
        self.poison = service.get_queue_client(f"{self.queue_name}-poison")
        for client in (self.queue, self.poison):
            with contextlib.suppress(ResourceExistsError):
                client.create_queue()
        self._stop = threading.Event()
        self._in_flight: set[Future[Any]] = set()
        self._guard = threading.Lock()
        self._finished = threading.Condition(self._guard)  # notified when a message in flight completes
        self._thread = threading.Thread(target=self._run, name=f"funchost-queue-{fn.name}", daemon=True)
        self.poisoned: list[str] = []  # ids of messages moved to the poison queue
        self.polls = 0

    def start(self) -> QueueListener:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def idle(self) -> bool:
        """Nothing in flight and nothing visible in the queue (messages waiting out a visibility timeout do not count)."""
        if self.busy:
            return False
        return not list(self.queue.peek_messages(max_messages=1))

    @property
    def busy(self) -> int:
        with self._guard:
            return len(self._in_flight)

    # ------------------------------------------------------------------ polling
    def _run(self) -> None:
        delay = MIN_POLL_SECONDS
        while not self._stop.is_set():
            if not self._wait_for_room():
                continue
            found = 0
            try:
                found = self._poll_once()
            except Exception as exc:  # storage unreachable: the host logs and keeps polling
                log.warning("queue %s: polling failed: %s", self.queue_name, exc)
            delay = MIN_POLL_SECONDS if found else min(delay * 2, self.options.max_polling_interval)
            self._stop.wait(delay if not found else 0.01)

    def _wait_for_room(self) -> bool:
        """Until the messages in flight are at most newBatchThreshold: a busy listener waits for a completion (checking
        for stop now and then), and its polling interval does not grow meanwhile. Returns whether there is room."""
        with self._finished:
            if len(self._in_flight) <= self.options.new_batch_threshold:
                return True
            self._finished.wait(0.5)
            return len(self._in_flight) <= self.options.new_batch_threshold

    def _poll_once(self) -> int:
        self.polls += 1
        batch = self.options.batch_size
        messages = list(self.queue.receive_messages(messages_per_page=batch, max_messages=batch, visibility_timeout=LEASE_SECONDS))
        for message in messages:
            if message.dequeue_count > self.options.max_dequeue_count:
                self._to_poison(message)  # a worker died holding it that many times: the host poisons it unprocessed
                continue
            future = self.host._pool.submit(self._process, message)  # type: ignore[union-attr]
            with self._guard:
                self._in_flight.add(future)
            future.add_done_callback(self._done)
        return len(messages)

    def _done(self, future: Future[Any]) -> None:
        with self._finished:
            self._in_flight.discard(future)
            self._finished.notify_all()

    # ------------------------------------------------------------------ one message
    def _body(self, message: Any) -> str:
        raw = message.content if isinstance(message.content, str) else bytes(message.content).decode()
        if self.options.message_encoding == "none":
            return raw
        try:
            return base64.b64decode(raw, validate=True).decode("utf-8")
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"Message decoding has failed! Check MessageEncoding settings. MessageId={message.id}: {exc}") \
                from None

    def _decode(self, message: Any, body: str) -> Any:
        param = self.fn.params[self.fn.trigger_param]
        if param.binding_type == "generic":
            return body if param.pytype is not bytes else body.encode()
        metadata = {
            "Id": meta.Datum(type="string", value=message.id),
            "DequeueCount": meta.Datum(type="int", value=int(message.dequeue_count)),
            "PopReceipt": meta.Datum(type="string", value=message.pop_receipt),
        }
        for key, value in (("InsertionTime", message.inserted_on), ("ExpirationTime", message.expires_on),
                           ("NextVisibleTime", message.next_visible_on)):
            if value is not None:
                metadata[key] = meta.Datum(type="string", value=_iso(value))
        converter = meta.get_binding_registry().get(QUEUE_TRIGGER)
        return converter.decode(meta.Datum(type="string", value=body), trigger_metadata=metadata)

    def _process(self, message: Any) -> Invocation | None:
        inv: Invocation | None = None
        try:
            body = self._body(message)
            value = self._decode(message, body)
            inv = self.host._new_invocation(self.fn, value, body)
            inv = self.host._invoke_sync(self.fn, value, body, inv)
            ok = inv.succeeded
        except Exception as exc:
            log.error("Exception binding parameter '%s' for Functions.%s: %s", self.fn.trigger_param, self.fn.name, exc)
            ok = False
        try:
            if ok:
                self.queue.delete_message(message.id, message.pop_receipt)
            elif message.dequeue_count >= self.options.max_dequeue_count:
                self._to_poison(message)
            else:
                self.queue.update_message(message.id, message.pop_receipt,
                                          visibility_timeout=int(self.options.visibility_timeout))
        except Exception as exc:  # the pop receipt expired or the message is gone: it reappears or was handled
            log.warning("queue %s: cannot complete message %s: %s", self.queue_name, message.id, exc)
        return inv

    def _to_poison(self, message: Any) -> None:
        log.warning("Message has reached MaxDequeueCount of %d. Moving message to queue '%s-poison'.",
                    self.options.max_dequeue_count, self.queue_name)
        self.poison.send_message(message.content)
        self.queue.delete_message(message.id, message.pop_receipt)
        self.poisoned.append(message.id)


def start_listeners(host: FunctionsHost, env: Any = None) -> list[QueueListener]:
    """One listener per queue-triggered function of an indexed host (options from host.json next to the app).

    As the real host does, a listener that cannot start (no storage connection, storage unreachable) is logged and that
    function does not run; the other functions do (`host.listener_errors` keeps the messages)."""
    listeners = []
    errors = getattr(host, "listener_errors", None)
    for fn in host.functions.values():
        if fn.trigger_type != QUEUE_TRIGGER:
            continue
        try:
            options = QueueOptions.from_host_json(Path(fn.directory) / "host.json")
            listeners.append(QueueListener(host, fn, options, env).start())
        except Exception as exc:
            message = f"The listener for function 'Functions.{fn.name}' was unable to start. {exc}"
            log.error(message)
            if isinstance(errors, list):
                errors.append(message)
    return listeners
