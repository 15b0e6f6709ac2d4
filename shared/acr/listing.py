"""ACR data-plane calls the sweep adds: catalog, tags newest first, manifest attributes, the auto-conversion switch; AcrClient's pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.core.rest import HttpRequest

from .auth import AuthError
from .client import MAX_DOC_BYTES, MAX_ERROR_BYTES, TRANSIENT_STATUSES, AcrClient, AcrError, Answer, _error_code, read_capped

CATALOG_SCOPE = "registry:catalog:*"
MAX_PAGES = 100_000  # a registry answering Link headers forever is a bug, not a reason to loop forever


def metadata_scope(repository: str) -> str:
    """Tag and manifest attribute reads need `metadata_read` (granted with pull by AcrPull/AcrPush, and by ABAC readers)."""
    return f"repository:{repository}:metadata_read"


@dataclass(frozen=True)
class TagInfo:
    """One tag as `/acr/v1/{repo}/_tags` shows it."""

    name: str
    digest: str
    last_update: str | None = None  # RFC 3339 (lastUpdateTime)


@dataclass(frozen=True)
class Page:
    """One page of a listing and the cursor (`last`) that continues it; `last` is None on the final page."""

    items: list[Any]
    last: str | None


@dataclass(frozen=True)
class ManifestAttributes:
    """`/acr/v1/{repo}/_manifests/{digest}` (azure-containerregistry's ManifestAttributesBase): what one request tells."""

    digest: str
    media_type: str | None = None
    architecture: str | None = None
    os: str | None = None
    size: int | None = None  # imageSize
    references: list[dict[str, Any]] = field(default_factory=list)  # an index: per-platform {digest, architecture, os}
    tags: list[str] = field(default_factory=list)
    artifact_type: str | None = None
    config_media_type: str | None = None

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> ManifestAttributes:
        refs = body.get("references") or body.get("relatedArtifacts") or []
        size = body.get("imageSize")
        return cls(
            digest=str(body.get("digest") or ""),
            media_type=body.get("mediaType"),
            architecture=body.get("architecture"),
            os=body.get("os"),
            size=int(size) if isinstance(size, int | float) and not isinstance(size, bool) else None,
            references=[r for r in refs if isinstance(r, dict)],
            tags=[t for t in body.get("tags") or [] if isinstance(t, str)],
            artifact_type=body.get("artifactType"),
            config_media_type=body.get("configMediaType"),
        )


def _send(acr: AcrClient, path: str, scope: str) -> Answer:
    """GET on the client's pipeline (retries with Retry-After, token cache) with an explicit token scope; the answer is read
    within MAX_DOC_BYTES, as every registry answer is."""
    request = HttpRequest("GET", f"{acr.base_url}{path}")
    try:
        streamed = acr._client.send_request(request, acr_scope=scope, stream=True)
        response = read_capped(streamed, MAX_DOC_BYTES if streamed.status_code == 200 else MAX_ERROR_BYTES, f"GET {path}")
    except AuthError as exc:
        transient = exc.status is None or exc.status in TRANSIENT_STATUSES
        raise AcrError(str(exc), status=exc.status, code="AUTHENTICATION", transient=transient) from None
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise AcrError(f"GET {path}: {type(exc).__name__} talking to {acr.login_server}", transient=True) from None
    if response.status_code != 200:
        code = _error_code(response)
        raise AcrError(f"GET {path} answered {response.status_code}{' ' + code if code else ''}", status=response.status_code,
                       code=code, transient=response.status_code in TRANSIENT_STATUSES)
    return response


def _body(response: Answer, what: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise AcrError(f"{what}: the registry's answer is not JSON", status=response.status_code) from None
    if not isinstance(body, dict):
        raise AcrError(f"{what}: the registry's answer is not a JSON object", status=response.status_code)
    return body


def _next_last(response: Answer) -> str | None:
    """The `last` cursor of the Link header's next page (docker distribution paging), or None when this was the last page."""
    link = response.headers.get("Link") or ""
    if "<" not in link or ">" not in link:
        return None
    target = link[link.index("<") + 1: link.index(">")]
    values = parse_qs(urlsplit(target).query).get("last")
    return values[0] if values else None


def catalog_page(acr: AcrClient, last: str | None = None, n: int = 100) -> Page:
    """One page of repository names (`/v2/_catalog`), in the registry's order, after `last`."""
    path = f"/v2/_catalog?n={n}" + (f"&last={quote(last, safe='')}" if last else "")
    response = _send(acr, path, CATALOG_SCOPE)
    names = _body(response, "catalog").get("repositories") or []
    return Page([x for x in names if isinstance(x, str)], _next_last(response))


def catalog(acr: AcrClient, n: int = 100, last: str | None = None) -> Iterator[Page]:
    """Every catalog page from `last` on."""
    for _ in range(MAX_PAGES):
        page = catalog_page(acr, last, n)
        yield page
        if page.last is None or not page.items:
            return
        last = page.last


def tags_page(acr: AcrClient, repository: str, last: str | None = None, n: int = 100) -> Page:
    """One page of `repository`'s tags, newest first, each with its digest (`/acr/v1/{repo}/_tags?orderby=timedesc`)."""
    path = f"/acr/v1/{repository}/_tags?orderby=timedesc&n={n}" + (f"&last={quote(last, safe='')}" if last else "")
    response = _send(acr, path, metadata_scope(repository))
    raw = _body(response, "tags").get("tags") or []
    tags = [TagInfo(str(t["name"]), str(t["digest"]), t.get("lastUpdateTime") or t.get("createdTime"))
            for t in raw if isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("digest"), str)]
    return Page(tags, _next_last(response))


def tags(acr: AcrClient, repository: str, n: int = 100, last: str | None = None) -> Iterator[Page]:
    """Every tag page of `repository` from `last` on, newest first."""
    for _ in range(MAX_PAGES):
        page = tags_page(acr, repository, last, n)
        yield page
        if page.last is None or not page.items:
            return
        last = page.last


def manifest_attributes(acr: AcrClient, repository: str, digest: str) -> ManifestAttributes:
    """`GET /acr/v1/{repo}/_manifests/{digest}`: platform, size, an index's references and the tags, in one request."""
    response = _send(acr, f"/acr/v1/{repository}/_manifests/{digest}", metadata_scope(repository))
    body = _body(response, "manifest attributes")
    inner = body.get("manifest")
    return ManifestAttributes.from_body(inner if isinstance(inner, dict) else body)


def manifests_page(acr: AcrClient, repository: str, last: str | None = None, n: int = 100) -> Page:
    """One page of the paged `/acr/v1/{repo}/_manifests` listing, newest first."""
    path = f"/acr/v1/{repository}/_manifests?orderby=timedesc&n={n}" + (f"&last={quote(last, safe='')}" if last else "")
    response = _send(acr, path, metadata_scope(repository))
    raw = _body(response, "manifests").get("manifests") or []
    return Page([ManifestAttributes.from_body(m) for m in raw if isinstance(m, dict)], _next_last(response))


def set_auto_conversion(acr: AcrClient, repository: str, enabled: bool) -> bool:
    """`POST /acr/v1/{repo}/_streaming` with convertPushedImages: ACR then converts new pushes to the repository itself.
    Returns the value the registry reports back."""
    body = {"convertPushedImages": enabled, "conversionFormat": "overlaybd", "conversionVersion": "v1"}
    response = acr._call("POST", f"/acr/v1/{repository}/_streaming", repository, ok=(200, 201, 202), json_body=body,
                         retry_total=0)
    answer = _body(response, "repository streaming setting")
    return bool(answer.get("convertPushedImages", enabled))
