"""ACR data-plane auth: AAD token → /oauth2/exchange → refresh token → /oauth2/token per scope, cached process-wide until near exp."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import HTTPPolicy
from azure.core.rest import HttpRequest

log = logging.getLogger("autopilot.acr")
REFRESH_MARGIN_SECONDS = 300.0  # renew a token this long before its exp (ACR tokens live 75 min to 3 h)
FALLBACK_TTL_SECONDS = 600.0  # a token whose exp we cannot read is trusted this long


def jwt_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (we only read exp/tid of tokens we were just given). {} if it is not a JWT."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def expiry_of(token: str, now: float | None = None) -> float:
    exp = jwt_claims(token).get("exp")
    now = time.time() if now is None else now
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else now + FALLBACK_TTL_SECONDS


@dataclass
class CachedToken:
    token: str
    expires_on: float  # epoch seconds
    lifetime: float = 0.0  # seconds from caching to exp

    def fresh(self, now: float, margin: float) -> bool:
        # a token living less than two margins would never be fresh: renew those in their last tenth instead
        return self.expires_on - now > (margin if self.lifetime > 2 * margin else self.lifetime / 10)


@dataclass
class Challenge:
    """Where a registry wants us to get tokens: the realm's origin and the `service` parameter."""

    realm: str  # https://host/oauth2/token
    service: str

    @classmethod
    def parse(cls, header: str | None) -> Challenge | None:
        if not header or not header.lower().startswith("bearer "):
            return None
        params: dict[str, str] = {}
        for part in header[7:].split(","):
            key, _, value = part.strip().partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        if "realm" not in params or "service" not in params:
            return None
        return cls(realm=params["realm"], service=params["service"])


