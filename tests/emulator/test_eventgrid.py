"""Event Grid emulation: registry events delivered to real webhooks (both schemas, handshakes, retries, dead letters) and
custom-topic publishing through the real azure-eventgrid client."""

from __future__ import annotations

import contextlib
import io
import json
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.core.messaging import CloudEvent

from emulator import Emulator
from emulator.services.eventgrid import DEFAULT_TOPIC, EventGrid

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "eventgrid"
SUB_ID = "3c9a1f0e-0000-4000-8000-00000000e901"
REGISTRY = "acrevents"
EVENT_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}Z$")


def fixture(schema: str, name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / schema / f"{name}.json").read_text())


# ------------------------------------------------------------------------------------------------ a webhook receiver


class Receiver:
    """A tiny webhook: answers handshakes (unless told not to) and Notifications with scripted statuses."""

    def __init__(self, statuses: list[int] | None = None, validate: bool = True) -> None:
        self.statuses = list(statuses or [])
        self.validate = validate
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _record(self) -> dict[str, Any]:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                row = {"method": self.command, "headers": {k.lower(): v for k, v in self.headers.items()},
                       "body": json.loads(raw) if raw else None}
                with receiver.lock:
                    receiver.requests.append(row)
                return row

            def _answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_OPTIONS(self) -> None:
                row = self._record()
                origin = row["headers"].get("webhook-request-origin", "")
                if receiver.validate:
                    self._answer(200, headers={"WebHook-Allowed-Origin": origin})
                else:
                    self._answer(403)

            def do_POST(self) -> None:
                row = self._record()
                if row["headers"].get("aeg-event-type") == "SubscriptionValidation":
                    if not receiver.validate:
                        self._answer(403)
                        return
                    code = row["body"][0]["data"]["validationCode"]
                    self._answer(200, json.dumps({"validationResponse": code}).encode(), {"Content-Type": "application/json"})
                    return
                with receiver.lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                self._answer(status)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/events"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def notifications(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["method"] == "POST" and r["headers"].get("aeg-event-type") == "Notification"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(**kwargs: Any) -> Receiver:
        r = Receiver(**kwargs)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def scenario(*subscriptions: dict[str, Any]) -> dict[str, Any]:
    return {
        "seed": 11,
        "settings": {"eventgrid_retry_base_seconds": 0.05},
        "subscriptions": [{"id": SUB_ID, "registries": [{"name": REGISTRY, "resource_group": "rg-events", "location": "westus"}]}],
        "eventgrid": {"subscriptions": list(subscriptions)},
    }


def push(emu: Emulator, repository: str = "samples/nginx", tags: list[str] | None = None) -> str:
    body: dict[str, Any] = {"repository": repository, "layers_mb": [1, 2]}
    if tags is not None:
        body["tags"] = tags
    resp = requests.post(f"{emu.endpoints['admin']}/registries/{REGISTRY}/images", json=body, verify=emu.endpoints["ca_bundle"],
                         timeout=30)
    assert resp.status_code == 201, resp.text
    return resp.json()["digest"]


def eventgrid(emu: Emulator) -> EventGrid:
    return emu.ctx.extras["eventgrid"]


def wait_idle(emu: Emulator, timeout: float = 30) -> None:
    assert eventgrid(emu).wait_idle_blocking(timeout), "Event Grid still had deliveries pending"


def same_shape(actual: dict[str, Any], expected: dict[str, Any], where: str, optional: set[str] = frozenset()) -> None:
    """Same keys, recursively (except `optional` keys the reference has and this event legitimately lacks)."""
    assert set(actual) == set(expected) - optional, f"{where}: keys {sorted(actual)} != reference {sorted(expected)}"
    for key, value in expected.items():
        if isinstance(value, dict) and key in actual:
            assert isinstance(actual[key], dict), f"{where}.{key} is not an object"
            same_shape(actual[key], value, f"{where}.{key}", optional)
        elif key in actual and value is not None:
            assert type(actual[key]) is type(value), f"{where}.{key}: {type(actual[key]).__name__} != {type(value).__name__}"


# ------------------------------------------------------------------------------------------------ system topic delivery


