"""The blob lease (Azurite) and the replication-lag rule: 'not found' soon after a push is retried, later it is a skip."""

from __future__ import annotations

import threading
import time

import pytest

from shared.locks import BlobLeaseLock, LockBusy, LockLost
from shared.push.outcomes import TransientError
from shared.storage import blob_service_client

from .conftest import FUNCTION, event_for


def test_a_held_lease_makes_other_holders_wait_then_give_up(azurite):
    service = blob_service_client({"AzureWebJobsStorage": azurite.connection_string})
    first = BlobLeaseLock(service, "locks-test", lease_seconds=15)
    impatient = BlobLeaseLock(service, "locks-test", lease_seconds=15, wait_seconds=0.3)
    inside = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with first.hold("reg/app/sha256:1"):
            inside.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    assert inside.wait(10)
    with pytest.raises(LockBusy, match="still held"), impatient.hold("reg/app/sha256:1"):
        pass
    with impatient.hold("reg/app/sha256:2") as held:  # another key is free
        assert held.waited is False
    release.set()
    t.join(10)
    with impatient.hold("reg/app/sha256:1") as held:  # released: acquired at once
        assert held.waited is False
    with pytest.raises(ValueError, match="between 15 and 60"):
        BlobLeaseLock(service, "locks-test", lease_seconds=5)


def test_manifest_not_found_is_retried_soon_after_the_push_and_skipped_later(push_stack):
    stack = push_stack(images=[{"tags": ["v1"], "layers_mb": [2], "seed": "nf"}])
    digest = stack.registry().repositories["app"].tags["v1"].digest
    event = event_for(stack.emu, digest, "v1")
    missing = "sha256:" + "0" * 64
    event["data"]["target"]["digest"] = missing  # e.g. a geo-replica that has not received the manifest yet
    inv = stack.host.invoke_event(FUNCTION, event)  # eventTime is now: replication lag is plausible
    assert not inv.succeeded and isinstance(inv.exception, TransientError) and inv.exception.code == "RESOURCE_NOT_FOUND"
    event["eventTime"] = "2026-01-01T00:00:00.0000000Z"  # long ago: the image is gone, retrying will not help
    inv = stack.host.invoke_event(FUNCTION, event)
    assert inv.succeeded
    [outcome] = [o for o in stack.outcomes() if o.get("digest") == missing]
    assert (outcome["outcome"], outcome["reason"]) == ("skipped", "not-found")
    assert stack.operations(missing) == []


def test_a_finishing_holder_hands_its_lease_to_the_next_waiter_in_the_instance(azurite):
    service = blob_service_client({"AzureWebJobsStorage": azurite.connection_string})
    lock = BlobLeaseLock(service, "locks-handover", lease_seconds=15)
    other_instance = BlobLeaseLock(service, "locks-handover", lease_seconds=15, wait_seconds=0.3)
    first_in, second_started, leases = threading.Event(), threading.Event(), {}

    def first() -> None:
        with lock.hold("reg/app/sha256:h") as held:
            leases["first"] = held.lease
            first_in.set()
            second_started.wait(10)
            time.sleep(0.3)  # the second is queued on the in-process lock by now

    def second() -> None:
        second_started.set()
        with lock.hold("reg/app/sha256:h") as held:
            leases["second"] = held.lease
            leases["waited"] = held.waited
            try:  # another instance still sees the blob leased during the hand-over
                with other_instance.hold("reg/app/sha256:h"):
                    leases["other"] = "acquired"
            except LockBusy:
                leases["other"] = "busy"

    t1 = threading.Thread(target=first)
    t1.start()
    assert first_in.wait(10)
    t2 = threading.Thread(target=second)
    t2.start()
    t1.join(20)
    t2.join(20)
    assert leases["second"] is leases["first"] and leases["waited"] is True  # one acquire and one release for both
    assert leases["other"] == "busy"
    with other_instance.hold("reg/app/sha256:h") as held:  # released once nobody queued any more
        assert held.waited is False


def test_a_lease_lost_while_held_is_refused_before_the_guarded_action(azurite):
    service = blob_service_client({"AzureWebJobsStorage": azurite.connection_string})
    lock = BlobLeaseLock(service, "locks-lost", lease_seconds=15)
    with lock.hold("reg/app/sha256:l") as held:
        held.ensure()  # fresh: fine
        # someone breaks the lease (an operator, or storage after an outage): the next renewal fails
        from azure.storage.blob import BlobLeaseClient

        BlobLeaseClient(service.get_container_client("locks-lost").get_blob_client(lock.blob_name("reg/app/sha256:l"))).break_lease(0)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and held.error is None:
            time.sleep(0.2)
        with pytest.raises(LockLost, match="may no longer be ours"):
            held.ensure()
