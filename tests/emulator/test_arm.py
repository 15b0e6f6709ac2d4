"""The emulator's ARM through the unmodified azure-mgmt-* clients: reads, paging, agent pool writes (ETag, 409, LRO), errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceModifiedError, ResourceNotFoundError
from azure.mgmt.containerservice.models import AgentPool, AgentPoolArtifactStreamingProfile

from emulator import Emulator
from shared.azure_clients import container_registry_client, container_service_client, credential, subscription_client
from shared.settings import AzureSettings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "arm"
SUB_A = "11111111-0000-4000-8000-00000000000a"
SUB_B = "11111111-0000-4000-8000-00000000000b"
SUB_X = "11111111-0000-4000-8000-00000000000c"
SUB_OFF = "11111111-0000-4000-8000-00000000000d"
AKS_API = "2026-08-01"


def _pools(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": "system", "mode": "System"}, *extra]


SCENARIO: dict[str, Any] = {
    "settings": {"page_size": 2, "lro_seconds": 0.4},
    "subscriptions": [
        {"id": SUB_A, "name": "alpha", "registries": [
            {"name": "premiumreg", "resource_group": "rg-reg", "sku": "Premium"},
            {"name": "standardreg", "resource_group": "rg-reg", "sku": "Standard", "tags": {"team": "web"}},
            {"name": "otherrg", "resource_group": "rg-reg-2", "sku": "Basic"},
        ], "clusters": [
            {"name": "aks-a", "resource_group": "rg-aks-1", "kubernetes_version": "1.30.4", "tags": {"env": "prod"}, "pools": _pools(
                {"name": "user", "artifact_streaming": False},
                {"name": "blue", "os_sku": "AzureLinux", "artifact_streaming": True},
                {"name": "win", "os_type": "Windows"},
                {"name": "kata", "os_sku": "AzureLinux", "workload_runtime": "KataMshvVmIsolation"},
                {"name": "acl", "os_sku": "AzureContainerLinux"},
                {"name": "flat", "os_sku": "Flatcar"},
                {"name": "stop", "power_state": "Stopped"},
            )},
            # a pool seeded mid-operation blocks every pool write in its cluster (one agent pool operation per cluster)
            {"name": "aks-b", "resource_group": "rg-aks-1", "pools": _pools({"name": "busy", "provisioning_state": "Updating"})},
            {"name": "aks-c", "resource_group": "rg-aks-1"},
            {"name": "aks-d", "resource_group": "rg-aks-2"},
            {"name": "aks-old", "resource_group": "rg-aks-2", "kubernetes_version": "1.24.10"},
        ]},
        {"id": SUB_B, "name": "beta", "registries": [
            {"name": "cmkreg", "resource_group": "rg-reg", "sku": "Premium", "encryption": "enabled"},
        ]},
        {"id": SUB_X, "name": "restricted", "accessible": False, "clusters": [{"name": "aks-x", "resource_group": "rg-x"}]},
        {"id": SUB_OFF, "name": "disabled", "state": "Disabled", "clusters": [{"name": "aks-off", "resource_group": "rg-off"}]},
    ],
}


@pytest.fixture
def emu(make_emulator) -> Emulator:
    return make_emulator(SCENARIO)


@pytest.fixture
def settings(emu: Emulator) -> AzureSettings:
    return AzureSettings.from_env()


def aks(settings: AzureSettings, sub: str = SUB_A):
    return container_service_client(settings, sub, polling_interval=0.1)


def acr(settings: AzureSettings, sub: str = SUB_A):
    return container_registry_client(settings, sub)


def raw(emu: Emulator, method: str, path: str, *, token: str | None = "arm", api: str | None = AKS_API,
        headers: dict[str, str] | None = None, body: Any = None) -> requests.Response:
    """A plain HTTPS call to the emulator's ARM (for what the SDKs never send)."""
    hdrs = dict(headers or {})
    if token == "arm":
        token = credential().get_token("https://management.azure.com/.default").token
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    params = {"api-version": api} if api else {}
    return requests.request(method, emu.env["AUTOPILOT_ARM_ENDPOINT"] + path, params=params, headers=hdrs,
                            data=json.dumps(body) if body is not None else None, verify=emu.env["REQUESTS_CA_BUNDLE"], timeout=30)


