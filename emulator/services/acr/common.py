"""The registry's shared plumbing: constants, the route patterns and classification, JSON answers, errors and paging."""

from __future__ import annotations

import bisect
import json
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

AUTH_MESSAGE = "authentication required, visit https://aka.ms/acr/authorization for more information."


NULL_USER = "00000000-0000-0000-0000-000000000000"


ARM_AUDIENCES = ("https://management.azure.com", "https://management.core.windows.net")


AAD_AUDIENCES = (*ARM_AUDIENCES, "https://containerregistry.azure.net")


ALL_ACTIONS = ["read", "write", "delete", "metadata/read", "metadata/write", "deleted/read", "deleted/restore/action", "catalog/read"]


# refresh-token permission -> repository scope actions it allows
PERMISSION_ACTIONS = {
    "read": {"pull"},
    "write": {"push"},
    "delete": {"delete"},
    "metadata/read": {"metadata_read"},
    "metadata/write": {"metadata_write"},
}


# scope-map token action suffix -> repository scope actions
SCOPE_MAP_ACTIONS = {
    "content/read": {"pull"},
    "content/write": {"push"},
    "content/delete": {"delete"},
    "metadata/read": {"metadata_read"},
    "metadata/write": {"metadata_write"},
}


DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")


TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")


REPO_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")


MAX_MANIFEST_BYTES = 4 * 1024 * 1024


CHANGEABLE = {"deleteEnabled": True, "writeEnabled": True, "readEnabled": True, "listEnabled": True}


COMMON_HEADERS = {
    "Docker-Distribution-Api-Version": "registry/2.0",
    "Server": "AzureContainerRegistry",
    "X-Content-Type-Options": "nosniff",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "Access-Control-Expose-Headers": "Docker-Content-Digest, WWW-Authenticate, Link, X-Ms-Correlation-Request-Id",
}


# Matched against the RAW path, so repository names may come slash-separated (docker) or %2F-quoted (azure SDKs).
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("auth", re.compile(r"^/oauth2/(?P<op>exchange|token)$"), "acr.auth"),
    ("v2", re.compile(r"^/v2/?$"), "acr.v2"),
    ("catalog", re.compile(r"^/(?:v2|acr/v1)/_catalog$"), "acr.catalog"),
    ("manifest", re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)$"), "acr.manifests"),
    ("upload", re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/?(?P<upload_id>[^/]*)$"), "acr.blobs"),
    ("blob", re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>[^/]+)$"), "acr.blobs"),
    ("referrers", re.compile(r"^/v2/(?P<name>.+)/referrers/(?P<digest>[^/]+)$"), "acr.referrers"),
    ("tags_list", re.compile(r"^/v2/(?P<name>.+)/tags/list$"), "acr.tags"),
    ("acr_tag", re.compile(r"^/acr/v1/(?P<name>.+)/_tags/(?P<tag>[^/]+)$"), "acr.tags"),
    ("acr_tags", re.compile(r"^/acr/v1/(?P<name>.+)/_tags$"), "acr.tags"),
    ("acr_manifest", re.compile(r"^/acr/v1/(?P<name>.+)/_manifests/(?P<digest>[^/]+)$"), "acr.manifests"),
    ("acr_manifests", re.compile(r"^/acr/v1/(?P<name>.+)/_manifests$"), "acr.manifests"),
    ("streaming_digest", re.compile(r"^/acr/v1/(?P<name>.+)/_streaming/(?P<digest>[^/]+)$"), "acr.streaming"),
    ("streaming_repo", re.compile(r"^/acr/v1/(?P<name>.+)/_streaming$"), "acr.streaming"),
    ("operation", re.compile(r"^/acr/v1/(?P<name>.+)/_operations/(?P<op_id>[^/:]+?)(?P<cancel>:cancel)?$"), "acr.operations"),
    ("repository", re.compile(r"^/acr/v1/(?P<name>.+)$"), "acr.repositories"),
]


def match_route(raw_path: str) -> tuple[str, str, dict[str, str]] | None:
    path = raw_path.split("?", 1)[0]
    for name, pattern, endpoint_class in ROUTES:
        m = pattern.match(path)
        if m:
            return name, endpoint_class, {k: urllib.parse.unquote(v) for k, v in m.groupdict().items() if v is not None}
    return None


def classify(path: str) -> str:
    """Endpoint class of a registry request path (`acr.auth`, `acr.manifests`, `acr.streaming`, ...)."""
    if path.startswith("/_emulator"):
        return "acr.admin"
    found = match_route(urllib.parse.quote(path, safe="/:@"))
    return found[1] if found else "acr.other"


def reply(status: int, body: Any, headers: dict[str, str] | None = None, content_type: str = "application/json; charset=utf-8"):
    """JSON as ACR writes it: compact, newline-terminated."""
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":")).encode() + b"\n",
        headers={"Content-Type": content_type, **(headers or {})},
    )


def error_reply(status: int, code: str, message: str, detail: Any = None, headers: dict[str, str] | None = None, with_detail: bool = True):
    err: dict[str, Any] = {"code": code, "message": message}
    if with_detail:
        err["detail"] = detail
    return reply(status, {"errors": [err]}, headers)


def name_page(request: web.Request, names: list[str]) -> tuple[list[str], dict[str, str]]:
    """One page of sorted names after `last`, with docker distribution's `Link` header when more follow.

    Pages are 100 names when `n` is not given (assumed, like _catalog: clients must follow Link).
    """
    n = paging_n(request)
    last = request.query.get("last")
    start = bisect.bisect_right(names, last) if last else 0
    page = names[start:start + n]
    headers = {}
    if start + n < len(names) and page:
        headers["Link"] = next_link(request.path, {"last": page[-1], "n": n})
    return page, headers


def next_link(path: str, params: dict[str, Any]) -> str:
    return f"<{path}?{urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})}>; rel=\"next\""


def paging_n(request: web.Request, default: int = 100) -> int:
    raw = request.query.get("n")
    if raw is None or raw == "":
        return default
    try:
        n = int(raw)
    except ValueError as exc:
        raise Abort(error_reply(400, "PAGINATION_NUMBER_INVALID", f"invalid number of results requested: n={raw!r} is not an integer")) from exc
    if n < 0:
        raise Abort(error_reply(400, "PAGINATION_NUMBER_INVALID", f"invalid number of results requested: n={n} must not be negative"))
    return n


class Abort(Exception):
    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


@dataclass
class Grant:
    """What a request's credentials allow: repository -> actions, plus the catalog."""

    access: dict[str, set[str]] = field(default_factory=dict)
    catalog: bool = False

    def allows(self, repo: str, actions: tuple[str, ...]) -> bool:
        have = self.access.get(repo, set()) | self.access.get("*", set())
        return "*" in have or any(a in have for a in actions)


def parse_scopes(raw_scopes: list[str]) -> list[tuple[str, str, list[str]]]:
    """`repository:name:pull,push` (also several, space separated) -> [(type, name, actions)]."""
    out = []
    for raw in raw_scopes:
        for item in raw.split():
            parts = item.split(":")
            if len(parts) < 3:
                continue
            # repository names cannot contain ':', but a resource type may carry a class: repository(plugin):name:actions
            rtype, name, actions = parts[0].split("(")[0], ":".join(parts[1:-1]), parts[-1]
            out.append((rtype, name, [a for a in actions.split(",") if a]))
    return out


