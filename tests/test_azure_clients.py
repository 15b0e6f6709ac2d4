"""The shared transport's requests adapter: what it works out once per origin must be what requests works out per request."""

from __future__ import annotations

from pathlib import Path

import requests

from shared.azure_clients import ARM_PROFILE, transport


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
