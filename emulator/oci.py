"""OCI image content: media types, building synthetic images, and storing manifests the way a registry does."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .model import STREAMING_ARTIFACT_TYPE, Blob, Manifest, Registry, Repository, TagRecord, utcnow_iso

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_LAYER = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
OVERLAYBD_LAYER = "application/vnd.oci.image.layer.v1.tar"  # overlaybd blobs are stored as uncompressed tar layers

MANIFEST_TYPES = {DOCKER_MANIFEST, OCI_MANIFEST}
INDEX_TYPES = {DOCKER_LIST, OCI_INDEX}
ALL_MANIFEST_TYPES = MANIFEST_TYPES | INDEX_TYPES


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=False).encode()


def add_blob(registry: Registry, content: bytes | None, size: int | None = None, seed: str = "") -> Blob:
    """Store a blob; with content None it is synthetic: its digest comes from `seed` and its size is declared."""
    if content is not None:
        digest = sha256(content)
        blob = Blob(digest=digest, size=len(content), content=content)
    else:
        digest = sha256(f"synthetic-layer:{seed}:{size}".encode())
        blob = Blob(digest=digest, size=int(size or 0), content=None)
    registry.blobs.setdefault(digest, blob)
    return registry.blobs[digest]


@dataclass
class PushResult:
    digest: str
    media_type: str
    size: int
    new_manifest: bool


def store_manifest(
    world_emit: Any,
    registry: Registry,
    repository: str,
    content: bytes,
    media_type: str,
    tag: str | None = None,
    event_extra: dict[str, Any] | None = None,
) -> PushResult:
    """Store manifest bytes under their digest (and a tag), and emit ImagePushed as ACR does for every manifest PUT.

    `world_emit` is `World.emit`. Validation of references (blobs, child manifests) is the caller's job.
    `event_extra` adds optional event keys (e.g. `useragent`, `request_id` of the HTTP push).
    """
    digest = sha256(content)
    repo = registry.repositories.get(repository)
    if repo is None:
        repo = registry.repositories[repository] = Repository(name=repository)
    parsed = json.loads(content)
    is_new = digest not in repo.manifests
    if is_new:
        subject = parsed.get("subject") or {}
        artifact_type = parsed.get("artifactType") or (parsed.get("config") or {}).get("mediaType")
        repo.manifests[digest] = Manifest(
            digest=digest,
            media_type=media_type,
            content=content,
            artifact_type=artifact_type,
            subject=subject.get("digest"),
            size=len(content),
        )
    if tag is not None:
        existing = repo.tags.get(tag)
        if existing is None:
            repo.tags[tag] = TagRecord(name=tag, digest=digest)
        else:
            existing.digest = digest
            existing.updated = utcnow_iso()
    data: dict[str, Any] = {
        "repository": repository,
        "digest": digest,
        "mediaType": media_type,
        "size": len(content),
        "length": len(content),
    }
    if tag is not None:
        data["tag"] = tag
    if event_extra:
        data.update(event_extra)
    world_emit("ImagePushed", registry, data)
    return PushResult(digest=digest, media_type=media_type, size=len(content), new_manifest=is_new)


@dataclass
class PlatformSpec:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None
    os_version: str | None = None  # Windows images carry one

    @classmethod
    def parse(cls, text: str) -> PlatformSpec:
        parts = text.split("/")
        if len(parts) < 2:
            raise ValueError(f"platform {text!r} must look like os/arch[/variant]")
        return cls(os=parts[0], architecture=parts[1], variant=parts[2] if len(parts) > 2 else None)

    def as_dict(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        if self.os_version:
            out["os.version"] = self.os_version
        return out


def build_single_manifest(
    registry: Registry,
    repository: str,
    platform: PlatformSpec,
    layer_sizes: list[int],
    oci: bool = False,
    config_media_type: str | None = None,
    layer_media_type: str | None = None,
    seed: str = "",
) -> tuple[bytes, str]:
    """Create a config blob and synthetic layers; return (manifest bytes, manifest media type)."""
    config_doc = {
        "architecture": platform.architecture,
        "os": platform.os,
        **({"variant": platform.variant} if platform.variant else {}),
        **({"os.version": platform.os_version} if platform.os_version else {}),
        "config": {"Cmd": ["/app"], "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": []},
        "created": "2026-11-01T00:00:00Z",
        "history": [{"created_by": f"emulator synthetic image {repository} {seed}"}],
    }
    layers = []
    for i, size in enumerate(layer_sizes):
        blob = add_blob(registry, None, size=size, seed=f"{registry.name}/{repository}/{seed}/{platform.os}/{platform.architecture}/{i}")
        config_doc["rootfs"]["diff_ids"].append(blob.digest)
        layers.append({"mediaType": layer_media_type or (OCI_LAYER if oci else DOCKER_LAYER), "size": blob.size, "digest": blob.digest})
    config_bytes = canonical(config_doc)
    config_blob = add_blob(registry, config_bytes)
    mtype = OCI_MANIFEST if oci else DOCKER_MANIFEST
    manifest = {
        "schemaVersion": 2,
        "mediaType": mtype,
        "config": {
            "mediaType": config_media_type or (OCI_CONFIG if oci else DOCKER_CONFIG),
            "size": config_blob.size,
            "digest": config_blob.digest,
        },
        "layers": layers,
    }
    return canonical(manifest), mtype


def build_index(children: list[tuple[str, int, str, PlatformSpec]], oci: bool = False) -> tuple[bytes, str]:
    """An image index / manifest list over (digest, size, media type, platform) children."""
    mtype = OCI_INDEX if oci else DOCKER_LIST
    doc = {
        "schemaVersion": 2,
        "mediaType": mtype,
        "manifests": [
            {"mediaType": mt, "size": size, "digest": digest, "platform": plat.as_dict()}
            for digest, size, mt, plat in children
        ],
    }
    return canonical(doc), mtype


def build_streaming_referrer(registry: Registry, repository: str, subject: Manifest, converted: Manifest | None = None,
                             platform: tuple[str, str] = ("linux", "amd64")) -> tuple[bytes, str]:
    """The manifest ACR stores when a conversion succeeds: an overlaybd image of `converted` (default: the subject itself)
    whose subject is the pushed manifest (for an index: the index, with the converted platform in its annotations)."""
    source = json.loads((converted or subject).content)
    layers = []
    for i, layer in enumerate(source.get("layers", [])):
        blob = add_blob(registry, None, size=int(layer.get("size", 0)), seed=f"overlaybd/{subject.digest}/{i}")
        layers.append({
            "mediaType": OVERLAYBD_LAYER,
            "size": blob.size,
            "digest": blob.digest,
            "annotations": {"containerd.io/snapshot/overlaybd/blob-digest": blob.digest},
        })
    config = source.get("config") or {}
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": STREAMING_ARTIFACT_TYPE,
        "config": {"mediaType": OCI_CONFIG, "size": config.get("size", 0), "digest": config.get("digest", "")},
        "layers": layers,
        "subject": {"mediaType": subject.media_type, "size": subject.size, "digest": subject.digest},
        "annotations": {"org.opencontainers.image.created": utcnow_iso(), "streaming.format": "overlaybd", "streaming.version": "v1",
                        "streaming.platform.os": platform[0], "streaming.platform.arch": platform[1]},
    }
    return canonical(doc), OCI_MANIFEST


def image_size(registry: Registry, repo: Repository, manifest: Manifest) -> int:
    """Sum of config and layer sizes of a single manifest (for an index: of its largest child)."""
    doc = json.loads(manifest.content)
    if manifest.media_type in INDEX_TYPES:
        sizes = [image_size(registry, repo, repo.manifests[m["digest"]]) for m in doc.get("manifests", []) if m["digest"] in repo.manifests]
        return max(sizes, default=0)
    return int((doc.get("config") or {}).get("size", 0)) + sum(int(layer.get("size", 0)) for layer in doc.get("layers", []))
