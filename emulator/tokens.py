"""Token minting and checking: JWT-shaped, HMAC-signed tokens that only this emulator issues and accepts."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from typing import Any


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenAuthority:
    """Mints and verifies tokens for one emulator run (the key never leaves the process)."""

    def __init__(self, tenant_id: str, key: bytes | None = None) -> None:
        self.tenant_id = tenant_id
        self._key = key or secrets.token_bytes(32)
        self.issued: list[str] = []  # every token handed out, so tests can prove none leaks into logs
        self._verified: dict[str, dict[str, Any]] = {}  # token → claims, once its signature checked (expiry checked every time)

    def mint(self, claims: dict[str, Any], ttl_seconds: int) -> str:
        now = int(time.time())
        body = {"jti": str(uuid.uuid4()), "iat": now, "nbf": now, "exp": now + ttl_seconds, **claims}
        header = {"typ": "JWT", "alg": "HS256", "kid": "emulator"}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(body).encode())}"
        sig = hmac.new(self._key, signing_input.encode(), hashlib.sha256).digest()
        token = f"{signing_input}.{_b64(sig)}"
        self.issued.append(token)
        return token

    def verify(self, token: str) -> dict[str, Any] | None:
        """Claims of a valid, unexpired token this authority minted; None otherwise. A token's signature is checked once
        (every request of a run carries one of a few tokens); its expiry on every call."""
        claims = self._verified.get(token)
        if claims is None:
            claims = self._check_signature(token)
            if claims is None:
                return None
            if len(self._verified) >= 4096:
                self._verified.clear()
            self._verified[token] = claims
        if claims.get("exp", 0) < time.time():
            return None
        return claims

    def _check_signature(self, token: str) -> dict[str, Any] | None:
        try:
            head, body, sig = token.split(".")
            expected = hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(expected, _unb64(sig)):
                return None
            claims = json.loads(_unb64(body))
        except (ValueError, json.JSONDecodeError):
            return None
        return claims if isinstance(claims, dict) else None


def bearer(header_value: str | None) -> str | None:
    """The token of an `Authorization: Bearer …` header, or None."""
    if not header_value:
        return None
    scheme, _, token = header_value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