def test_eventgrid_schema_delivery_matches_reference_after_handshake(make_emulator, receivers):
    hook = receivers()
    emu = make_emulator(scenario(
        {"name": "to-function", "registry": REGISTRY, "endpoint": hook.url,
         "included_event_types": ["Microsoft.ContainerRegistry.ImagePushed"]},
    ))
    digest = push(emu, tags=["latest"])
    wait_idle(emu)

    first = hook.requests[0]
    assert first["method"] == "POST" and first["headers"]["aeg-event-type"] == "SubscriptionValidation"
    validation = first["body"][0]
    assert validation["eventType"] == "Microsoft.EventGrid.SubscriptionValidationEvent"
    assert set(validation["data"]) == {"validationCode", "validationUrl"}

    [note] = hook.notifications()
    headers = note["headers"]
    assert headers["content-type"].startswith("application/json")
    assert headers["aeg-subscription-name"] == "TO-FUNCTION"
    assert headers["aeg-delivery-count"] == "0"
    assert headers["aeg-data-version"] == "2.0" and headers["aeg-metadata-version"] == "1"
    assert isinstance(note["body"], list) and len(note["body"]) == 1  # always an array, one event by default

    event = note["body"][0]
    ref = fixture("event-grid-schema", "image_pushed")
    same_shape(event, ref, "event", optional={"connectedRegistry"})  # only connected registries send connectedRegistry
    reg = emu.world.registries[REGISTRY]
    assert event["eventType"] == ref["eventType"] == "Microsoft.ContainerRegistry.ImagePushed"
    assert event["topic"] == reg.resource_id
    assert event["subject"] == "samples/nginx:latest"
    assert event["dataVersion"] == ref["dataVersion"] and event["metadataVersion"] == ref["metadataVersion"]
    assert EVENT_TIME.match(event["eventTime"]) and EVENT_TIME.match(ref["eventTime"])
    data = event["data"]
    assert data["id"] == event["id"]  # as in the reference: data.id repeats the event id
    assert data["action"] == "push" and data["location"] == "westus"
    assert data["target"]["digest"] == digest and data["target"]["repository"] == "samples/nginx"
    assert data["target"]["tag"] == "latest"
    assert data["target"]["size"] == data["target"]["length"] > 0
    assert data["target"]["mediaType"] == ref["data"]["target"]["mediaType"]
    assert data["request"]["method"] == "PUT" and data["request"]["host"] == reg.login_server


def test_cloudevents_delivery_matches_reference_after_options_handshake(make_emulator, receivers):
    hook = receivers()
    emu = make_emulator(scenario({"name": "ce", "registry": REGISTRY, "endpoint": hook.url, "schema": "CloudEventSchemaV1_0"}))
    digest = push(emu, tags=["v1"])
    wait_idle(emu)

    first = hook.requests[0]
    assert first["method"] == "OPTIONS"
    assert first["headers"]["webhook-request-origin"] == "eventgrid.azure.net"
    [note] = hook.notifications()
    assert note["headers"]["content-type"].startswith("application/cloudevents+json")
    event = note["body"]
    assert isinstance(event, dict)  # structured mode, one event per request
    ref = fixture("cloud-events-schema", "image_pushed")
    same_shape(event, ref, "cloudevent", optional={"connectedRegistry"})
    assert event["specversion"] == "1.0" and event["type"] == ref["type"]
    assert event["source"] == emu.world.registries[REGISTRY].resource_id
    assert event["subject"] == "samples/nginx:v1" and event["data"]["target"]["digest"] == digest
    assert EVENT_TIME.match(event["time"])


def test_push_by_digest_has_no_tag_like_reference_untagged_events(make_emulator, receivers):
    hook = receivers()
    emu = make_emulator(scenario({"name": "untagged", "registry": REGISTRY, "endpoint": hook.url}))
    digest = push(emu, repository="base/runtime", tags=[])
    wait_idle(emu)
    [note] = hook.notifications()
    event = note["body"][0]
    untagged_ref = fixture("event-grid-schema", "image_deleted")
    assert "tag" not in untagged_ref["data"]["target"] and ":" not in untagged_ref["subject"]
    assert event["subject"] == "base/runtime"
    assert "tag" not in event["data"]["target"]
    assert event["data"]["target"]["digest"] == digest