def pool_path(sub: str, rg: str, cluster: str, pool: str | None = None) -> str:
    path = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerService/managedClusters/{cluster}/agentPools"
    return f"{path}/{pool}" if pool else path


def arm_calls(emu: Emulator, mark: int, endpoint_class: str | None = None) -> list[dict[str, Any]]:
    return [r for r in emu.requests_since(mark, "arm") if endpoint_class is None or r["endpoint_class"] == endpoint_class]


def slow_lro(emu: Emulator, seconds: float) -> None:
    """Make agent pool operations last long enough that a busy machine cannot finish them between two assertions."""
    emu.call(setattr, emu.world.settings, "lro_seconds", seconds)


def enable(pool: AgentPool) -> AgentPool:
    pool.artifact_streaming_profile = AgentPoolArtifactStreamingProfile(enabled=True)
    return pool


# --------------------------------------------------------------------------------------------------- reads


def test_subscriptions_list_follows_next_link_and_includes_the_inaccessible_one(emu: Emulator, settings: AzureSettings) -> None:
    mark = emu.request_mark()
    subs = {s.subscription_id: s for s in subscription_client(settings).subscriptions.list()}
    assert set(subs) == {SUB_A, SUB_B, SUB_X, SUB_OFF}
    assert subs[SUB_A].display_name == "alpha" and subs[SUB_OFF].state == "Disabled"
    pages = arm_calls(emu, mark, "arm.subscriptions")
    assert len(pages) == 2 and "skipToken" in pages[1]["query"], "page_size 2 over 4 subscriptions: two pages via nextLink"
    one = subscription_client(settings).subscriptions.get(SUB_X)
    assert one.display_name == "restricted"


def test_registries_show_sku_login_server_and_encryption(emu: Emulator, settings: AzureSettings) -> None:
    premium = acr(settings).registries.get("rg-reg", "premiumreg")
    assert premium.sku.name == "Premium" and premium.sku.tier == "Premium"
    assert premium.login_server == emu.world.registries["premiumreg"].login_server
    assert premium.login_server.startswith("127.0.0.1:")
    assert premium.encryption.status == "disabled" and premium.encryption.key_vault_properties is None
    assert premium.provisioning_state == "Succeeded" and premium.admin_user_enabled is False
    standard = acr(settings).registries.get("RG-REG", "StandardReg")  # ARM names are case-insensitive
    assert standard.sku.name == "Standard" and standard.tags == {"team": "web"}
    cmk = acr(settings, SUB_B).registries.get("rg-reg", "cmkreg")
    assert cmk.sku.name == "Premium" and cmk.encryption.status == "enabled"
    assert cmk.encryption.key_vault_properties.key_identifier.startswith("https://")
    by_sub = [r.name for r in acr(settings).registries.list()]
    assert by_sub == ["otherrg", "premiumreg", "standardreg"], "three registries over two pages"
    assert [r.name for r in acr(settings).registries.list_by_resource_group("rg-reg")] == ["premiumreg", "standardreg"]


def test_registry_body_has_the_shape_azure_recorded(emu: Emulator) -> None:
    recorded = json.loads((FIXTURES / "registry_get_recorded.json").read_text())["response_body"]
    ours = raw(emu, "GET", "/subscriptions/" + SUB_A + "/resourceGroups/rg-reg/providers/Microsoft.ContainerRegistry/registries/premiumreg",
               api="2025-11-01").json()
    assert set(ours) == set(recorded)
    assert set(ours["properties"]) == set(recorded["properties"])
    assert set(ours["properties"]["policies"]) == set(recorded["properties"]["policies"])
    assert ours["type"] == recorded["type"] and ours["sku"] == {"name": "Premium", "tier": "Premium"}


def test_clusters_list_by_subscription_and_resource_group_page_with_next_link(emu: Emulator, settings: AzureSettings) -> None:
    mark = emu.request_mark()
    names = [c.name for c in aks(settings).managed_clusters.list()]
    assert sorted(names) == ["aks-a", "aks-b", "aks-c", "aks-d", "aks-old"]
    assert len(arm_calls(emu, mark, "arm.clusters")) == 3, "5 clusters at page_size 2"
    assert sorted(c.name for c in aks(settings).managed_clusters.list_by_resource_group("rg-aks-2")) == ["aks-d", "aks-old"]
    assert not list(aks(settings, SUB_B).managed_clusters.list())


