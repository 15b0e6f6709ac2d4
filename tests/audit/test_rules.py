"""Classification rules: one state per pool, with a reason, in a fixed precedence."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from shared.audit.model import PoolRecord
from shared.audit.rules import RULES, classify
from shared.audit.settings import AuditSettings, parse_version
from shared.settings import Env

FACTS = json.loads((Path(__file__).resolve().parent.parent / "fixtures" / "audit" / "aks_requirements.json").read_text())
SUB = "3f2a3d10-0000-4000-8000-0000000000a1"
DEFAULT = AuditSettings.from_env(Env({}))


def pool(**overrides) -> PoolRecord:
    base = PoolRecord(subscription_id=SUB, resource_group="rg-aks", cluster="aks1", pool="user1", os_type="Linux",
                      os_sku="Ubuntu", kubernetes_version="1.30.4", provisioning_state="Succeeded", power_state="Running",
                      streaming_enabled=None, cluster_provisioning_state="Succeeded", cluster_power_state="Running")
    return dataclasses.replace(base, **overrides)


def test_default_minimum_is_the_documented_one():
    assert DEFAULT.min_kubernetes == parse_version(FACTS["min_kubernetes"])
    assert any(FACTS["min_kubernetes"] in q for q in FACTS["quotes"])


@pytest.mark.parametrize(
    ("overrides", "state", "reason_part"),
    [
        ({}, "remediable", "null profile"),
        ({"streaming_enabled": False}, "remediable", "is off"),
        ({"streaming_enabled": True}, "compliant", "enabled"),
        ({"os_type": "Windows", "os_sku": "Windows2022"}, "ineligible", "Windows"),
        ({"os_sku": "AzureContainerLinux"}, "ineligible", "AzureContainerLinux"),
        ({"os_sku": "Flatcar"}, "ineligible", "Flatcar"),
        ({"workload_runtime": "KataMshvVmIsolation"}, "ineligible", "Kata"),
        ({"workload_runtime": "KataVmIsolation"}, "ineligible", "Kata"),
        ({"workload_runtime": "OCIContainer"}, "remediable", "null profile"),
        ({"kubernetes_version": "1.24.10"}, "ineligible", "below the documented minimum 1.25"),
        ({"kubernetes_version": "1.25.0"}, "remediable", ""),
        ({"kubernetes_version": None}, "ineligible", "unknown"),
        ({"os_sku": "Ubuntu2404"}, "ineligible", "listed as unsupported"),
        ({"os_sku": "AzureLinux3"}, "ineligible", "listed as unsupported"),
        ({"os_sku": "AzureLinux"}, "remediable", ""),
        ({"provisioning_state": "Updating"}, "busy", "Updating"),
        ({"cluster_provisioning_state": "Upgrading"}, "busy", "cluster is Upgrading"),
        ({"power_state": "Stopped"}, "stopped", "node pool is stopped"),
        ({"cluster_power_state": "Stopped"}, "stopped", "cluster is stopped"),
        ({"pool_tags": {"artifact-streaming": "off"}}, "excluded", "pool tag"),
        ({"cluster_tags": {"Artifact-Streaming": "Off"}}, "excluded", "cluster tag"),
        ({"cluster_tags": {"artifact-streaming": "on"}}, "remediable", ""),
    ],
)
def test_each_state_with_its_reason(overrides, state, reason_part):
    decision = classify(pool(**overrides), DEFAULT)
    assert decision.state == state, decision
    assert reason_part in decision.reason


def test_precedence_exclusion_then_ineligible_then_compliant_then_stopped_then_busy():
    assert classify(pool(os_type="Windows", pool_tags={"artifact-streaming": "off"}), DEFAULT).state == "excluded"
    assert classify(pool(os_sku="Flatcar", streaming_enabled=True), DEFAULT).state == "ineligible"
    assert classify(pool(streaming_enabled=True, power_state="Stopped"), DEFAULT).state == "compliant"
    assert classify(pool(power_state="Stopped", provisioning_state="Updating"), DEFAULT).state == "stopped"
    assert [r.name for r in RULES][-1] == "remediable"


def test_exclusion_list_globs_match_cluster_or_pool_ids_case_insensitively():
    s = dataclasses.replace(DEFAULT, exclude=(f"/subscriptions/{SUB}/resourceGroups/RG-AKS/providers/*/managedClusters/aks1",))
    assert classify(pool(), s).state == "excluded"
    s = dataclasses.replace(DEFAULT, exclude=("*/agentPools/user*",))
    assert classify(pool(), s).state == "excluded"
    assert classify(pool(pool="system"), s).state == "remediable"


def test_unsupported_list_and_minimum_are_settings():
    s = dataclasses.replace(DEFAULT, unsupported_os_skus=(), min_kubernetes=(1, 31))
    assert classify(pool(os_sku="Ubuntu2404", kubernetes_version="1.31.1"), s).state == "remediable"
    assert classify(pool(kubernetes_version="1.30.9"), s).state == "ineligible"


records = st.builds(
    PoolRecord,
    subscription_id=st.just(SUB),
    resource_group=st.sampled_from(["rg-aks", "rg-vendor"]),
    cluster=st.sampled_from(["aks1", "aks2"]),
    pool=st.sampled_from(["system", "user1", "gpu"]),
    os_type=st.sampled_from(["Linux", "Windows", None]),
    os_sku=st.sampled_from(["Ubuntu", "AzureLinux", "AzureLinux3", "Ubuntu2404", "Flatcar", "AzureContainerLinux",
                            "Windows2022", "CBLMariner", None]),
    kubernetes_version=st.sampled_from(["1.24.10", "1.25.0", "1.30.4", "1.31.2", "", None]),
    provisioning_state=st.sampled_from(["Succeeded", "Updating", "Failed", "Upgrading", None]),
    power_state=st.sampled_from(["Running", "Stopped", None]),
    streaming_enabled=st.sampled_from([True, False, None]),
    workload_runtime=st.sampled_from([None, "OCIContainer", "WasmWasi", "KataMshvVmIsolation", "KataVmIsolation"]),
    pool_tags=st.sampled_from([{}, {"artifact-streaming": "off"}, {"artifact-streaming": "on"}, {"team": "x"}]),
    cluster_tags=st.sampled_from([{}, {"ARTIFACT-STREAMING": "Off"}]),
    cluster_provisioning_state=st.sampled_from(["Succeeded", "Upgrading"]),
    cluster_power_state=st.sampled_from(["Running", "Stopped"]),
)
WITH_LIST = dataclasses.replace(DEFAULT, exclude=("/subscriptions/*/resourceGroups/rg-vendor/*",))


@hsettings(max_examples=400, deadline=None)
@given(records)
def test_remediable_only_when_every_safety_condition_holds(p: PoolRecord):
    decision = classify(p, WITH_LIST)
    assert decision.state in ("compliant", "remediable", "ineligible", "busy", "stopped", "excluded") and decision.reason
    excluded = (p.pool_tags.get("artifact-streaming") == "off" or bool(p.cluster_tags) or p.resource_group == "rg-vendor")
    assert (decision.state == "excluded") == excluded
    if decision.state == "remediable":
        assert p.streaming_enabled is not True
        assert p.os_type != "Windows" and p.os_sku in ("Ubuntu", "AzureLinux", "CBLMariner", None)
        assert not (p.workload_runtime or "").startswith("Kata")
        assert p.kubernetes_version in ("1.25.0", "1.30.4", "1.31.2")
        assert p.provisioning_state == "Succeeded" and p.cluster_provisioning_state == "Succeeded"
        assert p.power_state != "Stopped" and p.cluster_power_state != "Stopped"
    if decision.state == "compliant":
        assert p.streaming_enabled is True