class TokenCache:
    """Refresh tokens per login server and access tokens per (login server, scope); thread-safe, one per process.

    A per-key lock makes concurrent cold callers wait for one exchange instead of each doing their own.
    """

    def __init__(self, margin_seconds: float = REFRESH_MARGIN_SECONDS, clock: Callable[[], float] = time.time) -> None:
        self.margin = margin_seconds
        self.clock = clock
        self._tokens: dict[tuple[str, ...], CachedToken] = {}
        self._challenges: dict[str, Challenge] = {}
        self._locks: dict[tuple[str, ...], threading.Lock] = {}
        self._guard = threading.Lock()

    def lock_for(self, key: tuple[str, ...]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def get(self, key: tuple[str, ...]) -> str | None:
        with self._guard:
            cached = self._tokens.get(key)
        return cached.token if cached and cached.fresh(self.clock(), self.margin) else None

    def put(self, key: tuple[str, ...], token: str) -> None:
        now = self.clock()
        expires_on = expiry_of(token, now)
        with self._guard:
            self._tokens[key] = CachedToken(token, expires_on, max(0.0, expires_on - now))

    def drop(self, key: tuple[str, ...]) -> None:
        with self._guard:
            self._tokens.pop(key, None)

    def challenge(self, login_server: str) -> Challenge:
        """The known challenge, else ACR's well-known one: realm https://LOGIN_SERVER/oauth2/token, service LOGIN_SERVER."""
        with self._guard:
            return self._challenges.get(login_server) or Challenge(f"https://{login_server}/oauth2/token", login_server)

    def learn(self, login_server: str, challenge: Challenge) -> None:
        with self._guard:
            self._challenges[login_server] = challenge

    def clear(self) -> None:
        with self._guard:
            self._tokens.clear()
            self._challenges.clear()


PROCESS_TOKEN_CACHE = TokenCache()


class AuthError(RuntimeError):
    """The registry refused our identity (the message says which step and what to check); never includes a token."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class AcrTokenProvider:
    """Gets ACR access tokens for one login server, through the (shared) cache.

    `send` is a callable running an HttpRequest through a pipeline without auth (retries, timeouts, no logging of bodies).
    """

    def __init__(self, login_server: str, aad_token: Callable[[], str], send: Callable[[HttpRequest], Any], cache: TokenCache) -> None:
        self.login_server = login_server
        self._aad_token = aad_token
        self._send = send
        self.cache = cache

    def _origin(self, challenge: Challenge) -> str:
        """Where the token endpoints are: always the login server itself (a realm elsewhere never gets our AAD token)."""
        return f"https://{self.login_server}"

    def _trusted(self, challenge: Challenge | None) -> Challenge | None:
        """The challenge if its realm is on the login server; None (ignored, logged) if it names another host."""
        if challenge is None:
            return None
        if urlsplit(challenge.realm).netloc.lower() != self.login_server.lower():
            log.warning("registry %s sent a WWW-Authenticate realm on another host (%s): ignored, no token goes there",
                        self.login_server, urlsplit(challenge.realm).netloc)
            return None
        return challenge

    def _post_form(self, url: str, form: dict[str, str]) -> dict[str, Any]:
        request = HttpRequest("POST", url, content=urlencode(form), headers={"Content-Type": "application/x-www-form-urlencoded"})
        response = self._send(request)
        if response.status_code != 200:
            try:
                errors = response.json().get("errors") or [{}]
                code = errors[0].get("code") or ""
            except (ValueError, AttributeError, IndexError, TypeError):
                code = ""
            step = url.rsplit("/", 2)[-2:]
            raise AuthError(f"registry {self.login_server} answered {response.status_code} {code} to {'/'.join(step)}", response.status_code)
        try:
            return response.json()
        except ValueError:
            raise AuthError(f"registry {self.login_server} answered {url.rsplit('/', 1)[-1]} with a body that is not JSON") from None

    def _discover(self) -> Challenge | None:
        """One `GET /v2/` to read the registry's challenge (only when the well-known realm was refused)."""
        response = self._send(HttpRequest("GET", f"https://{self.login_server}/v2/"))
        challenge = self._trusted(Challenge.parse(response.headers.get("WWW-Authenticate")))
        if challenge is not None:
            self.cache.learn(self.login_server, challenge)
        return challenge

    def _cached(self, key: tuple[str, ...], fetch: Callable[[], str]) -> str:
        """The cached token for `key`, else `fetch()` it under the key's lock (concurrent cold callers wait for one fetch)."""
        token = self.cache.get(key)
        if token:
            return token
        with self.cache.lock_for(key):
            token = self.cache.get(key)
            if not token:
                token = fetch()
                self.cache.put(key, token)
            return token

    def refresh_token(self) -> str:
        return self._cached((self.login_server,), self._exchange)

    def access_token(self, scope: str) -> str:
        return self._cached((self.login_server, scope), lambda: self._grant(scope))

    def _exchange(self) -> str:
        aad = self._aad_token()
        form = {"grant_type": "access_token", "service": "", "access_token": aad}
        tenant = jwt_claims(aad).get("tid")
        if isinstance(tenant, str):
            form["tenant"] = tenant
        challenge = self.cache.challenge(self.login_server)
        form["service"] = challenge.service
        try:
            body = self._post_form(f"{self._origin(challenge)}/oauth2/exchange", form)
        except AuthError as exc:
            if exc.status not in (400, 401, 404):
                raise
            learned = self._discover()
            if learned is None or learned == challenge:
                raise
            form["service"] = learned.service
            body = self._post_form(f"{self._origin(learned)}/oauth2/exchange", form)
        token = body.get("refresh_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise AuthError(f"registry {self.login_server} returned no refresh_token from /oauth2/exchange")
        return token

    def _grant(self, scope: str) -> str:
        challenge = self.cache.challenge(self.login_server)
        form = {"grant_type": "refresh_token", "service": challenge.service, "scope": scope, "refresh_token": self.refresh_token()}
        try:
            body = self._post_form(f"{self._origin(challenge)}/oauth2/token", form)
        except AuthError as exc:
            if exc.status != 401:
                raise
            # the refresh token was revoked or expired early: exchange again once
            self.cache.drop((self.login_server,))
            form["refresh_token"] = self.refresh_token()
            body = self._post_form(f"{self._origin(challenge)}/oauth2/token", form)
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise AuthError(f"registry {self.login_server} returned no access_token for scope {scope}")
        return token

    def invalidate(self, scope: str, challenge_header: str | None) -> None:
        """After a 401 on a data call: forget the access token; learn the challenge if the registry sent a different one."""
        self.cache.drop((self.login_server, scope))
        challenge = self._trusted(Challenge.parse(challenge_header))
        if challenge is not None and challenge != self.cache.challenge(self.login_server):
            self.cache.learn(self.login_server, challenge)
            self.cache.drop((self.login_server,))


class AcrAuthPolicy(HTTPPolicy):
    """Adds `Authorization: Bearer <access token>` for the request's `acr_scope` (a pipeline option); on 401 renews once.

    No challenge round trip when the token is cached; none even when cold (the realm of ACR is well known).
    """

    def __init__(self, provider: AcrTokenProvider) -> None:
        super().__init__()
        self.provider = provider

    def send(self, request: PipelineRequest) -> PipelineResponse:
        scope = request.context.options.pop("acr_scope", None) or request.context.get("acr_scope")
        if not scope:
            return self.next.send(request)
        if urlsplit(request.http_request.url).netloc.lower() != self.provider.login_server.lower():
            # A redirect, a next-page link or an operation location on another host: it gets no token of ours.
            request.http_request.headers.pop("Authorization", None)
            return self.next.send(request)
        request.context["acr_scope"] = scope
        request.http_request.headers["Authorization"] = f"Bearer {self.provider.access_token(scope)}"
        response = self.next.send(request)
        if response.http_response.status_code == 401:
            self.provider.invalidate(scope, response.http_response.headers.get("WWW-Authenticate"))
            request.http_request.headers["Authorization"] = f"Bearer {self.provider.access_token(scope)}"
            response = self.next.send(request)
        return response


def repository_scope(repository: str, actions: str = "pull,push,metadata_read") -> str:
    """The push path's one token per repository: pull and push, and metadata_read for the manifest attributes (AcrPull/AcrPush
    and the ABAC repository roles grant it with pull; the registry grants the requested actions the identity holds)."""
    return f"repository:{repository}:{actions}"

