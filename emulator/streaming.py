"""The artifact-streaming conversion engine: operations that run on the emulator loop and attach overlaybd referrers.

Behaviour (and the assumptions where Azure is undocumented):
- `start()` always creates a NEW operation, even while another one for the same digest is in flight (real ACR's answer to
  a second POST is undocumented; we assume the worst: two independent conversions, and on success two referrers).
- An operation is NotStarted for the first tenth of its run, then Running with progress rising, then a terminal state.
  Its run lasts `settings.conversion_seconds`, up to twice that for images near `settings.max_image_gb`.
- Failures use the documented codes (troubleshoot-artifact-streaming.md); the code is written into `details` as
  "Conversion failed for resource {repo}@{digest}. {CODE}: {message}" (the recorded operation body has no error field).
- On success the streaming referrer (artifactType application/vnd.azure.artifact.streaming.v1) is stored as an UNTAGGED
  manifest push, and we assume ACR emits an ImagePushed event for it like for any untagged push (the worst case for a
  subscriber: it must ignore its own artifacts). Its subject is the manifest the conversion was asked for: for an index
  the INDEX (only its linux/amd64 entry converts; the artifact says which platform in `streaming.platform.os` /
  `streaming.platform.arch`). Inferred from a capture of real ACR (`regctl artifact list` on a multi-arch tag lists the
  streaming referrers on the index, annotated per platform) and from the az CLI's duplicate check, which asks for the
  referrers of the tag-resolved digest; not from Microsoft docs.
- Repositories with `convert_pushed_images` convert every new TAGGED push by themselves (existing images never do), after
  `settings.auto_conversion_delay_seconds` (0 by default; set it to expose subscribers racing ACR's own conversion); a
  digest that already has a streaming referrer or an in-flight automatic conversion is not converted twice automatically.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from . import oci
from .model import STREAMING_ARTIFACT_TYPE, Manifest, Registry, Repository, StreamingOperation, World

TERMINAL = ("Succeeded", "Failed", "Canceled")
IMAGE_CONFIG_TYPES = {oci.DOCKER_CONFIG, oci.OCI_CONFIG}
IMAGE_LAYER_PREFIXES = ("application/vnd.docker.image.rootfs.", "application/vnd.oci.image.layer.")

# The documented failure codes and messages (troubleshoot-artifact-streaming.md).
FAILURES = {
    "UNKNOWN_ERROR": "Conversion operation failed due to an unknown error.",
    "RESOURCE_NOT_FOUND": "Conversion operation failed because target resource isn't found.",
    "UNSUPPORTED_PLATFORM": "Conversion isn't currently supported for image platform.",
    "NO_SUPPORTED_PLATFORM_FOUND": "Conversion isn't currently supported for any of the image platforms in the index.",
    "UNSUPPORTED_MEDIATYPE": "Conversion isn't supported for the image MediaType.",
    "UNSUPPORTED_ARTIFACT_TYPE": "Conversion isn't supported for the image ArtifactType.",
    "IMAGE_NOT_RUNNABLE": "Conversion isn't supported for nonrunnable images.",
}


class StreamingRefused(Exception):
    """The registry cannot stream at all (SKU or encryption); the routes answer it with an ACR error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def refusal(registry: Registry) -> StreamingRefused | None:
    """Why this registry cannot use artifact streaming, or None. Assumption: 400 UNSUPPORTED (undocumented on the wire)."""
    if registry.sku != "Premium":
        return StreamingRefused(
            400, "UNSUPPORTED",
            f"Artifact streaming is only available for Premium registries; registry {registry.name} is {registry.sku}. "
            "Upgrade the registry SKU to Premium to use artifact streaming.",
        )
    if registry.encryption == "enabled":
        return StreamingRefused(
            400, "UNSUPPORTED",
            f"Artifact streaming is not supported for registries encrypted with a customer-managed key (registry {registry.name}).",
        )
    return None


def operation_body(op: StreamingOperation, cancel: bool = False) -> dict[str, Any]:
    """`GET /acr/v1/{repo}/_operations/{id}` as recorded (the cancel answer prefixes the name with "Cancel: ")."""
    return {
        "name": ("Cancel: " if cancel else "") + "ArtifactStreamingConversion",
        "resource": f"{op.repository}@{op.digest}",
        "status": op.status,
        "startTime": op.start_time,
        "progress": f"{op.progress}%",
        "details": op.details,
    }


@dataclass
class RepositorySettingOperation:
    """The operation a `POST /acr/v1/{repo}/_streaming` answers with (already Succeeded when returned)."""

    id: str
    repository: str
    convert_pushed_images: bool
    start_time: str

    def body(self) -> dict[str, Any]:
        return {
            "name": "ArtifactStreamingRepositorySetting",
            "resource": self.repository,
            "status": "Succeeded",
            "startTime": self.start_time,
            "progress": "100%",
            "details": f"convertPushedImages set to {str(self.convert_pushed_images).lower()} for repository {self.repository}",
        }


