"""Tags: docker's /v2/{repo}/tags/list and ACR's /acr/v1/{repo}/_tags[/{tag}] attributes (by name or by time, paged by Link)."""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ...model import TagRecord
from .common import (
    CHANGEABLE,
    Abort,
    error_reply,
    name_page,
    next_link,
    paging_n,
    reply,
)

if TYPE_CHECKING:
    from .service import RegistryService


def tag_attrs(svc: RegistryService, rec: TagRecord) -> dict[str, Any]:
    return {"name": rec.name, "digest": rec.digest, "createdTime": rec.created, "lastUpdateTime": rec.updated,
            "signed": False, "changeableAttributes": dict(CHANGEABLE)}


async def tags_list(svc: RegistryService, request: web.Request, name: str) -> web.Response:
    svc.require(request, name, ("pull",), "pull")
    repo = svc.repo_or_404(name)
    page, headers = name_page(request, svc.sorted_tags(repo))
    return reply(200, {"name": name, "tags": page}, headers)


async def acr_tags(svc: RegistryService, request: web.Request, name: str) -> web.Response:
    svc.require(request, name, ("metadata_read",), "metadata_read")
    repo = svc.repo_or_404(name)
    n = paging_n(request)
    orderby = request.query.get("orderby", "")
    digest = request.query.get("digest")
    last = request.query.get("last")
    if orderby in ("timedesc", "timeasc"):
        records = sorted(repo.tags.values(), key=lambda r: (r.updated, r.name), reverse=orderby == "timedesc")
        if digest:
            records = [r for r in records if r.digest == digest]
        names = [r.name for r in records]
        start = (names.index(last) + 1 if last in names else len(names)) if last else 0  # a vanished `last` ends the walk
        page_recs = records[start:start + n]
        more = start + n < len(records)
    elif orderby:
        raise Abort(error_reply(400, "UNSUPPORTED", f"orderby {orderby!r} is not supported; use timedesc or timeasc"))
    else:
        names = svc.sorted_tags(repo)
        if digest:
            names = [t for t in names if repo.tags[t].digest == digest]
        start = bisect.bisect_right(names, last) if last else 0
        page_recs = [repo.tags[t] for t in names[start:start + n]]
        more = start + n < len(names)
    headers = {}
    if more and page_recs:
        headers["Link"] = next_link(request.path, {"last": page_recs[-1].name, "n": n, "orderby": orderby or None})
    return reply(200, {"registry": svc.login, "imageName": name, "tags": [tag_attrs(svc, r) for r in page_recs]}, headers)


async def acr_tag(svc: RegistryService, request: web.Request, name: str, tag: str) -> web.Response:
    if request.method == "DELETE":
        svc.require(request, name, ("delete",), "delete")
        repo = svc.repo_or_404(name)
        if repo.tags.pop(tag, None) is None:
            raise Abort(error_reply(404, "TAG_UNKNOWN", "the specified tag does not exist", {"Name": name, "Tag": tag}))
        return web.Response(status=202)
    svc.require(request, name, ("metadata_read",), "metadata_read")
    repo = svc.repo_or_404(name)
    rec = repo.tags.get(tag)
    if rec is None:
        raise Abort(error_reply(404, "TAG_UNKNOWN", "the specified tag does not exist", {"Name": name, "Tag": tag}))
    return reply(200, {"registry": svc.login, "imageName": name, "tag": tag_attrs(svc, rec)})
