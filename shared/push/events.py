"""ImagePushed events: parse either delivery schema (Event Grid or CloudEvents 1.0) into one typed value, or a rejection."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..mediatypes import IMAGE_MEDIA_TYPES, STREAMING_ARTIFACT_TYPE
from .outcomes import R_EVENT_TYPE, R_MALFORMED, R_MEDIA_TYPE, R_STREAMING_ARTIFACT, R_UNTAGGED

IMAGE_PUSHED_TYPES = ("Microsoft.ContainerRegistry.ImagePushed", "ImagePushed")  # the short form: older dataVersion 1.0 payloads

# Grammar from the OCI distribution spec; anything else cannot be a real push and is rejected before any request.
REPOSITORY_RE = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$|^sha512:[a-f0-9]{128}$")
HOST_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(?::[0-9]{1,5})?$")
REGISTRY_ID_RE = re.compile(
    r"^/subscriptions/(?P<sub>[0-9A-Fa-f-]{36})/resourceGroups/(?P<rg>[-\w._()]{1,90})"
    r"/providers/Microsoft\.ContainerRegistry/registries/(?P<name>[A-Za-z0-9]{5,50})$",
    re.IGNORECASE,
)
MAX_REPOSITORY = 256


@dataclass(frozen=True)
class RegistryRef:
    """A registry as ARM names it."""

    subscription_id: str
    resource_group: str
    name: str

    @property
    def resource_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.ContainerRegistry/registries/{self.name}"
        )

    @classmethod
    def parse(cls, resource_id: str) -> RegistryRef | None:
        m = REGISTRY_ID_RE.match(resource_id.strip()) if isinstance(resource_id, str) else None
        if m is None:
            return None
        return cls(subscription_id=m["sub"].lower(), resource_group=m["rg"], name=m["name"].lower())


@dataclass(frozen=True)
class ImagePushed:
    """One ImagePushed event we may act on."""

    event_id: str
    schema: str  # EventGridSchema | CloudEvents
    registry: RegistryRef
    login_server: str | None  # data.request.host; verified against ARM before any token is sent to it
    repository: str
    tag: str
    digest: str
    media_type: str
    size: int | None
    pushed_at: datetime | None  # event time; RESOURCE_NOT_FOUND shortly after it is a replication delay, not a verdict


@dataclass(frozen=True)
class Rejection:
    """An event we acknowledge without acting: `reason` is a stable code, `detail` says what was seen."""

    reason: str  # event-type | malformed | untagged | media-type | streaming-artifact
    detail: str
    event_id: str | None = None
    event_type: str | None = None
    registry: str | None = None
    repository: str | None = None
    tag: str | None = None
    digest: str | None = None


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    # Event Grid writes 7 fractional digits; fromisoformat accepts at most 6.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def detect_schema(raw: Mapping[str, Any]) -> str:
    return "CloudEvents" if "specversion" in raw or ("type" in raw and "source" in raw) else "EventGridSchema"


def parse_event(raw: Any) -> ImagePushed | Rejection:
    """Turn a delivered event (a dict in either schema) into ImagePushed, or a Rejection saying why we do not act on it.

    Never raises for bad input: whatever arrives, the answer is a value.
    """
    if not isinstance(raw, Mapping):
        return Rejection(R_MALFORMED, f"the event is a {type(raw).__name__}, not a JSON object")
    schema = detect_schema(raw)
    if schema == "CloudEvents":
        event_id, event_type, topic, when = raw.get("id"), raw.get("type"), raw.get("source"), raw.get("time")
    else:
        event_id, event_type, topic, when = raw.get("id"), raw.get("eventType"), raw.get("topic"), raw.get("eventTime")
    event_id = event_id if isinstance(event_id, str) and len(event_id) <= 256 else None
    base = {"event_id": event_id, "event_type": event_type if isinstance(event_type, str) else None}
    if not isinstance(event_type, str) or not event_type:
        return Rejection(R_MALFORMED, f"the event has no {'type' if schema == 'CloudEvents' else 'eventType'}", **base)
    if event_type not in IMAGE_PUSHED_TYPES:
        return Rejection(R_EVENT_TYPE, f"{_short(event_type)} is not an ImagePushed event", **base)
    registry = RegistryRef.parse(topic) if isinstance(topic, str) else None
    if registry is None:
        field = "source" if schema == "CloudEvents" else "topic"
        return Rejection(R_MALFORMED, f"{field} {_short(topic)} is not a container registry resource ID", **base)
    base["registry"] = registry.name
    data = raw.get("data")
    if not isinstance(data, Mapping):
        return Rejection(R_MALFORMED, f"data is a {type(data).__name__}, not an object", **base)
    target = data.get("target")
    if not isinstance(target, Mapping):
        return Rejection(R_MALFORMED, "data.target is missing or not an object", **base)
    repository, tag, digest = target.get("repository"), target.get("tag"), target.get("digest")
    media_type, size = target.get("mediaType"), target.get("size", target.get("length"))
    if not isinstance(repository, str) or len(repository) > MAX_REPOSITORY or not REPOSITORY_RE.match(repository):
        return Rejection(R_MALFORMED, f"data.target.repository {_short(repository)} is not a repository name", **base)
    base["repository"] = repository
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        return Rejection(R_MALFORMED, f"data.target.digest {_short(digest)} is not a sha256/sha512 digest", **base)
    base["digest"] = digest
    if tag is None or tag == "":
        return Rejection(R_UNTAGGED, "pushed by digest (no tag): streaming follows tags, and this may be an artifact's own push", **base)
    if not isinstance(tag, str) or not TAG_RE.match(tag):
        return Rejection(R_MALFORMED, f"data.target.tag {_short(tag)} is not a valid tag", **base)
    base["tag"] = tag
    artifact_type = target.get("artifactType")
    if artifact_type == STREAMING_ARTIFACT_TYPE:
        return Rejection(R_STREAMING_ARTIFACT, "this push is a streaming artifact itself", **base)
    if not isinstance(media_type, str) or media_type not in IMAGE_MEDIA_TYPES:
        return Rejection(R_MEDIA_TYPE, f"media type {_short(media_type)} is not a container image manifest or index", **base)
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        return Rejection(R_MALFORMED, f"data.target.size {_short(size)} is not a byte count", **base)
    request = data.get("request")
    host = request.get("host") if isinstance(request, Mapping) else None
    if host is not None and (not isinstance(host, str) or not HOST_RE.match(host)):
        return Rejection(R_MALFORMED, f"data.request.host {_short(host)} is not a host name", **base)
    pushed_at = _parse_time(when) or _parse_time(data.get("timestamp"))
    return ImagePushed(
        event_id=event_id or "",
        schema=schema,
        registry=registry,
        login_server=host.lower() if host else None,
        repository=repository,
        tag=tag,
        digest=digest,
        media_type=media_type,
        size=size,
        pushed_at=pushed_at,
    )