def test_cluster_get_carries_pool_profiles_with_streaming_state(emu: Emulator, settings: AzureSettings) -> None:
    cluster = aks(settings).managed_clusters.get("rg-aks-1", "aks-a")
    assert cluster.kubernetes_version == "1.30.4" and cluster.current_kubernetes_version == "1.30.4"
    assert cluster.provisioning_state == "Succeeded" and cluster.power_state.code == "Running"
    assert cluster.tags == {"env": "prod"} and cluster.location == "eastus"
    profiles = {p.name: p for p in cluster.agent_pool_profiles}
    assert profiles["blue"].artifact_streaming_profile.enabled is True
    assert profiles["user"].artifact_streaming_profile.enabled is False
    assert profiles["system"].artifact_streaming_profile is None and profiles["system"].mode == "System"
    assert profiles["win"].os_type == "Windows" and profiles["kata"].workload_runtime == "KataMshvVmIsolation"
    assert profiles["stop"].power_state.code == "Stopped"
    busy = {p.name: p for p in aks(settings).managed_clusters.get("rg-aks-1", "aks-b").agent_pool_profiles}["busy"]
    assert busy.provisioning_state == "Updating"
    assert profiles["user"].e_tag == emu.world.cluster(SUB_A, "rg-aks-1", "aks-a").pools["user"].etag


def test_agent_pools_list_pages_and_get_has_etag_header(emu: Emulator, settings: AzureSettings) -> None:
    names = [p.name for p in aks(settings).agent_pools.list("rg-aks-1", "aks-a")]
    assert names == ["system", "user", "blue", "win", "kata", "acl", "flat", "stop"]
    pool = aks(settings).agent_pools.get("rg-aks-1", "aks-a", "user")
    assert pool.os_type == "Linux" and pool.os_sku == "Ubuntu" and pool.count == 3 and pool.vm_size == "Standard_D4s_v5"
    assert pool.orchestrator_version == pool.current_orchestrator_version == "1.30.4"
    response = raw(emu, "GET", pool_path(SUB_A, "rg-aks-1", "aks-a", "user"))
    assert response.headers["ETag"] == pool.e_tag == response.json()["properties"]["eTag"]
    assert response.json()["type"] == "Microsoft.ContainerService/managedClusters/agentPools"
    for header in ("x-ms-request-id", "x-ms-correlation-request-id"):
        assert response.headers[header]


def test_an_old_api_version_does_not_know_artifact_streaming(emu: Emulator) -> None:
    path = pool_path(SUB_A, "rg-aks-1", "aks-a", "blue")
    assert raw(emu, "GET", path).json()["properties"]["artifactStreamingProfile"] == {"enabled": True}
    assert "artifactStreamingProfile" not in raw(emu, "GET", path, api="2025-10-01").json()["properties"]
    assert "artifactStreamingProfile" in raw(emu, "GET", path, api="2025-10-02-preview").json()["properties"]


# --------------------------------------------------------------------------------------------------- writes


def test_put_with_etag_enables_streaming_and_the_lro_poller_completes(emu: Emulator, settings: AzureSettings) -> None:
    client = aks(settings)
    pool = client.agent_pools.get("rg-aks-1", "aks-a", "user")
    read_etag = pool.e_tag
    slow_lro(emu, 3)
    mark = emu.request_mark()
    poller = client.agent_pools.begin_create_or_update("rg-aks-1", "aks-a", "user", enable(pool), etag=read_etag,
                                                       match_condition=MatchConditions.IfNotModified)
    put = arm_calls(emu, mark, "arm.agentpools")[0]
    assert (put["method"], put["status"]) == ("PUT", 200)
    during = client.agent_pools.get("rg-aks-1", "aks-a", "user")
    assert during.provisioning_state == "Updating" and during.artifact_streaming_profile.enabled is True
    assert during.e_tag != read_etag, "a new eTag right at PUT"
    done = poller.result()
    assert done.provisioning_state == "Succeeded" and done.artifact_streaming_profile.enabled is True
    assert done.e_tag not in (read_etag, during.e_tag), "and another when the operation finishes"
    assert arm_calls(emu, mark, "arm.operations"), "the poller followed Azure-AsyncOperation"
    model_pool = emu.world.cluster(SUB_A, "rg-aks-1", "aks-a").pools["user"]
    assert model_pool.artifact_streaming is True and model_pool.reimages == 1
    [write] = emu.world.arm_writes
    assert (write.cluster, write.pool, write.actor, write.created) == ("aks-a", "user", "arm", False)
    assert write.changes == {"artifactStreamingProfile": [False, True]}


