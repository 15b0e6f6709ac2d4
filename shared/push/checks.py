"""Eligibility: can this registry stream (ARM: Premium, no customer-managed key) and can this image (platform, type, size)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

from ..acr import ManifestDoc
from ..azure_clients import describe_error, is_credential_failure, wire_text
from ..mediatypes import INDEX_TYPES, SINGLE_TYPES, STREAMING_ARTIFACT_TYPE
from ..settings import AzureSettings
from .events import DIGEST_RE, RegistryRef
from .outcomes import R_MALFORMED, R_MEDIA_TYPE, R_NOT_RUNNABLE, R_PLATFORM, R_STREAMING_ARTIFACT, R_TOO_LARGE, TransientError

IMAGE_CONFIG_TYPES = frozenset({"application/vnd.docker.container.image.v1+json", "application/vnd.oci.image.config.v1+json"})
IMAGE_LAYER_PREFIXES = ("application/vnd.docker.image.rootfs.", "application/vnd.oci.image.layer.")
AUTHENTICATION = "AUTHENTICATION"  # the credential got no token: a failure of ours, never cached as the registry's answer
NEGATIVE_TTL_SECONDS = 60.0  # a 403/404 from ARM is re-asked sooner than a positive answer (role assignments propagate)


@dataclass(frozen=True)
class RegistryInfo:
    resource_id: str
    name: str
    sku: str | None = None
    cmk: bool = False
    login_server: str | None = None
    error_code: str | None = None  # ARM refused (ResourceNotFound, AuthorizationFailed...): a failure, not a skip
    error_detail: str | None = None

    @property
    def cannot_stream(self) -> str | None:
        """None when the registry can stream; else the sentence 'this registry cannot stream: …'."""
        problems = []
        if self.sku and self.sku.lower() != "premium":
            problems.append(f"SKU is {self.sku} (artifact streaming needs Premium)")
        if self.cmk:
            problems.append("it is encrypted with a customer-managed key (not supported by artifact streaming)")
        return f"this registry cannot stream: {'; '.join(problems)}" if problems else None


class RegistryChecker:
    """Registry facts from ARM (azure-mgmt-containerregistry), cached per registry for `ttl_seconds`. Thread-safe."""

    def __init__(self, azure: AzureSettings, ttl_seconds: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.azure = azure
        self.ttl = ttl_seconds
        self.clock = clock
        self._cache: dict[str, tuple[float, RegistryInfo]] = {}
        self._clients: dict[str, Any] = {}
        self._readers: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def _client(self, subscription_id: str) -> Any:
        with self._lock:
            client = self._clients.get(subscription_id)
            if client is None:
                from ..azure_clients import container_registry_client

                client = container_registry_client(self.azure, subscription_id)
                self._clients[subscription_id] = client
            return client

    def _reading(self, key: str) -> threading.Lock:
        with self._lock:
            return self._readers.setdefault(key, threading.Lock())

    def info(self, ref: RegistryRef) -> RegistryInfo:
        key = ref.resource_id.lower()
        now = self.clock()
        with self._lock:
            hit = self._cache.get(key)
        if hit and hit[0] > now:
            return hit[1]
        with self._reading(key):  # concurrent cold callers for one registry wait for one ARM read
            with self._lock:
                hit = self._cache.get(key)
            if hit and hit[0] > self.clock():
                return hit[1]
            info = self._read(ref)
            if info.error_code == AUTHENTICATION:
                return info  # our credential failed: says nothing about the registry, ask ARM again next time
            ttl = NEGATIVE_TTL_SECONDS if info.error_code else self.ttl
            with self._lock:
                self._cache[key] = (now + min(ttl, self.ttl), info)
            return info

    def _read(self, ref: RegistryRef) -> RegistryInfo:
        try:
            reg = self._client(ref.subscription_id).registries.get(ref.resource_group, ref.name)
        except HttpResponseError as exc:
            if is_credential_failure(exc):
                return RegistryInfo(ref.resource_id, ref.name, error_code=AUTHENTICATION,
                                    error_detail=f"cannot read registry {ref.name} from ARM: {describe_error(exc)}")
            status = exc.status_code or 0
            code = (exc.error.code if exc.error else None) or str(status)
            if status in (408, 429) or status >= 500:
                raise TransientError(f"ARM answered {describe_error(exc)} reading registry {ref.name}", code=code) from None
            hint = {
                403: "grant the function's identity Reader (or AcrPush) on the registry",
                404: "the registry in the event does not exist (deleted?) or the event's topic is wrong",
            }.get(status, "see the ARM error code")
            return RegistryInfo(ref.resource_id, ref.name, error_code=code, error_detail=f"ARM answered {describe_error(exc)}: {hint}")
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise TransientError(f"cannot reach ARM reading registry {ref.name}: {type(exc).__name__}", code="ARM_UNREACHABLE") from None
        encryption = getattr(reg, "encryption", None)
        return RegistryInfo(
            resource_id=ref.resource_id,
            name=ref.name,
            sku=wire_text(reg.sku.name if reg.sku is not None else None),
            cmk=(wire_text(getattr(encryption, "status", None)) or "").lower() == "enabled",
            login_server=(getattr(reg, "login_server", None) or "").lower() or None,
        )


@dataclass(frozen=True)
class ImageVerdict:
    """The manifest-level decision: ok (and what else to read), or a skip reason with its documented error code."""

    ok: bool
    reason: str | None = None
    code: str | None = None  # the conversion error ACR would report (UNSUPPORTED_PLATFORM, ...)
    detail: str | None = None
    is_index: bool = False
    config_digest: str | None = None  # single manifests: read this blob for os/architecture
    config_size: int | None = None  # its descriptor's size: over the cap, the blob is refused without being fetched
    child_digest: str | None = None  # an index: its linux/amd64 entry (the image ACR converts)

    @classmethod
    def skip(cls, reason: str, code: str, detail: str) -> ImageVerdict:
        return cls(ok=False, reason=reason, code=code, detail=detail)


def _platform(entry: dict[str, Any]) -> str:
    plat: dict[str, Any] = entry["platform"] if isinstance(entry.get("platform"), dict) else {}
    return f"{plat.get('os', '?')}/{plat.get('architecture', '?')}"


def check_manifest(manifest: ManifestDoc, max_bytes: int) -> ImageVerdict:
    """Decide from the manifest alone (no further reads for an index; a single manifest still needs its config)."""
    doc = manifest.doc
    if doc.get("artifactType") == STREAMING_ARTIFACT_TYPE:
        return ImageVerdict.skip(R_STREAMING_ARTIFACT, "UNSUPPORTED_ARTIFACT_TYPE", "this manifest is a streaming artifact itself")
    media_type = manifest.media_type
    if media_type in INDEX_TYPES:
        listed = doc.get("manifests")
        if not isinstance(listed, list):
            return ImageVerdict.skip(R_MALFORMED, "MALFORMED_INDEX", f"the index's manifests is a {type(listed).__name__}, not a "
                                     "list: push a valid image index (OCI image-index spec)")
        entries = [e for e in listed if isinstance(e, dict)]
        amd64 = [e for e in entries if _platform(e) == "linux/amd64"]
        if not amd64:
            seen = ", ".join(sorted({_platform(e) for e in entries})) or "none"
            return ImageVerdict.skip(R_PLATFORM, "NO_SUPPORTED_PLATFORM_FOUND",
                                     f"the index has no linux/amd64 image (platforms: {seen}); only linux/amd64 can stream")
        child = amd64[0].get("digest")
        if not isinstance(child, str) or not DIGEST_RE.match(child):
            return ImageVerdict.skip(R_MALFORMED, "MALFORMED_INDEX", f"the index's linux/amd64 entry has no valid digest "
                                     f"({child!r}): push a valid image index (OCI image-index spec)")
        return ImageVerdict(ok=True, is_index=True, child_digest=child)
    if media_type not in SINGLE_TYPES:
        return ImageVerdict.skip(R_MEDIA_TYPE, "UNSUPPORTED_MEDIATYPE", f"media type {media_type!r} cannot be converted")
    config: dict[str, Any] = doc["config"] if isinstance(doc.get("config"), dict) else {}
    config_type = config.get("mediaType")
    if config_type not in IMAGE_CONFIG_TYPES or doc.get("artifactType"):
        what = doc.get("artifactType") or config_type
        return ImageVerdict.skip(R_NOT_RUNNABLE, "IMAGE_NOT_RUNNABLE", f"{what!r} is an artifact, not a runnable container image")
    layers = [layer for layer in doc.get("layers") or [] if isinstance(layer, dict)]
    if not layers or any(not str(layer.get("mediaType", "")).startswith(IMAGE_LAYER_PREFIXES) for layer in layers):
        return ImageVerdict.skip(R_NOT_RUNNABLE, "IMAGE_NOT_RUNNABLE", "the manifest has no container image layers")
    total = int(config.get("size") or 0) + sum(int(layer.get("size") or 0) for layer in layers)
    if total > max_bytes:
        return ImageVerdict.skip(R_TOO_LARGE, "IMAGE_TOO_LARGE",
                                 f"the image is {total / 1024**3:.1f} GB, over the {max_bytes / 1024**3:g} GB limit (AUTOPILOT_PUSH_MAX_IMAGE_GB)")
    digest = config.get("digest")
    if not isinstance(digest, str):
        return ImageVerdict.skip(R_NOT_RUNNABLE, "IMAGE_NOT_RUNNABLE", "the manifest's config has no digest")
    size = config.get("size")
    return ImageVerdict(ok=True, config_digest=digest, config_size=size if isinstance(size, int) and not isinstance(size, bool) else None)


def check_config(config: dict[str, Any]) -> ImageVerdict:
    return check_platform(config.get("os"), config.get("architecture"))


def check_platform(os_name: Any, architecture: Any) -> ImageVerdict:
    """The image's platform, from ACR's manifest attributes or, when they do not carry it, the image config."""
    plat = f"{os_name or '?'}/{architecture or '?'}"
    if plat != "linux/amd64":
        return ImageVerdict.skip(R_PLATFORM, "UNSUPPORTED_PLATFORM", f"the image is {plat}; only linux/amd64 can stream")
    return ImageVerdict(ok=True)

