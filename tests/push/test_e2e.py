"""End to end: pushes to the emulated ACR → its Event Grid → the Functions host → on_image_pushed → exactly the expected artifacts."""

from __future__ import annotations

import json
import logging
import time

import azure.functions as func
import pytest

from .conftest import CMK, PREMIUM, STANDARD

GB = 1024**3


def by_tag(outcomes: list[dict], tag: str, registry: str = PREMIUM) -> list[dict]:
    return [o for o in outcomes if o.get("tag") == tag and o.get("registry") == registry]


@pytest.mark.parametrize("schema", ["EventGridSchema", "CloudEventSchemaV1_0"])
def test_every_push_case_ends_with_exactly_the_expected_artifacts(push_stack, schema, caplog):
    caplog.set_level(logging.INFO)
    for sdk_logger in ("azure.core.pipeline.policies.http_logging_policy", "azure.identity", "msal"):
        caplog.set_level(logging.INFO, logger=sdk_logger)  # the token-leak check below reads the SDKs' request lines too
    # ACR's own conversion of a repository with convertPushedImages starts a moment after the push: a race to lose
    stack = push_stack(env={"AUTOPILOT_PUSH_EXCLUDE": "*:*-debug"}, auto_conversion_delay_seconds=0.5)
    stack.subscribe("autopilot", schema=schema)
    stack.subscribe("autopilot-std", schema=schema, registry=STANDARD)
    stack.subscribe("autopilot-cmk", schema=schema, registry=CMK)

    eligible = stack.push(tags=["1.4.2", "latest"], layers_mb=[5, 20], seed="eligible")  # two events, one digest
    repushed = stack.push(tags=["1.4.2"], layers_mb=[5, 20], seed="eligible")  # the same tag pushed again: same digest
    multi = stack.push(tags=["multi"], platforms=["linux/amd64", "linux/arm64"], layers_mb=[5], format="oci", seed="multi")
    arm64 = stack.push(tags=["arm"], platforms=["linux/arm64"], layers_mb=[5], seed="arm")
    windows = stack.push(tags=["win"], platforms=["windows/amd64"], layers_mb=[5], seed="win")
    huge = stack.push(tags=["huge"], layers_gb=[20, 12], seed="huge")
    debug = stack.push(tags=["1.4.2-debug"], layers_mb=[5], seed="debug")
    chart = stack.push(tags=["chart"], format="oci", config_media_type="application/vnd.cncf.helm.config.v1+json",
                       layer_media_type="application/vnd.cncf.helm.chart.content.v1.tar+gzip", layers_mb=[1], seed="chart")
    std = stack.push(registry=STANDARD, tags=["1.0"], layers_mb=[5], seed="std")
    cmk = stack.push(registry=CMK, tags=["1.0"], layers_mb=[5], seed="cmk")
    auto = stack.push(repository="auto", tags=["auto-1"], layers_mb=[5], seed="auto")
    stack.settle()
    deadline = time.monotonic() + 20
    while not stack.operations(auto, repository="auto") and time.monotonic() < deadline:  # ACR's delayed start
        time.sleep(0.05)
    stack.settle()
    assert repushed == eligible

    # exactly one conversion and one streaming artifact for each eligible digest
    assert len(stack.operations(eligible)) == 1 and len(stack.referrers(eligible)) == 1
    index = json.loads(stack.registry().repositories["app"].manifests[multi].content)
    amd64 = next(m["digest"] for m in index["manifests"] if m["platform"]["architecture"] == "amd64")
    # ACR attaches the artifact to the index (the tag's digest), converted from its linux/amd64 entry
    assert len(stack.operations(multi)) == 1 and len(stack.referrers(multi)) == 1 and stack.referrers(amd64) == []
    # ACR converted the auto-converting repository's push by itself; we did not add a second conversion
    assert len(stack.operations(auto, repository="auto")) == 1 and len(stack.referrers(auto, repository="auto")) == 1
    # nothing for the images that cannot or must not stream
    for digest in (arm64, windows, huge, debug, chart):
        assert stack.operations(digest) == [] and stack.referrers(digest) == []
    assert stack.operations(std, registry=STANDARD, repository="app") == []
    assert stack.operations(cmk, registry=CMK, repository="app") == []
    # the Standard and CMK registries were never asked anything on the data plane
    registry_hosts = {r["host"] for r in stack.emu.requests_since(0, service="acr")}
    assert STANDARD not in registry_hosts and CMK not in registry_hosts

    # every delivery was acknowledged: no dead letters, every invocation succeeded, each decoded in its own schema
    assert stack.eventgrid.dead_letters == []
    invocations = stack.host.invocations_of("on_image_pushed")
    assert invocations and all(inv.succeeded for inv in invocations)
    expected_type = func.CloudEvent if schema == "CloudEventSchemaV1_0" else func.EventGridEvent
    assert all(type(inv.trigger) is expected_type for inv in invocations)

    # outcomes, as published to the custom topic
    outcomes = stack.outcomes()
    eligible_kinds = sorted(o["outcome"] for o in by_tag(outcomes, "1.4.2") + by_tag(outcomes, "latest"))
    assert eligible_kinds.count("created") == 1, eligible_kinds
    assert set(eligible_kinds) <= {"created", "in-progress", "already-streaming"}
    assert [o["outcome"] for o in by_tag(outcomes, "multi")] == ["created"]
    reasons = {tag: {(o["outcome"], o.get("reason")) for o in by_tag(outcomes, tag)}
               for tag in ("arm", "win", "huge", "1.4.2-debug", "chart", "auto-1")}
    assert reasons == {
        "arm": {("skipped", "platform")},
        "win": {("skipped", "platform")},
        "huge": {("skipped", "too-large")},
        "1.4.2-debug": {("skipped", "filtered")},
        "chart": {("skipped", "not-runnable")},
        "auto-1": {("skipped", "auto-conversion")},
    }
    assert {(o["outcome"], o.get("reason")) for o in by_tag(outcomes, "1.0", STANDARD)} == {("skipped", "registry-cannot-stream")}
    assert {(o["outcome"], o.get("reason")) for o in by_tag(outcomes, "1.0", CMK)} == {("skipped", "registry-cannot-stream")}
    untagged = [o for o in outcomes if o.get("reason") == "untagged"]
    assert untagged, "the children of the index and the streaming artifacts' own pushes arrive untagged and are skipped"

    # one structured line per outcome, and no token issued by the emulator ever appears in a log line
    lines = [r.getMessage() for r in caplog.records]
    assert sum('"event": "push.outcome"' in line for line in lines) == len(outcomes)
    issued = list(stack.emu.ctx.tokens.issued)
    assert len(issued) >= 3  # managed identity token, refresh token, access tokens
    text = "\n".join(lines + [m for inv in stack.host.invocations for m in inv.messages])
    leaked = [t[:16] for t in issued if t in text or t.split(".")[2] in text]
    assert leaked == []


