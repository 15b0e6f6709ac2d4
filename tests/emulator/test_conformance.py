"""Conformance: replay the 55 recorded az CLI data-plane exchanges against the emulator and compare it with real ACR."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from emulator import Emulator

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "acr_recording" / "acr_streaming_dataplane.json"
RECORDED_HOSTS = ("cliregrngppnrhlhdbou.azurecr.io", "clireg000002.azurecr.io")
RECORDED_DIGEST = "sha256:622731d3e3a16b11a1f318b1c5018d0c44996b4c096b864fe2eac5b8beab535a"
SUB = "00000000-0000-4000-8000-0000000000d1"
# Which access token each request carried when it is not the latest one issued. The recorder stripped Authorization
# headers; azure-cli's artifact_streaming.py shows `acr artifact-streaming create` keeps its outer pull,push credentials
# (exchange 18) for the POST, while the inner pull token (exchange 22) only served the GET of exchange 23.
TOKEN_OF = {24: 18}
# JSON keys whose values must match exactly (after substituting host, digest and operation ids); others: same type.
EXACT_KEYS = {"code", "message", "detail", "status", "name", "convertPushedImages", "conversionFormat", "conversionVersion",
              "signed", "changeableAttributes", "schemaVersion", "mediaType", "manifests", "imageName", "registry", "resource",
              "details", "id", "digest"}
PATTERN_KEYS = {"progress": r"^\d{1,3}%$", "startTime": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$",
                "createdTime": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", "lastUpdateTime": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$"}


def load() -> list[dict[str, Any]]:
    return json.loads(FIXTURE.read_text())["exchanges"]


def claims_of(token: str) -> dict[str, Any]:
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


class Substitution:
    """Recorded host, digest and operation ids -> the emulator's."""

    def __init__(self, login: str, digest: str) -> None:
        self.pairs: dict[str, str] = {h: login for h in RECORDED_HOSTS} | {RECORDED_DIGEST: digest}

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            for old, new in self.pairs.items():
                value = value.replace(old, new)
            return value
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v) for v in value]
        return value


def compare_json(expected: Any, actual: Any, where: str, problems: list[str], exact: bool = False) -> None:
    if exact:
        if expected != actual:
            problems.append(f"{where}: expected {expected!r}, got {actual!r}")
        return
    if isinstance(expected, dict):
        if not isinstance(actual, dict) or set(expected) != set(actual):
            problems.append(f"{where}: keys {sorted(expected)} expected, got {sorted(actual) if isinstance(actual, dict) else actual!r}")
            return
        for key, value in expected.items():
            if key in PATTERN_KEYS:
                if not (isinstance(actual[key], str) and re.match(PATTERN_KEYS[key], actual[key])):
                    problems.append(f"{where}.{key}: {actual[key]!r} does not look like {PATTERN_KEYS[key]}")
            else:
                compare_json(value, actual[key], f"{where}.{key}", problems, exact=key in EXACT_KEYS)
    elif isinstance(expected, list):
        if not isinstance(actual, list) or len(expected) != len(actual):
            problems.append(f"{where}: expected a list of {len(expected)}, got {actual!r}")
            return
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            compare_json(e, a, f"{where}[{i}]", problems)
    elif type(expected) is not type(actual):
        problems.append(f"{where}: expected a {type(expected).__name__}, got {actual!r}")


@pytest.fixture
def emu(make_emulator: Callable[..., Emulator]) -> Emulator:
    # conversions run 10 s: NotStarted for 1 s, then Running, so the recorded NotStarted -> Running -> cancel sequence holds
    return make_emulator({
        "settings": {"conversion_seconds": 10.0},
        "subscriptions": [{"id": SUB, "registries": [{"name": "clireg", "sku": "Premium", "repositories": [
            {"name": "microsoft", "images": [{"tags": ["azure-cli"], "layers_mb": [30, 200], "seed": "azure-cli"}]}]}]}],
    })


def test_fixture_is_the_55_recorded_exchanges_without_secrets() -> None:
    text = FIXTURE.read_text()
    exchanges = load()
    assert len(exchanges) == 55
    assert not re.search(r"eyJ[A-Za-z0-9_-]{20,}\.eyJ", text), "no token may be stored"
    assert [e["status"] for e in exchanges].count(401) == 22


