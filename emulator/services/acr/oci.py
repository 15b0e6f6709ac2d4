"""OCI distribution: catalog, manifests (get, put, delete), blobs (the 307 to storage), chunked uploads, referrers."""

from __future__ import annotations

import json
import re
import uuid as uuid_mod
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ... import oci
from ...model import Repository
from .common import (
    DIGEST_RE,
    MAX_MANIFEST_BYTES,
    TAG_RE,
    Abort,
    error_reply,
    name_page,
    reply,
)

if TYPE_CHECKING:
    from .service import RegistryService
from .auth import request_grant


async def catalog(svc: RegistryService, request: web.Request) -> web.Response:
    grant = request_grant(svc, request)
    if grant is None or not grant.catalog:
        raise Abort(svc.unauthorized("registry:catalog:*", [{"Type": "registry", "Name": "catalog", "Action": "*"}]))
    if request.method != "GET":
        return error_reply(405, "UNSUPPORTED", "the catalog is read-only")
    page, headers = name_page(request, sorted(svc.reg.repositories))
    return reply(200, {"repositories": page}, headers)


async def manifest(svc: RegistryService, request: web.Request, name: str, ref: str) -> web.StreamResponse:
    method = request.method
    if method in ("GET", "HEAD"):
        svc.require(request, name, ("pull",), "pull")
        repo = svc.repo_or_404(name)
        m = svc.resolve(repo, ref)
        accept = ",".join(request.headers.getall("Accept", []))
        accepted = {a.split(";")[0].strip() for a in accept.split(",") if a.strip()}
        if accepted and "*/*" not in accepted and m.media_type not in accepted:
            raise Abort(error_reply(404, "MANIFEST_UNKNOWN", f"manifest of media type {m.media_type} is not acceptable "
                                                         f"per the Accept header ({accept})", {"Name": name, "Revision": m.digest}))
        headers = {"Docker-Content-Digest": m.digest, "ETag": f'"{m.digest}"', "Content-Type": m.media_type}
        if method == "HEAD":
            headers["Content-Length"] = str(len(m.content))
            return web.Response(status=200, headers=headers)
        return web.Response(status=200, body=m.content, headers=headers)
    if method == "PUT":
        svc.require(request, name, ("push",), "pull,push")
        return await put_manifest(svc, request, name, ref)
    if method == "DELETE":
        svc.require(request, name, ("delete",), "delete")
        return delete_manifest(svc, name, ref, request.headers.get("User-Agent"))
    return error_reply(405, "UNSUPPORTED", f"{method} is not supported on manifests")


async def put_manifest(svc: RegistryService, request: web.Request, name: str, ref: str) -> web.Response:
    body = await request.read()
    if ":" in ref:
        svc.check_digest(ref)
    elif not TAG_RE.match(ref):
        raise Abort(error_reply(400, "TAG_INVALID", f"manifest tag {ref!r} is invalid: up to 128 of [A-Za-z0-9_.-], not starting with . or -"))
    if len(body) > MAX_MANIFEST_BYTES:
        raise Abort(error_reply(400, "MANIFEST_INVALID", f"manifest is {len(body)} bytes; the limit is {MAX_MANIFEST_BYTES}"))
    try:
        doc = json.loads(body)
        if not isinstance(doc, dict):
            raise ValueError("the manifest must be a JSON object")
    except ValueError as exc:
        raise Abort(error_reply(400, "MANIFEST_INVALID", f"manifest invalid: not a JSON object ({exc})")) from exc
    content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip()
    body_type = doc.get("mediaType")
    media_type = content_type if content_type in oci.ALL_MANIFEST_TYPES else body_type
    if media_type not in oci.ALL_MANIFEST_TYPES:
        raise Abort(error_reply(400, "MANIFEST_INVALID", f"manifest invalid: media type {content_type or body_type!r} is not a "
                                                     f"manifest type; use one of {sorted(oci.ALL_MANIFEST_TYPES)}"))
    if body_type is not None and body_type != media_type:
        raise Abort(error_reply(400, "MANIFEST_INVALID", f"manifest invalid: mediaType {body_type!r} in the body does not match "
                                                     f"Content-Type {media_type!r}"))
    if doc.get("schemaVersion") != 2:
        raise Abort(error_reply(400, "MANIFEST_INVALID", "manifest invalid: schemaVersion must be 2"))
    digest = oci.sha256(body)
    if ":" in ref and ref != digest:
        raise Abort(error_reply(400, "DIGEST_INVALID", f"provided digest did not match uploaded content: the body's digest is {digest}",
                            {"Expected": ref, "Actual": digest}))
    repo = svc.reg.repositories.get(name)
    if media_type in oci.INDEX_TYPES:
        for entry in doc.get("manifests") or []:
            child = entry.get("digest") if isinstance(entry, dict) else None
            if not child or repo is None or child not in repo.manifests:
                raise Abort(error_reply(400, "MANIFEST_BLOB_UNKNOWN", "blob unknown to registry: a child manifest of the index "
                                                                  "is not in the repository; push it first", child))
    else:
        config = doc.get("config")
        layers = doc.get("layers")
        if not isinstance(config, dict) or not isinstance(layers, list):
            raise Abort(error_reply(400, "MANIFEST_INVALID", "manifest invalid: an image manifest needs a config descriptor and a layers list"))
        for desc in [config, *layers]:
            d = desc.get("digest") if isinstance(desc, dict) else None
            blob = svc.reg.blobs.get(d or "")
            if blob is None:
                raise Abort(error_reply(400, "MANIFEST_BLOB_UNKNOWN", "blob unknown to registry: push every blob the manifest "
                                                                  "references before the manifest", d))
            if int(desc.get("size", -1)) != blob.size:
                raise Abort(error_reply(400, "MANIFEST_INVALID", f"manifest invalid: descriptor {d} declares size {desc.get('size')} "
                                                             f"but the blob has {blob.size} bytes"))
    subject = doc.get("subject")
    if subject is not None and not (isinstance(subject, dict) and DIGEST_RE.match(str(subject.get("digest", "")))):
        raise Abort(error_reply(400, "MANIFEST_INVALID", "manifest invalid: subject must be a descriptor with a sha256 digest"))
    extra = {"useragent": request.headers["User-Agent"]} if request.headers.get("User-Agent") else None
    pushed = oci.store_manifest(svc.world.emit, svc.reg, name, body, media_type, tag=None if ":" in ref else ref, event_extra=extra)
    headers = {"Location": f"/v2/{name}/manifests/{pushed.digest}", "Docker-Content-Digest": pushed.digest}
    if subject is not None:
        headers["OCI-Subject"] = subject["digest"]
    return web.Response(status=201, headers=headers)


