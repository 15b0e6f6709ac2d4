"""ACR's manifest and tag attributes API (/acr/v1/{repo}/_manifests, _tags) through azure-containerregistry 1.2.0 unmodified."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from azure.containerregistry import ArtifactManifestOrder, ArtifactTagOrder, ContainerRegistryClient
from azure.containerregistry._generated.models import ArtifactManifestProperties as GeneratedManifestProperties
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity import DefaultAzureCredential

from emulator import Emulator, oci
from emulator.model import Manifest

from .test_acr_auth import RegistryHTTP, scenario


@pytest.fixture
def emu(make_emulator: Callable[..., Emulator]) -> Emulator:
    raw = scenario()
    repos = raw["subscriptions"][0]["registries"][0]["repositories"]
    repos.append({"name": "shop/web", "images": [
        {"tags": ["1.0", "stable"], "seed": "one", "layers_mb": [10, 20]},
        {"tags": ["2.0"], "platforms": ["linux/amd64", "linux/arm64"], "format": "oci", "seed": "two"},
        {"seed": "untagged", "platforms": ["windows/amd64"]},
    ]})
    emu = make_emulator(raw)
    repo = emu.world.registries["reg"].repositories["shop/web"]

    def age() -> None:  # distinct times, oldest first in push order, so ordering is observable
        for i, m in enumerate(repo.manifests.values()):
            m.created = f"2026-01-{i + 1:02d}T00:00:00.000000Z"
        for i, t in enumerate(repo.tags.values()):
            t.created = t.updated = f"2026-02-{i + 1:02d}T00:00:00.000000Z"

    emu.call(age)
    return emu


def client(emu: Emulator) -> ContainerRegistryClient:
    return ContainerRegistryClient(emu.endpoints["registries"]["reg"], DefaultAzureCredential(), audience="https://management.azure.com")


def top_level(emu: Emulator, tag: str) -> Manifest:
    repo = emu.world.registries["reg"].repositories["shop/web"]
    return repo.manifests[repo.tags[tag].digest]


def test_get_manifest_properties_of_an_image_by_digest_has_every_field(emu: Emulator) -> None:
    m = top_level(emu, "1.0")
    props = client(emu).get_manifest_properties("shop/web", m.digest)
    assert props.digest == m.digest and props.repository_name == "shop/web"
    # the SDK itself drops the "sha256:" prefix in this property
    assert props.fully_qualified_reference == f"{emu.endpoints['registries']['reg'][8:]}/shop/web@{m.digest[7:]}"
    assert props.architecture == "amd64" and props.operating_system == "linux"
    assert sorted(props.tags) == ["1.0", "stable"]
    # config + layers: 10 MB + 20 MB of layers and the config blob
    assert 30 * 1024**2 < props.size_in_bytes < 30 * 1024**2 + 4096
    assert props.created_on == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert props.last_updated_on >= props.created_on
    assert props.can_read and props.can_write and props.can_delete and props.can_list


def test_get_manifest_properties_of_an_index_lists_its_platforms(emu: Emulator) -> None:
    props = client(emu).get_manifest_properties("shop/web", "2.0")
    assert props.tags == ["2.0"] and props.architecture is None and props.operating_system is None
    # the public model drops `references`; the SDK's generated model (its own deserializer) reads them
    reg = RegistryHTTP(emu)
    raw = reg.call("GET", f"/acr/v1/shop/web/_manifests/{props.digest}", scope="repository:shop/web:metadata_read").json()
    generated = GeneratedManifestProperties.deserialize(raw)
    assert generated.registry_login_server == reg.login and generated.repository_name == "shop/web"
    assert generated.manifest.digest == props.digest and generated.manifest.size > 0
    platforms = sorted((p.architecture, p.operating_system) for p in generated.manifest.related_artifacts)
    assert platforms == [("amd64", "linux"), ("arm64", "linux")]
    assert all(p.digest in emu.world.registries['reg'].repositories['shop/web'].manifests
               for p in generated.manifest.related_artifacts)


def test_raw_manifest_attributes_carry_media_types(emu: Emulator) -> None:
    reg = RegistryHTTP(emu)
    meta = reg.access_token("repository:shop/web:metadata_read")
    m = top_level(emu, "1.0")
    body = reg.call("GET", f"/acr/v1/shop/web/_manifests/{m.digest}", token=meta).json()
    assert set(body) == {"registry", "imageName", "manifest"} and body["registry"] == reg.login
    attrs = body["manifest"]
    assert attrs["mediaType"] == oci.DOCKER_MANIFEST and attrs["configMediaType"] == "application/vnd.docker.container.image.v1+json"
    assert set(attrs) >= {"digest", "imageSize", "createdTime", "lastUpdateTime", "architecture", "os", "tags",
                          "changeableAttributes", "mediaType", "configMediaType"}
    index = reg.call("GET", f"/acr/v1/shop/web/_manifests/{top_level(emu, '2.0').digest}", token=meta).json()["manifest"]
    assert index["mediaType"] == oci.OCI_INDEX and "configMediaType" not in index
    assert {r["os"] for r in index["references"]} == {"linux"}
    missing = reg.call("GET", f"/acr/v1/shop/web/_manifests/sha256:{'0' * 64}", token=meta)
    assert missing.status_code == 404 and missing.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    bad = reg.call("GET", "/acr/v1/shop/web/_manifests", token=meta, params={"orderby": "sideways"})
    assert bad.status_code == 400 and "timedesc" in bad.json()["errors"][0]["message"]
    assert reg.call("GET", "/acr/v1/shop/web/_manifests", token=reg.access_token("repository:shop/web:pull")).status_code == 401


def test_list_manifest_properties_pages_by_link_in_every_order(emu: Emulator) -> None:
    c = client(emu)
    repo = emu.world.registries["reg"].repositories["shop/web"]
    everything = list(c.list_manifest_properties("shop/web", results_per_page=2))
    assert sorted(p.digest for p in everything) == sorted(repo.manifests) and len(everything) == 5  # image, 2 platforms + their index, windows
    newest_first = list(c.list_manifest_properties("shop/web", order_by=ArtifactManifestOrder.LAST_UPDATED_ON_DESCENDING,
                                                   results_per_page=2))
    assert [p.digest for p in newest_first] == list(reversed(repo.manifests))
    oldest_first = list(c.list_manifest_properties("shop/web", order_by=ArtifactManifestOrder.LAST_UPDATED_ON_ASCENDING,
                                                   results_per_page=4))
    assert [p.digest for p in oldest_first] == list(repo.manifests)
    windows = next(p for p in everything if p.operating_system == "windows")
    assert windows.tags == [] or windows.tags is None
    reg = RegistryHTTP(emu)
    meta = reg.access_token("repository:shop/web:metadata_read")
    first = reg.call("GET", "/acr/v1/shop/web/_manifests", token=meta, params={"n": 2, "orderby": "timedesc"})
    assert first.headers["Link"] == f'</acr/v1/shop/web/_manifests?last=sha256%3A{newest_first[1].digest[7:]}&n=2&orderby=timedesc>; rel="next"'
    with pytest.raises(ResourceNotFoundError):
        list(c.list_manifest_properties("no/such"))


def test_tags_by_time_carry_digests_and_page(emu: Emulator) -> None:
    c = client(emu)
    repo = emu.world.registries["reg"].repositories["shop/web"]
    newest = list(c.list_tag_properties("shop/web", order_by=ArtifactTagOrder.LAST_UPDATED_ON_DESCENDING, results_per_page=1))
    assert [t.name for t in newest] == ["2.0", "stable", "1.0"]
    assert [t.digest for t in newest] == [repo.tags[t.name].digest for t in newest]
    assert newest[0].last_updated_on == dt.datetime(2026, 2, 3, tzinfo=dt.UTC)
    reg = RegistryHTTP(emu)
    meta = reg.access_token("repository:shop/web:metadata_read")
    page = reg.call("GET", "/acr/v1/shop/web/_tags", token=meta, params={"orderby": "timedesc", "n": 1, "last": "stable"})
    assert [t["name"] for t in page.json()["tags"]] == ["1.0"] and "Link" not in page.headers
    first = reg.call("GET", "/acr/v1/shop/web/_tags", token=meta, params={"orderby": "timedesc", "n": 2})
    assert first.headers["Link"] == '</acr/v1/shop/web/_tags?last=stable&n=2&orderby=timedesc>; rel="next"'
    assert all(t["digest"].startswith("sha256:") for t in first.json()["tags"])
    with pytest.raises(HttpResponseError):
        list(c.list_tag_properties("shop/web", order_by="sideways"))
