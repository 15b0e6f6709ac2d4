"""The request log keeps what tests need (headers that matter, write bodies, never a secret); faults answer any error status."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import requests
from azure.containerregistry import ContainerRegistryClient
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceModifiedError
from azure.identity import DefaultAzureCredential
from azure.mgmt.containerservice.models import AgentPoolArtifactStreamingProfile

from emulator import Emulator
from emulator.faults import FaultRule
from shared.azure_clients import container_service_client
from shared.settings import AzureSettings

from .test_acr_auth import RegistryHTTP
from .test_az_cli import SUB, scenario


@pytest.fixture
def emu(make_emulator: Callable[..., Emulator]) -> Emulator:
    return make_emulator(scenario())


def aks(emu: Emulator):
    return container_service_client(AzureSettings.from_env(), SUB, retry_total=0, polling_interval=0.1)


def no_secret_in(emu: Emulator, rows: list[dict]) -> None:
    text = json.dumps(rows)
    assert not any(token in text for token in emu.ctx.tokens.issued), "a token reached the request log"
    assert "admin-secret" not in text


def test_pool_put_is_logged_with_if_match_and_body_but_no_token(emu: Emulator) -> None:
    client = aks(emu)
    pool = client.agent_pools.get("rg-aks", "aks1", "nodepool1")
    pool.artifact_streaming_profile = AgentPoolArtifactStreamingProfile(enabled=True)
    mark = emu.request_mark()
    client.agent_pools.begin_create_or_update("rg-aks", "aks1", "nodepool1", pool, etag=pool.e_tag,
                                              match_condition=MatchConditions.IfNotModified).result()
    rows = emu.requests_since(mark)
    put = next(r for r in rows if r["method"] == "PUT")
    assert put["headers"]["If-Match"] == pool.e_tag and put["headers"]["Authorization"] == "Bearer ***"
    assert json.loads(put["body"])["properties"]["artifactStreamingProfile"] == {"enabled": True}
    assert all(r["body"] is None for r in rows if r["method"] == "GET")
    no_secret_in(emu, emu.requests_since(0))


def test_chunked_upload_and_token_forms_are_logged_redacted(emu: Emulator) -> None:
    reg = RegistryHTTP(emu, "clireg")
    token = reg.access_token("repository:up/load:pull,push")
    mark = emu.request_mark()
    start = reg.call("POST", "/v2/up/load/blobs/uploads/", token=token)
    location = start.headers["Location"]
    reg.session.patch(reg.url + location, data=b"abc", headers={"Authorization": f"Bearer {token}", "Content-Range": "0-2",
                                                               "Content-Type": "application/octet-stream"})
    rows = emu.requests_since(mark)
    patch = next(r for r in rows if r["method"] == "PATCH")
    assert patch["headers"]["Content-Range"] == "0-2" and patch["body"] == "<3 bytes application/octet-stream>"
    forms = [r for r in emu.requests_since(0) if r["path"] in ("/oauth2/exchange", "/oauth2/token") and r["method"] == "POST"]
    assert forms and all("access_token=***" in r["body"] or "refresh_token=***" in r["body"] for r in forms)
    no_secret_in(emu, emu.requests_since(0))
    via_api = requests.get(f"{emu.endpoints['admin']}/requests", params={"since": mark}, verify=emu.endpoints["ca_bundle"], timeout=10)
    assert via_api.json()["requests"][0]["headers"] == rows[0]["headers"]


def test_faults_answer_409_and_412_in_arms_shape_to_the_mgmt_sdk(emu: Emulator) -> None:
    client = aks(emu)
    pool = client.agent_pools.get("rg-aks", "aks1", "nodepool1")
    emu.faults.configure([{"match": "arm.agentpools", "methods": ["PUT"], "error_rate": 1.0, "statuses": [409],
                           "error_code": "OperationNotAllowed", "error_message": "Another agentpool operation is in progress"}])
    with pytest.raises(HttpResponseError) as busy:
        client.agent_pools.begin_create_or_update("rg-aks", "aks1", "nodepool1", pool).result()
    assert busy.value.status_code == 409 and busy.value.error.code == "OperationNotAllowed"
    emu.faults.configure([{"match": "arm.agentpools", "methods": ["PUT"], "error_rate": 1.0, "statuses": [412]}])
    with pytest.raises(ResourceModifiedError) as stale:
        client.agent_pools.begin_create_or_update("rg-aks", "aks1", "nodepool1", pool, etag=pool.e_tag,
                                                  match_condition=MatchConditions.IfNotModified).result()
    assert stale.value.status_code == 412 and stale.value.error.code == "PreconditionFailed"
    assert emu.call(lambda: emu.world.cluster(SUB, "rg-aks", "aks1").pools["nodepool1"].artifact_streaming) is False


def test_faults_answer_in_acrs_shape_to_the_registry_sdk(emu: Emulator) -> None:
    emu.faults.configure([{"match": "acr.tags", "error_rate": 1.0, "statuses": [409], "error_code": "TAG_LOCKED"}])
    c = ContainerRegistryClient(emu.endpoints["registries"]["clireg"], DefaultAzureCredential(), audience="https://management.azure.com")
    with pytest.raises(HttpResponseError) as refused:
        c.get_tag_properties("microsoft", "azure-cli")
    assert refused.value.status_code == 409
    body = refused.value.response.json()
    assert body == {"errors": [{"code": "TAG_LOCKED", "message": "emulator fault injection (acr.tags)", "detail": None}]}


def test_fault_rules_refuse_statuses_that_are_not_errors(emu: Emulator) -> None:
    with pytest.raises(ValueError, match="400-599"):
        FaultRule.from_dict({"statuses": [200]})
    resp = requests.post(f"{emu.endpoints['admin']}/faults", json={"rules": [{"statuses": [302]}]}, verify=emu.endpoints["ca_bundle"],
                         timeout=10)
    assert resp.status_code == 400 and "400-599" in resp.json()["error"]
    assert FaultRule.from_dict({"statuses": [412], "error_rate": 0.5}).statuses == (412,)
