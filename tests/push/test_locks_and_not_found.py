"""The blob lease (Azurite) and the replication-lag rule: 'not found' soon after a push is retried, later it is a skip."""

from __future__ import annotations

import threading

import pytest

from shared.locks import BlobLeaseLock, LockBusy
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
