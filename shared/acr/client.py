"""The ACR data-plane client: azure-core PipelineClient (retries honouring Retry-After, cached tokens) for manifests, referrers, streaming."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from azure.core import PipelineClient
from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.core.pipeline.policies import (
    HeadersPolicy,
    HttpLoggingPolicy,
    RedirectPolicy,
    RequestIdPolicy,
    SensitiveHeaderCleanupPolicy,
    UserAgentPolicy,
)
from azure.core.rest import HttpRequest, HttpResponse

from ..azure_clients import ACR_PROFILE, HttpProfile, retry_policy, transport
from ..mediatypes import MANIFEST_ACCEPT, STREAMING_ARTIFACT_TYPE
from .auth import PROCESS_TOKEN_CACHE, AcrAuthPolicy, AcrTokenProvider, AuthError, TokenCache, repository_scope

CONVERSION_BODY = {"conversionFormat": "overlaybd", "conversionVersion": "v1"}
FAILURE_CODES = (
    "UNKNOWN_ERROR", "RESOURCE_NOT_FOUND", "UNSUPPORTED_PLATFORM", "NO_SUPPORTED_PLATFORM_FOUND", "UNSUPPORTED_MEDIATYPE",
    "UNSUPPORTED_ARTIFACT_TYPE", "IMAGE_NOT_RUNNABLE",
)
FAILURE_CODE_RE = re.compile(r"\b(" + "|".join(FAILURE_CODES) + r")\b")
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
POOL_SIZE = 32  # keep-alive connections per registry (concurrent invocations on one instance share them)
USER_AGENT = "artifact-streaming-autopilot/0.1"


class AcrError(RuntimeError):
    """A data-plane call that did not succeed: HTTP status, the registry's error code, and whether retrying later may help."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None, transient: bool = False) -> None:
        self.status = status
        self.code = code
        self.transient = transient
        super().__init__(message)


@dataclass(frozen=True)
class ManifestDoc:
    digest: str
    media_type: str
    doc: dict[str, Any]
    size: int


@dataclass(frozen=True)
class Operation:
    """A streaming conversion as `/acr/v1/{repo}/_streaming/{digest}` or `/_operations/{id}` shows it."""

    id: str
    status: str  # NotStarted | Running | Succeeded | Failed | Canceled
    error_code: str | None = None
    details: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def in_flight(self) -> bool:
        return self.status in ("NotStarted", "Running", "InProgress", "Queued")

    @classmethod
    def from_body(cls, body: dict[str, Any], op_id: str | None = None) -> Operation:
        error: dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else {}
        code = body.get("errorCode") or body.get("code") or error.get("code")
        if not code and isinstance(body.get("details"), str):
            # the recorded operation body has no error field; the code is written into `details` ("… UNKNOWN_ERROR: …")
            m = FAILURE_CODE_RE.search(body["details"])
            code = m.group(1) if m else None
        return cls(
            id=str(body.get("id") or op_id or ""),
            status=str(body.get("status") or "Unknown"),
            error_code=str(code) if code else None,
            details=str(body.get("details")) if body.get("details") else None,
            raw=body,
        )


MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # ACR refuses manifests over 4 MiB
MAX_CONFIG_BYTES = 4 * 1024 * 1024  # an image config is a few KiB; 4 MiB is generous
MAX_DOC_BYTES = 4 * 1024 * 1024  # referrers pages, operations, repository settings
MAX_TOKEN_BYTES = 256 * 1024
MAX_ERROR_BYTES = 64 * 1024
CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class Answer:
    """A data-plane answer read within its byte cap: status, headers, body."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


def host_of(url: str) -> str:
    return (urlsplit(url).netloc or "").lower()


def same_host(url: str, login_server: str) -> bool:
    return host_of(url) == login_server.lower()


def read_capped(response: HttpResponse, max_bytes: int, what: str) -> Answer:
    """Read a streamed answer's body, at most `max_bytes` (Content-Length over it: refused before reading anything)."""
    try:
        declared = int(response.headers.get("Content-Length") or -1)
        if declared > max_bytes:
            raise AcrError(f"{what}: the answer is {declared} bytes, over the {max_bytes} byte cap", status=response.status_code,
                           code="BODY_TOO_LARGE")
        chunks: list[bytes] = []
        total = 0
        for chunk in response.iter_bytes(chunk_size=CHUNK_BYTES):
            total += len(chunk)
            if total > max_bytes:
                raise AcrError(f"{what}: the answer is over the {max_bytes} byte cap (stopped reading)", status=response.status_code,
                               code="BODY_TOO_LARGE")
            chunks.append(chunk)
        return Answer(response.status_code, response.headers, b"".join(chunks))
    finally:
        response.close()


