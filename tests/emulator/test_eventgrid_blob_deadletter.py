"""Event Grid's StorageBlob dead-letter destination in the emulator: Event Grid's blob names and body, into Azurite."""

from __future__ import annotations

import json
import uuid

import requests

from shared.storage import blob_service_client

SUB = "5d1c7e00-0000-4000-8000-00000000d001"


def scenario() -> dict:
    return {"name": "dl", "seed": 1, "settings": {"eventgrid_retry_base_seconds": 0.05},
            "subscriptions": [{"id": SUB, "registries": [{"name": "dlprem", "resource_group": "rg", "sku": "Premium"}]}]}


def subscribe(emu, container: str, name: str = "Push-Sub") -> None:
    eg = emu.ctx.extras["eventgrid"]
    emu.call(eg.add_subscription, {"name": name, "registry": "dlprem", "endpoint": "http://127.0.0.1:9/down",
                                   "max_delivery_attempts": 2, "dead_letter_container": container,
                                   "included_event_types": ["Microsoft.ContainerRegistry.ImagePushed"]})


def push(emu) -> str:
    resp = requests.post(f"{emu.endpoints['admin']}/registries/dlprem/images", verify=emu.endpoints["ca_bundle"], timeout=30,
                         json={"repository": "app", "tags": ["1"], "layers_mb": [1], "seed": "dl-1"})
    return resp.json()["digest"]


def test_dead_letters_land_in_the_container_as_event_grid_writes_them(make_emulator):
    emu = make_emulator(scenario())
    container = f"dl-{uuid.uuid4().hex[:10]}"
    blobs = blob_service_client().get_container_client(container)
    blobs.create_container()
    subscribe(emu, container)
    digest = push(emu)
    eg = emu.ctx.extras["eventgrid"]
    assert eg.wait_idle_blocking(30)
    (name,) = [b.name for b in blobs.list_blobs()]
    topic, subscription, year, month, day, hour, leaf = name.split("/")
    assert hour.isdigit() and (hour == "0" or not hour.startswith("0"))
    assert (topic, subscription) == ("DLPREM", "PUSH-SUB")  # upper case, as Event Grid names them
    assert year.isdigit() and len(year) == 4 and not month.startswith("0") and not day.startswith("0")
    assert leaf.endswith(".json") and uuid.UUID(leaf[:-5])
    (event,) = json.loads(blobs.download_blob(name).readall())
    assert event["data"]["target"]["digest"] == digest
    assert event["deadLetterReason"] == "MaxDeliveryAttemptsExceeded" and event["deliveryAttempts"] == 2
    assert event["lastDeliveryOutcome"] and event["lastHttpStatusCode"] == 0
    assert event["publishTime"] and event["lastDeliveryAttemptTime"]
    assert not (emu.state_dir / "deadletter").exists()  # not in the state folder too


def test_a_missing_container_loses_the_event_as_in_azure(make_emulator):
    emu = make_emulator(scenario())
    subscribe(emu, f"missing-{uuid.uuid4().hex[:8]}")
    push(emu)
    eg = emu.ctx.extras["eventgrid"]
    assert eg.wait_idle_blocking(30)
    assert not [d for d in eg.dead_letters if d["subscription"] == "Push-Sub"]
    (dropped,) = [d for d in eg.dropped if d["subscription"] == "Push-Sub"]
    assert "ContainerNotFound" in dropped["error"] or "not exist" in dropped["error"]