def test_multi_arch_push_emits_one_event_per_manifest(make_emulator, receivers):
    hook = receivers()
    emu = make_emulator(scenario({"name": "all", "registry": REGISTRY, "endpoint": hook.url}))
    body = {"repository": "multi", "tags": ["1.0"], "platforms": ["linux/amd64", "linux/arm64"], "layers_mb": [1]}
    requests.post(f"{emu.endpoints['admin']}/registries/{REGISTRY}/images", json=body, verify=emu.endpoints["ca_bundle"],
                  timeout=30).raise_for_status()
    wait_idle(emu)
    subjects = sorted(n["body"][0]["subject"] for n in hook.notifications())
    assert subjects == ["multi", "multi", "multi:1.0"]  # two child manifests by digest, then the tagged index
    assert len({n["body"][0]["id"] for n in hook.notifications()}) == 3


def test_filter_and_routing_only_matching_subscriptions_receive(make_emulator, receivers):
    pushed, deleted = receivers(), receivers()
    emu = make_emulator(scenario(
        {"name": "pushes", "registry": REGISTRY, "endpoint": pushed.url, "included_event_types": ["Microsoft.ContainerRegistry.ImagePushed"]},
        {"name": "deletes", "registry": REGISTRY, "endpoint": deleted.url, "included_event_types": ["Microsoft.ContainerRegistry.ImageDeleted"]},
    ))
    push(emu, tags=["a"])
    wait_idle(emu)
    assert len(pushed.notifications()) == 1
    assert deleted.notifications() == []


def test_500_is_retried_with_growing_delivery_count(make_emulator, receivers):
    hook = receivers(statuses=[500, 500])
    emu = make_emulator(scenario({"name": "flaky", "registry": REGISTRY, "endpoint": hook.url}))
    push(emu, tags=["x"])
    wait_idle(emu)
    notes = hook.notifications()
    assert [n["headers"]["aeg-delivery-count"] for n in notes] == ["0", "1", "2"]
    assert len({n["body"][0]["id"] for n in notes}) == 1  # the same event each time
    attempts = [(a.attempt, a.status, a.outcome) for a in eventgrid(emu).delivery_attempts("flaky")]
    assert attempts == [(1, 500, "GenericError"), (2, 500, "GenericError"), (3, 200, "Success")]
    assert eventgrid(emu).dead_letters == []


def test_dead_letter_after_max_delivery_attempts(make_emulator, receivers):
    hook = receivers(statuses=[503] * 10)
    emu = make_emulator(scenario({"name": "down", "registry": REGISTRY, "endpoint": hook.url, "max_delivery_attempts": 3}))
    push(emu, tags=["y"])
    wait_idle(emu)
    assert len(hook.notifications()) == 3
    files = list((emu.state_dir / "deadletter" / "down").rglob("*.json"))
    assert len(files) == 1
    [record] = json.loads(files[0].read_text())
    assert record["deadLetterReason"] == "MaxDeliveryAttemptsExceeded"
    assert record["deliveryAttempts"] == 3
    assert record["lastHttpStatusCode"] == 503 and record["lastDeliveryOutcome"] == "Busy"
    assert record["eventType"] == "Microsoft.ContainerRegistry.ImagePushed" and record["subject"] == "samples/nginx:y"
    assert EVENT_TIME.match(record["publishTime"]) and EVENT_TIME.match(record["lastDeliveryAttemptTime"])
    listed = requests.get(f"{emu.endpoints['admin']}/eventgrid/deadletters", verify=emu.endpoints["ca_bundle"], timeout=10).json()
    assert [d["subscription"] for d in listed["value"]] == ["down"]


@pytest.mark.parametrize(("status", "outcome"), [(400, "BadRequest"), (413, "PayloadTooLarge"), (401, "Unauthorized")])
def test_client_errors_are_not_retried(make_emulator, receivers, status, outcome):
    hook = receivers(statuses=[status, 200])
    emu = make_emulator(scenario({"name": "reject", "registry": REGISTRY, "endpoint": hook.url}))
    push(emu, tags=["z"])
    wait_idle(emu)
    assert len(hook.notifications()) == 1
    [dead] = eventgrid(emu).dead_letters
    assert dead["event"]["deadLetterReason"] == f"UndeliverableDueToHttp{outcome}"
    assert dead["event"]["deliveryAttempts"] == 1 and dead["event"]["lastHttpStatusCode"] == status


