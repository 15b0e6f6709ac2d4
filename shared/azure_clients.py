"""Azure client construction: one credential per process; every client (ARM, blob, topic, ACR data plane) built with explicit
timeouts, a capped retry policy bounded by the invocation deadline and a connection pool sized to its concurrency."""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .deadline import DEFAULT_RETRY_AFTER_MAX, Deadline, DeadlineRetryPolicy, current
from .settings import AzureSettings

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient
    from azure.mgmt.containerservice import ContainerServiceClient
    from azure.mgmt.subscription import SubscriptionClient

_lock = threading.Lock()
_credential: TokenCredential | None = None


def credential() -> TokenCredential:
    """DefaultAzureCredential, created once per process (its token cache lives as long as the instance; a user-assigned
    identity is chosen by AZURE_CLIENT_ID, which DefaultAzureCredential reads itself)."""
    global _credential
    with _lock:
        if _credential is None:
            from azure.identity import DefaultAzureCredential

            # the identity endpoint is called by every client's auth policy: the same bounded, pooled transport
            _credential = DefaultAzureCredential(transport=transport(IDENTITY_PROFILE))
        return _credential


def reset_credential() -> None:
    """Forget the process credential (tests that switch emulators between cases)."""
    global _credential
    with _lock:
        _credential = None


@dataclass(frozen=True)
class HttpProfile:
    """How one client talks HTTP: timeouts per attempt, retries (and how long a Retry-After may be), pool size.

    Worst case of one call without a deadline: attempts × (connect + read) + the waits between them; with a deadline
    (`Deadline.applied()` or the `deadline=` request option) never past it.
    """

    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    retry_total: int = 3
    backoff_factor: float = 0.4
    backoff_max: float = 8.0
    retry_after_max: float = DEFAULT_RETRY_AFTER_MAX
    pool_size: int = 32  # keep-alive connections per host: at least the number of threads that use the client at once

    def sized(self, concurrency: int) -> HttpProfile:
        """The same profile with a pool for `concurrency` simultaneous callers (never below 10, urllib3's default)."""
        return replace(self, pool_size=max(10, concurrency))

    def worst_case_seconds(self) -> float:
        attempts = self.retry_total + 1
        waits = sum(min(self.backoff_max, self.backoff_factor * 2**i) for i in range(self.retry_total))
        return attempts * (self.connect_timeout + self.read_timeout) + max(waits, self.retry_total * self.retry_after_max)


# One instance serves up to 32 concurrent invocations (the Python worker's default thread pool is min(32, CPUs + 4)).
ARM_PROFILE = HttpProfile(connect_timeout=5.0, read_timeout=30.0, retry_total=3)
STORAGE_PROFILE = HttpProfile(connect_timeout=3.0, read_timeout=10.0, retry_total=2, backoff_max=2.0)
TOPIC_PROFILE = HttpProfile(connect_timeout=3.0, read_timeout=5.0, retry_total=0, retry_after_max=5.0)
IDENTITY_PROFILE = HttpProfile(connect_timeout=3.0, read_timeout=10.0, retry_total=3)
ACR_PROFILE = HttpProfile(connect_timeout=5.0, read_timeout=30.0, retry_total=4)


def transport(profile: HttpProfile) -> Any:
    """A requests transport with the profile's timeouts and pool that also never lets one attempt outlive the deadline."""
    return BoundedTransport(profile)


def retry_policy(profile: HttpProfile, retry_total: int | None = None) -> DeadlineRetryPolicy:
    return DeadlineRetryPolicy(retry_total=profile.retry_total if retry_total is None else retry_total,
                               retry_backoff_factor=profile.backoff_factor, retry_backoff_max=profile.backoff_max,
                               retry_after_max=profile.retry_after_max)


def client_kwargs(profile: HttpProfile) -> dict[str, Any]:
    """Keyword arguments any azure-core based client takes: our transport and retry policy, plus the timeouts themselves
    (clients that build part of their pipeline from them, such as the storage SDK, see the same numbers)."""
    return {"transport": transport(profile), "retry_policy": retry_policy(profile), "retry_total": profile.retry_total,
            "connection_timeout": profile.connect_timeout, "read_timeout": profile.read_timeout}


