"""Request budgets per event, exactly-once under parallel deliveries across instances, and faults with triple delivery."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from shared.acr import TokenCache
from shared.push.service import PushService

from .conftest import FUNCTION, Stack, event_for, registry_requests, reset_instance


def invoke(stack: Stack, event: dict[str, Any]) -> list[tuple[str, str]]:
    mark = stack.emu.request_mark()
    inv = stack.host.invoke_event(FUNCTION, event)
    assert inv.succeeded, inv.exception
    return registry_requests(stack.emu, mark)


def test_request_budget_per_event(push_stack):
    images = [
        {"tags": ["streaming-1"], "layers_mb": [3], "streaming": True, "seed": "s1"},
        {"tags": ["streaming-2"], "layers_mb": [3], "streaming": True, "seed": "s2"},
        {"tags": ["new-first"], "layers_mb": [3, 4], "seed": "n0"},
        {"tags": ["new-single"], "layers_mb": [3, 4], "seed": "n1"},
        {"tags": ["new-index"], "platforms": ["linux/amd64", "linux/arm64"], "layers_mb": [3], "format": "oci", "seed": "n2"},
    ]
    stack = push_stack(images=images)
    tags = stack.registry().repositories["app"].tags
    digest = {name: rec.digest for name, rec in tags.items()}

    # a cold instance: the first event adds only the token exchange (exchange + token), no /v2/ challenge
    cold = invoke(stack, event_for(stack.emu, digest["streaming-1"], "streaming-1"))
    assert cold == [("POST", "/oauth2/exchange"), ("POST", "/oauth2/token"),
                    ("GET", f"/v2/app/referrers/{digest['streaming-1']}")]
    # warm, already streaming: 1 request
    warm = invoke(stack, event_for(stack.emu, digest["streaming-2"], "streaming-2", schema="CloudEventSchemaV1_0"))
    assert warm == [("GET", f"/v2/app/referrers/{digest['streaming-2']}")]
    # the first write in a repository also reads its auto-conversion setting once (cached per repository, like its token)
    first = invoke(stack, event_for(stack.emu, digest["new-first"], "new-first"))
    assert ("GET", "/acr/v1/app/_streaming") in first and len(first) == 6
    # warm, new single-platform image: referrers, manifest, manifest attributes (os/architecture; no config blob, so no
    # 307 and no storage read), operation check, create = 5 registry requests and nothing else
    mark = stack.emu.request_mark()
    single = invoke(stack, event_for(stack.emu, digest["new-single"], "new-single"))
    assert single == [("GET", f"/v2/app/referrers/{digest['new-single']}"), ("GET", f"/v2/app/manifests/{digest['new-single']}"),
                      ("GET", f"/acr/v1/app/_manifests/{digest['new-single']}"),
                      ("GET", f"/acr/v1/app/_streaming/{digest['new-single']}"), ("POST", f"/acr/v1/app/_streaming/{digest['new-single']}")]
    assert not [r for r in stack.emu.requests_since(mark) if "/blobs/" in r["path"] or r["service"] not in ("acr", "arm", "eventgrid")]
    # warm, new index: referrers of the index, manifest, operation check, create = 4
    index = invoke(stack, event_for(stack.emu, digest["new-index"], "new-index"))
    assert index == [("GET", f"/v2/app/referrers/{digest['new-index']}"), ("GET", f"/v2/app/manifests/{digest['new-index']}"),
                     ("GET", f"/acr/v1/app/_streaming/{digest['new-index']}"), ("POST", f"/acr/v1/app/_streaming/{digest['new-index']}")]
    # warm, index already streaming (ACR attached the artifact to the index): 1 request
    stack.settle()
    streaming_index = invoke(stack, event_for(stack.emu, digest["new-index"], "new-index", schema="CloudEventSchemaV1_0"))
    assert streaming_index == [("GET", f"/v2/app/referrers/{digest['new-index']}")]
    # a fresh instance (new process: empty caches) pays the exchange again, and only that
    reset_instance()
    again = invoke(stack, event_for(stack.emu, digest["streaming-1"], "streaming-1"))
    assert again[:2] == [("POST", "/oauth2/exchange"), ("POST", "/oauth2/token")] and len(again) == 3
    assert not any(path == "/v2/" for _m, path in cold + warm + first + single + index + streaming_index + again)


def test_parallel_deliveries_on_separate_instances_create_exactly_one_conversion(push_stack):
    """CI pushes app:1.4.2 and app:latest together; Event Grid also repeats itself: 8 deliveries, 4 instances, one digest."""
    stack = push_stack(images=[{"tags": ["1.4.2", "latest"], "layers_mb": [3, 4], "seed": "ci"}])
    digest = stack.registry().repositories["app"].tags["1.4.2"].digest
    events = [event_for(stack.emu, digest, tag, schema) for tag in ("1.4.2", "latest")
              for schema in ("EventGridSchema", "CloudEventSchemaV1_0")] * 2
    # each "instance" has its own service and its own token cache; they share only the storage account (the lock)
    instances = [PushService.from_env(token_cache=TokenCache()) for _ in range(4)]
    barrier = threading.Barrier(len(events))
    outcomes: list[str] = []
    errors: list[BaseException] = []

    def deliver(i: int, event: dict[str, Any]) -> None:
        barrier.wait()
        try:
            outcomes.append(instances[i % len(instances)].handle_event(event).outcome)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=deliver, args=(i, e)) for i, e in enumerate(events)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(outcomes).count("created") == 1, outcomes
    assert set(outcomes) <= {"created", "in-progress", "already-streaming"}
    stack.settle()
    assert len(stack.operations(digest)) == 1
    assert len(stack.referrers(digest)) == 1
    # without the lock the emulator would have started several conversions: it starts one per POST
    posts = [r for r in stack.emu.requests_since(0, service="acr") if r["method"] == "POST" and "/_streaming/" in r["path"]]
    assert len(posts) == 1


@pytest.mark.parametrize("http_retries", ["4", "0"], ids=["pipeline-retries", "eventgrid-retries-only"])
def test_faults_and_triple_delivery_lose_nothing_and_duplicate_nothing(push_stack, http_retries):
    """20 % of registry calls fail. With pipeline retries most faults are absorbed in the invocation; without, every fault
    fails the invocation (host 500) and only Event Grid's redelivery gets the event through."""
    faults = [{"match": "acr.*", "error_rate": 0.2, "statuses": [429, 500, 503], "retry_after": 0.05}]
    stack = push_stack(faults=faults, env={"AUTOPILOT_PUSH_HTTP_RETRIES": http_retries})
    for n in range(3):  # three subscriptions to the same function: every event is delivered three times
        stack.subscribe(f"triple-{n}", schema="CloudEventSchemaV1_0" if n == 1 else "EventGridSchema")
    digests = [stack.push(tags=[f"v{i}", f"v{i}-latest"], layers_mb=[2, 3], seed=f"fault-{i}") for i in range(6)]
    multi = stack.push(tags=["multi"], platforms=["linux/amd64", "linux/arm64"], layers_mb=[2], seed="fault-multi")
    arm = stack.push(tags=["arm"], platforms=["linux/arm64"], layers_mb=[2], seed="fault-arm")
    stack.settle(timeout=120)

    injected = [r for r in stack.emu.requests_since(0, service="acr") if r["status"] in (429, 500, 503)]
    assert len(injected) > 10, "the fault plan did not bite"
    for digest in digests:
        assert len(stack.operations(digest)) == 1, digest
        assert len(stack.referrers(digest)) == 1, digest
    index = json.loads(stack.registry().repositories["app"].manifests[multi].content)
    amd64 = next(m["digest"] for m in index["manifests"] if m["platform"]["architecture"] == "amd64")
    assert len(stack.operations(multi)) == 1 and len(stack.referrers(multi)) == 1 and stack.referrers(amd64) == []
    assert stack.operations(arm) == []
    failed_deliveries = [a for a in stack.eventgrid.delivery_attempts() if a.status == 500]
    if http_retries == "0":
        assert len(failed_deliveries) > 5, "faults should have failed invocations and been redelivered by Event Grid"
    # no event lost: nothing dead-lettered or dropped, and every event got a successful delivery on each subscription
    assert stack.eventgrid.dead_letters == [] and stack.eventgrid.dropped == []
    delivered = {(a.subscription, a.event_id) for a in stack.eventgrid.delivery_attempts() if a.status == 202}
    tagged = [e for e in stack.eventgrid.events if "tag" in e.data["target"]]
    for sub in ("triple-0", "triple-1", "triple-2"):
        missing = [e.subject for e in tagged if (sub.upper(), e.id) not in delivered and (sub, e.id) not in delivered]
        assert missing == [], (sub, missing)