def test_azure_function_endpoints_skip_the_handshake_and_retry_401(make_emulator, receivers):
    """endpointType AzureFunction (what infra/ deploys): Event Grid calls the function as an Azure resource — no validation
    handshake — and for Azure resource endpoints only 400, 403 and 413 are not retried (401 is a webhook-only case)."""
    hook = receivers(statuses=[401, 200], validate=False)
    emu = make_emulator(scenario({"name": "fn", "registry": REGISTRY, "endpoint": hook.url, "endpoint_type": "AzureFunction"}))
    push(emu, tags=["f"])
    wait_idle(emu)
    assert [r["headers"]["aeg-event-type"] for r in hook.requests] == ["Notification", "Notification"]
    assert [a.status for a in eventgrid(emu).delivery_attempts("fn")] == [401, 200]
    assert eventgrid(emu).dead_letters == []
    forbidden = receivers(statuses=[403, 200], validate=False)
    emu = make_emulator(scenario({"name": "fn403", "registry": REGISTRY, "endpoint": forbidden.url, "endpoint_type": "AzureFunction"}))
    push(emu, tags=["g"])
    wait_idle(emu)
    [dead] = eventgrid(emu).dead_letters
    assert dead["event"]["deadLetterReason"] == "UndeliverableDueToHttpForbidden"


def test_unreachable_endpoint_is_retried_then_dropped_without_dead_letter(make_emulator, receivers):
    hook = receivers()
    dead_url = hook.url
    hook.close()  # nothing listens there any more
    emu = make_emulator(scenario({"name": "gone", "registry": REGISTRY, "endpoint": dead_url, "max_delivery_attempts": 2,
                                  "dead_letter": False}))
    emu.world.event_subscriptions["gone"].validated = True  # created while the endpoint was up
    push(emu, tags=["q"])
    wait_idle(emu)
    attempts = eventgrid(emu).delivery_attempts("gone")
    assert [(a.status, a.outcome) for a in attempts] == [(0, "GenericError"), (0, "GenericError")]
    assert eventgrid(emu).dead_letters == [] and len(eventgrid(emu).dropped) == 1
    assert not (emu.state_dir / "deadletter").exists()


def test_duplicate_delivery_sends_the_same_event_twice(make_emulator, receivers):
    hook = receivers()
    emu = make_emulator(scenario({"name": "twice", "registry": REGISTRY, "endpoint": hook.url, "duplicate_rate": 1.0}))
    push(emu, tags=["d"])
    wait_idle(emu)
    ids = [n["body"][0]["id"] for n in hook.notifications()]
    assert len(ids) == 2 and ids[0] == ids[1]
    assert sorted(a.duplicate for a in eventgrid(emu).delivery_attempts("twice")) == [False, True]


def test_retry_schedule_keeps_event_grid_shape(make_emulator):
    emu = make_emulator(scenario({"name": "s", "registry": REGISTRY, "endpoint": "http://127.0.0.1:9/none"}))
    eg, sub = eventgrid(emu), emu.world.event_subscriptions["s"]
    delays = [eg.retry_delay(sub, n, "evt") for n in range(1, 6)]
    for delay, real in zip(delays, (10, 30, 60, 300, 600), strict=True):
        assert 0.9 * real * 0.005 <= delay <= 1.1 * real * 0.005  # 0.05 s base = the real schedule / 200, ±10 % jitter
    assert delays == [eg.retry_delay(sub, n, "evt") for n in range(1, 6)]  # seeded: replayable


def test_runtime_subscription_registration_validates_and_rejects_failed_handshake(make_emulator, receivers):
    good, bad = receivers(), receivers(validate=False)
    emu = make_emulator(scenario())
    admin, ca = emu.endpoints["admin"], emu.endpoints["ca_bundle"]
    resp = requests.post(f"{admin}/eventgrid/subscriptions", json={"name": "bad", "registry": REGISTRY, "endpoint": bad.url},
                         verify=ca, timeout=30)
    assert resp.status_code == 400 and "validation handshake failed" in resp.json()["error"]
    assert "bad" not in emu.world.event_subscriptions
    resp = requests.post(f"{admin}/eventgrid/subscriptions", json={"name": "good", "registry": REGISTRY, "endpoint": good.url},
                         verify=ca, timeout=30)
    assert resp.status_code == 201 and resp.json()["validated"] is True
    resp = requests.post(f"{admin}/eventgrid/subscriptions", json={"name": "typo", "registry": "nope", "endpoint": good.url},
                         verify=ca, timeout=30)
    assert resp.status_code == 400 and "no registry named 'nope'" in resp.json()["error"]
    push(emu, tags=["r"])
    idle = requests.get(f"{admin}/eventgrid/idle?timeout=20", verify=ca, timeout=30)
    assert idle.json() == {"idle": True, "pending": 0}
    assert len(good.notifications()) == 1 and bad.notifications() == []
    rows = requests.get(f"{admin}/eventgrid/deliveries?subscription=good", verify=ca, timeout=10).json()["value"]
    assert [(r["attempt"], r["status"]) for r in rows] == [(1, 200)]