def _mgmt_kwargs(settings: AzureSettings, profile: HttpProfile, **kwargs: Any) -> dict[str, Any]:
    return {
        "base_url": settings.arm_endpoint,
        "credential_scopes": [f"{settings.arm_audience}/.default"],
        **client_kwargs(profile),
        **kwargs,
    }


def container_service_client(settings: AzureSettings, subscription_id: str, *, profile: HttpProfile = ARM_PROFILE,
                             **kwargs: Any) -> ContainerServiceClient:
    from azure.mgmt.containerservice import ContainerServiceClient

    return ContainerServiceClient(credential(), subscription_id, **_mgmt_kwargs(settings, profile, **kwargs))


def container_registry_client(settings: AzureSettings, subscription_id: str, *, profile: HttpProfile = ARM_PROFILE,
                              **kwargs: Any) -> ContainerRegistryManagementClient:
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient

    return ContainerRegistryManagementClient(credential(), subscription_id, **_mgmt_kwargs(settings, profile, **kwargs))


def subscription_client(settings: AzureSettings, *, profile: HttpProfile = ARM_PROFILE, **kwargs: Any) -> SubscriptionClient:
    from azure.mgmt.subscription import SubscriptionClient

    return SubscriptionClient(credential(), **_mgmt_kwargs(settings, profile, **kwargs))


def arm_polling(deadline: Deadline | None = None, interval: float = 30.0, profile: HttpProfile = ARM_PROFILE) -> Any:
    """An LRO polling method for mgmt `begin_*` calls (`polling=arm_polling(deadline)`): ARM's Retry-After between polls
    is capped by the profile's `retry_after_max` and never waits past the deadline (the poller runs on its own thread, so
    the deadline is passed in rather than read from `current()`)."""
    from azure.mgmt.core.polling.arm_polling import ARMPolling

    bound = deadline or current()

    class DeadlineARMPolling(ARMPolling):
        def _extract_delay(self) -> float:
            delay = min(float(super()._extract_delay()), profile.retry_after_max)
            return bound.cap(delay) if bound is not None else delay

    return DeadlineARMPolling(timeout=interval)