def _error_code(response: Answer) -> str | None:
    try:
        body = response.json()
        errors = body.get("errors") if isinstance(body, dict) else None
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            return errors[0].get("code")
    except (ValueError, AttributeError):
        pass
    return None


class AcrClient:
    """One registry's data plane. Thread-safe; share it (and its token cache) across everything in the process."""

    def __init__(
        self,
        login_server: str,
        aad_token: Callable[[], str],
        *,
        token_cache: TokenCache | None = None,
        timeout: float = 30.0,
        retry_total: int = 4,
        retry_backoff_factor: float = 0.4,
        retry_backoff_max: float = 8.0,
        pool_size: int = POOL_SIZE,
    ) -> None:
        self.login_server = login_server.lower()
        self.base_url = f"https://{self.login_server}"
        self.timeout = timeout
        self.cache = token_cache or PROCESS_TOKEN_CACHE
        # one pool per registry, sized for a busy instance (urllib3's default keeps 10); timeouts and retries bounded by the
        # invocation's deadline (shared/deadline.py)
        self.profile = HttpProfile(connect_timeout=min(timeout, ACR_PROFILE.connect_timeout), read_timeout=timeout,
                                   retry_total=retry_total, backoff_factor=retry_backoff_factor, backoff_max=retry_backoff_max,
                                   retry_after_max=ACR_PROFILE.retry_after_max, pool_size=pool_size)
        shared_transport = transport(self.profile)
        logging_policy = HttpLoggingPolicy()  # headers outside its allow-list (Authorization) and query values are redacted
        common = [RequestIdPolicy(), HeadersPolicy(), UserAgentPolicy(base_user_agent=USER_AGENT)]
        # The token endpoints: no auth policy, same retries; their bodies (which carry tokens) are never logged.
        self._token_client: PipelineClient[HttpRequest, HttpResponse] = PipelineClient(
            self.base_url,
            policies=[*common, retry_policy(self.profile), logging_policy],
            transport=shared_transport,
        )
        self.tokens = AcrTokenProvider(self.login_server, aad_token, self._send_token_request, self.cache)
        self._client: PipelineClient[HttpRequest, HttpResponse] = PipelineClient(
            self.base_url,
            policies=[
                *common,
                RedirectPolicy(),  # blob reads may redirect to storage
                retry_policy(self.profile),
                AcrAuthPolicy(self.tokens),
                SensitiveHeaderCleanupPolicy(),  # drops Authorization when a redirect leaves the registry
                logging_policy,
            ],
            transport=shared_transport,
        )

    # ----------------------------------------------------------------- plumbing
    def _send_token_request(self, request: HttpRequest) -> Answer:
        if not same_host(request.url, self.login_server):
            raise AcrError(f"{self.login_server}: refusing to send a token request to {host_of(request.url)!r}", code="FOREIGN_HOST")
        try:
            response = self._token_client.send_request(request, stream=True)
            return read_capped(response, MAX_TOKEN_BYTES, "token response")
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise AcrError(f"{self.login_server}: token request failed: {type(exc).__name__}", transient=True) from None

    def _call(self, method: str, path: str, repository: str, *, ok: tuple[int, ...] = (200,), json_body: Any = None,
              headers: dict[str, str] | None = None, max_bytes: int = MAX_DOC_BYTES, **options: Any) -> Answer:
        """One data-plane call; the answer's body is read up to `max_bytes` (more: BODY_TOO_LARGE, nothing more is read)."""
        request = HttpRequest(method, f"{self.base_url}{path}", json=json_body, headers=headers)
        try:
            streamed = self._client.send_request(request, acr_scope=repository_scope(repository), stream=True, **options)
            response = read_capped(streamed, max_bytes if streamed.status_code in ok else MAX_ERROR_BYTES, f"{method} {path}")
        except AuthError as exc:
            transient = exc.status is None or exc.status in TRANSIENT_STATUSES
            raise AcrError(str(exc), status=exc.status, code="AUTHENTICATION", transient=transient) from None
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise AcrError(f"{method} {path}: {type(exc).__name__} talking to {self.login_server}", transient=True) from None
        if response.status_code not in ok:
            code = _error_code(response)
            raise AcrError(
                f"{method} {path} answered {response.status_code}{' ' + code if code else ''}",
                status=response.status_code,
                code=code,
                transient=response.status_code in TRANSIENT_STATUSES,
            )
        return response

    @staticmethod
    def _json(response: Answer, what: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise AcrError(f"{what}: the registry's answer is not JSON", status=response.status_code) from None

    # ----------------------------------------------------------------- reads
    def referrers(self, repository: str, digest: str, artifact_type: str = STREAMING_ARTIFACT_TYPE) -> list[dict[str, Any]]:
        """Referrers of `digest` with `artifact_type` (filtered client-side too when the registry did not apply the filter)."""
        path = f"/v2/{repository}/referrers/{digest}?artifactType={quote(artifact_type, safe='')}"
        found: list[dict[str, Any]] = []
        for _page in range(20):
            response = self._call("GET", path, repository)
            body = self._json(response, "referrers")
            manifests = body.get("manifests") if isinstance(body, dict) else None
            found.extend(m for m in manifests or [] if isinstance(m, dict) and m.get("artifactType") == artifact_type)
            link = response.headers.get("Link")
            if found or not link or "<" not in link or ">" not in link:
                break
            target = link[link.index("<") + 1: link.index(">")]
            if "://" in target:  # an absolute next-page URL: followed only on the registry itself (it gets our token)
                if not same_host(target, self.login_server):
                    raise AcrError(f"referrers: the next page is on another host ({host_of(target)!r}); not following it",
                                   code="FOREIGN_HOST")
                target = target.split("://", 1)[1]
                target = target[target.find("/"):] if "/" in target else "/"
            path = target
        return found

    def manifest(self, repository: str, reference: str) -> ManifestDoc:
        response = self._call("GET", f"/v2/{repository}/manifests/{reference}", repository, headers={"Accept": MANIFEST_ACCEPT},
                              max_bytes=MAX_MANIFEST_BYTES)
        raw = response.content
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise AcrError(f"manifest {repository}@{reference}: content digest is {digest}", status=200, code="DIGEST_INVALID")
        doc = self._json(response, "manifest")
        if not isinstance(doc, dict):
            raise AcrError(f"manifest {repository}@{reference} is not a JSON object", status=200, code="MANIFEST_INVALID")
        media_type = doc.get("mediaType") or (response.headers.get("Content-Type") or "").split(";")[0].strip()
        return ManifestDoc(digest=response.headers.get("Docker-Content-Digest") or digest, media_type=media_type, doc=doc, size=len(raw))

    def blob_json(self, repository: str, digest: str, max_bytes: int = MAX_CONFIG_BYTES, size: int | None = None) -> dict[str, Any]:
        """A small JSON blob (an image config). `size` is the descriptor's: over `max_bytes` it is refused without a request;
        the body is read up to `max_bytes` whatever the descriptor or Content-Length said."""
        if size is not None and size > max_bytes:
            raise AcrError(f"blob {digest}: its descriptor says {size} bytes, more than a config should be (at most {max_bytes})",
                           status=None, code="BLOB_TOO_LARGE")
        try:
            response = self._call("GET", f"/v2/{repository}/blobs/{digest}", repository, max_bytes=max_bytes)
        except AcrError as exc:
            if exc.code == "BODY_TOO_LARGE":
                raise AcrError(f"blob {digest} is more than {max_bytes} bytes, more than a config should be", status=exc.status,
                               code="BLOB_TOO_LARGE") from None
            raise
        raw = response.content
        if "sha256:" + hashlib.sha256(raw).hexdigest() != digest:
            raise AcrError(f"blob {repository}@{digest}: content does not match its digest", status=200, code="DIGEST_INVALID")
        try:
            doc = json.loads(raw)
        except ValueError:
            raise AcrError(f"blob {repository}@{digest} is not JSON", status=200, code="CONFIG_INVALID") from None
        if not isinstance(doc, dict):
            raise AcrError(f"blob {repository}@{digest} is not a JSON object", status=200, code="CONFIG_INVALID")
        return doc

    def manifest_attributes(self, repository: str, digest: str) -> dict[str, Any]:
        """`GET /acr/v1/{repo}/_manifests/{digest}`: ACR's attributes of one manifest (azure-containerregistry's
        ManifestAttributesBase: digest, imageSize, architecture, os, references, tags), the inner `manifest` object."""
        response = self._call("GET", f"/acr/v1/{repository}/_manifests/{digest}", repository)
        body = self._json(response, "manifest attributes")
        inner = body.get("manifest") if isinstance(body, dict) else None
        if not isinstance(inner, dict):
            raise AcrError(f"manifest attributes {repository}@{digest}: the answer has no manifest object", status=200,
                           code="ATTRIBUTES_INVALID")
        return inner

    # ----------------------------------------------------------------- streaming
    def streaming_operation(self, repository: str, digest: str) -> Operation | None:
        """The latest conversion of `digest`, or None (404 OPERATION_UNKNOWN)."""
        try:
            response = self._call("GET", f"/acr/v1/{repository}/_streaming/{digest}", repository)
        except AcrError as exc:
            if exc.status == 404 and exc.code in (None, "OPERATION_UNKNOWN", "NOT_FOUND"):
                return None
            raise
        return Operation.from_body(self._json(response, "streaming operation"), response.headers.get("operation-id"))

    def create_streaming(self, repository: str, digest: str, attempts: int = 3) -> Operation:
        """POST the conversion. Not retried blindly: after a failed POST the operation is re-read before posting again."""
        last: AcrError | None = None
        for attempt in range(attempts):
            if attempt:
                existing = self.streaming_operation(repository, digest)
                if existing is not None and (existing.in_flight or existing.status == "Succeeded"):
                    return existing  # the lost answer's conversion (already finished, on a slow retry): not a second one
            try:
                response = self._call(
                    "POST", f"/acr/v1/{repository}/_streaming/{digest}", repository, ok=(200, 201, 202), json_body=CONVERSION_BODY,
                    retry_total=0,
                )
            except AcrError as exc:
                if not exc.transient:
                    raise
                last = exc
                time.sleep(min(2.0, 0.25 * 2**attempt))
                continue
            return Operation.from_body(self._json(response, "create streaming"), response.headers.get("operation-id"))
        assert last is not None
        raise last

    def auto_conversion(self, repository: str) -> bool:
        """Whether ACR converts new pushes to this repository itself (`GET /acr/v1/{repo}/_streaming`)."""
        body = self._json(self._call("GET", f"/acr/v1/{repository}/_streaming", repository), "repository streaming setting")
        return bool(body.get("convertPushedImages")) if isinstance(body, dict) else False

    def operation(self, repository: str, operation_id: str) -> Operation:
        response = self._call("GET", f"/acr/v1/{repository}/_operations/{operation_id}", repository)
        return Operation.from_body(self._json(response, "operation"), operation_id)


_clients: dict[tuple[str, int], AcrClient] = {}
_clients_lock = threading.Lock()


def client_for(login_server: str, aad_token: Callable[[], str], token_cache: TokenCache | None = None, **kwargs: Any) -> AcrClient:
    """One AcrClient per (login server, token cache) per process: connection pools and tokens are reused across events."""
    cache = token_cache or PROCESS_TOKEN_CACHE
    key = (login_server.lower(), id(cache))
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = AcrClient(login_server, aad_token, token_cache=cache, **kwargs)
        return client


def reset_clients() -> None:
    with _clients_lock:
        _clients.clear()
