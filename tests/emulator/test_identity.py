"""Managed identity as the app meets it: DefaultAzureCredential against the emulator's App Service MSI endpoint, and ARM's view of it."""

from __future__ import annotations

import os

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

from emulator import Emulator
from emulator.services.identity import PRINCIPAL_OID
from shared.azure_clients import reset_credential, subscription_client
from shared.settings import AzureSettings

SUB = "22222222-0000-4000-8000-000000000001"
ARM_SCOPE = "https://management.azure.com/.default"


@pytest.fixture
def emu(make_emulator) -> Emulator:
    return make_emulator({"subscriptions": [{"id": SUB, "name": "only"}]})


def test_default_azure_credential_uses_the_msi_endpoint_and_arm_accepts_its_token(emu: Emulator) -> None:
    mark = emu.request_mark()
    names = [s.display_name for s in subscription_client(AzureSettings.from_env()).subscriptions.list()]
    assert names == ["only"]
    calls = [(r["endpoint_class"], r["status"]) for r in emu.requests_since(mark)]
    assert calls == [("identity.token", 200), ("arm.subscriptions", 200)]
    token_call = emu.requests_since(mark)[0]
    assert "api-version=2019-08-01" in token_call["query"] and "resource=https" in token_call["query"]


def test_the_token_is_cached_by_the_credential(emu: Emulator) -> None:
    credential = DefaultAzureCredential()
    first = credential.get_token(ARM_SCOPE)
    mark = emu.request_mark()
    second = credential.get_token(ARM_SCOPE)
    assert second.token == first.token
    assert emu.requests_since(mark, "identity") == []
    claims = emu.ctx.tokens.verify(first.token)
    assert claims["oid"] == PRINCIPAL_OID and claims["tid"] == emu.world.tenant_id


def test_a_wrong_identity_header_fails_authentication(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-secret")
    reset_credential()
    with pytest.raises(ClientAuthenticationError):
        ManagedIdentityCredential().get_token(ARM_SCOPE)
    with pytest.raises(ClientAuthenticationError):
        DefaultAzureCredential(exclude_cli_credential=True, exclude_developer_cli_credential=True,
                               exclude_powershell_credential=True).get_token(ARM_SCOPE)
    assert all(r["status"] == 400 for r in emu.requests_since(0, "identity"))
    assert emu.requests_since(0, "identity"), "the credential did reach the endpoint"


def test_the_endpoint_refuses_requests_without_the_header_or_api_version(emu: Emulator) -> None:
    url, ca = os.environ["IDENTITY_ENDPOINT"], os.environ["REQUESTS_CA_BUNDLE"]
    params = {"api-version": "2019-08-01", "resource": "https://management.azure.com"}
    assert requests.get(url, params=params, verify=ca, timeout=30).status_code == 400
    header = {"X-IDENTITY-HEADER": os.environ["IDENTITY_HEADER"]}
    assert requests.get(url, params={**params, "api-version": "2017-09-01"}, headers=header, verify=ca, timeout=30).status_code == 400
    ok = requests.get(url, params=params, headers=header, verify=ca, timeout=30)
    assert ok.status_code == 200 and ok.json()["token_type"] == "Bearer" and ok.json()["resource"] == "https://management.azure.com"


def test_a_token_for_another_audience_is_refused_by_arm(emu: Emulator) -> None:
    storage_token = DefaultAzureCredential().get_token("https://storage.azure.com/.default").token
    response = requests.get(f"{emu.env['AUTOPILOT_ARM_ENDPOINT']}/subscriptions", params={"api-version": "2016-06-01"},
                            headers={"Authorization": f"Bearer {storage_token}"}, verify=emu.env["REQUESTS_CA_BUNDLE"], timeout=30)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "InvalidAuthenticationTokenAudience"
