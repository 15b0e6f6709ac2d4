"""One registry's data-plane state (uploads, caches, the streaming engine) and the lookups every handler shares."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ...model import Manifest, Registry, Repository
from ...streaming import StreamingEngine
from ...web import Context
from .auth import request_grant
from .common import (
    AUTH_MESSAGE,
    DIGEST_RE,
    Abort,
    error_reply,
)


class RegistryService:
    """One registry's data plane."""

    def __init__(self, ctx: Context, registry: Registry) -> None:
        self.ctx = ctx
        self.world = ctx.world
        self.reg = registry
        self.engine = StreamingEngine.for_context(ctx)
        self.uploads: dict[str, tuple[str, bytearray]] = {}  # upload id -> (repository, bytes so far)
        self._tag_index: dict[str, tuple[tuple[Any, ...], list[str]]] = {}
        self._referrer_index: dict[str, tuple[tuple[Any, ...], dict[str, list[str]]]] = {}

    @property
    def login(self) -> str:
        return self.reg.login_server

    def challenge(self, scope: str | None = None) -> dict[str, str]:
        value = f'Bearer realm="https://{self.login}/oauth2/token",service="{self.login}"'
        if scope:
            value += f',scope="{scope}"'
        return {"WWW-Authenticate": value}

    def unauthorized(self, scope: str | None = None, detail: Any = None, message: str = AUTH_MESSAGE) -> web.Response:
        return error_reply(401, "UNAUTHORIZED", message, detail, headers=self.challenge(scope))

    def require(self, request: web.Request, repo: str, actions: tuple[str, ...], scope_actions: str) -> None:
        grant = request_grant(self, request)
        if grant is not None and grant.allows(repo, actions):
            return
        detail = [{"Type": "repository", "Name": repo, "Action": a} for a in scope_actions.split(",")]
        raise Abort(self.unauthorized(f"repository:{repo}:{scope_actions}", detail))

    def repo_or_404(self, name: str) -> Repository:
        repo = self.reg.repositories.get(name)
        if repo is None:
            raise Abort(error_reply(404, "NAME_UNKNOWN", "repository name not known to registry", {"name": name}))
        return repo

    @staticmethod
    def check_digest(digest: str) -> None:
        if not DIGEST_RE.match(digest):
            raise Abort(error_reply(400, "DIGEST_INVALID", f"provided digest did not match uploaded content: {digest!r} is not a "
                                                       "sha256 digest (sha256: followed by 64 lowercase hex characters)"))

    def resolve(self, repo: Repository, ref: str) -> Manifest:
        if ":" in ref:
            self.check_digest(ref)
            manifest = repo.manifests.get(ref)
        else:
            rec = repo.tags.get(ref)
            manifest = repo.manifests.get(rec.digest) if rec else None
        if manifest is None:
            raise Abort(error_reply(404, "MANIFEST_UNKNOWN", "manifest unknown", {"Name": repo.name, "Revision" if ":" in ref else "Tag": ref}))
        return manifest

    def sorted_tags(self, repo: Repository) -> list[str]:
        tags = repo.tags
        fingerprint = (len(tags), next(iter(tags), None), next(reversed(tags), None)) if tags else (0,)
        cached = self._tag_index.get(repo.name)
        if cached is None or cached[0] != fingerprint:
            cached = (fingerprint, sorted(tags))
            self._tag_index[repo.name] = cached
        return cached[1]

    def referrers_of(self, repo: Repository, digest: str) -> list[Manifest]:
        mans = repo.manifests
        fingerprint = (len(mans), next(reversed(mans), None)) if mans else (0,)
        cached = self._referrer_index.get(repo.name)
        if cached is None or cached[0] != fingerprint:
            index: dict[str, list[str]] = {}
            for m in mans.values():
                if m.subject:
                    index.setdefault(m.subject, []).append(m.digest)
            cached = (fingerprint, index)
            self._referrer_index[repo.name] = cached
        return [mans[d] for d in cached[1].get(digest, []) if d in mans]
