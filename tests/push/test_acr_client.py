"""The ACR data-plane client against the emulated registry: token caching, thread safety, expiry, 401 recovery, retries."""

from __future__ import annotations

import os
import threading
import time

import pytest

from shared.acr import AcrClient, TokenCache
from shared.azure_clients import credential
from shared.push.outcomes import TransientError
from shared.push.service import PushService
from shared.settings import AzureSettings

from .conftest import CMK, PREMIUM, event_for, registry_requests, scenario

IMAGES = [{"tags": ["v1"], "layers_mb": [2], "seed": "client"}]


def aad() -> str:
    return credential().get_token(f"{AzureSettings.from_env().acr_audience}/.default").token


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def auth_calls(emu, mark: int) -> list[str]:
    return [r["path"] for r in emu.requests_since(mark, service="acr") if r["path"].startswith("/oauth2/")]


def test_cold_threads_share_one_exchange_and_one_token(make_emulator):
    emu = make_emulator(scenario(IMAGES))
    reg = emu.world.registries[PREMIUM]
    digest = reg.repositories["app"].tags["v1"].digest
    client = AcrClient(reg.login_server, aad, token_cache=TokenCache())
    mark = emu.request_mark()
    barrier = threading.Barrier(10)
    results: list[int] = []

    def read() -> None:
        barrier.wait()
        results.append(len(client.referrers("app", digest)))

    threads = [threading.Thread(target=read) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [0] * 10
    assert auth_calls(emu, mark) == ["/oauth2/exchange", "/oauth2/token"]
    assert len([r for r in emu.requests_since(mark, service="acr") if "/referrers/" in r["path"]]) == 10


def test_tokens_are_renewed_shortly_before_exp_and_not_before(make_emulator):
    emu = make_emulator(scenario(IMAGES, acr_token_ttl_seconds=900))  # access tokens live 15 min here
    reg = emu.world.registries[PREMIUM]
    digest = reg.repositories["app"].tags["v1"].digest
    clock = FakeClock()
    client = AcrClient(reg.login_server, aad, token_cache=TokenCache(margin_seconds=300, clock=clock))
    mark = emu.request_mark()
    client.referrers("app", digest)
    clock.now += 500  # 400 s of life left: still used
    client.referrers("app", digest)
    assert auth_calls(emu, mark) == ["/oauth2/exchange", "/oauth2/token"]
    clock.now += 150  # 250 s left, inside the 300 s margin: renewed from the cached refresh token (no exchange)
    client.referrers("app", digest)
    assert auth_calls(emu, mark) == ["/oauth2/exchange", "/oauth2/token", "/oauth2/token"]
    clock.now += 12_000  # past the refresh token's exp too: a new exchange
    client.referrers("app", digest)
    assert auth_calls(emu, mark)[3:] == ["/oauth2/exchange", "/oauth2/token"]


def test_short_lived_tokens_are_still_reused():
    from shared.acr.auth import CachedToken

    assert CachedToken("t", expires_on=1060, lifetime=60).fresh(now=1000, margin=300)  # 60 s token, 60 s left: use it
    assert not CachedToken("t", expires_on=1005, lifetime=60).fresh(now=1000, margin=300)  # last tenth: renew
    assert not CachedToken("t", expires_on=1250, lifetime=3600).fresh(now=1000, margin=300)  # long-lived: 300 s margin


def test_a_rejected_access_token_is_renewed_once_and_the_call_succeeds(make_emulator):
    emu = make_emulator(scenario(IMAGES))
    reg = emu.world.registries[PREMIUM]
    digest = reg.repositories["app"].tags["v1"].digest
    cache = TokenCache()
    client = AcrClient(reg.login_server, aad, token_cache=cache)
    client.referrers("app", digest)
    cache.put((reg.login_server, "repository:app:pull,push,metadata_read"), "eyJhbGciOiJub25lIn0.eyJleHAiOjk5OTk5OTk5OTl9.c2ln")  # revoked
    mark = emu.request_mark()
    assert client.referrers("app", digest) == []
    calls = [(r["path"].split("/")[-1][:9], r["status"]) for r in emu.requests_since(mark, service="acr")]
    assert calls == [(digest[:9], 401), ("token", 200), (digest[:9], 200)]


def test_throttling_is_retried_inside_the_pipeline(make_emulator):
    emu = make_emulator(scenario(IMAGES, faults=[{"match": "acr.referrers", "error_rate": 0.5, "statuses": [429],
                                                  "retry_after": 0.05}]))
    reg = emu.world.registries[PREMIUM]
    digest = reg.repositories["app"].tags["v1"].digest
    client = AcrClient(reg.login_server, aad, token_cache=TokenCache())
    mark = emu.request_mark()
    for _ in range(10):
        assert client.referrers("app", digest) == []
    statuses = [r["status"] for r in emu.requests_since(mark, service="acr") if "/referrers/" in r["path"]]
    assert statuses.count(200) == 10 and statuses.count(429) >= 3


def test_a_forged_event_host_never_receives_the_identity_token(make_emulator, azurite):
    """The login server comes from ARM; an event naming another host is processed against the real registry."""
    emu = make_emulator(scenario(IMAGES))
    digest = emu.world.registries[PREMIUM].repositories["app"].tags["v1"].digest
    event = event_for(emu, digest, "v1")
    event["data"]["request"]["host"] = "127.0.0.1:9"  # nothing listens there; a token sent there would be lost
    service = PushService.from_env(token_cache=TokenCache())
    mark = emu.request_mark()
    outcome = service.handle_event(event)
    assert outcome.outcome == "created"
    assert registry_requests(emu, mark)[0] == ("POST", "/oauth2/exchange")


def test_allow_list_by_login_server_trusts_arm_not_the_event_host(make_emulator, monkeypatch):
    emu = make_emulator(scenario(IMAGES))
    premium = emu.world.registries[PREMIUM]
    digest = premium.repositories["app"].tags["v1"].digest
    monkeypatch.setenv("AUTOPILOT_PUSH_REGISTRIES", premium.login_server)
    service = PushService.from_env(token_cache=TokenCache())
    assert service.handle_event(event_for(emu, digest, "v1")).outcome == "created"
    forged = event_for(emu, digest, "v1")
    forged["topic"] = emu.world.registries[CMK].resource_id  # another registry, claiming the allowed host
    outcome = service.handle_event(forged)
    assert (outcome.outcome, outcome.reason) == ("skipped", "registry-not-allowed")


def test_a_credential_failure_is_authentication_and_not_cached_as_the_registry_verdict(make_emulator, azurite, monkeypatch):
    """The identity endpoint refuses us (wrong IDENTITY_HEADER): no ARM answer at all, so no "ARM answered 0 0" and nothing
    cached about the registry; the event is not acknowledged (Event Grid redelivers, finally dead-letters: nothing lost),
    and once the credential works again the same service acts on the next delivery."""
    from shared.azure_clients import reset_credential

    emu = make_emulator(scenario(IMAGES))
    digest = emu.world.registries[PREMIUM].repositories["app"].tags["v1"].digest
    service = PushService.from_env(token_cache=TokenCache())
    good_header = os.environ["IDENTITY_HEADER"]
    monkeypatch.setenv("IDENTITY_HEADER", "wrong")
    reset_credential()
    with pytest.raises(TransientError) as info:
        service.handle_event(event_for(emu, digest, "v1"))
    assert info.value.code == "AUTHENTICATION"
    assert "authentication failed" in str(info.value) and "ARM answered" not in str(info.value)
    monkeypatch.setenv("IDENTITY_HEADER", good_header)
    reset_credential()
    assert service.handle_event(event_for(emu, digest, "v1")).outcome == "created"
