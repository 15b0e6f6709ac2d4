"""Emulator core: scenario validation, seeded faults, tokens, the endpoints.json contract and the process entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emulator.faults import FaultPlan, FaultRule
from emulator.scenario import ScenarioError, load_scenario
from emulator.tokens import TokenAuthority, bearer

REPO = Path(__file__).resolve().parents[2]
SUB = "00000000-0000-4000-8000-000000000001"


def test_demo_scenario_loads_every_case() -> None:
    world, _rules, _seed = load_scenario(REPO / "emulator" / "scenarios" / "demo.yaml")
    prod = world.registries["contosoprod"]
    assert prod.sku == "Premium"
    assert world.registries["contosostd"].sku == "Standard"
    assert world.registries["contosocmk"].encryption == "enabled"
    assert prod.repositories["api/orders"].operations, "a pre-streamed image has its finished conversion"
    assert prod.repositories["auto/converted"].convert_pushed_images
    pools = {p.name: p for c in world.clusters.values() for p in c.pools.values()}
    assert pools["win22"].os_type == "Windows"
    assert pools["kata"].workload_runtime == "KataMshvVmIsolation"
    assert pools["system"].artifact_streaming is None
    assert any(not s.accessible for s in world.subscriptions.values())


@pytest.mark.parametrize(
    ("scenario", "fragment"),
    [
        ({"subscriptions": [{"id": SUB, "colour": "blue"}]}, "subscriptions[0]: unknown key(s) ['colour']"),
        ({"subscriptions": [{"id": "not-a-guid"}]}, "subscriptions[0].id: 'not-a-guid' is not a GUID"),
        ({"subscriptions": [{"id": SUB, "registries": [{"name": "r", "sku": "Gold"}]}]}, "sku: 'Gold' is not Basic"),
        ({"subscriptions": [{"id": SUB, "clusters": [{"name": "c", "pools": [{"name": "p", "os_type": "BeOS"}]}]}]},
         "pools[0].os_type: 'BeOS'"),
        ({"settings": {"lro_sec": 1}}, "settings: unknown key(s) ['lro_sec']"),
        ({"faults": {"rules": [{"match": "arm", "error_rate": 2}]}}, "error_rate must be between 0 and 1"),
        ({"subscriptions": [{"id": SUB, "registries": [{"name": "r", "repositories": [
            {"name": "a", "images": [{"platforms": ["linux"]}]}]}]}]}, "must look like os/arch"),
    ],
)
def test_bad_scenarios_name_the_offending_key(scenario: dict, fragment: str) -> None:
    with pytest.raises((ScenarioError, ValueError)) as info:
        load_scenario(scenario)
    assert fragment in str(info.value)


def test_fault_plan_replays_the_same_decisions_whatever_the_interleaving() -> None:
    rules = [FaultRule(match="acr.*", error_rate=0.3, statuses=(429, 503)), FaultRule(match="arm", latency_ms=5)]
    calls = [("acr.streaming", "POST", f"/acr/v1/r/_streaming/{i % 7}") for i in range(200)]
    first = FaultPlan(seed=11)
    first.configure(rules)
    a = [first.decide(*c) for c in calls]
    second = FaultPlan(seed=11)
    second.configure(rules)
    b = list(reversed([second.decide(*c) for c in reversed(calls)]))
    by_call_a = {}
    by_call_b = {}
    for c, d in zip(calls, a, strict=True):
        by_call_a.setdefault(c, []).append(d.status)
    for c, d in zip(calls, b, strict=True):
        by_call_b.setdefault(c, []).append(d.status)
    # The n-th occurrence of a request meets the same fate in both runs.
    assert {k: sorted(map(str, v)) for k, v in by_call_a.items()} == {k: sorted(map(str, v)) for k, v in by_call_b.items()}
    errors = sum(d.status is not None for d in a)
    assert 30 < errors < 90, errors  # about 30 % of 200
    assert all(d.status in (None, 429, 503) for d in a)
    assert all(d.retry_after == 1.0 for d in a if d.status in (429, 503))
    other_seed = FaultPlan(seed=12)
    other_seed.configure(rules)
    assert [other_seed.decide(*c).status for c in calls] != [d.status for d in a]
    assert first.decide("arm", "GET", "/subscriptions").latency_s == pytest.approx(0.005)
    assert first.decide("identity.token", "GET", "/msi/token").status is None


def test_tokens_verify_only_what_this_authority_minted() -> None:
    authority = TokenAuthority("tenant")
    token = authority.mint({"aud": "https://management.azure.com/"}, ttl_seconds=60)
    assert authority.verify(token)["aud"] == "https://management.azure.com/"
    head, body, sig = token.split(".")
    assert authority.verify(f"{head}.{body}x.{sig}") is None
    assert TokenAuthority("tenant").verify(token) is None, "another run's key must not verify"
    expired = authority.mint({}, ttl_seconds=-1)
    assert authority.verify(expired) is None
    assert authority.verify("not-a-token") is None
    assert bearer(f"Bearer {token}") == token
    assert bearer("Basic abc") is None
    assert bearer(None) is None


def test_endpoints_json_contract(make_emulator) -> None:
    emu = make_emulator(REPO / "emulator" / "scenarios" / "demo.yaml")
    written = json.loads(emu.endpoints_path.read_text())
    for key in ("arm", "ca_bundle", "registries", "env"):
        assert key in written
    assert written["arm"].startswith("https://127.0.0.1:")
    assert set(written["registries"]) == {"contosoprod", "contosostd", "contosocmk"}
    assert Path(written["ca_bundle"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
    env = written["env"]
    assert env["AUTOPILOT_ARM_ENDPOINT"] == written["arm"]
    assert env["REQUESTS_CA_BUNDLE"] == written["ca_bundle"]
    assert env["IDENTITY_ENDPOINT"].startswith(written["arm"])
    assert env["IDENTITY_HEADER"]
    assert "AzureWebJobsStorage" in env


def test_managed_identity_token_through_default_azure_credential(make_emulator) -> None:
    from azure.identity import DefaultAzureCredential

    emu = make_emulator({"subscriptions": [{"id": SUB}]})
    mark = emu.request_mark()
    token = DefaultAzureCredential().get_token("https://management.azure.com/.default")
    claims = emu.ctx.tokens.verify(token.token)
    assert claims is not None and claims["aud"] == "https://management.azure.com/"
    assert token.expires_on > time.time() + 600
    calls = emu.requests_since(mark)
    assert [(c["endpoint_class"], c["status"]) for c in calls] == [("identity.token", 200)]


def test_python_m_emulator_prints_endpoints_path_and_stops_cleanly(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator", "--scenario", str(REPO / "emulator" / "scenarios" / "demo.yaml"),
         "--state-dir", str(tmp_path)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ},
    )
    try:
        line = proc.stdout.readline().strip()
        assert line == str(tmp_path / "endpoints.json")
        assert json.loads(Path(line).read_text())["registries"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert proc.returncode == 0


def test_python_m_emulator_rejects_a_bad_scenario_with_a_clear_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("subscriptions:\n  - id: nope\n")
    proc = subprocess.run([sys.executable, "-m", "emulator", "--scenario", str(bad)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "subscriptions[0].id: 'nope' is not a GUID" in proc.stderr