def describe_error(exc: BaseException) -> str:
    """A short, readable account of an SDK error: status, ARM error code and message (or that authentication failed)."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

    if is_credential_failure(exc):
        lines = str(getattr(exc, "message", None) or exc).splitlines()
        return (f"authentication failed: {lines[0] if lines else type(exc).__name__} "
                "(check the managed identity, AZURE_CLIENT_ID or `az login`)")
    if isinstance(exc, HttpResponseError):
        code = getattr(getattr(exc, "error", None), "code", None)
        message = getattr(getattr(exc, "error", None), "message", None) or exc.reason or str(exc).splitlines()[0]
        return f"{exc.status_code} {code + ': ' if code else ''}{message}"
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return f"connection failed: {str(exc).splitlines()[0]}"
    return f"{type(exc).__name__}: {exc}"


def is_credential_failure(exc: BaseException) -> bool:
    """The credential could not get a token (no HTTP answer from the service at all): not a verdict about any resource."""
    from azure.core.exceptions import ClientAuthenticationError

    return isinstance(exc, ClientAuthenticationError) and exc.status_code is None


def wire_text(value: Any) -> str | None:
    """SDK enums (str subclasses whose str() is `OSSKU.UBUNTU`) and plain strings alike, as the wire value."""
    if value is None:
        return None
    return str(getattr(value, "value", value))


PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY")


def env_settings() -> dict[str, Any]:
    """How a transport reads the environment. Without proxy variables, once, when it is built: the CA bundle
    (REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE, how the app trusts a sovereign cloud's or the emulator's CA) becomes the
    transport's own setting, and requests stops re-reading proxies, CA bundle and ~/.netrc on every request. With proxy
    variables set, per request, as requests does by default."""
    if any(os.environ.get(name) or os.environ.get(name.lower()) for name in PROXY_VARIABLES):
        return {}
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    return {"use_env_settings": False, "connection_verify": bundle or True}


def _bounded_transport_class() -> type:
    from azure.core.pipeline.transport import RequestsTransport
    from requests import PreparedRequest, Session
    from requests.adapters import HTTPAdapter
    from requests.structures import CaseInsensitiveDict
    from urllib3.util.retry import Retry

    class _Adapter(HTTPAdapter):
        """Sets a pool's CA once, not on every request (two filesystem stats per request otherwise), and works out a
        request's connection pool once per origin."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._verified: weakref.WeakKeyDictionary[Any, tuple[Any, Any]] = weakref.WeakKeyDictionary()
            self._pool_keys: dict[tuple[Any, Any, Any], tuple[dict[str, Any], dict[str, Any]]] = {}

        def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
            if self._verified.get(conn) == (verify, cert):
                return
            super().cert_verify(conn, url, verify, cert)
            self._verified[conn] = (verify, cert)

        def build_connection_pool_key_attributes(self, request: Any, verify: Any, cert: Any = None) -> Any:
            """Once per origin and TLS settings (requests' documented override point): requests would otherwise parse
            the URL and stat the CA bundle path (is it a directory?) on every request."""
            url = request.url or ""
            end = url.find("/", url.find("://") + 3)
            key = (url if end < 0 else url[:end], verify, cert if not isinstance(cert, list) else tuple(cert))
            found = self._pool_keys.get(key)
            if found is None:
                found = super().build_connection_pool_key_attributes(request, verify, cert)
                if len(self._pool_keys) >= 256:
                    self._pool_keys.clear()
                self._pool_keys[key] = found
            return dict(found[0]), dict(found[1])

    class _Session(Session):
        """requests.Session for what azure-core's transport sends: the request's own headers and body, no params, auth,
        cookies or hooks of its own, and (without proxy variables) no environment. Those are prepared with the session's
        headers and cookies as requests would, without its general merging (new cookie jars, settings merged key by key,
        proxies merged with nothing); anything else goes through requests' own path."""

        def prepare_request(self, request: Any) -> Any:
            if (self.trust_env or request.params or request.auth or request.cookies or self.auth or self.params
                    or any(self.hooks.values())):
                return super().prepare_request(request)
            headers = CaseInsensitiveDict(self.headers)
            for name, value in (request.headers or {}).items():  # the request's value wins; None removes a header
                if value is None:
                    headers.pop(name, None)
                else:
                    headers[name] = value
            prepared = PreparedRequest()
            prepared.prepare(method=request.method.upper(), url=request.url, files=request.files, data=request.data,
                             json=request.json, headers=headers, params=request.params, auth=None, cookies=self.cookies,
                             hooks=request.hooks)
            return prepared

        def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
            if self.trust_env or proxies or self.proxies:
                return super().merge_environment_settings(url, proxies, stream, verify, cert)
            return {"proxies": {}, "stream": self.stream if stream is None else stream,
                    "verify": self.verify if verify is None else verify, "cert": self.cert if cert is None else cert}

    class _BoundedTransport(RequestsTransport):
        def __init__(self, profile: HttpProfile) -> None:
            env = env_settings()
            super().__init__(connection_timeout=profile.connect_timeout, read_timeout=profile.read_timeout, **env)
            self.profile = profile

        def open(self) -> None:
            if getattr(self, "session", None) is None and self._session_owner and not self._has_been_opened:
                self.session = _Session()
                self._init_session(self.session)
            super().open()

        def _init_session(self, session: Any) -> None:
            super()._init_session(session)
            adapter = _Adapter(pool_connections=10, pool_maxsize=self.profile.pool_size, pool_block=False,
                               max_retries=Retry(total=False, redirect=False, raise_on_status=False))
            for prefix in ("https://", "http://"):
                session.mount(prefix, adapter)

        def send(self, request: Any, **kwargs: Any) -> Any:
            deadline = current()
            if deadline is not None:
                deadline.check(f"{request.method} {request.url.split('?')[0]}")
                left = deadline.remaining()
                kwargs["connection_timeout"] = min(kwargs.get("connection_timeout") or self.profile.connect_timeout, left)
                kwargs["read_timeout"] = min(kwargs.get("read_timeout") or self.profile.read_timeout, left)
            return super().send(request, **kwargs)

    return _BoundedTransport


_transport_class: type | None = None


def BoundedTransport(profile: HttpProfile) -> Any:
    """RequestsTransport with the profile's timeouts and pool size; each attempt's timeouts are capped to the deadline."""
    global _transport_class
    if _transport_class is None:
        _transport_class = _bounded_transport_class()
    return _transport_class(profile)