class StreamingEngine:
    """Runs conversions for every registry of one emulator. Create with `StreamingEngine.for_context(ctx)`."""

    def __init__(self, world: World, loop: asyncio.AbstractEventLoop | None) -> None:
        self.world = world
        self.loop = loop
        self._tasks: dict[str, asyncio.Task] = {}
        self._attempts: dict[str, int] = {}
        self.repository_operations: dict[str, RepositorySettingOperation] = {}
        self._auto_inflight: set[tuple[str, str, str]] = set()
        self.started = 0
        world.add_listener(self._on_event)

    @classmethod
    def for_context(cls, ctx: Any) -> StreamingEngine:
        engine = ctx.extras.get("streaming")
        if engine is None:
            engine = ctx.extras["streaming"] = cls(ctx.world, ctx.loop)
        elif engine.loop is None:
            engine.loop = ctx.loop
        return engine

    # ------------------------------------------------------------------ public API (call on the emulator loop)
    def start(self, registry: Registry, repo: Repository, digest: str, auto: bool = False) -> StreamingOperation:
        """Create a conversion operation for `digest` (NotStarted) and run it in the background."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        op = StreamingOperation(
            id=str(uuid.uuid4()), repository=repo.name, digest=digest, status="NotStarted", progress=0, start_time=now,
            details=f"Conversion started for resource {repo.name}@{digest}",
        )
        repo.operations[op.id] = op
        self.started += 1
        key = (registry.name, repo.name, digest)
        if auto:
            self._auto_inflight.add(key)
        self._schedule(op.id, self._run(registry, repo, op, auto))
        return op

    def cancel(self, op: StreamingOperation) -> StreamingOperation:
        """Cancel an operation still in flight; a finished one is left as it is."""
        if op.status in TERMINAL:
            return op
        op.status = "Canceled"
        task = self._tasks.pop(op.id, None)
        if task is not None:
            task.cancel()
        return op

    def latest(self, repo: Repository, digest: str) -> StreamingOperation | None:
        ops = repo.operations_for(digest)
        return ops[-1] if ops else None

    def in_flight(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until no conversion runs (tests and the demo)."""
        deadline = time.monotonic() + timeout
        while self._tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    # ------------------------------------------------------------------ internals
    def _schedule(self, op_id: str, coro: Any) -> None:
        loop = self.loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop:
            task = asyncio.get_running_loop().create_task(coro) if loop is None else loop.create_task(coro)
            self._tasks[op_id] = task
            task.add_done_callback(lambda _t: self._tasks.pop(op_id, None) if self._tasks.get(op_id) is _t else None)
        else:
            loop.call_soon_threadsafe(self._schedule, op_id, coro)

    def _duration(self, registry: Registry, repo: Repository, manifest: Manifest | None) -> float:
        base = max(0.0, float(self.world.settings.conversion_seconds))
        if manifest is None:
            return base
        try:
            size_gb = oci.image_size(registry, repo, manifest) / 1024**3
        except (KeyError, ValueError):
            size_gb = 0.0
        limit = max(self.world.settings.max_image_gb, 0.001)
        return base * (1.0 + min(size_gb / limit, 1.0))

    def _unknown_error(self, registry: Registry, repo: Repository, digest: str) -> bool:
        rate = float(self.world.settings.unknown_error_rate)
        if rate <= 0:
            return False
        key = f"{registry.name}/{repo.name}@{digest}"
        self._attempts[key] = self._attempts.get(key, 0) + 1
        draw = hashlib.sha256(f"{self.world.seed}|{key}|{self._attempts[key]}".encode()).digest()
        return int.from_bytes(draw[:8], "big") / 2**64 < rate

    def _target(self, registry: Registry, repo: Repository, manifest: Manifest) -> tuple[Manifest | None, str | None]:
        """The manifest that converts (an index's linux/amd64 child), or (None, failure code)."""
        if manifest.media_type not in oci.ALL_MANIFEST_TYPES:
            return None, "UNSUPPORTED_MEDIATYPE"
        if manifest.artifact_type == STREAMING_ARTIFACT_TYPE:
            return None, "UNSUPPORTED_ARTIFACT_TYPE"
        doc = json.loads(manifest.content)
        if manifest.media_type in oci.INDEX_TYPES:
            for entry in doc.get("manifests") or []:
                plat = entry.get("platform") or {}
                if plat.get("os") == "linux" and plat.get("architecture") == "amd64" and entry.get("digest") in repo.manifests:
                    child = repo.manifests[entry["digest"]]
                    return self._check_image(registry, child)
            return None, "NO_SUPPORTED_PLATFORM_FOUND"
        return self._check_image(registry, manifest)

    def _check_image(self, registry: Registry, manifest: Manifest) -> tuple[Manifest | None, str | None]:
        if manifest.media_type not in oci.MANIFEST_TYPES:
            return None, "UNSUPPORTED_MEDIATYPE"
        if manifest.artifact_type == STREAMING_ARTIFACT_TYPE:
            return None, "UNSUPPORTED_ARTIFACT_TYPE"
        doc = json.loads(manifest.content)
        config_type = (doc.get("config") or {}).get("mediaType")
        if doc.get("artifactType") or config_type not in IMAGE_CONFIG_TYPES:
            return None, "UNSUPPORTED_MEDIATYPE"
        layers = doc.get("layers") or []
        if not layers:
            return None, "IMAGE_NOT_RUNNABLE"
        if any(not str(layer.get("mediaType", "")).startswith(IMAGE_LAYER_PREFIXES) for layer in layers):
            return None, "UNSUPPORTED_MEDIATYPE"
        platform = self._platform(registry, doc)
        if platform != ("linux", "amd64"):
            return None, "UNSUPPORTED_PLATFORM"
        return manifest, None

    @staticmethod
    def _platform(registry: Registry, doc: dict[str, Any]) -> tuple[str, str]:
        blob = registry.blobs.get((doc.get("config") or {}).get("digest", ""))
        if blob is None or blob.content is None:
            return ("", "")
        try:
            config = json.loads(blob.content)
        except ValueError:
            return ("", "")
        return (str(config.get("os", "")), str(config.get("architecture", "")))

    def _fail(self, op: StreamingOperation, code: str) -> None:
        op.status = "Failed"
        op.error_code = code
        op.details = f"Conversion failed for resource {op.repository}@{op.digest}. {code}: {FAILURES[code]}"

    async def _run(self, registry: Registry, repo: Repository, op: StreamingOperation, auto: bool) -> None:
        key = (registry.name, repo.name, op.digest)
        try:
            manifest = repo.manifests.get(op.digest)
            duration = self._duration(registry, repo, manifest)
            await asyncio.sleep(duration * 0.1)
            if op.status in TERMINAL:
                return
            op.status = "Running"
            steps = 8
            for i in range(1, steps + 1):
                await asyncio.sleep(duration * 0.9 / steps)
                if op.status in TERMINAL:
                    return
                op.progress = min(99, int(100 * i / (steps + 1)))
            manifest = repo.manifests.get(op.digest)
            if manifest is None or registry.repositories.get(repo.name) is not repo:
                self._fail(op, "RESOURCE_NOT_FOUND")
                return
            target, code = self._target(registry, repo, manifest)
            if code is None and self._unknown_error(registry, repo, op.digest):
                code = "UNKNOWN_ERROR"
            if code is not None or target is None:
                self._fail(op, code or "UNKNOWN_ERROR")
                return
            content, mtype = oci.build_streaming_referrer(registry, repo.name, manifest, converted=target)
            pushed = oci.store_manifest(self.world.emit, registry, repo.name, content, mtype, tag=None)
            op.referrer_digest = pushed.digest
            op.progress = 100
            op.status = "Succeeded"
            op.details = f"Conversion succeeded for resource {op.repository}@{op.digest}"
        except asyncio.CancelledError:
            if op.status not in TERMINAL:
                op.status = "Canceled"
            raise
        finally:
            self._auto_inflight.discard(key)

    def _on_event(self, event_type: str, registry: Registry, data: dict[str, Any]) -> None:
        """Auto-conversion: a new tagged push to a repository with convertPushedImages starts a conversion."""
        if event_type != "ImagePushed" or not data.get("tag"):
            return
        repo = registry.repositories.get(data.get("repository", ""))
        digest = data.get("digest", "")
        if repo is None or not repo.convert_pushed_images or refusal(registry) is not None or digest not in repo.manifests:
            return
        if (registry.name, repo.name, digest) in self._auto_inflight:
            return
        if any(op.status == "Succeeded" for op in repo.operations_for(digest)):
            return
        if self.loop is None:
            return
        key = (registry.name, repo.name, digest)
        self._auto_inflight.add(key)
        delay = max(0.0, float(self.world.settings.auto_conversion_delay_seconds))
        with contextlib.suppress(RuntimeError):
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is self.loop and delay == 0:
                self.start(registry, repo, digest, auto=True)
            elif running is self.loop:
                self.loop.call_later(delay, self._start_auto, registry, repo, digest)
            else:
                self.loop.call_soon_threadsafe(self.loop.call_later, delay, self._start_auto, registry, repo, digest)

    def _start_auto(self, registry: Registry, repo: Repository, digest: str) -> None:
        if digest in repo.manifests and registry.repositories.get(repo.name) is repo:
            self.start(registry, repo, digest, auto=True)
        else:
            self._auto_inflight.discard((registry.name, repo.name, digest))