def test_put_response_headers_and_operation_status_shape(emu: Emulator) -> None:
    path = pool_path(SUB_A, "rg-aks-1", "aks-a", "system")
    body = raw(emu, "GET", path).json()
    body["properties"]["artifactStreamingProfile"] = {"enabled": True}
    slow_lro(emu, 60)
    put = raw(emu, "PUT", path, body=body, headers={"Content-Type": "application/json", "If-Match": body["properties"]["eTag"]})
    assert put.status_code == 200 and put.json()["properties"]["provisioningState"] == "Updating"
    op_url = put.headers["Azure-AsyncOperation"]
    assert f"/subscriptions/{SUB_A}/providers/Microsoft.ContainerService/locations/eastus/operations/" in op_url
    assert put.headers["Location"] and put.headers["ETag"] == put.json()["properties"]["eTag"]
    token = credential().get_token("https://management.azure.com/.default").token
    status = requests.get(op_url, headers={"Authorization": f"Bearer {token}"}, verify=emu.env["REQUESTS_CA_BUNDLE"], timeout=30).json()
    assert status["status"] == "InProgress" and status["name"] and status["startTime"]
    result = requests.get(put.headers["Location"], headers={"Authorization": f"Bearer {token}"}, verify=emu.env["REQUESTS_CA_BUNDLE"],
                          timeout=30)
    assert result.status_code == 202 and result.headers["Retry-After"]
    second = raw(emu, "PUT", path, body=body, headers={"Content-Type": "application/json"})
    assert second.status_code == 409 and second.json()["error"]["code"] == "OperationNotAllowed"
    assert second.json()["error"]["message"].startswith("Operation is not allowed: Another agentpool operation (system - Updating)")
    assert "https://aka.ms/aks-pending-operation" in second.json()["error"]["message"]


def test_second_put_while_updating_is_409(emu: Emulator, settings: AzureSettings) -> None:
    client = aks(settings)
    slow_lro(emu, 3)
    first = client.agent_pools.begin_create_or_update("rg-aks-1", "aks-a", "user", enable(client.agent_pools.get("rg-aks-1", "aks-a", "user")))
    again = client.agent_pools.get("rg-aks-1", "aks-a", "user")
    again.count = 5
    with pytest.raises(HttpResponseError) as info:
        client.agent_pools.begin_create_or_update("rg-aks-1", "aks-a", "user", again)
    assert info.value.status_code == 409 and info.value.error.code == "OperationNotAllowed"
    first.result()
    with pytest.raises(HttpResponseError) as seeded:
        client.agent_pools.begin_create_or_update("rg-aks-1", "aks-b", "busy", enable(client.agent_pools.get("rg-aks-1", "aks-b", "busy")))
    assert seeded.value.status_code == 409 and "(busy - Updating)" in seeded.value.error.message
    assert len(emu.world.arm_writes) == 1


def test_a_sibling_pool_operation_blocks_every_pool_write_in_the_cluster(emu: Emulator, settings: AzureSettings) -> None:
    """AKS runs one agent pool operation per cluster; the emulator must not be kinder (issue reports quote this 409)."""
    client = aks(settings)
    with pytest.raises(HttpResponseError) as info:
        client.agent_pools.begin_create_or_update("rg-aks-1", "aks-b", "system", enable(client.agent_pools.get("rg-aks-1", "aks-b", "system")))
    assert info.value.status_code == 409 and info.value.error.code == "OperationNotAllowed"
    assert "Another agentpool operation (busy - Updating) is in progress" in info.value.error.message
    slow_lro(emu, 3)
    first = client.agent_pools.begin_create_or_update("rg-aks-1", "aks-a", "user", enable(client.agent_pools.get("rg-aks-1", "aks-a", "user")))
    with pytest.raises(HttpResponseError) as sibling:
        client.agent_pools.begin_create_or_update("rg-aks-1", "aks-a", "system", enable(client.agent_pools.get("rg-aks-1", "aks-a", "system")))
    assert sibling.value.status_code == 409 and "(user - Updating)" in sibling.value.error.message
    first.result()
    done = client.agent_pools.begin_create_or_update("rg-aks-1", "aks-a", "system", enable(client.agent_pools.get("rg-aks-1", "aks-a", "system")))
    assert done.result().artifact_streaming_profile.enabled is True
    assert [(w.cluster, w.pool) for w in emu.world.arm_writes] == [("aks-a", "user"), ("aks-a", "system")]


