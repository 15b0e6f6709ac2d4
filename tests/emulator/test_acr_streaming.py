"""Artifact streaming on the emulated registry: operations, referrers, the worst-case double POST, every failure code."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from azure.containerregistry._authentication_policy import ContainerRegistryChallengePolicy
from azure.core import PipelineClient
from azure.core.pipeline.policies import RetryPolicy
from azure.core.rest import HttpRequest, HttpResponse
from azure.identity import DefaultAzureCredential

from emulator import Emulator, oci
from emulator.model import STREAMING_ARTIFACT_TYPE

from .test_acr_auth import RegistryHTTP

SUB = "00000000-0000-4000-8000-0000000000c1"
BODY = {"conversionFormat": "overlaybd", "conversionVersion": "v1"}


def streaming_scenario(**settings: Any) -> dict[str, Any]:
    images = {
        "app": [{"tags": ["1.0"], "seed": "app"}],
        "arm": [{"tags": ["1.0"], "platforms": ["linux/arm64"], "seed": "arm"}],
        "win": [{"tags": ["ltsc2022"], "platforms": ["windows/amd64"], "seed": "win"}],
        "multi": [{"tags": ["1.0"], "platforms": ["linux/arm64", "linux/amd64"], "format": "oci", "seed": "multi"}],
        "multinoamd": [{"tags": ["1.0"], "platforms": ["linux/arm64", "windows/amd64"], "seed": "noamd"}],
        "chart": [{"tags": ["0.1.0"], "format": "oci", "config_media_type": oci.HELM_CONFIG,
                   "layer_media_type": oci.HELM_LAYER, "seed": "chart"}],
    }
    return {
        "seed": 7,
        "settings": {"conversion_seconds": 0.2, **settings},
        "subscriptions": [{
            "id": SUB,
            "registries": [
                {"name": "prem", "repositories": [{"name": n, "images": i} for n, i in images.items()]
                 + [{"name": "auto", "convert_pushed_images": True, "images": [{"tags": ["old"], "seed": "old"}]}]},
                {"name": "basic", "sku": "Basic", "repositories": [{"name": "app", "images": [{"tags": ["1.0"]}]}]},
                {"name": "cmk", "encryption": "enabled", "repositories": [{"name": "app", "images": [{"tags": ["1.0"]}]}]},
            ],
        }],
    }


class StreamingAPI:
    """Raw azure-core requests through the SDK's own challenge policy, as product code may do."""

    def __init__(self, emu: Emulator, registry: str = "prem") -> None:
        self.emu = emu
        self.url = emu.endpoints["registries"][registry]
        policy = ContainerRegistryChallengePolicy(DefaultAzureCredential(), self.url,
                                                  credential_scopes=["https://management.azure.com/.default"])
        self.client = PipelineClient(base_url=self.url, policies=[RetryPolicy(retry_total=0), policy])

    def send(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> HttpResponse:
        kwargs: dict[str, Any] = {}
        if raw is not None:
            kwargs = {"content": raw, "headers": {"Content-Type": "application/json"}}
        elif body is not None:
            kwargs = {"json": body}
        resp = self.client.send_request(HttpRequest(method, f"{self.url}{path}", **kwargs))
        resp.read()
        return resp

    def digest(self, repo: str, tag: str) -> str:
        return self.emu.call(lambda: self.emu.world.registries[self.url_registry].repositories[repo].tags[tag].digest)

    @property
    def url_registry(self) -> str:
        return next(n for n, u in self.emu.endpoints["registries"].items() if u == self.url)

    def convert(self, repo: str, digest: str) -> HttpResponse:
        return self.send("POST", f"/acr/v1/{repo}/_streaming/{digest}", BODY)

    def wait(self, repo: str, op_id: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            op = self.send("GET", f"/acr/v1/{repo}/_operations/{op_id}").json()
            if op["status"] in ("Succeeded", "Failed", "Canceled") or time.monotonic() > deadline:
                return op
            time.sleep(0.05)

    def referrers(self, repo: str, digest: str) -> list[dict[str, Any]]:
        resp = self.send("GET", f"/v2/{repo}/referrers/{digest}?artifactType=application%2Fvnd.azure.artifact.streaming.v1")
        assert resp.status_code == 200 and resp.headers["oci-filters-applied"] == "artifactType"
        return resp.json()["manifests"]


@pytest.fixture
def emu(make_emulator: Callable[..., Emulator]) -> Emulator:
    return make_emulator(streaming_scenario())


@pytest.fixture
def api(emu: Emulator) -> StreamingAPI:
    return StreamingAPI(emu)


def test_convert_poll_succeeded_and_the_referrer_appears(api: StreamingAPI, emu: Emulator) -> None:
    pushed: list[dict[str, Any]] = []
    emu.world.add_listener(lambda kind, _r, data: pushed.append(data) if kind == "ImagePushed" else None)
    digest = api.digest("app", "1.0")
    assert api.send("GET", f"/acr/v1/app/_streaming/{digest}").status_code == 404
    assert api.referrers("app", digest) == []
    resp = api.convert("app", digest)
    assert resp.status_code == 202
    op_id = resp.json()["id"]
    assert resp.json() == {"id": op_id, "status": "NotStarted"}
    assert resp.headers["operation-id"] == op_id
    assert resp.headers["Operation-Location"] == resp.headers["Location"] == f"{api.url}/acr/v1/app/_operations/{op_id}"
    op = api.wait("app", op_id)
    assert op["status"] == "Succeeded" and op["progress"] == "100%" and op["resource"] == f"app@{digest}"
    assert op["name"] == "ArtifactStreamingConversion"
    refs = api.referrers("app", digest)
    assert len(refs) == 1 and refs[0]["artifactType"] == STREAMING_ARTIFACT_TYPE
    assert {k: v for k, v in refs[0]["annotations"].items() if k.startswith("streaming.platform.")} == {
        "streaming.platform.os": "linux", "streaming.platform.arch": "amd64"}
    latest = api.send("GET", f"/acr/v1/app/_streaming/{digest}")
    assert latest.json() == {"id": op_id, "status": "Succeeded"}
    # assumption (documented): the referrer push emits an untagged ImagePushed, like any untagged manifest push
    assert pushed == [{"repository": "app", "digest": refs[0]["digest"], "mediaType": oci.OCI_MANIFEST,
                       "size": pushed[0]["size"], "length": pushed[0]["length"]}]
    again = api.convert("app", refs[0]["digest"])
    assert again.status_code == 202
    failed = api.wait("app", again.json()["id"])
    assert failed["status"] == "Failed" and "UNSUPPORTED_ARTIFACT_TYPE" in failed["details"]


def test_a_second_post_in_flight_starts_a_second_conversion(make_emulator: Callable[..., Emulator]) -> None:
    emu = make_emulator(streaming_scenario(conversion_seconds=1.0))
    api = StreamingAPI(emu)
    digest = api.digest("app", "1.0")
    first = api.convert("app", digest).json()["id"]
    second = api.convert("app", digest).json()["id"]
    assert first != second, "assumed worst case: ACR starts an independent second conversion"
    assert api.send("GET", f"/acr/v1/app/_streaming/{digest}").json()["id"] == second, "the digest answers its latest operation"
    assert api.wait("app", first)["status"] == api.wait("app", second)["status"] == "Succeeded"
    assert len(api.referrers("app", digest)) == 2, "two conversions, two streaming referrers"


def test_cancel_as_recorded(make_emulator: Callable[..., Emulator]) -> None:
    emu = make_emulator(streaming_scenario(conversion_seconds=5.0))
    api = StreamingAPI(emu)
    digest = api.digest("app", "1.0")
    op_id = api.convert("app", digest).json()["id"]
    resp = api.send("POST", f"/acr/v1/app/_operations/{op_id}:cancel")
    assert resp.status_code == 200
    assert resp.json() | {"startTime": None} == {"name": "Cancel: ArtifactStreamingConversion", "resource": f"app@{digest}",
                                                 "status": "Canceled", "startTime": None, "progress": "0%",
                                                 "details": f"Conversion started for resource app@{digest}"}
    assert api.send("GET", f"/acr/v1/app/_streaming/{digest}").json()["status"] == "Canceled"
    assert api.wait("app", op_id)["status"] == "Canceled"
    unknown = api.send("GET", "/acr/v1/app/_operations/00000000-1111-2222-3333-444444444444")
    assert unknown.status_code == 404 and unknown.json() == {
        "errors": [{"code": "OPERATION_UNKNOWN", "message": "The specified operation does not exist"}]}


@pytest.mark.parametrize(
    ("repo", "tag", "code"),
    [
        ("arm", "1.0", "UNSUPPORTED_PLATFORM"),
        ("win", "ltsc2022", "UNSUPPORTED_PLATFORM"),
        ("multinoamd", "1.0", "NO_SUPPORTED_PLATFORM_FOUND"),
        ("chart", "0.1.0", "UNSUPPORTED_MEDIATYPE"),
    ],
)
def test_failures_use_the_documented_codes(api: StreamingAPI, repo: str, tag: str, code: str) -> None:
    digest = api.digest(repo, tag)
    resp = api.convert(repo, digest)
    assert resp.status_code == 202 and resp.json()["status"] == "NotStarted"
    op = api.wait(repo, resp.json()["id"])
    assert op["status"] == "Failed"
    assert f"{code}: " in op["details"] and op["details"].startswith(f"Conversion failed for resource {repo}@{digest}.")
    assert api.referrers(repo, digest) == []


def test_unknown_error_rate_fails_conversions(make_emulator: Callable[..., Emulator]) -> None:
    emu = make_emulator(streaming_scenario(unknown_error_rate=1.0))
    api = StreamingAPI(emu)
    op = api.wait("app", api.convert("app", api.digest("app", "1.0")).json()["id"])
    assert op["status"] == "Failed" and "UNKNOWN_ERROR" in op["details"]


def test_an_index_converts_its_linux_amd64_child_and_attaches_the_artifact_to_the_index(api: StreamingAPI, emu: Emulator) -> None:
    """As a capture of real ACR shows (`regctl artifact list` on a multi-arch tag): the streaming referrer's subject is the
    index, annotated with the platform it was converted from; the children have none."""
    index_digest = api.digest("multi", "1.0")
    op = api.wait("multi", api.convert("multi", index_digest).json()["id"])
    assert op["status"] == "Succeeded" and op["resource"] == f"multi@{index_digest}"
    index = json.loads(api.send("GET", f"/v2/multi/manifests/{index_digest}").body())
    amd64 = next(m for m in index["manifests"] if m["platform"]["architecture"] == "amd64")
    arm64 = next(m["digest"] for m in index["manifests"] if m["platform"]["architecture"] == "arm64")
    referrers = api.referrers("multi", index_digest)
    assert len(referrers) == 1
    assert referrers[0]["annotations"]["streaming.platform.os"] == "linux"
    assert referrers[0]["annotations"]["streaming.platform.arch"] == "amd64"
    assert api.referrers("multi", amd64["digest"]) == [] and api.referrers("multi", arm64) == []
    artifact = json.loads(api.send("GET", f"/v2/multi/manifests/{referrers[0]['digest']}").body())
    assert artifact["subject"]["digest"] == index_digest
    child = json.loads(api.send("GET", f"/v2/multi/manifests/{amd64['digest']}").body())
    assert len(artifact["layers"]) == len(child["layers"])  # the overlaybd layers are the amd64 image's


@pytest.mark.parametrize("registry", ["basic", "cmk"])
def test_basic_and_cmk_registries_refuse_streaming(emu: Emulator, registry: str) -> None:
    api = StreamingAPI(emu, registry)
    digest = api.digest("app", "1.0")
    for method, path, body in [("POST", f"/acr/v1/app/_streaming/{digest}", BODY), ("GET", f"/acr/v1/app/_streaming/{digest}", None),
                               ("GET", "/acr/v1/app/_streaming", None)]:
        resp = api.send(method, path, body)
        assert resp.status_code == 400, (method, path)
        err = resp.json()["errors"][0]
        assert err["code"] == "UNSUPPORTED"
        assert ("Premium" in err["message"]) if registry == "basic" else ("customer-managed key" in err["message"])


def test_bad_input_gets_acr_errors(api: StreamingAPI, reg_http: RegistryHTTP) -> None:
    digest = api.digest("app", "1.0")
    cases = [
        (api.send("POST", f"/acr/v1/app/_streaming/{digest}", raw=b"{nope"), 400, "INVALID_REQUEST"),
        (api.send("POST", f"/acr/v1/app/_streaming/{digest}", {"conversionFormat": "estargz", "conversionVersion": "v1"}),
         400, "INVALID_REQUEST"),
        (api.send("POST", "/acr/v1/app/_streaming/sha256:abc", BODY), 400, "DIGEST_INVALID"),
        (api.send("POST", "/acr/v1/ghost/_streaming/" + "sha256:" + "0" * 64, BODY), 404, "NAME_UNKNOWN"),
        (api.send("POST", "/acr/v1/app/_streaming/" + "sha256:" + "0" * 64, BODY), 404, "MANIFEST_UNKNOWN"),
        (api.send("POST", "/acr/v1/app/_streaming", {"convertPushedImages": "yes", **BODY}), 400, "INVALID_REQUEST"),
    ]
    for resp, status, code in cases:
        assert resp.status_code == status, resp.text()
        assert resp.json()["errors"][0]["code"] == code
    no_token = reg_http.call("POST", f"/acr/v1/app/_streaming/{digest}", json=BODY)
    assert no_token.status_code == 401 and 'scope="repository:app:pull,push"' in no_token.headers["WWW-Authenticate"]
    pull_only = reg_http.call("POST", f"/acr/v1/app/_streaming/{digest}", json=BODY, scope="repository:app:pull")
    assert pull_only.status_code == 401, "starting a conversion writes to the repository: push, as the az CLI asks"
    assert reg_http.call("POST", f"/acr/v1/app/_streaming/{digest}", json=BODY, scope="repository:app:pull,push").status_code == 202


@pytest.fixture
def reg_http(emu: Emulator) -> RegistryHTTP:
    return RegistryHTTP(emu, "prem")


def test_repository_auto_conversion_converts_new_tagged_pushes_only(api: StreamingAPI, emu: Emulator) -> None:
    assert api.send("GET", "/acr/v1/app/_streaming").json() == {"convertPushedImages": False}
    on = api.send("POST", "/acr/v1/app/_streaming", {"convertPushedImages": True, **BODY})
    assert on.status_code == 202
    body = on.json()
    assert body == {"convertPushedImages": True, "conversionFormat": "overlaybd", "conversionVersion": "v1",
                    "status": "Succeeded", "id": on.headers["operation-id"]}
    assert api.send("GET", "/acr/v1/app/_streaming").json() == {"convertPushedImages": True}
    old = api.digest("app", "1.0")
    admin = emu.endpoints["admin"]
    import requests

    pushed = requests.post(f"{admin}/registries/prem/images", json={"repository": "app", "tags": ["2.0"], "seed": "new"},
                           verify=emu.endpoints["ca_bundle"])
    assert pushed.status_code == 201
    new = pushed.json()["digest"]
    op_id = api.send("GET", f"/acr/v1/app/_streaming/{new}").json()["id"]
    assert api.wait("app", op_id)["status"] == "Succeeded"
    assert len(api.referrers("app", new)) == 1
    assert api.send("GET", f"/acr/v1/app/_streaming/{old}").status_code == 404, "existing images never auto-convert"
    ops = requests.get(f"{api.url}/_emulator/operations", verify=emu.endpoints["ca_bundle"]).json()["operations"]
    assert [(o["repository"], o["digest"], o["status"]) for o in ops] == [("app", new, "Succeeded")]
    counts = requests.get(f"{api.url}/_emulator/counts", verify=emu.endpoints["ca_bundle"]).json()
    assert counts["streamingReferrers"] == 1 and counts["operationsByStatus"] == {"Succeeded": 1}


def test_not_runnable_images_and_images_deleted_mid_conversion(make_emulator: Callable[..., Emulator]) -> None:
    emu = make_emulator(streaming_scenario(conversion_seconds=0.5))
    api = StreamingAPI(emu)
    config = b'{"architecture":"amd64","os":"linux"}'
    start = api.send("POST", "/v2/app/blobs/uploads/")
    assert api.send("PUT", start.headers["Location"] + "&digest=" + oci.sha256(config), raw=config).status_code == 201
    empty = json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
                        "config": {"mediaType": oci.OCI_CONFIG, "digest": oci.sha256(config), "size": len(config)},
                        "layers": []}).encode()
    put = api.client.send_request(HttpRequest("PUT", f"{api.url}/v2/app/manifests/nolayers", content=empty,
                                              headers={"Content-Type": oci.OCI_MANIFEST}))
    assert put.status_code == 201
    op = api.wait("app", api.convert("app", oci.sha256(empty)).json()["id"])
    assert op["status"] == "Failed" and "IMAGE_NOT_RUNNABLE" in op["details"]

    digest = api.digest("app", "1.0")
    op_id = api.convert("app", digest).json()["id"]
    assert api.send("DELETE", f"/v2/app/manifests/{digest}").status_code == 202
    op = api.wait("app", op_id)
    assert op["status"] == "Failed" and "RESOURCE_NOT_FOUND" in op["details"]
    done = api.send("POST", f"/acr/v1/app/_operations/{op_id}:cancel").json()
    assert done["status"] == "Failed" and done["name"] == "Cancel: ArtifactStreamingConversion", "a finished operation stays as it is"