def test_duplicate_deliveries_and_report_mode(push_stack):
    stack = push_stack(env={"AUTOPILOT_PUSH_MODE": "report"})
    stack.subscribe("dup", duplicate_rate=1.0)
    digest = stack.push(tags=["v1"], layers_mb=[5], seed="report")
    stack.settle()
    assert stack.operations(digest) == []  # report mode creates nothing
    kinds = [(o["outcome"], o.get("reason"), o.get("mode")) for o in by_tag(stack.outcomes(), "v1")]
    assert kinds == [("skipped", "report-mode", "report")] * 2  # delivered twice, reported twice


def test_registry_allow_list_and_include_filter(push_stack):
    stack = push_stack(env={"AUTOPILOT_PUSH_REGISTRIES": f"{STANDARD}.azurecr.io", "AUTOPILOT_PUSH_INCLUDE": "app:release-*"})
    stack.subscribe("allow")
    digest = stack.push(tags=["release-1"], layers_mb=[5], seed="allow")
    stack.settle()
    assert stack.operations(digest) == []
    assert [(o["outcome"], o.get("reason")) for o in by_tag(stack.outcomes(), "release-1")] == [("skipped", "registry-not-allowed")]
    assert [r for r in stack.emu.requests_since(0, service="acr") if r["host"] == PREMIUM] == []


def test_included_tag_on_allowed_registry_streams_and_excluded_tag_does_not(push_stack):
    stack = push_stack(env={"AUTOPILOT_PUSH_REGISTRIES": stack_registry_id(), "AUTOPILOT_PUSH_INCLUDE": "app:release-*"})
    stack.subscribe("include")
    released = stack.push(tags=["release-2"], layers_mb=[5], seed="rel")
    other = stack.push(tags=["dev-2"], layers_mb=[5], seed="dev")
    stack.settle()
    assert len(stack.operations(released)) == 1 and len(stack.referrers(released)) == 1
    assert stack.operations(other) == []
    assert [(o["outcome"], o.get("reason")) for o in by_tag(stack.outcomes(), "dev-2")] == [("skipped", "filtered")]


def stack_registry_id() -> str:
    from .conftest import SUB_ID

    return f"/subscriptions/{SUB_ID}/resourceGroups/rg-push/providers/Microsoft.ContainerRegistry/registries/{PREMIUM}"