def test_emulator_answers_every_recorded_exchange_as_acr_did(emu: Emulator) -> None:
    url = emu.endpoints["registries"]["clireg"]
    login = url.removeprefix("https://")
    session = requests.Session()
    session.verify = emu.endpoints["ca_bundle"]
    repo = emu.world.registries["clireg"].repositories["microsoft"]
    digest = emu.call(lambda: repo.tags["azure-cli"].digest)
    sub = Substitution(login, digest)
    aad = session.get(emu.env["IDENTITY_ENDPOINT"], params={"api-version": "2019-08-01", "resource": "https://management.azure.com"},
                      headers={"X-IDENTITY-HEADER": emu.env["IDENTITY_HEADER"]}).json()["access_token"]
    refresh = access = ""
    issued: dict[int, str] = {}
    problems: list[str] = []
    mark = emu.request_mark()
    for n, ex in enumerate(load()):
        where = f"exchange {n} (cassette {ex['cassette_index']}) {ex['method']} {ex['uri']}"
        headers = {"Accept": "*/*"}
        data: Any = None
        if "request_form" in ex:
            form = []
            for key, value in ex["request_form"].items():
                if key == "access_token":
                    value = aad
                elif key == "refresh_token":
                    value = refresh
                elif key == "password":
                    value = access  # recorded: the previous access token, username 00000000-…
                elif key == "tenant":
                    value = emu.world.tenant_id
                form.append((key, sub(value)))
            data = form
        elif ex["request_body"] is not None:
            data = ex["request_body"].encode()
            headers["Content-Type"] = ex["request_headers"]["Content-Type"]
        if ex["uri"] != "/v2/" and not ex["uri"].startswith("/oauth2/"):
            headers["Authorization"] = f"Bearer {issued[TOKEN_OF[n]] if n in TOKEN_OF else access}"
        if ex["uri"].startswith("/acr/v1/microsoft/_streaming/") and ex["method"] == "GET" and "Running" in (ex["response_body"] or ""):
            wait_until(lambda: any(op.status == "Running" for op in repo.operations.values()), emu)
        previous_access = access
        resp = session.request(ex["method"], url + sub(ex["uri"]), headers=headers, data=data)

        if resp.status_code != ex["status"]:
            problems.append(f"{where}: status {resp.status_code}, recorded {ex['status']}: {resp.text[:200]}")
            continue
        for key, value in ex["response_headers"].items():
            got = resp.headers.get(key)
            if got is None:
                problems.append(f"{where}: header {key} missing")
            elif key in ("Location", "Operation-Location", "operation-id"):
                sub.pairs.setdefault(value.rsplit("/", 1)[-1], got.rsplit("/", 1)[-1])
                if sub(value) != got:
                    problems.append(f"{where}: header {key} {got!r}, recorded {sub(value)!r}")
            elif sub(value) != got:
                problems.append(f"{where}: header {key} {got!r}, recorded {sub(value)!r}")
        if ex["response_body"]:
            expected = json.loads(ex["response_body"])
            actual = resp.json()
            if isinstance(expected, dict) and "id" in expected:
                sub.pairs.setdefault(expected["id"], actual.get("id", ""))
            compare_json(sub(expected), actual, where, problems)
            assert resp.content.endswith(b"\n"), f"{where}: ACR ends JSON bodies with a newline"
        if "refresh_token" in (resp.json() if resp.content else {}):
            refresh = resp.json()["refresh_token"]
        if "response_token_claims" in ex:
            access = issued[n] = resp.json()["access_token"]
            got_claims, want = claims_of(access), ex["response_token_claims"]
            for key in ("access", "iss", "grant_type"):
                if got_claims.get(key) != want.get(key):
                    problems.append(f"{where}: token claim {key} {got_claims.get(key)!r}, recorded {want.get(key)!r}")
            if got_claims["aud"] != login:
                problems.append(f"{where}: token audience {got_claims['aud']!r}")
            if ex["request_form"].get("grant_type") == "password" and got_claims["exp"] > claims_of(previous_access)["exp"]:
                problems.append(f"{where}: a token from a token outlives its source")
    assert not problems, "the emulator differs from the recording:\n" + "\n".join(problems)
    replayed = emu.requests_since(mark, "acr")
    assert [(r["method"], r["status"]) for r in replayed] == [(e["method"], e["status"]) for e in load()]


def wait_until(predicate: Callable[[], bool], emu: Emulator, timeout: float = 10.0) -> None:
    """Wait (bounded) for the emulator to reach a state the recording shows; the replay's comparison reports if it never does."""
    deadline = time.monotonic() + timeout
    while not emu.call(predicate) and time.monotonic() < deadline:
        time.sleep(0.02)
