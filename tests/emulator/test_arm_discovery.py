"""ARM's cloud metadata, generic resource listing and JSON errors for unknown routes (what the az CLI needs first)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests

from emulator import Emulator

from .test_az_cli import SUB, scenario


@pytest.fixture
def emu(make_emulator: Callable[..., Emulator]) -> Emulator:
    return make_emulator(scenario())


def arm_get(emu: Emulator, path: str, token: bool = True, **params: str) -> requests.Response:
    headers = {}
    if token:
        aad = requests.get(emu.env["IDENTITY_ENDPOINT"], params={"api-version": "2019-08-01", "resource": "https://management.azure.com"},
                           headers={"X-IDENTITY-HEADER": emu.env["IDENTITY_HEADER"]}, verify=emu.endpoints["ca_bundle"], timeout=10)
        headers["Authorization"] = f"Bearer {aad.json()['access_token']}"
    return requests.get(emu.endpoints["arm"] + path, params=params, headers=headers, verify=emu.endpoints["ca_bundle"], timeout=10)


def test_cloud_metadata_has_arms_shape(emu: Emulator) -> None:
    one = arm_get(emu, "/metadata/endpoints", token=False, **{"api-version": "2022-09-01"})
    assert one.status_code == 200
    cloud = one.json()
    assert cloud["resourceManager"] == emu.endpoints["arm"] + "/"
    assert cloud["authentication"]["audiences"][0] == "https://management.core.windows.net/"
    assert {"loginEndpoint", "tenant", "identityProvider"} <= set(cloud["authentication"])
    assert cloud["suffixes"]["acrLoginServer"] == "azurecr.io"
    older = arm_get(emu, "/metadata/endpoints", token=False, **{"api-version": "2019-05-01"}).json()
    assert isinstance(older, list) and older[0]["resourceManager"] == cloud["resourceManager"]
    missing = arm_get(emu, "/metadata/endpoints", token=False)
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "MissingApiVersionParameter"


def test_generic_resource_listing_filters_by_type_and_name(emu: Emulator) -> None:
    api = {"api-version": "2024-11-01"}
    regs = arm_get(emu, f"/subscriptions/{SUB}/resources", **api,
                   **{"$filter": "resourceType eq 'Microsoft.ContainerRegistry/registries'"}).json()["value"]
    assert [(r["name"], r["type"]) for r in regs] == [("clireg", "Microsoft.ContainerRegistry/registries")]
    assert regs[0]["id"].lower() == f"/subscriptions/{SUB}/resourcegroups/rg-acr/providers/microsoft.containerregistry/registries/clireg"
    everything = arm_get(emu, f"/subscriptions/{SUB}/resources", **api).json()["value"]
    assert sorted(r["name"] for r in everything) == ["aks1", "clireg"]
    in_rg = arm_get(emu, f"/subscriptions/{SUB}/resourceGroups/rg-aks/resources", **api).json()["value"]
    assert [r["type"] for r in in_rg] == ["Microsoft.ContainerService/managedClusters"]
    named = arm_get(emu, f"/subscriptions/{SUB}/resources", **api,
                    **{"$filter": "resourceType eq 'microsoft.containerregistry/registries' and name eq 'CLIREG'"}).json()["value"]
    assert len(named) == 1
    bad = arm_get(emu, f"/subscriptions/{SUB}/resources", **api, **{"$filter": "location eq 'eastus'"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "InvalidFilterInQueryString"


def test_unknown_routes_answer_arms_json_error(emu: Emulator) -> None:
    for path in ("/nothing/here", "/providers/Microsoft.Foo", "/metadata/other"):
        resp = arm_get(emu, path, **{"api-version": "2022-09-01"})
        assert resp.status_code == 404 and resp.headers["Content-Type"].startswith("application/json"), path
        assert resp.json()["error"]["code"] == "NotFound" and path in resp.json()["error"]["message"]
    inside = arm_get(emu, f"/subscriptions/{SUB}/providers/Microsoft.Foo/bars", **{"api-version": "2022-09-01"})
    assert inside.status_code == 404 and inside.json()["error"]["code"] == "InvalidResourceType"