def test_concurrent_deliveries_are_in_flight_together(make_emulator):
    """Ten events to a webhook that holds each request until three are in flight at once: a serial dispatcher would stall."""
    gate = threading.Barrier(3, timeout=20)
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.headers.get("aeg-event-type") == "Notification":
                seen.append(body[0]["id"])
                with contextlib.suppress(threading.BrokenBarrierError):
                    gate.wait()
                answer = b""
            else:
                answer = json.dumps({"validationResponse": body[0]["data"]["validationCode"]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        emu = make_emulator(scenario({"name": "par", "registry": REGISTRY,
                                      "endpoint": f"http://127.0.0.1:{server.server_address[1]}/"}))
        for i in range(9):
            push(emu, repository=f"r{i}", tags=["t"])
        wait_idle(emu)
        assert not gate.broken
        assert len(seen) == 9
        assert all(a.outcome == "Success" for a in eventgrid(emu).delivery_attempts("par"))
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------------------------ custom topics


def _publisher(emu: Emulator, credential: Any, topic: str = DEFAULT_TOPIC):
    from azure.eventgrid import EventGridPublisherClient

    return EventGridPublisherClient(eventgrid(emu).topic_url(topic), credential)


def test_publish_cloudevents_with_key_and_read_back(make_emulator):
    emu = make_emulator(scenario())
    env = emu.env
    assert env["AUTOPILOT_TOPIC_ENDPOINT"] == eventgrid(emu).topic_url(DEFAULT_TOPIC)
    client = _publisher(emu, AzureKeyCredential(env["AUTOPILOT_TOPIC_KEY"]))
    client.send([CloudEvent(source="/autopilot/test", type="Autopilot.StreamingCreated", subject="acr/app@sha256:1",
                            data={"digest": "sha256:1"})])
    client.send(CloudEvent(source="/autopilot/test", type="Autopilot.Single", data={"n": 2}))
    rows = requests.get(f"{emu.endpoints['admin']}/eventgrid/topics/{DEFAULT_TOPIC}/events", verify=emu.endpoints["ca_bundle"],
                        timeout=10).json()["value"]
    assert [r["event"]["type"] for r in rows] == ["Autopilot.StreamingCreated", "Autopilot.Single"]
    assert rows[0]["auth"] == "key" and rows[0]["event"]["data"] == {"digest": "sha256:1"}
    assert rows[0]["event"]["specversion"] == "1.0" and rows[0]["event"]["subject"] == "acr/app@sha256:1"
    publishes = [r for r in emu.requests_since(0, service="eventgrid") if r["path"].startswith("/topics/")]
    assert [(r["query"], r["status"]) for r in publishes] == [("api-version=2018-01-01", 200)] * 2


def test_publish_with_managed_identity_token(make_emulator):
    from shared.azure_clients import credential

    emu = make_emulator(scenario())
    _publisher(emu, credential()).send([CloudEvent(source="/autopilot/test", type="Autopilot.ViaToken", data={})])
    [event] = eventgrid(emu).topics[DEFAULT_TOPIC].events
    assert event["auth"] == "token" and event["event"]["type"] == "Autopilot.ViaToken"


def test_publish_eventgrid_events_to_an_eventgrid_schema_topic(make_emulator):
    from azure.eventgrid import EventGridEvent

    emu = make_emulator(scenario())
    topic = emu.call(eventgrid(emu).add_topic, "legacy-topic", "EventGridSchema")
    _publisher(emu, AzureKeyCredential(topic.key), "legacy-topic").send(
        [EventGridEvent(subject="s", event_type="Autopilot.Legacy", data={"a": 1}, data_version="1.0")])
    [event] = eventgrid(emu).topic_events("legacy-topic")
    assert event["eventType"] == "Autopilot.Legacy" and event["dataVersion"] == "1.0" and event["data"] == {"a": 1}
    with pytest.raises(HttpResponseError) as info:  # a CloudEvents-only topic refuses Event Grid events, and vice versa
        _publisher(emu, AzureKeyCredential(topic.key), "legacy-topic").send(
            [CloudEvent(source="/x", type="Autopilot.Wrong", data={})])
    assert info.value.status_code == 400


def test_publish_rejections_match_event_grid(make_emulator):
    emu = make_emulator(scenario())
    key = emu.env["AUTOPILOT_TOPIC_KEY"]
    url = eventgrid(emu).topic_url(DEFAULT_TOPIC)
    ca = emu.endpoints["ca_bundle"]

    with pytest.raises(ClientAuthenticationError) as auth:
        _publisher(emu, AzureKeyCredential("wrong-key")).send([CloudEvent(source="/x", type="T", data={})])
    assert auth.value.status_code == 401
    ce_type = {"Content-Type": "application/cloudevents-batch+json; charset=utf-8"}
    resp = requests.post(f"{url}?api-version=2018-01-01", data=b"[]", headers=ce_type, verify=ca, timeout=10)
    assert resp.status_code == 401 and "aeg-sas-key" in resp.json()["error"]["message"]

    headers = {**ce_type, "aeg-sas-key": key}
    missing = [{"id": "1", "source": "/x", "specversion": "1.0", "data": {}}]
    resp = requests.post(f"{url}?api-version=2018-01-01", json=missing, headers=headers, verify=ca, timeout=10)
    body = resp.json()["error"]
    assert resp.status_code == 400 and body["code"] == "BadRequest"
    assert "Required property 'type' was not set" in body["message"] and body["details"][0]["code"] == "InputJsonInvalid"

    resp = requests.post(f"{url}?api-version=2018-01-01", data=b"{not json", headers=headers, verify=ca, timeout=10)
    assert resp.status_code == 400

    resp = requests.post(url, json=[], headers=headers, verify=ca, timeout=10)
    assert resp.status_code == 400 and "api-version" in resp.json()["error"]["message"]

    resp = requests.post(f"{url}?api-version=2018-01-01", json=[], headers={"aeg-sas-key": key, "Content-Type": "application/json"},
                         verify=ca, timeout=10)
    assert resp.status_code == 415

    big = [{"id": "1", "source": "/x", "type": "T", "specversion": "1.0", "data": "x" * (1024 * 1024)}]
    with pytest.raises(HttpResponseError) as too_big:
        _publisher(emu, AzureKeyCredential(key)).send(big)
    assert too_big.value.status_code == 413

    resp = requests.post(f"{url.replace(DEFAULT_TOPIC, 'no-such-topic')}?api-version=2018-01-01", json=[], headers=headers,
                         verify=ca, timeout=10)
    assert resp.status_code == 404
    assert eventgrid(emu).topic_events() == []  # nothing rejected was stored


def test_publish_with_sas_token(make_emulator):
    import datetime

    from azure.core.credentials import AzureSasCredential
    from azure.eventgrid import generate_sas

    emu = make_emulator(scenario())
    url, key = eventgrid(emu).topic_url(DEFAULT_TOPIC), emu.env["AUTOPILOT_TOPIC_KEY"]
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=10)
    _publisher(emu, AzureSasCredential(generate_sas(url, key, soon))).send([CloudEvent(source="/x", type="Autopilot.Sas", data={})])
    assert eventgrid(emu).topics[DEFAULT_TOPIC].events[0]["auth"] == "sas"

    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
    with pytest.raises(ClientAuthenticationError, match="TokenExpired"):
        _publisher(emu, AzureSasCredential(generate_sas(url, key, past))).send([CloudEvent(source="/x", type="T", data={})])
    other_key = "b3RoZXIta2V5LW90aGVyLWtleS1vdGhlci1rZXktMTIzNA=="
    with pytest.raises(ClientAuthenticationError, match="InvalidSignature"):
        _publisher(emu, AzureSasCredential(generate_sas(url, other_key, soon))).send([CloudEvent(source="/x", type="T", data={})])


@pytest.mark.parametrize(("field", "value", "message"), [
    ("max_delivery_attempts", 31, "outside 1-30"),
    ("endpoint", "http://example.com/hook", "must be an https:// URL"),
    ("duplicate_rate", 2.0, "between 0 and 1"),
])
def test_impossible_subscriptions_are_refused(make_emulator, field, value, message):
    from emulator.scenario import ScenarioError

    sub = {"name": "s", "registry": REGISTRY, "endpoint": "https://127.0.0.1:1/hook", field: value}
    with pytest.raises(ScenarioError, match=message):
        make_emulator(scenario(sub))
    emu = make_emulator(scenario())
    resp = requests.post(f"{emu.endpoints['admin']}/eventgrid/subscriptions", json={**sub, "validate": False},
                         verify=emu.endpoints["ca_bundle"], timeout=10)
    assert resp.status_code == 400 and message in resp.json()["error"]
    assert emu.world.event_subscriptions == {}


def test_endpoints_json_names_the_topic(make_emulator):
    emu = make_emulator(scenario())
    written = json.loads(emu.endpoints_path.read_text())
    assert written["eventgrid"]["topics"][DEFAULT_TOPIC] == written["env"]["AUTOPILOT_TOPIC_ENDPOINT"]
    assert written["env"]["AUTOPILOT_TOPIC_ENDPOINT"].endswith(f"/topics/{DEFAULT_TOPIC}/api/events")
    assert written["env"]["AUTOPILOT_TOPIC_KEY"] == eventgrid(emu).topics[DEFAULT_TOPIC].key


def test_https_webhook_with_an_untrusted_certificate_is_not_delivered(make_emulator):
    """Deliveries verify TLS against the emulator's CA: a webhook whose certificate chains elsewhere gets nothing."""
    import ssl

    import trustme

    other_ca = trustme.CA()
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    other_ca.issue_cert("127.0.0.1").configure_cert(ctx)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        emu = make_emulator(scenario({"name": "tls", "registry": REGISTRY, "max_delivery_attempts": 1,
                                      "endpoint": f"https://127.0.0.1:{server.server_address[1]}/hook"}))
        push(emu, tags=["tls"])
        wait_idle(emu)
        attempts = eventgrid(emu).delivery_attempts("tls")
        assert attempts[0].kind == "SubscriptionValidation" and "CERTIFICATE_VERIFY_FAILED" in attempts[0].error
        assert [a.outcome for a in attempts[1:]] == ["ValidationFailed"]
        assert eventgrid(emu).dead_letters[0]["event"]["deadLetterReason"] == "MaxDeliveryAttemptsExceeded"
    finally:
        server.shutdown()
        server.server_close()


def test_real_sdk_push_and_delete_produce_reference_shaped_events(make_emulator, receivers):
    """OCI PUT and DELETE through azure-containerregistry: ImagePushed then ImageDeleted, shaped like the reference."""
    from azure.containerregistry import ContainerRegistryClient
    from azure.identity import DefaultAzureCredential

    hook = receivers()
    emu = make_emulator(scenario({"name": "all", "registry": REGISTRY, "endpoint": hook.url}))
    client = ContainerRegistryClient(emu.endpoints["registries"][REGISTRY], DefaultAzureCredential(),
                                     audience="https://management.azure.com")
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    config_digest, config_size = client.upload_blob("samples/nginx", io.BytesIO(config))
    layer_digest, layer_size = client.upload_blob("samples/nginx", io.BytesIO(b"layer-bytes"))
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}]}
    digest = client.set_manifest("samples/nginx", manifest, tag="sdk", media_type="application/vnd.oci.image.manifest.v1+json")
    client.delete_manifest("samples/nginx", digest)
    wait_idle(emu)

    by_type = {n["body"][0]["eventType"]: n["body"][0] for n in hook.notifications()}  # delivery order is not guaranteed
    pushed, deleted = by_type["Microsoft.ContainerRegistry.ImagePushed"], by_type["Microsoft.ContainerRegistry.ImageDeleted"]
    assert pushed["eventType"] == "Microsoft.ContainerRegistry.ImagePushed" and pushed["subject"] == "samples/nginx:sdk"
    assert pushed["data"]["request"]["useragent"].startswith("azsdk-python-azure-containerregistry/")
    assert pushed["data"]["target"]["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    ref = fixture("event-grid-schema", "image_deleted")
    same_shape(deleted, ref, "deleted", optional={"connectedRegistry"})
    assert deleted["eventType"] == ref["eventType"] and deleted["subject"] == "samples/nginx"
    assert deleted["data"]["action"] == "delete" and deleted["data"]["request"]["method"] == "DELETE"
    assert deleted["data"]["target"] == {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
                                         "repository": "samples/nginx"}
