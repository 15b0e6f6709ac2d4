"""The emulated registry's OCI distribution and /acr/v1 metadata, through azure-containerregistry and raw HTTP."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from azure.containerregistry import ContainerRegistryClient
from azure.core.exceptions import ResourceNotFoundError
from azure.identity import DefaultAzureCredential
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator import Emulator, oci
from emulator.model import TagRecord

from .test_acr_auth import RegistryHTTP, scenario

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def emu(make_emulator: Callable[..., Emulator]) -> Emulator:
    raw = scenario()
    raw["subscriptions"][0]["registries"][0]["repositories"].append(
        {"name": "multi", "images": [{"tags": ["1.0"], "platforms": ["linux/amd64", "linux/arm64"], "format": "oci", "seed": "m"}]})
    return make_emulator(raw)


@pytest.fixture
def reg(emu: Emulator) -> RegistryHTTP:
    return RegistryHTTP(emu)


@pytest.fixture
def events(emu: Emulator) -> list[tuple[str, dict[str, Any]]]:
    seen: list[tuple[str, dict[str, Any]]] = []
    emu.world.add_listener(lambda kind, _reg, data: seen.append((kind, dict(data))))
    return seen


def client(emu: Emulator) -> ContainerRegistryClient:
    return ContainerRegistryClient(emu.endpoints["registries"]["reg"], DefaultAzureCredential(), audience="https://management.azure.com")


def push_blob(reg: RegistryHTTP, repo: str, data: bytes, token: str) -> str:
    digest = sha(data)
    resp = reg.call("POST", f"/v2/{repo}/blobs/uploads/", token=token, params={"digest": digest}, data=data)
    assert resp.status_code == 201, resp.text
    return digest


def image_manifest(reg: RegistryHTTP, repo: str, token: str, **extra: Any) -> bytes:
    config = push_blob(reg, repo, b'{"architecture":"amd64","os":"linux"}', token)
    layer = push_blob(reg, repo, b"layer-bytes", token)
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": {"mediaType": oci.OCI_CONFIG, "digest": config, "size": 37},
           "layers": [{"mediaType": oci.OCI_LAYER, "digest": layer, "size": 11}], **extra}
    return json.dumps(doc).encode()


def test_sdk_reads_through_the_challenge_flow_and_counts_requests(emu: Emulator) -> None:
    c = client(emu)
    counts = {}
    mark = emu.request_mark()
    assert sorted(c.list_repository_names()) == ["microsoft", "multi", "team/app"]
    counts["list_repository_names"] = len(emu.requests_since(mark, "acr"))
    mark = emu.request_mark()
    tags = list(c.list_tag_properties("team/app"))
    counts["list_tag_properties"] = len(emu.requests_since(mark, "acr"))
    assert [t.name for t in tags] == ["v1"] and tags[0].digest.startswith("sha256:")
    mark = emu.request_mark()
    props = c.get_manifest_properties("team/app", "v1")
    counts["get_manifest_properties(tag)"] = len(emu.requests_since(mark, "acr"))
    assert props.digest == tags[0].digest and props.tags == ["v1"] and props.architecture == "amd64"
    mark = emu.request_mark()
    got = c.get_manifest("team/app", "v1")  # verifies the digest of the bytes against Docker-Content-Digest
    counts["get_manifest"] = len(emu.requests_since(mark, "acr"))
    assert got.digest == props.digest and got.media_type == oci.DOCKER_MANIFEST
    assert c.get_manifest("team/app", props.digest).manifest["schemaVersion"] == 2
    index = c.get_manifest_properties("multi", "1.0")
    assert index.tags == ["1.0"] and index.architecture is None, "an index has no single platform (its references do)"
    # every call: 401 without a token, /oauth2/exchange, /oauth2/token, the retried call (get_manifest_properties by
    # tag is two calls: the tag's digest, then the manifest). Recorded in docs/emulator-acr.md.
    assert counts == {"list_repository_names": 4, "list_tag_properties": 4, "get_manifest_properties(tag)": 8, "get_manifest": 4}
    with pytest.raises(ResourceNotFoundError):
        c.get_manifest("team/app", "nope")


def test_sdk_push_path_uploads_blobs_and_sets_manifests(emu: Emulator, events: list) -> None:
    c = client(emu)
    layer = io.BytesIO(b"x" * 5_000_000)  # bigger than the SDK's 4 MB chunk: two PATCHes
    mark = emu.request_mark()
    layer_digest, layer_size = c.upload_blob("new/app", layer)
    two_chunks = len(emu.requests_since(mark, "acr"))
    mark = emu.request_mark()
    config_digest, config_size = c.upload_blob("new/app", io.BytesIO(b'{"architecture":"amd64","os":"linux"}'))
    one_chunk = len(emu.requests_since(mark, "acr"))
    assert (one_chunk, two_chunks) == (12, 16), "POST, PATCH per chunk, PUT: each through 401 + exchange + token + retry"
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": oci.OCI_CONFIG, "digest": config_digest, "size": config_size},
                "layers": [{"mediaType": oci.OCI_LAYER, "digest": layer_digest, "size": layer_size}]}
    mark = emu.request_mark()
    digest = c.set_manifest("new/app", manifest, tag="v1")
    assert len(emu.requests_since(mark, "acr")) == 4
    assert c.get_manifest("new/app", "v1").digest == digest
    assert b"".join(c.download_blob("new/app", layer_digest)) == b"x" * 5_000_000
    assert events[-1] == ("ImagePushed", {"repository": "new/app", "digest": digest, "mediaType": OCI_MANIFEST,
                                          "size": events[-1][1]["size"], "length": events[-1][1]["length"], "tag": "v1",
                                          "useragent": events[-1][1]["useragent"]})
    assert events[-1][1]["useragent"].startswith("azsdk-python-azure-containerregistry/"), "the pushing client, for request.useragent"
    untagged = c.set_manifest("new/app", {**manifest, "annotations": {"a": "b"}})
    assert events[-1][0] == "ImagePushed" and "tag" not in events[-1][1] and events[-1][1]["digest"] == untagged


def test_manifest_validation_errors(reg: RegistryHTTP) -> None:
    token = reg.access_token("repository:microsoft:pull,push")
    good = image_manifest(reg, "microsoft", token)
    put = lambda ref, body, ct=OCI_MANIFEST: reg.call("PUT", f"/v2/microsoft/manifests/{ref}", token=token,  # noqa: E731
                                                       data=body, headers={"Content-Type": ct})
    cases = [
        (put("t", b"{not json"), 400, "MANIFEST_INVALID"),
        (put("t", good, ct="application/vnd.cncf.helm.config.v1+json"), 201, None),  # body mediaType wins over a non-manifest type
        (put("t", json.dumps({**json.loads(good), "mediaType": oci.DOCKER_MANIFEST}).encode()), 400, "MANIFEST_INVALID"),
        (put("t", json.dumps({**json.loads(good), "layers": [{"mediaType": oci.OCI_LAYER, "digest": "sha256:" + "0" * 64, "size": 1}]}).encode()),
         400, "MANIFEST_BLOB_UNKNOWN"),
        (put("sha256:" + "1" * 64, good), 400, "DIGEST_INVALID"),
        (put("sha256:XYZ", good), 400, "DIGEST_INVALID"),
        (put("-bad-tag", good), 400, "TAG_INVALID"),
        (put("idx", json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "2" * 64, "size": 10}]}).encode(), ct=oci.OCI_INDEX), 400, "MANIFEST_BLOB_UNKNOWN"),
    ]
    for resp, status, code in cases:
        assert resp.status_code == status, resp.text
        if code:
            assert resp.json()["errors"][0]["code"] == code
    ok = put(sha(good), good)
    assert ok.status_code == 201 and ok.headers["Docker-Content-Digest"] == sha(good)
    assert ok.headers["Location"] == f"/v2/microsoft/manifests/{sha(good)}"


def test_manifest_reads_unknowns_accept_and_head(reg: RegistryHTTP) -> None:
    token = reg.access_token("repository:microsoft:pull")
    head = reg.call("HEAD", "/v2/microsoft/manifests/azure-cli", token=token)
    assert head.status_code == 200 and head.headers["Content-Type"] == oci.DOCKER_MANIFEST
    digest = head.headers["Docker-Content-Digest"]
    body = reg.call("GET", f"/v2/microsoft/manifests/{digest}", token=token, headers={"Accept": oci.DOCKER_MANIFEST})
    assert sha(body.content) == digest and int(head.headers["Content-Length"]) == len(body.content)
    only_oci = reg.call("GET", "/v2/microsoft/manifests/azure-cli", token=token, headers={"Accept": OCI_MANIFEST})
    assert only_oci.status_code == 404 and only_oci.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    unknown_tag = reg.call("GET", "/v2/microsoft/manifests/nope", token=token)
    assert unknown_tag.status_code == 404 and unknown_tag.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    bad_digest = reg.call("GET", "/v2/microsoft/manifests/sha256:1234", token=token)
    assert bad_digest.status_code == 400 and bad_digest.json()["errors"][0]["code"] == "DIGEST_INVALID"
    ghost = reg.call("GET", "/v2/ghost/manifests/latest", scope="repository:ghost:pull")
    assert ghost.status_code == 404 and ghost.json()["errors"][0]["code"] == "NAME_UNKNOWN"


def test_blobs_synthetic_head_get_and_uploads(reg: RegistryHTTP, emu: Emulator) -> None:
    token = reg.access_token("repository:microsoft:pull,push")
    layer = json.loads(reg.call("GET", "/v2/microsoft/manifests/azure-cli", token=token).content)["layers"][0]
    head = reg.call("HEAD", f"/v2/microsoft/blobs/{layer['digest']}", token=token)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == layer["size"] == 30 * 1024**2
    get = reg.call("GET", f"/v2/microsoft/blobs/{layer['digest']}", token=token)
    assert get.status_code == 501 and get.json()["errors"][0]["code"] == "UNSUPPORTED" and "synthetic" in get.text
    missing = reg.call("HEAD", "/v2/microsoft/blobs/sha256:" + "3" * 64, token=token)
    assert missing.status_code == 404
    start = reg.call("POST", "/v2/microsoft/blobs/uploads/", token=token)
    assert start.status_code == 202 and start.headers["Location"].startswith("/v2/microsoft/blobs/uploads/")
    wrong = reg.call("PUT", start.headers["Location"], token=token, params={"digest": "sha256:" + "4" * 64}, data=b"abc")
    assert wrong.status_code == 400 and wrong.json()["errors"][0]["code"] == "DIGEST_INVALID"
    start = reg.call("POST", "/v2/microsoft/blobs/uploads/", token=token)
    done = reg.call("PUT", start.headers["Location"], token=token, params={"digest": sha(b"abc")}, data=b"abc")
    assert done.status_code == 201 and done.headers["Docker-Content-Digest"] == sha(b"abc")
    ranged = reg.call("GET", f"/v2/microsoft/blobs/{sha(b'abc')}", token=token, headers={"Range": "bytes=1-"})
    assert ranged.status_code == 206 and ranged.content == b"bc" and ranged.headers["Content-Range"] == "bytes 1-2/3"
    gone = reg.call("PATCH", start.headers["Location"], token=token, data=b"more")
    assert gone.status_code == 404 and gone.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"


def test_delete_manifest_emits_image_deleted_and_takes_tags_and_referrers(reg: RegistryHTTP, events: list) -> None:
    token = reg.access_token("repository:microsoft:pull,push,delete")
    digest = reg.call("HEAD", "/v2/microsoft/manifests/azure-cli", token=token).headers["Docker-Content-Digest"]
    subject = {"mediaType": oci.DOCKER_MANIFEST, "digest": digest, "size": 1}
    sig = image_manifest(reg, "microsoft", token, artifactType="application/example.signature", subject=subject)
    put = reg.call("PUT", f"/v2/microsoft/manifests/{sha(sig)}", token=token, data=sig, headers={"Content-Type": OCI_MANIFEST})
    assert put.status_code == 201 and put.headers["OCI-Subject"] == digest
    refs = reg.call("GET", f"/v2/microsoft/referrers/{digest}", token=token).json()
    assert [(m["digest"], m["artifactType"]) for m in refs["manifests"]] == [(sha(sig), "application/example.signature")]
    filtered = reg.call("GET", f"/v2/microsoft/referrers/{digest}", token=token, params={"artifactType": "other"})
    assert filtered.json()["manifests"] == [] and filtered.headers["oci-filters-applied"] == "artifactType"
    assert "oci-filters-applied" not in reg.call("GET", f"/v2/microsoft/referrers/{digest}", token=token).headers
    assert reg.call("DELETE", f"/v2/microsoft/manifests/{digest}", token=token).status_code == 202
    assert events[-1] == ("ImageDeleted", {"repository": "microsoft", "digest": digest, "mediaType": oci.DOCKER_MANIFEST,
                                           "useragent": reg.session.headers["User-Agent"]})
    assert reg.call("GET", "/v2/microsoft/manifests/azure-cli", token=token).status_code == 404
    assert reg.call("GET", f"/v2/microsoft/manifests/{sha(sig)}", token=token).status_code == 404


def test_tags_list_and_acr_tags_page_with_link_headers(reg: RegistryHTTP, emu: Emulator) -> None:
    def add_tags() -> None:
        repo = emu.world.registries["reg"].repositories["team/app"]
        digest = repo.tags["v1"].digest
        for i in range(100_000):
            repo.tags[f"t{i:06d}"] = TagRecord(name=f"t{i:06d}", digest=digest)

    emu.call(add_tags)
    token = reg.access_token("repository:team/app:pull")
    first = reg.call("GET", "/v2/team/app/tags/list", token=token, params={"n": 1000})
    assert first.json()["tags"][:2] == ["t000000", "t000001"] and len(first.json()["tags"]) == 1000
    assert first.headers["Link"] == '</v2/team/app/tags/list?last=t000999&n=1000>; rel="next"'
    default = reg.call("GET", "/v2/team/app/tags/list", token=token)
    assert len(default.json()["tags"]) == 100 and default.headers["Link"].startswith("</v2/team/app/tags/list?last=t000099&n=100>")
    last_page = reg.call("GET", "/v2/team/app/tags/list", token=token, params={"n": 1000, "last": "t099999"})
    assert last_page.json()["tags"] == ["v1"] and "Link" not in last_page.headers
    meta = reg.access_token("repository:team/app:metadata_read")
    page = reg.call("GET", "/acr/v1/team/app/_tags", token=meta, params={"n": 2, "last": "t000001"})
    body = page.json()
    assert body["registry"] == reg.login and body["imageName"] == "team/app"
    assert [t["name"] for t in body["tags"]] == ["t000002", "t000003"]
    assert set(body["tags"][0]) == {"name", "digest", "createdTime", "lastUpdateTime", "signed", "changeableAttributes"}
    assert page.headers["Link"].startswith("</acr/v1/team/app/_tags?last=t000003&n=2")
    assert reg.call("GET", "/v2/team/app/tags/list", token=token, params={"n": "x"}).status_code == 400
    tag = reg.call("GET", "/acr/v1/team/app/_tags/nope", token=meta)
    assert tag.status_code == 404 and tag.json()["errors"][0]["code"] == "TAG_UNKNOWN"


def test_acr_v1_repository_and_manifests(reg: RegistryHTTP) -> None:
    meta = reg.access_token("repository:multi:metadata_read")
    repo = reg.call("GET", "/acr/v1/multi", token=meta).json()
    assert repo["imageName"] == "multi" and repo["manifestCount"] == 3 and repo["tagCount"] == 1
    listed = reg.call("GET", "/acr/v1/multi/_manifests", token=meta).json()["manifests"]
    index = next(m for m in listed if m.get("tags") == ["1.0"])
    assert index["mediaType"] == oci.OCI_INDEX and len(index["references"]) == 2
    one = reg.call("GET", f"/acr/v1/multi/_manifests/{index['digest']}", token=meta).json()
    assert one["manifest"]["digest"] == index["digest"]


@pytest.mark.parametrize(
    ("path", "endpoint_class"),
    [
        ("/v2/", "acr.v2"), ("/oauth2/exchange", "acr.auth"), ("/oauth2/token", "acr.auth"), ("/v2/_catalog", "acr.catalog"),
        ("/acr/v1/_catalog", "acr.catalog"), ("/v2/a/b/manifests/latest", "acr.manifests"), ("/v2/a/blobs/uploads/", "acr.blobs"),
        ("/v2/a/blobs/sha256:00", "acr.blobs"), ("/v2/a/referrers/sha256:00", "acr.referrers"), ("/v2/a/tags/list", "acr.tags"),
        ("/acr/v1/a/_tags", "acr.tags"), ("/acr/v1/a/_tags/t", "acr.tags"), ("/acr/v1/a/_manifests/sha256:00", "acr.manifests"),
        ("/acr/v1/a/b/_streaming", "acr.streaming"), ("/acr/v1/a/_streaming/sha256:00", "acr.streaming"),
        ("/acr/v1/a/_operations/x", "acr.operations"), ("/acr/v1/a/_operations/x:cancel", "acr.operations"),
        ("/acr/v1/a/b", "acr.repositories"), ("/_emulator/counts", "acr.admin"), ("/nothing", "acr.other"),
    ],
)
def test_endpoint_classes_for_fault_rules(path: str, endpoint_class: str) -> None:
    from emulator.services.acr import classify

    assert classify(path) == endpoint_class


def test_fault_rules_hit_only_their_endpoint_class(emu: Emulator, reg: RegistryHTTP) -> None:
    emu.faults.configure([{"match": "acr.streaming", "error_rate": 1.0, "statuses": [503], "retry_after": 2}])
    token = reg.access_token("repository:microsoft:pull")  # acr.auth is untouched
    resp = reg.call("GET", "/acr/v1/microsoft/_streaming", token=token)
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "2"
    assert resp.json()["errors"][0]["code"] == "SERVICEUNAVAILABLE"
    assert resp.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    assert reg.call("GET", "/v2/microsoft/tags/list", token=token).status_code == 200
    logged = [r for r in emu.requests_since(0, "acr") if r["endpoint_class"] == "acr.streaming"]
    assert logged and logged[-1]["status"] == 503 and logged[-1]["host"] == "reg"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.sets(st.from_regex(r"[a-z0-9][a-z0-9._-]{0,9}", fullmatch=True), max_size=40),
       n=st.integers(min_value=1, max_value=12), orderby=st.sampled_from(["", "timeasc", "timedesc"]))
def test_following_link_headers_yields_every_tag_once(reg: RegistryHTTP, emu: Emulator, names: set[str], n: int, orderby: str) -> None:
    def reset() -> None:
        repo = emu.world.registries["reg"].repositories["team/app"]
        digest = next(iter(repo.tags.values())).digest
        repo.tags.clear()
        for i, name in enumerate(sorted(names) or ["only"]):
            repo.tags[name] = TagRecord(name=name, digest=digest, updated=f"2026-01-01T00:00:{i % 60:02d}.{i:06d}Z")

    emu.call(reset)
    expected = sorted(names) or ["only"]
    pull = reg.access_token("repository:team/app:pull")
    meta = reg.access_token("repository:team/app:metadata_read")
    for path, token, key, extra in [("/v2/team/app/tags/list", pull, None, {}), ("/acr/v1/team/app/_tags", meta, "name", {"orderby": orderby})]:
        seen: list[str] = []
        resp = reg.call("GET", path, token=token, params={"n": n, **extra})
        while True:
            tags = resp.json()["tags"]
            seen += [t[key] for t in tags] if key else tags
            link = resp.headers.get("Link")
            if not link:
                break
            resp = reg.call("GET", link[1:link.index(">")], token=token)
        if key and orderby:
            assert sorted(seen) == expected and len(seen) == len(expected)
            assert seen == (expected if orderby == "timeasc" else expected[::-1]), "time order follows lastUpdateTime"
        else:
            assert seen == expected
