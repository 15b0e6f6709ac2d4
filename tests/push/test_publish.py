"""OutcomePublisher against the emulator's custom topic: key and managed identity, batches split under 1 MB, None-safe."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError

from shared.publish import OutcomePublisher, OutgoingEvent, TopicSettings
from shared.settings import Env

from .conftest import scenario


def test_not_configured_is_none():
    assert OutcomePublisher.from_env(Env({})) is None


@pytest.mark.parametrize("use_key", [True, False], ids=["key", "managed-identity"])
def test_publishes_cloudevents_in_batches_under_the_size_limit(make_emulator, use_key):
    emu = make_emulator(scenario())
    env = emu.env if use_key else {k: v for k, v in emu.env.items() if k != "AUTOPILOT_TOPIC_KEY"}
    publisher = OutcomePublisher.from_env(Env(env))
    assert publisher is not None and (publisher.settings.key is not None) == use_key
    publisher.publish("Autopilot.ArtifactStreaming.Created", "reg/app:v1", {"outcome": "created"})
    events = [OutgoingEvent("Autopilot.Test", f"subject/{i}", {"i": i, "pad": "x" * 1000}) for i in range(2500)]  # ~2.5 MB
    assert publisher.publish_many(events) == 2500
    assert publisher.publish_many([]) == 0
    received = emu.ctx.extras["eventgrid"].topic_events()
    assert len(received) == 2501
    assert received[0]["type"] == "Autopilot.ArtifactStreaming.Created" and received[0]["specversion"] == "1.0"
    assert received[0]["subject"] == "reg/app:v1" and received[0]["data"] == {"outcome": "created"}
    assert sorted(e["data"]["i"] for e in received[1:]) == list(range(2500))
    publishes = [r for r in emu.requests_since(0) if r["endpoint_class"] == "eventgrid.publish"]
    assert len(publishes) >= 4 and all(r["status"] == 200 for r in publishes)


def test_a_wrong_key_is_an_error_not_silence(make_emulator):
    emu = make_emulator(scenario())
    publisher = OutcomePublisher(TopicSettings(emu.env["AUTOPILOT_TOPIC_ENDPOINT"], key="not-the-key"))
    with pytest.raises(HttpResponseError) as err:
        publisher.publish("Autopilot.Test", "s", {})
    assert err.value.status_code == 401
