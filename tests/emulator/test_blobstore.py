"""Blob downloads as ACR serves them: 307 to the registry's storage with a signed link; the bearer token must not follow."""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import parse_qs, urlparse

import requests

from emulator import Emulator

from .test_acr_auth import RegistryHTTP, scenario


def _config_blob(reg: RegistryHTTP, token: str) -> dict:
    manifest = json.loads(reg.call("GET", "/v2/microsoft/manifests/azure-cli", token=token).content)
    return manifest["config"]


def test_blob_get_redirects_to_storage_with_a_signed_link(make_emulator: Callable[..., Emulator]) -> None:
    emu = make_emulator(scenario())
    reg = RegistryHTTP(emu)
    token = reg.access_token("repository:microsoft:pull")
    config = _config_blob(reg, token)
    path = f"/v2/microsoft/blobs/{config['digest']}"

    redirect = reg.call("GET", path, token=token, allow_redirects=False)
    assert redirect.status_code == 307 and redirect.headers["Docker-Content-Digest"] == config["digest"]
    link = redirect.headers["Location"]
    parsed = urlparse(link)
    assert parsed.netloc != urlparse(reg.url).netloc, "storage is another host than the login server"
    assert {"se", "sig", "sp"} <= set(parse_qs(parsed.query))

    # a client that follows redirects the standard way (dropping Authorization across hosts) gets the bytes
    followed = reg.call("GET", path, token=token)
    assert followed.status_code == 200 and len(followed.content) == config["size"]
    assert json.loads(followed.content)["architecture"] == "amd64"
    ranged = reg.call("GET", path, token=token, headers={"Range": "bytes=0-9"})
    assert ranged.status_code == 206 and ranged.content == followed.content[:10]

    ca = emu.env["REQUESTS_CA_BUNDLE"]
    leaked = requests.get(link, headers={"Authorization": f"Bearer {token}"}, verify=ca, timeout=30)
    assert leaked.status_code == 400 and leaked.headers["x-ms-error-code"] == "InvalidAuthenticationInfo"
    tampered = requests.get(link.replace("sig=", "sig=AA"), verify=ca, timeout=30)
    assert tampered.status_code == 403 and tampered.headers["x-ms-error-code"] == "AuthenticationFailed"
    expired = emu.ctx.extras["blobstore"].link("reg", config["digest"], ttl=-5)
    assert requests.get(expired, verify=ca, timeout=30).status_code == 403
    assert [r["endpoint_class"] for r in emu.requests_since(0) if r["host"] == "storage"].count("storage.blob") >= 4


def test_the_sdk_downloads_through_the_redirect(make_emulator: Callable[..., Emulator]) -> None:
    from azure.containerregistry import ContainerRegistryClient
    from azure.identity import DefaultAzureCredential

    emu = make_emulator(scenario())
    reg = RegistryHTTP(emu)
    token = reg.access_token("repository:microsoft:pull")
    config = _config_blob(reg, token)
    client = ContainerRegistryClient(endpoint=reg.url, credential=DefaultAzureCredential(), audience="https://containerregistry.azure.net")
    data = b"".join(client.download_blob("microsoft", config["digest"]))
    assert len(data) == config["size"]
    storage = [r for r in emu.requests_since(0) if r["host"] == "storage"]
    assert storage and all(r["status"] in (200, 206) for r in storage), "the SDK never forwards the registry token to storage"