def test_lost_answers_to_the_conversion_post_never_start_a_second_conversion(push_stack):
    """The worst network case for exactly-once: ACR starts the conversion but the 202 never arrives (a 503 or a dropped
    connection AFTER the request was processed). The client must re-read the digest's operation before posting again."""
    faults = [
        {"match": "acr.streaming", "methods": ["POST"], "error_rate": 0.5, "statuses": [503], "retry_after": 0.05,
         "after_handler": True},
        {"match": "acr.streaming", "methods": ["POST"], "drop_rate": 0.2, "after_handler": True},
    ]
    stack = push_stack(faults=faults)
    stack.subscribe("lost", schema="EventGridSchema")
    digests = [stack.push(tags=[f"lost{i}"], layers_mb=[2, 3], seed=f"lost-{i}") for i in range(8)]
    stack.settle(timeout=120)
    posts = [r for r in stack.emu.requests_since(0, service="acr") if r["method"] == "POST" and "/_streaming/" in r["path"]]
    lost = [r for r in posts if r["status"] in (503, -1)]
    assert lost, "the fault plan did not bite"
    for digest in digests:
        assert len(stack.operations(digest)) == 1, digest  # the lost answer's conversion was found, not repeated
        assert len(stack.referrers(digest)) == 1, digest
    assert stack.eventgrid.dead_letters == []


def test_platform_from_the_config_when_the_manifest_attributes_do_not_carry_it(push_stack):
    """azure-containerregistry's model makes architecture/os optional: an answer without them costs the config read, not a guess."""
    stack = push_stack(faults=[{"match": "acr.manifests", "strip_fields": ["manifest.architecture", "manifest.os"]}])
    arm = stack.push(tags=["arm"], platforms=["linux/arm64"], layers_mb=[2], seed="attrs-arm")
    amd = stack.push(tags=["amd"], layers_mb=[2], seed="attrs-amd")
    service = PushService.from_env(token_cache=TokenCache())
    mark = stack.emu.request_mark()
    skipped = service.handle_event(event_for(stack.emu, arm, "arm"))
    paths = [p for _m, p in registry_requests(stack.emu, mark)]
    assert skipped.outcome == "skipped" and skipped.code == "UNSUPPORTED_PLATFORM", skipped
    assert paths[-3:-1] == [f"/v2/app/manifests/{arm}", f"/acr/v1/app/_manifests/{arm}"] and paths[-1].startswith("/v2/app/blobs/")
    mark = stack.emu.request_mark()
    created = service.handle_event(event_for(stack.emu, amd, "amd"))
    assert created.outcome == "created", created
    assert any(p.startswith("/v2/app/blobs/") for _m, p in registry_requests(stack.emu, mark))