def delete_manifest(svc: RegistryService, name: str, ref: str, useragent: str | None = None) -> web.Response:
    repo = svc.repo_or_404(name)
    if ":" not in ref:
        if ref not in repo.tags:
            raise Abort(error_reply(404, "MANIFEST_UNKNOWN", "manifest tag unknown", {"Name": name, "Tag": ref}))
        del repo.tags[ref]
        return web.Response(status=202)
    m = svc.resolve(repo, ref)
    doomed = [m, *svc.referrers_of(repo, m.digest)]
    for victim in doomed:
        repo.manifests.pop(victim.digest, None)
        for tag in [t for t, rec in repo.tags.items() if rec.digest == victim.digest]:
            del repo.tags[tag]
    event = {"repository": name, "digest": m.digest, "mediaType": m.media_type}
    if useragent:
        event["useragent"] = useragent
    svc.world.emit("ImageDeleted", svc.reg, event)
    return web.Response(status=202)


async def blob(svc: RegistryService, request: web.Request, name: str, digest: str) -> web.StreamResponse:
    if request.method in ("GET", "HEAD"):
        svc.require(request, name, ("pull",), "pull")
        svc.check_digest(digest)
        blob = svc.reg.blobs.get(digest)
        if blob is None or name not in svc.reg.repositories:
            raise Abort(error_reply(404, "BLOB_UNKNOWN", "blob unknown to registry", digest))
        headers = {"Docker-Content-Digest": digest, "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        if request.method == "HEAD":
            headers["Content-Length"] = str(blob.size)
            return web.Response(status=200, headers=headers)
        if blob.content is None:
            raise Abort(error_reply(501, "UNSUPPORTED", f"blob {digest} is synthetic in the emulator: it declares {blob.size} bytes but "
                                                    "has no content; HEAD it for its size or push real content", digest))
        store = svc.ctx.extras.get("blobstore")
        if store is not None:
            # As ACR: 307 to the registry's storage with a signed link (clients must not forward the bearer token).
            return web.Response(status=307, headers={"Location": store.link(svc.reg.name, digest),
                                                     "Docker-Content-Digest": digest, "Content-Length": "0"})
        rng = request.headers.get("Range")
        if rng:
            m = re.match(r"^bytes=(\d+)-(\d*)$", rng.strip())
            if not m or int(m.group(1)) >= max(blob.size, 1):
                return error_reply(416, "RANGE_INVALID", f"invalid range {rng!r} for a blob of {blob.size} bytes",
                              headers={"Content-Range": f"bytes */{blob.size}"})
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else blob.size - 1, blob.size - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{blob.size}"
            return web.Response(status=206, body=blob.content[start:end + 1], headers=headers)
        return web.Response(status=200, body=blob.content, headers=headers)
    if request.method == "DELETE":
        svc.require(request, name, ("delete",), "delete")
        svc.check_digest(digest)
        if svc.reg.blobs.pop(digest, None) is None:
            raise Abort(error_reply(404, "BLOB_UNKNOWN", "blob unknown to registry", digest))
        return web.Response(status=202)
    return error_reply(405, "UNSUPPORTED", f"{request.method} is not supported on blobs")


def upload_location(svc: RegistryService, name: str, upload_id: str) -> str:
    return f"/v2/{name}/blobs/uploads/{upload_id}?_nouploadcache=false&_state={upload_id}"


def finish_upload(svc: RegistryService, name: str, data: bytes, digest: str) -> web.Response:
    svc.check_digest(digest)
    actual = oci.sha256(data)
    if actual != digest:
        raise Abort(error_reply(400, "DIGEST_INVALID", f"provided digest did not match uploaded content: the content's digest is {actual}",
                            {"Expected": digest, "Actual": actual}))
    oci.add_blob(svc.reg, data)
    svc.reg.repositories.setdefault(name, Repository(name=name))
    return web.Response(status=201, headers={"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest})


def chunk_refusal(svc: RegistryService, content_range: str | None, have: int, got: int, name: str, uuid: str) -> web.Response | None:
    """416 for a chunk that does not start where the upload ends (out of order, or sent again), as OCI distribution says.

    `Content-Range: <start>-<end>` (inclusive; `bytes ` prefix tolerated). Without the header the chunk is appended
    (a streamed upload). The 416 carries the upload's Location and its current Range so the client can resume."""
    if not content_range:
        return None
    m = re.match(r"^(?:bytes[ =])?(\d+)-(\d+)$", content_range.strip())
    if m and int(m.group(1)) == have and int(m.group(2)) - int(m.group(1)) + 1 == got:
        return None
    why = (f"Content-Range {content_range!r} is malformed; send <start>-<end>" if not m else
           f"the chunk {content_range} does not continue the upload, which holds {have} bytes (next chunk starts at "
           f"{have}) and whose chunk is {got} bytes; send chunks in order, each once")
    headers = {"Location": upload_location(svc, name, uuid), "Range": f"0-{max(have - 1, 0)}", "Docker-Upload-UUID": uuid}
    return error_reply(416, "BLOB_UPLOAD_INVALID", f"blob upload invalid: {why}", uuid, headers=headers)


async def upload(svc: RegistryService, request: web.Request, name: str, upload_id: str = "") -> web.StreamResponse:
    svc.require(request, name, ("push",), "pull,push")
    method = request.method
    if not upload_id:
        if method != "POST":
            return error_reply(405, "UNSUPPORTED", f"{method} is not supported here; POST to start an upload")
        mount, source = request.query.get("mount"), request.query.get("from")
        if mount:
            svc.check_digest(mount)
            if mount in svc.reg.blobs and (source in svc.reg.repositories):
                svc.reg.repositories.setdefault(name, Repository(name=name))
                return web.Response(status=201, headers={"Location": f"/v2/{name}/blobs/{mount}", "Docker-Content-Digest": mount})
        digest = request.query.get("digest")
        if digest:
            return finish_upload(svc, name, await request.read(), digest)
        upload_id = str(uuid_mod.uuid4())
        svc.uploads[upload_id] = (name, bytearray())
        return web.Response(status=202, headers={"Location": upload_location(svc, name, upload_id), "Range": "0-0",
                                                 "Docker-Upload-UUID": upload_id, "Content-Length": "0"})
    uuid = upload_id
    state = svc.uploads.get(uuid)
    if state is None or state[0] != name:
        raise Abort(error_reply(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry; start a new upload with POST", uuid))
    buf = state[1]
    if method == "GET":
        return web.Response(status=204, headers={"Location": upload_location(svc, name, uuid),
                                                 "Range": f"0-{max(len(buf) - 1, 0)}", "Docker-Upload-UUID": uuid})
    if method == "DELETE":
        svc.uploads.pop(uuid, None)
        return web.Response(status=204)
    if method == "PATCH":
        chunk = await request.read()
        refused = chunk_refusal(svc, request.headers.get("Content-Range"), len(buf), len(chunk), name, uuid)
        if refused is not None:
            return refused
        buf.extend(chunk)
        return web.Response(status=202, headers={"Location": upload_location(svc, name, uuid),
                                                 "Range": f"0-{max(len(buf) - 1, 0)}", "Docker-Upload-UUID": uuid,
                                                 "Content-Length": "0"})
    if method == "PUT":
        digest = request.query.get("digest")
        if not digest:
            raise Abort(error_reply(400, "DIGEST_INVALID", "the digest query parameter is required to complete an upload"))
        buf.extend(await request.read())
        resp = finish_upload(svc, name, bytes(buf), digest)
        svc.uploads.pop(uuid, None)
        return resp
    return error_reply(405, "UNSUPPORTED", f"{method} is not supported on uploads")


async def referrers(svc: RegistryService, request: web.Request, name: str, digest: str) -> web.Response:
    svc.require(request, name, ("pull",), "pull")
    svc.check_digest(digest)
    repo = svc.repo_or_404(name)
    wanted = request.query.get("artifactType")
    descriptors = []
    for m in svc.referrers_of(repo, digest):
        if wanted and m.artifact_type != wanted:
            continue
        doc = json.loads(m.content)
        desc: dict[str, Any] = {"mediaType": m.media_type, "digest": m.digest, "size": m.size}
        if m.artifact_type:
            desc["artifactType"] = m.artifact_type
        if doc.get("annotations"):
            desc["annotations"] = doc["annotations"]
        descriptors.append(desc)
    headers = {"oci-filters-applied": "artifactType"} if wanted else {}
    return reply(200, {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": descriptors}, headers, content_type=oci.OCI_INDEX)