def test_stale_etag_is_412_and_nothing_is_written(emu: Emulator, settings: AzureSettings) -> None:
    client = aks(settings)
    pool = client.agent_pools.get("rg-aks-1", "aks-a", "user")
    admin = requests.patch(f"{emu.endpoints['admin']}/arm/clusters/aks-a/pools/user", json={"tags": {"owner": "someone-else"}},
                           verify=emu.env["REQUESTS_CA_BUNDLE"], timeout=30)
    assert admin.status_code == 200 and admin.json()["etag"] != pool.e_tag
    with pytest.raises(ResourceModifiedError) as info:
        client.agent_pools.begin_create_or_update("rg-aks-1", "aks-a", "user", enable(pool), etag=pool.e_tag,
                                                  match_condition=MatchConditions.IfNotModified)
    assert info.value.status_code == 412 and info.value.error.code == "PreconditionFailed"
    none_match = raw(emu, "PUT", pool_path(SUB_A, "rg-aks-1", "aks-a", "user"), body={"properties": {}},
                     headers={"Content-Type": "application/json", "If-None-Match": "*"})
    assert none_match.status_code == 412
    assert [w.actor for w in emu.world.arm_writes] == ["admin"]
    assert emu.world.cluster(SUB_A, "rg-aks-1", "aks-a").pools["user"].artifact_streaming is False


@pytest.mark.parametrize(
    ("pool", "fragment"),
    [
        ("win", "not supported for Windows agent pools"),
        ("kata", "workload runtime 'KataMshvVmIsolation'"),
        ("acl", "OS SKU 'AzureContainerLinux'"),
        ("flat", "OS SKU 'Flatcar'"),
    ],
)
def test_streaming_on_a_pool_that_cannot_have_it_is_400(emu: Emulator, settings: AzureSettings, pool: str, fragment: str) -> None:
    client = aks(settings)
    with pytest.raises(HttpResponseError) as info:
        client.agent_pools.begin_create_or_update("rg-aks-1", "aks-a", pool, enable(client.agent_pools.get("rg-aks-1", "aks-a", pool)))
    assert info.value.status_code == 400 and info.value.error.code == "InvalidParameter"
    assert fragment in info.value.error.message
    assert emu.world.arm_writes == []


def test_streaming_below_kubernetes_1_25_is_400(emu: Emulator, settings: AzureSettings) -> None:
    client = aks(settings)
    with pytest.raises(HttpResponseError) as info:
        pool = enable(client.agent_pools.get("rg-aks-2", "aks-old", "nodepool1"))
        client.agent_pools.begin_create_or_update("rg-aks-2", "aks-old", "nodepool1", pool)
    assert info.value.status_code == 400 and "1.25 or later" in info.value.error.message


def test_immutable_property_change_and_stopped_pool_are_refused(emu: Emulator, settings: AzureSettings) -> None:
    client = aks(settings)
    pool = client.agent_pools.get("rg-aks-1", "aks-a", "user")
    pool.vm_size = "Standard_D8s_v5"
    with pytest.raises(HttpResponseError) as info:
        client.agent_pools.begin_create_or_update("rg-aks-1", "aks-a", "user", pool)
    assert info.value.status_code == 400 and info.value.error.code == "PropertyChangeNotAllowed" and "'vmSize'" in info.value.error.message
    with pytest.raises(HttpResponseError) as stopped:
        client.agent_pools.begin_create_or_update("rg-aks-1", "aks-a", "stop", enable(client.agent_pools.get("rg-aks-1", "aks-a", "stop")))
    assert stopped.value.status_code == 409 and "Power State(Stopped)" in stopped.value.error.message
    assert emu.world.arm_writes == []


