"""Issue 9 items 1-5 on the emulator: tokens only to ARM's login server, bounded Retry-After and deadlines, explicit timeouts
and pools, a lease that cannot lapse under a slow POST, and capped reads of pushed content."""

from __future__ import annotations

import logging
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from emulator.faults import BlackHole
from shared.acr import TokenCache
from shared.push.outcomes import Outcome, TransientError
from shared.push.service import PushService

from .conftest import PREMIUM, STANDARD, Stack, event_for

MiB = 1024 * 1024


def run_bounded(fn: Callable[[], Any], seconds: float) -> tuple[Any, float]:
    """Run `fn` on a daemon thread; fail the test if it has not returned within `seconds` (the old code slept for a day)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["value"] = exc

    started = time.monotonic()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: the invocation is not bounded"
    return box["value"], time.monotonic() - started


def one_image(stack_factory: Callable[..., Stack], **kwargs: Any) -> tuple[Stack, str, dict[str, Any]]:
    stack = stack_factory(images=[{"tags": ["v1"], "layers_mb": [2], "seed": "hard"}], **kwargs)
    digest = stack.registry().repositories["app"].tags["v1"].digest
    return stack, digest, event_for(stack.emu, digest, "v1")


def requests_to(stack: Stack, registry: str) -> list[tuple[str, str]]:
    return [(r["method"], r["path"]) for r in stack.emu.requests_since(0, service="acr") if r["host"] == registry]


# ---------------------------------------------------------------------------------------------- 1: tokens stay with ARM's host
def test_a_registry_answer_without_login_server_sends_no_token_to_the_events_host(push_stack):
    stack, _digest, event = one_image(push_stack, faults=[{"match": "arm.registries", "strip_fields": ["properties.loginServer"]}])
    # a forged (or odd) event names another registry's host; ARM's answer names none
    event["data"]["request"]["host"] = stack.registry(STANDARD).login_server
    result, _ = run_bounded(lambda: PushService.from_env(token_cache=TokenCache()).handle_event(event), 30)
    assert isinstance(result, TransientError) and result.code == "NO_LOGIN_SERVER", result
    assert requests_to(stack, STANDARD) == []  # no AAD token exchange, no refresh token, nothing
    assert requests_to(stack, PREMIUM) == []


def test_a_realm_or_next_page_on_another_host_gets_no_token(push_stack):
    stack, digest, event = one_image(push_stack)
    other = stack.registry(STANDARD).login_server
    realm = f'Bearer realm="https://{other}/oauth2/token",service="{other}"'
    stack.emu.faults.configure([{"match": "acr.referrers", "error_rate": 1.0, "statuses": [401], "headers": {"WWW-Authenticate": realm}}])
    result, _ = run_bounded(lambda: PushService.from_env(token_cache=TokenCache()).handle_event(event), 30)
    assert isinstance(result, Outcome) and result.outcome == "failed", result
    assert requests_to(stack, STANDARD) == []  # the realm's host never saw our AAD token (an exchange) or anything else

    link = f'<https://{other}/v2/app/referrers/{digest}?last=x>; rel="next"'
    stack.emu.faults.configure([{"match": "acr.referrers", "set_headers": {"Link": link}}])
    result, _ = run_bounded(lambda: PushService.from_env(token_cache=TokenCache()).handle_event(event), 30)
    assert isinstance(result, Outcome) and (result.outcome, result.code) == ("failed", "FOREIGN_HOST"), result
    assert requests_to(stack, STANDARD) == []
    assert stack.operations(digest) == []


# ---------------------------------------------------------------------------------------------- 2: Retry-After and the deadline
@pytest.mark.parametrize("match", ["acr.referrers", "arm.registries"])
def test_a_days_retry_after_ends_the_invocation_at_once_for_a_redelivery(push_stack, match):
    stack, digest, event = one_image(push_stack, faults=[{"match": match, "error_rate": 1.0, "statuses": [429], "retry_after": 86400}])
    result, took = run_bounded(lambda: PushService.from_env(token_cache=TokenCache()).handle_event(event), 30)
    assert isinstance(result, TransientError), result  # Event Grid redelivers later; nobody sleeps a day
    assert took < 10
    assert stack.operations(digest) == []


def test_a_slow_registry_cannot_hold_an_invocation_past_its_deadline(push_stack):
    _stack, _digest, event = one_image(push_stack, faults=[{"match": "acr.*", "latency_ms": 2500}],
                                     env={"AUTOPILOT_PUSH_DEADLINE_SECONDS": "4"})
    result, took = run_bounded(lambda: PushService.from_env(token_cache=TokenCache()).handle_event(event), 30)
    assert isinstance(result, TransientError), result
    assert took < 4 + 1.5, took  # the deadline, plus the outcome-free exit


# ---------------------------------------------------------------------------------------------- 3: timeouts and pools
def test_a_black_holed_topic_does_not_hang_a_finished_push(push_stack, monkeypatch):
    stack, digest, event = one_image(push_stack)
    with BlackHole() as hole:
        monkeypatch.setenv("AUTOPILOT_TOPIC_ENDPOINT", f"{hole.url}/api/events")
        monkeypatch.setenv("AUTOPILOT_TOPIC_KEY", "a2V5")
        result, took = run_bounded(lambda: PushService.from_env(token_cache=TokenCache()).handle_event(event), 30)
    assert isinstance(result, Outcome) and result.outcome == "created", result
    assert took < 5 + 3, took  # the publish's own 5 s budget
    assert len(stack.operations(digest)) == 1


@pytest.mark.parametrize("where", ["storage", "arm"])
def test_a_black_holed_dependency_fails_the_invocation_within_its_deadline(push_stack, monkeypatch, where):
    stack, digest, event = one_image(push_stack, env={"AUTOPILOT_PUSH_DEADLINE_SECONDS": "6"})
    with BlackHole() as hole:
        if where == "storage":
            monkeypatch.setenv("AzureWebJobsStorage", "DefaultEndpointsProtocol=https;AccountName=devstoreaccount1;AccountKey=a2V5;"
                                                      f"BlobEndpoint={hole.url}/devstoreaccount1")
        else:
            monkeypatch.setenv("AUTOPILOT_ARM_ENDPOINT", hole.url)
        result, took = run_bounded(lambda: PushService.from_env(token_cache=TokenCache()).handle_event(event), 45)
    assert isinstance(result, TransientError), result
    assert took < 6 + 2, took
    assert stack.operations(digest) == []


def test_sixteen_concurrent_invocations_fit_every_connection_pool(push_stack, caplog):
    images = [{"tags": [f"p{i}", f"p{i}-latest"], "layers_mb": [1], "seed": f"pool{i}"} for i in range(12)]
    stack = push_stack(images=images, faults=[{"match": "acr.*", "latency_ms": 30}])
    tags = stack.registry().repositories["app"].tags
    events = [event_for(stack.emu, rec.digest, name) for name, rec in tags.items()]
    service = PushService.from_env(token_cache=TokenCache())
    barrier = threading.Barrier(16)

    def one(i: int) -> None:
        barrier.wait()
        for event in events[i::16]:
            service.handle_event(event)

    with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
        threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    full = [r.getMessage() for r in caplog.records if "Connection pool is full" in r.getMessage()]
    assert full == []
    for rec in {r.digest for r in tags.values()}:
        assert len(stack.operations(rec)) == 1


# ---------------------------------------------------------------------------------------------- 4: the lease outlives a slow POST
def test_a_post_slower_than_the_lease_does_not_let_a_second_instance_convert_too(push_stack):
    """Lease 15 s; the registry takes 20 s before it processes the POST. Before: the lease lapsed under the first
    instance, the second took it, found no conversion and posted too (two conversions of one digest)."""
    stack = push_stack(images=[{"tags": ["a", "b"], "layers_mb": [2], "seed": "lease"}],
                       faults=[{"match": "acr.streaming", "methods": ["POST"], "latency_ms": 20000}],
                       env={"AUTOPILOT_PUSH_LOCK_SECONDS": "15", "AUTOPILOT_PUSH_DEADLINE_SECONDS": "60"})
    digest = stack.registry().repositories["app"].tags["a"].digest
    results: list[Any] = []

    def deliver(tag: str, delay: float) -> None:
        time.sleep(delay)
        try:
            results.append(PushService.from_env(token_cache=TokenCache()).handle_event(event_for(stack.emu, digest, tag)).outcome)
        except TransientError as exc:
            results.append(exc.code)

    threads = [threading.Thread(target=deliver, args=("a", 0.0)), threading.Thread(target=deliver, args=("b", 1.0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert "created" in results and len(results) == 2, results
    assert set(results) <= {"created", "in-progress", "already-streaming", "LOCK_BUSY"}, results
    assert len(stack.operations(digest)) == 1


# ---------------------------------------------------------------------------------------------- 5: capped reads
def test_a_huge_config_blob_is_not_read_into_memory(push_stack):
    # the manifest attributes without a platform, so the config is what tells it (the attributes usually spare that read)
    stack, digest, event = one_image(push_stack, faults=[{"match": "storage.blob", "body_bytes": 96 * MiB},
                                                         {"match": "acr.manifests", "strip_fields": ["manifest.architecture", "manifest.os"]}])
    service = PushService.from_env(token_cache=TokenCache())
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        outcome = service.handle_event(event)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (outcome.outcome, outcome.code) == ("failed", "BLOB_TOO_LARGE"), outcome
    assert peak < 24 * MiB, f"peak {peak / MiB:.0f} MiB while reading a 96 MiB blob"
    assert stack.operations(digest) == []


def test_a_config_descriptor_over_the_cap_is_refused_without_a_request(push_stack):
    stack, digest, _event = one_image(push_stack)
    service = PushService.from_env(token_cache=TokenCache())
    acr = service.acr(stack.registry().login_server)
    config = stack.registry().repositories["app"].manifests[digest]
    mark = stack.emu.request_mark()
    from shared.acr import AcrError

    with pytest.raises(AcrError) as caught:
        acr.blob_json("app", "sha256:" + "1" * 64, size=300 * MiB)
    assert caught.value.code == "BLOB_TOO_LARGE" and config is not None
    assert [r for r in stack.emu.requests_since(mark, service="acr") if "/blobs/" in r["path"]] == []
