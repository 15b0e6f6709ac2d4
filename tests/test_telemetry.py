"""Telemetry: outcome and audit-summary fields arrive as OpenTelemetry log attributes (customDimensions), a push
invocation's HTTP calls are spans in its trace, no token or key is ever exported, and nothing is exported twice."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emulator import Emulator
from shared.logs import dimensions
from shared.telemetry import uses_entra_id
from tests.otel_probe import HOST_SPAN_ID, HOST_TRACE_ID
from tests.push.conftest import PREMIUM, event_for, scenario

REPO = Path(__file__).resolve().parent.parent
# An Application Insights connection string whose ingestion endpoint refuses connections at once (nothing leaves the machine).
CONNECTION = "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://127.0.0.1:9/"


def probe(request: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-m", "tests.otel_probe"], input=json.dumps(request), cwd=REPO, capture_output=True,
                            text=True, timeout=240, env={**os.environ, "APPLICATIONINSIGHTS_CONNECTION_STRING": CONNECTION, **env})
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def secrets_of(emu: Emulator) -> list[str]:
    """Every credential the run could have leaked: tokens the emulator issued, the identity header, the storage key."""
    found = list(emu.ctx.tokens.issued)
    found += [v for k, v in os.environ.items() if k == "IDENTITY_HEADER" and v]
    found += re.findall(r"AccountKey=([^;]+)", os.environ.get("AzureWebJobsStorage", ""))  # noqa: SIM112 (the host's own spelling)
    return [s for s in found if len(s) >= 8]


def assert_no_secret(exported: dict[str, Any], emu: Emulator) -> None:
    text = json.dumps(exported)
    for secret in secrets_of(emu):
        assert secret not in text
    assert "Bearer " not in text and "AccountKey=" not in text
    for value in re.findall(r"[?&]sig=([^&\"\s]*)", text):  # signed storage links: the signature must be redacted
        assert value in ("REDACTED", ""), f"a signed link's signature was exported: sig={value[:6]}…"


def assert_spans_descend_from_the_invocation(spans: list[dict[str, Any]]) -> None:
    assert {s["trace_id"] for s in spans} == {HOST_TRACE_ID}, "every span of the invocation is in the host's trace"
    by_id = {s["span_id"]: s for s in spans}
    for span in spans:  # each span (HTTP calls included) descends from the host's invocation span
        node = span
        while node["parent_id"] in by_id:
            node = by_id[node["parent_id"]]
        assert node["parent_id"] == HOST_SPAN_ID, span["name"]


def test_push_outcome_fields_arrive_and_http_calls_are_spans_of_the_invocation(make_emulator: Callable[..., Emulator]) -> None:
    # manifest attributes without a platform, so the push path reads the config blob through its signed storage link
    emu = make_emulator(scenario([{"tags": ["1.0"], "layers_mb": [2]}],
                                 faults=[{"match": "acr.manifests", "strip_fields": ["manifest.architecture", "manifest.os"]}]))
    digest = emu.world.registries[PREMIUM].repositories["app"].tags["1.0"].digest
    out = probe({"mode": "push", "event": event_for(emu, digest, "1.0")},
                {"AUTOPILOT_PUSH_LOCK_CONTAINER": f"locks-otel-{os.getpid()}"})
    assert out["configured"] is True

    outcomes = [r for r in out["logs"] if r["attributes"].get("event") == "push.outcome"]
    assert len(outcomes) == 1, [r["body"][:200] for r in out["logs"]]  # exported once: one handler, one record
    fields = outcomes[0]["attributes"]
    assert fields["outcome"] == "created"
    assert fields["registry"] == PREMIUM and fields["repository"] == "app" and fields["tag"] == "1.0" and fields["digest"] == digest
    assert json.loads(outcomes[0]["body"])["outcome"] == "created"  # the message stays the JSON line
    assert outcomes[0]["trace_id"] == HOST_TRACE_ID  # the log line belongs to the invocation's trace

    http = [s for s in out["spans"] if s["kind"] == "CLIENT"]
    urls = [str(s["attributes"].get("url.full") or s["attributes"].get("http.url")) for s in http]
    # ARM (the SKU check), the registry's data plane (the conversion itself), the lock blob and the outcome topic
    for part in (f"/registries/{PREMIUM}?", f"/acr/v1/app/_streaming/{digest}", "/locks-otel-", "/api/events"):
        assert any(part in url for url in urls), (part, urls)
    assert any("sig=REDACTED" in url for url in urls), "the config blob's signed link was read and its signature redacted"
    assert_spans_descend_from_the_invocation(out["spans"])
    assert_no_secret(out, emu)


def test_audit_summary_fields_arrive_as_dimensions(make_emulator: Callable[..., Emulator]) -> None:
    emu = make_emulator(REPO / "emulator" / "scenarios" / "demo.yaml")
    out = probe({"mode": "audit"}, {"AUTOPILOT_AUDIT_CONTAINER": f"audit-otel-{os.getpid()}", "AUTOPILOT_AUDIT_MODE": "report"})
    (summary,) = [r for r in out["logs"] if r["attributes"].get("event") == "audit.completed"]
    fields = summary["attributes"]
    body = json.loads(summary["body"])
    assert fields["run_id"] == body["run_id"] and fields["mode"] == "report" and fields["pools"] == body["pools"] > 0
    assert body["by_state"] and all(fields[f"by_state.{state}"] == count for state, count in body["by_state"].items())
    assert all(fields[f"by_action.{action}"] == count for action, count in body["by_action"].items())
    assert summary["trace_id"] == HOST_TRACE_ID
    # the audit lists pools on a thread pool: those ARM calls stay in the timer invocation's trace too
    pool_lists = [s for s in out["spans"] if s["kind"] == "CLIENT" and "/agentPools" in json.dumps(s["attributes"])]
    assert len(pool_lists) >= 2, [s["name"] for s in out["spans"]]
    assert_spans_descend_from_the_invocation(out["spans"])
    assert_no_secret(out, emu)


def test_without_a_connection_string_nothing_is_configured_or_imported() -> None:
    code = ("import sys, function_app, shared.telemetry as t\nprint(t.configure({}), any(m.startswith(('opentelemetry', 'azure.monitor')) "
            "for m in sys.modules))")
    env = {k: v for k, v in os.environ.items() if k != "APPLICATIONINSIGHTS_CONNECTION_STRING"}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    assert result.stdout.split() == ["False", "False"], result.stderr


def test_dimensions_are_flat_typed_and_never_clash_with_log_record_attributes() -> None:
    flat = dimensions({"event": "audit.completed", "pools": 3, "ok": True, "by_state": {"compliant": 2, "error": 1},
                       "subscriptions": ["a", "b"], "name": "x", "message": "y", "skipped": None})
    assert flat == {"event": "audit.completed", "pools": 3, "ok": True, "by_state.compliant": 2, "by_state.error": 1,
                    "subscriptions": '["a", "b"]', "field.name": "x", "field.message": "y"}


def test_entra_id_authentication_is_read_from_the_functions_setting() -> None:
    assert uses_entra_id({"APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "ClientId=abc;Authorization=AAD"})
    assert not uses_entra_id({"APPLICATIONINSIGHTS_AUTHENTICATION_STRING": ""}) and not uses_entra_id({})
