"""The app's storage clients: the queue client bounded like the blob client (timeouts, retries, pool, the deadline)."""

from __future__ import annotations

import time
import uuid

import pytest
from azure.core.exceptions import AzureError

from emulator.azurite import Azurite
from emulator.faults import BlackHole
from shared import storage
from shared.azure_clients import STORAGE_PROFILE
from shared.deadline import Deadline

KEY = "a2V5"


def _fresh_clients() -> None:
    with storage._lock:
        storage._queue_services.clear()


def test_a_black_holed_queue_endpoint_fails_within_the_deadline() -> None:
    _fresh_clients()
    with BlackHole() as hole:
        conn = f"DefaultEndpointsProtocol=https;AccountName=devstoreaccount1;AccountKey={KEY};QueueEndpoint={hole.url}/devstoreaccount1"
        queue = storage.queue_client("autopilot-sweep", {"AzureWebJobsStorage": conn})
        started = time.monotonic()
        with pytest.raises(AzureError), Deadline.after(3).applied():
            queue.send_message("work item")
        took = time.monotonic() - started
    # the SDK's own defaults (20 s connect, 60 s read, 10 retries) would hang here for minutes
    assert took < 3 + 2, took


def test_the_queue_client_carries_the_storage_profile() -> None:
    _fresh_clients()
    conn = f"DefaultEndpointsProtocol=https;AccountName=devstoreaccount1;AccountKey={KEY};QueueEndpoint=https://127.0.0.1:1/devstoreaccount1"
    queue = storage.queue_client("autopilot-sweep", {"AzureWebJobsStorage": conn})
    policies = queue._pipeline._impl_policies
    retry = next(p for p in policies if type(p).__name__ == "DeadlineExponentialRetry")
    assert retry.total_retries == STORAGE_PROFILE.retry_total
    transport = queue._pipeline._transport._transport  # the queue client wraps its service's transport
    assert getattr(transport, "profile", None) is STORAGE_PROFILE


def test_messages_round_trip_on_azurite_with_the_bounded_client(azurite: Azurite) -> None:
    _fresh_clients()
    name = f"bounded-{uuid.uuid4().hex[:8]}"
    queue = storage.queue_client(name, {"AzureWebJobsStorage": azurite.connection_string})
    queue.create_queue()
    with Deadline.after(10).applied():
        queue.send_message('{"registry": "r1"}')
        received = [m.content for m in queue.receive_messages(max_messages=5)]
    assert received == ['{"registry": "r1"}']