def test_repository_setting_operation_is_readable(api: StreamingAPI) -> None:
    on = api.send("POST", "/acr/v1/app/_streaming", {"convertPushedImages": False, **BODY})
    op = api.send("GET", f"/acr/v1/app/_operations/{on.json()['id']}")
    assert op.status_code == 200 and op.json()["status"] == "Succeeded"
    assert set(op.json()) == {"name", "resource", "status", "startTime", "progress", "details"}


def test_auto_conversion_can_start_after_the_push_to_expose_races(make_emulator: Callable[..., Emulator]) -> None:
    emu = make_emulator(streaming_scenario(auto_conversion_delay_seconds=2.0))
    api = StreamingAPI(emu)
    import requests

    pushed = requests.post(f"{emu.endpoints['admin']}/registries/prem/images", json={"repository": "auto", "tags": ["new"], "seed": "n"},
                           verify=emu.endpoints["ca_bundle"])
    digest = pushed.json()["digest"]
    assert api.send("GET", f"/acr/v1/auto/_streaming/{digest}").status_code == 404, "ACR has not started its own conversion yet"
    deadline = time.monotonic() + 20
    while api.send("GET", f"/acr/v1/auto/_streaming/{digest}").status_code == 404 and time.monotonic() < deadline:
        time.sleep(0.1)
    op_id = api.send("GET", f"/acr/v1/auto/_streaming/{digest}").json()["id"]
    assert api.wait("auto", op_id)["status"] == "Succeeded"
    assert len(api.referrers("auto", digest)) == 1
