"""Property: 10,000 generated and mutated events at the function never raise and never write for an event that should not act."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import FUNCTION, PREMIUM, event_for

EXAMPLES = 10_000
ODD_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40) | st.sampled_from([
    "", " ", "\x00", "app\u202e", "ＡＰＰ", "app/../..", "sha256:" + "A" * 64, "🐳", "latest\n", "a" * 129, "%2F", "../../etc",
])
JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=True) | ODD_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ODD_TEXT, inner, max_size=3),
    max_leaves=8,
)
EVENT_TYPES = st.sampled_from([
    "Microsoft.ContainerRegistry.ImagePushed", "ImagePushed", "Microsoft.ContainerRegistry.ImageDeleted",
    "Microsoft.ContainerRegistry.ChartPushed", "Microsoft.ContainerRegistry.ChartDeleted", "imagepushed",
    "Microsoft.ContainerRegistry.ImagePushed ", "Microsoft.Storage.BlobCreated",
]) | ODD_TEXT
FIELDS = ["id", "type_field", "topic_field", "subject", "data", "data.target", "data.target.repository", "data.target.tag",
          "data.target.digest", "data.target.mediaType", "data.target.size", "data.target.length", "data.request",
          "data.request.host", "data.id", "data.action", "dataVersion", "specversion"]
VALID_TIMES = st.sampled_from([None, "2026-11-27T05:00:00.1234567Z", "2026-11-27T05:00:00Z"])


def binding_accepts(event: dict[str, Any]) -> bool:
    """The worker's converter parses eventTime/time before our code runs (Event Grid itself always writes a valid one)."""
    from azure.functions.eventgrid import EventGridEventInConverter

    try:
        EventGridEventInConverter.decode(_datum(event), trigger_metadata={})
    except Exception:
        return False
    return True


def _datum(event: dict[str, Any]) -> Any:
    from azure.functions import meta

    return meta.Datum(type="json", value=json.dumps(event))


@st.composite
def mutated_events(draw: st.DrawFn, bases: list[dict[str, Any]]) -> dict[str, Any]:
    event = copy.deepcopy(draw(st.sampled_from(bases)))
    cloud = "specversion" in event
    aliases = {"type_field": "type" if cloud else "eventType", "topic_field": "source" if cloud else "topic"}
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        path = [aliases.get(p, p) for p in draw(st.sampled_from(FIELDS)).split(".")]
        node: Any = event
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        action = draw(st.sampled_from(["junk", "delete", "type", "text"]))
        if action == "delete":
            node.pop(path[-1], None)
        elif action == "type" and path[-1] in ("type", "eventType"):
            node[path[-1]] = draw(EVENT_TYPES)
        elif action == "text":
            node[path[-1]] = draw(ODD_TEXT)
        else:
            node[path[-1]] = draw(JUNK)
    huge = draw(st.integers(min_value=0, max_value=99)) == 0  # now and then a huge payload (Event Grid's limit is 1 MB)
    if huge and isinstance(event.get("data"), dict):
        event["data"]["padding"] = "x" * draw(st.sampled_from([100_000, 900_000]))
    time_key = "time" if cloud else "eventTime"
    if draw(st.booleans()):
        event[time_key] = draw(VALID_TIMES)
    elif draw(st.integers(min_value=0, max_value=9)) == 0:
        event[time_key] = draw(JUNK)  # only the service path can see this (the worker's binding rejects it)
    return event


def should_act(event: dict[str, Any], registry_id: str, digest: str, media_type: str) -> bool:
    """Independent oracle: only an intact ImagePushed for our registry's tagged image may lead to a conversion."""
    cloud = "specversion" in event
    etype = event.get("type" if cloud else "eventType")
    topic = event.get("source" if cloud else "topic")
    data = event.get("data")
    target = data.get("target") if isinstance(data, dict) else None
    if etype not in ("Microsoft.ContainerRegistry.ImagePushed", "ImagePushed") or not isinstance(target, dict):
        return False
    tag = target.get("tag")
    return (isinstance(topic, str) and topic.lower() == registry_id.lower() and target.get("repository") == "app"
            and target.get("digest") == digest and target.get("mediaType") == media_type
            and isinstance(tag, str) and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", tag) is not None)


@pytest.mark.slow
def test_ten_thousand_mutated_events_never_crash_and_never_write_when_they_should_not(push_stack):
    stack = push_stack(images=[{"tags": ["v1"], "layers_mb": [2], "seed": "fuzz"}],
                       env={"AUTOPILOT_PUSH_NOT_FOUND_WINDOW_SECONDS": "0"})
    reg = stack.registry()
    digest = reg.repositories["app"].tags["v1"].digest
    media_type = reg.repositories["app"].manifests[digest].media_type
    bases = [event_for(stack.emu, digest, "v1"), event_for(stack.emu, digest, "v1", schema="CloudEventSchemaV1_0")]
    import functions.push

    counts = {"function": 0, "service": 0, "acting": 0}

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(mutated_events(bases))
    def check(event: dict[str, Any]) -> None:
        mark = stack.emu.request_mark()
        if binding_accepts(event):
            counts["function"] += 1
            inv = stack.host.invoke_event(FUNCTION, event)
            assert inv.succeeded, f"{type(inv.exception).__name__}: {inv.exception}"
        else:
            counts["service"] += 1
            functions.push.service().handle_event(event)  # what our code would do if the binding let it through
        writes = [r for r in stack.emu.requests_since(mark, service="acr") if r["method"] not in ("GET", "HEAD")
                  and not r["path"].startswith("/oauth2/")]
        acting = should_act(event, reg.resource_id, digest, media_type)
        counts["acting"] += acting
        assert acting or writes == [], (writes, event)

    check()
    print(counts)
    assert counts["function"] > EXAMPLES // 2 and counts["acting"] > 0, counts
    stack.settle()
    assert len(stack.operations(digest)) == 1  # every acting event after the first found the conversion
    # only the premium registry (and its storage, where config blobs are redirected) was ever asked anything
    assert [r for r in stack.emu.requests_since(0) if r["host"] not in ("", PREMIUM, "storage")] == []
