"""The shared transport: what its requests adapter works out once per origin, and what its lean requests session prepares,
must be what requests works out per request (same prepared request, cookies kept); with proxy variables set, requests'
own path."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from azure.core import PipelineClient
from azure.core.rest import HttpRequest

from shared.azure_clients import ARM_PROFILE, STORAGE_PROFILE, BoundedTransport, transport


def prepared(url: str) -> requests.PreparedRequest:
    request = requests.PreparedRequest()
    request.prepare(method="GET", url=url)
    return request


def test_connection_pool_keys_are_per_origin_and_tls_settings_and_match_requests_own(tmp_path: Path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not read here")
    t = transport(ARM_PROFILE)
    t.open()
    try:
        adapter = t.session.get_adapter("https://")
        plain = requests.adapters.HTTPAdapter()
        for url, verify in [("https://a.example:8443/x?y=1", str(bundle)), ("https://b.example/z", str(bundle)),
                            ("https://a.example:8443/other", False), ("https://a.example:8443/q", str(tmp_path))]:
            ours = adapter.build_connection_pool_key_attributes(prepared(url), verify)
            assert ours == plain.build_connection_pool_key_attributes(prepared(url), verify), url
        first = adapter.build_connection_pool_key_attributes(prepared("https://a.example:8443/x"), str(bundle))
        first[1]["changed by a caller"] = True  # a caller's change does not leak into the next request's key
        again = adapter.build_connection_pool_key_attributes(prepared("https://a.example:8443/y"), str(bundle))
        assert "changed by a caller" not in again[1] and again[1]["ca_certs"] == str(bundle)
    finally:
        t.close()


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def _session(transport: object) -> requests.Session:
    transport.open()  # type: ignore[attr-defined]
    return transport.session  # type: ignore[attr-defined]


def _wire(prepared: requests.PreparedRequest) -> tuple[object, ...]:
    return prepared.method, prepared.url, list(prepared.headers.items()), prepared.body


@pytest.mark.parametrize("method, headers, data", [
    ("GET", {"Accept": "application/json", "x-ms-client-request-id": "1", "Authorization": "Bearer t"}, None),
    ("POST", {"Content-Type": "application/json", "Accept": None, "User-Agent": "azsdk-python/1"}, '{"a": 1}'),
    ("PUT", {"x-ms-lease-action": "acquire", "Content-Length": "0"}, b""),
    ("POST", {"Content-Type": "application/x-www-form-urlencoded"}, {"grant_type": "refresh_token", "scope": "a b"}),
])
def test_lean_session_prepares_what_requests_prepares(no_proxy: None, method: str, headers: dict, data: object) -> None:
    lean = _session(BoundedTransport(STORAGE_PROFILE))
    assert lean.trust_env is False  # no proxy variables: the transport reads the environment once, when built
    plain = requests.Session()
    plain.trust_env = False
    url = "https://reg.azurecr.io/v2/app/referrers/sha256:abc?artifactType=application%2Fvnd.x&n=2"
    ours = lean.prepare_request(requests.Request(method, url, headers=headers, data=data or {}))
    theirs = plain.prepare_request(requests.Request(method, url, headers=headers, data=data or {}))
    assert _wire(ours) == _wire(theirs)
    args = (url, {}, None, "/ca.pem", None)
    assert lean.merge_environment_settings(*args) == plain.merge_environment_settings(*args)


def test_with_proxy_variables_requests_reads_the_environment_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    session = _session(BoundedTransport(STORAGE_PROFILE))
    assert session.trust_env is True
    settings = session.merge_environment_settings("https://reg.azurecr.io/v2/", {}, None, True, None)
    assert settings["proxies"].get("https") == "http://proxy.internal:3128"


class _CookieServer(BaseHTTPRequestHandler):
    """Sets a cookie on the first request and echoes the Cookie header it receives."""

    def do_GET(self) -> None:
        body = (self.headers.get("Cookie") or "").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Set-Cookie", "affinity=abc; Path=/")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def cookie_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CookieServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_cookies_a_service_sets_are_sent_back_and_two_hosts_get_their_own_pools(no_proxy: None, cookie_server: str) -> None:
    client: PipelineClient = PipelineClient(cookie_server, transport=BoundedTransport(STORAGE_PROFILE))
    first = client.send_request(HttpRequest("GET", f"{cookie_server}/a"))
    second = client.send_request(HttpRequest("GET", f"{cookie_server}/b"))
    assert first.text() == "" and second.text() == "affinity=abc"
    other = cookie_server.replace("127.0.0.1", "localhost")
    assert client.send_request(HttpRequest("GET", f"{other}/c")).status_code == 200
    pools = client._pipeline._transport.session.get_adapter(cookie_server).poolmanager.pools  # type: ignore[attr-defined]
    assert len(pools) == 2  # one per host, as requests keys them