def test_cluster_operation_blocks_pool_writes_until_it_ends(emu: Emulator, settings: AzureSettings) -> None:
    admin = f"{emu.endpoints['admin']}/arm/clusters/aks-c/operation"
    ca = emu.env["REQUESTS_CA_BUNDLE"]
    started = requests.post(admin, json={"seconds": 300, "state": "Upgrading"}, verify=ca, timeout=30)
    assert started.status_code == 201
    client = aks(settings)
    assert client.managed_clusters.get("rg-aks-1", "aks-c").provisioning_state == "Upgrading"
    with pytest.raises(HttpResponseError) as info:
        client.agent_pools.begin_create_or_update("rg-aks-1", "aks-c", "nodepool1", enable(client.agent_pools.get("rg-aks-1", "aks-c", "nodepool1")))
    assert info.value.status_code == 409 and "Another operation (Upgrading)" in info.value.error.message
    assert requests.delete(admin, verify=ca, timeout=30).json()["provisioning_state"] == "Succeeded"
    done = client.agent_pools.begin_create_or_update("rg-aks-1", "aks-c", "nodepool1",
                                                     enable(client.agent_pools.get("rg-aks-1", "aks-c", "nodepool1"))).result()
    assert done.artifact_streaming_profile.enabled is True


def test_creating_a_pool_answers_201_and_completes(emu: Emulator, settings: AzureSettings) -> None:
    client = aks(settings)
    created = client.agent_pools.begin_create_or_update(
        "rg-aks-1", "aks-c", "newpool", AgentPool(count=2, vm_size="Standard_D4s_v5", os_type="Linux", os_sku="AzureLinux",
                                                  artifact_streaming_profile=AgentPoolArtifactStreamingProfile(enabled=True)),
    ).result()
    assert created.provisioning_state == "Succeeded" and created.count == 2 and created.artifact_streaming_profile.enabled
    assert created.orchestrator_version == "1.30.4"
    [write] = emu.world.arm_writes
    assert write.created and write.pool == "newpool"
    put = next(r for r in emu.requests_since(0, "arm") if r["method"] == "PUT")
    assert put["status"] == 201
    bad = raw(emu, "PUT", pool_path(SUB_A, "rg-aks-1", "aks-c", "Bad_Name"), body={"properties": {}}, headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "InvalidParameter"


def test_admin_writes_log_and_pool_changes_behind_arms_back(emu: Emulator, settings: AzureSettings) -> None:
    ca = emu.env["REQUESTS_CA_BUNDLE"]
    base = f"{emu.endpoints['admin']}/arm"
    changed = requests.patch(f"{base}/clusters/aks-a/pools/system", json={"artifact_streaming": True}, verify=ca, timeout=30).json()
    assert changed["changes"] == {"artifact_streaming": [None, True]}
    assert aks(settings).agent_pools.get("rg-aks-1", "aks-a", "system").artifact_streaming_profile.enabled is True
    log = requests.get(f"{base}/writes", verify=ca, timeout=30).json()
    assert log["next"] == 1 and log["writes"][0]["actor"] == "admin" and log["writes"][0]["pool"] == "system"
    assert requests.get(f"{base}/writes?since=1", verify=ca, timeout=30).json()["writes"] == []
    assert requests.patch(f"{base}/clusters/aks-a/pools/system", json={"colour": "red"}, verify=ca, timeout=30).status_code == 400
    assert requests.patch(f"{base}/clusters/nope/pools/system", json={}, verify=ca, timeout=30).status_code == 404
    busy = requests.post(f"{base}/clusters/aks-a/pools/blue/operation", json={"seconds": 300}, verify=ca, timeout=30)
    assert busy.status_code == 201
    assert aks(settings).agent_pools.get("rg-aks-1", "aks-a", "blue").provisioning_state == "Updating"
    requests.delete(f"{base}/clusters/aks-a/pools/blue/operation", verify=ca, timeout=30)
    assert aks(settings).agent_pools.get("rg-aks-1", "aks-a", "blue").provisioning_state == "Succeeded"


# --------------------------------------------------------------------------------------------------- errors


def test_authentication_errors_are_401_with_a_bearer_challenge(emu: Emulator) -> None:
    path = f"/subscriptions/{SUB_A}/providers/Microsoft.ContainerService/managedClusters"
    missing = raw(emu, "GET", path, token=None)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "AuthenticationFailed"
    challenge = missing.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer authorization_uri=") and 'error="invalid_token"' in challenge
    forged = raw(emu, "GET", path, token="eyJhbGciOiJIUzI1NiJ9.eyJhdWQiOiJ4In0.c2ln")
    assert forged.status_code == 401 and forged.json()["error"]["code"] == "InvalidAuthenticationToken"
    vault_token = credential().get_token("https://vault.azure.net/.default").token
    wrong_aud = raw(emu, "GET", path, token=vault_token)
    assert wrong_aud.status_code == 401 and wrong_aud.json()["error"]["code"] == "InvalidAuthenticationTokenAudience"
    assert "https://vault.azure.net" in wrong_aud.json()["error"]["message"]
    classic = credential().get_token("https://management.core.windows.net/.default").token
    assert raw(emu, "GET", path, token=classic).status_code == 200


def test_missing_api_version_is_400(emu: Emulator) -> None:
    response = raw(emu, "GET", f"/subscriptions/{SUB_A}/providers/Microsoft.ContainerService/managedClusters", api=None)
    assert response.status_code == 400
    assert response.json()["error"] == {"code": "MissingApiVersionParameter",
                                        "message": "The api-version query parameter (?api-version=) is required for all requests."}
    assert raw(emu, "GET", "/subscriptions", api="latest").json()["error"]["code"] == "InvalidApiVersionParameter"


def test_inaccessible_subscription_is_403_for_every_read(emu: Emulator, settings: AzureSettings) -> None:
    with pytest.raises(HttpResponseError) as clusters:
        list(aks(settings, SUB_X).managed_clusters.list())
    assert clusters.value.status_code == 403 and clusters.value.error.code == "AuthorizationFailed"
    assert "Microsoft.ContainerService/managedClusters/read" in clusters.value.error.message
    with pytest.raises(HttpResponseError) as registries:
        list(acr(settings, SUB_X).registries.list())
    assert registries.value.status_code == 403
    with pytest.raises(HttpResponseError) as pool:
        aks(settings, SUB_X).agent_pools.get("rg-x", "aks-x", "nodepool1")
    assert pool.value.status_code == 403


def test_disabled_subscription_reads_but_refuses_writes(emu: Emulator, settings: AzureSettings) -> None:
    client = aks(settings, SUB_OFF)
    pool = client.agent_pools.get("rg-off", "aks-off", "nodepool1")
    with pytest.raises(HttpResponseError) as info:
        client.agent_pools.begin_create_or_update("rg-off", "aks-off", "nodepool1", enable(pool))
    assert info.value.status_code == 409 and info.value.error.code == "ReadOnlyDisabledSubscription"


def test_not_found_answers_name_what_is_missing(emu: Emulator, settings: AzureSettings) -> None:
    unknown_sub = "99999999-0000-4000-8000-000000000000"
    with pytest.raises(HttpResponseError) as sub:
        list(aks(settings, unknown_sub).managed_clusters.list())
    assert sub.value.status_code == 404 and sub.value.error.code == "SubscriptionNotFound" and unknown_sub in sub.value.error.message
    with pytest.raises(ResourceNotFoundError) as rg:
        aks(settings).managed_clusters.get("rg-nope", "aks-a")
    assert rg.value.error.code == "ResourceGroupNotFound" and rg.value.error.message == "Resource group 'rg-nope' could not be found."
    with pytest.raises(ResourceNotFoundError) as cluster:
        aks(settings).managed_clusters.get("rg-aks-1", "aks-zzz")
    assert cluster.value.error.code == "ResourceNotFound"
    assert "Microsoft.ContainerService/managedClusters/aks-zzz" in cluster.value.error.message
    with pytest.raises(ResourceNotFoundError):
        aks(settings).agent_pools.get("rg-aks-1", "aks-a", "nopool")
    with pytest.raises(ResourceNotFoundError) as reg:
        acr(settings).registries.get("rg-reg", "nosuchreg")
    assert reg.value.error.code == "ResourceNotFound"
    other = raw(emu, "GET", f"/subscriptions/{SUB_A}/providers/Microsoft.Compute/virtualMachines")
    assert other.status_code == 404 and other.json()["error"]["code"] == "InvalidResourceType"


def test_a_generated_fleet_lists_completely_through_the_sdk(make_emulator) -> None:
    emu = make_emulator({"generate": {"subscriptions": 4, "clusters_per_subscription": 7, "pools_per_cluster": 3, "registries": 0,
                                      "seed": 5, "mix": {"inaccessible_subscriptions": 0.25}},
                         "settings": {"page_size": 3}})
    settings = AzureSettings.from_env()
    readable = [s for s in emu.world.subscriptions.values() if s.accessible]
    assert len(readable) == 3
    seen = {(sub.id, c.name, p.name) for sub in readable for c in aks(settings, sub.id).managed_clusters.list() for p in c.agent_pool_profiles}
    expected = {(c.subscription_id, c.name, p) for c in emu.world.clusters.values() if emu.world.subscriptions[c.subscription_id].accessible
                for p in c.pools}
    assert seen == expected and len(seen) == 3 * 7 * 3


def test_arm_throttles_per_subscription_and_the_sdk_retries_after_retry_after(emu: Emulator, settings: AzureSettings) -> None:
    path = f"/subscriptions/{SUB_A}/providers/Microsoft.ContainerService/managedClusters"
    first = raw(emu, "GET", path)
    assert int(first.headers["x-ms-ratelimit-remaining-subscription-reads"]) == 249, "Azure's read bucket holds 250"
    ca = emu.env["REQUESTS_CA_BUNDLE"]
    assert requests.post(f"{emu.endpoints['admin']}/arm/throttle", json={"reads_capacity": 2, "reads_refill": 1},
                         verify=ca, timeout=30).status_code == 200
    answers = [raw(emu, "GET", path) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    throttled = answers[2]
    assert throttled.json()["error"]["code"] == "SubscriptionRequestsThrottled" and int(throttled.headers["Retry-After"]) >= 1
    assert raw(emu, "GET", f"/subscriptions/{SUB_B}/providers/Microsoft.ContainerRegistry/registries").status_code == 200, \
        "another subscription has its own bucket"
    mark = emu.request_mark()
    assert aks(settings).managed_clusters.get("rg-aks-1", "aks-a").name == "aks-a"
    statuses = [r["status"] for r in arm_calls(emu, mark)]
    assert statuses[-1] == 200 and 429 in statuses, "the SDK's retry policy waited out Retry-After"


def test_an_operation_failing_behind_arms_back_fails_the_sdk_poller(emu: Emulator, settings: AzureSettings) -> None:
    client = aks(settings)
    slow_lro(emu, 4)
    poller = client.agent_pools.begin_create_or_update("rg-aks-1", "aks-a", "user", enable(client.agent_pools.get("rg-aks-1", "aks-a", "user")))
    failed = requests.patch(f"{emu.endpoints['admin']}/arm/clusters/aks-a/pools/user", json={"provisioning_state": "Failed"},
                            verify=emu.env["REQUESTS_CA_BUNDLE"], timeout=30)
    assert failed.status_code == 200
    with pytest.raises(HttpResponseError) as info:
        poller.result(timeout=30)
    assert "AgentPoolOperationFailed" in str(info.value)
    pool = client.agent_pools.get("rg-aks-1", "aks-a", "user")
    assert pool.provisioning_state == "Failed"
    retry = client.agent_pools.begin_create_or_update("rg-aks-1", "aks-a", "user", pool)
    assert retry.status() == "InProgress", "a Failed pool accepts a new PUT (that is how AKS recovers it)"


def test_malformed_bodies_and_unimplemented_methods_get_clear_errors(emu: Emulator) -> None:
    path = pool_path(SUB_A, "rg-aks-1", "aks-a", "user")
    garbage = raw(emu, "PUT", path, headers={"Content-Type": "application/json"}, body=None)
    assert garbage.status_code == 400 and garbage.json()["error"]["code"] == "InvalidRequestContent"
    not_object = raw(emu, "PUT", path, headers={"Content-Type": "application/json"}, body=["properties"])
    assert not_object.status_code == 400 and "JSON object" in not_object.json()["error"]["message"]
    bad_flag = raw(emu, "PUT", path, headers={"Content-Type": "application/json"},
                   body={"properties": {"artifactStreamingProfile": {"enabled": "yes"}}})
    assert bad_flag.status_code == 400 and "artifactStreamingProfile" in bad_flag.json()["error"]["message"]
    delete = raw(emu, "DELETE", path)
    assert delete.status_code == 405 and "implements GET, PUT" in delete.json()["error"]["message"]
    assert emu.world.arm_writes == []
