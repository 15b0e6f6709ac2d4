"""The emulated ACR data plane, one aiohttp app per registry: token service, OCI distribution, referrers, /acr/v1, streaming.

Wire behaviour follows the recorded az CLI session (tests/fixtures/acr_recording/) where it speaks, docker distribution /
OCI distribution 1.1 elsewhere. Choices where Azure is not on record (also in docs/emulator-acr.md):
- GET of a synthetic blob (declared size, no content) answers 501 UNSUPPORTED naming the blob; HEAD gives its size.
- Blobs are registry-wide (not linked per repository); a blob pushed to one repository is visible from any other.
- Streaming endpoints of Basic/Standard or CMK registries answer 400 UNSUPPORTED (see streaming.refusal).
- POST /_streaming/{digest} for a digest the repository does not hold answers 404 MANIFEST_UNKNOWN.
- DELETE of a manifest also deletes its tags and its referrers (ACR deletes attached artifacts), emitting ImageDeleted
  for the manifest only; DELETE by tag removes the tag only.
- Admin routes (no auth, no faults) on each registry port: GET /_emulator/operations, /_emulator/referrers?repository=&digest=,
  /_emulator/counts.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
import re
import time
import urllib.parse
import uuid as uuid_mod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .. import oci
from ..model import ACR_ROLE_PERMISSIONS, LEGACY_ACR_ROLES, Manifest, Registry, Repository, TagRecord, utcnow_iso
from ..streaming import RepositorySettingOperation, StreamingEngine, operation_body, refusal
from ..tokens import bearer
from ..web import Context, service_middleware

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

# ---------------------------------------------------------------------------------------------------- routing table
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


def _match(raw_path: str) -> tuple[str, str, dict[str, str]] | None:
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
    found = _match(urllib.parse.quote(path, safe="/:@"))
    return found[1] if found else "acr.other"


# ---------------------------------------------------------------------------------------------------- responses
def _json(status: int, body: Any, headers: dict[str, str] | None = None, content_type: str = "application/json; charset=utf-8"):
    """JSON as ACR writes it: compact, newline-terminated."""
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":")).encode() + b"\n",
        headers={"Content-Type": content_type, **(headers or {})},
    )


def _error(status: int, code: str, message: str, detail: Any = None, headers: dict[str, str] | None = None, with_detail: bool = True):
    err: dict[str, Any] = {"code": code, "message": message}
    if with_detail:
        err["detail"] = detail
    return _json(status, {"errors": [err]}, headers)


def _name_page(request: web.Request, names: list[str]) -> tuple[list[str], dict[str, str]]:
    """One page of sorted names after `last`, with docker distribution's `Link` header when more follow.

    Pages are 100 names when `n` is not given (assumed, like _catalog: clients must follow Link).
    """
    n = _paging_n(request)
    last = request.query.get("last")
    start = bisect.bisect_right(names, last) if last else 0
    page = names[start:start + n]
    headers = {}
    if start + n < len(names) and page:
        headers["Link"] = _link(request.path, {"last": page[-1], "n": n})
    return page, headers


def _link(path: str, params: dict[str, Any]) -> str:
    return f"<{path}?{urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})}>; rel=\"next\""


def _paging_n(request: web.Request, default: int = 100) -> int:
    raw = request.query.get("n")
    if raw is None or raw == "":
        return default
    try:
        n = int(raw)
    except ValueError as exc:
        raise _Abort(_error(400, "PAGINATION_NUMBER_INVALID", f"invalid number of results requested: n={raw!r} is not an integer")) from exc
    if n < 0:
        raise _Abort(_error(400, "PAGINATION_NUMBER_INVALID", f"invalid number of results requested: n={n} must not be negative"))
    return n


class _Abort(Exception):
    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


# ---------------------------------------------------------------------------------------------------- auth
@dataclass
class Grant:
    """What a request's credentials allow: repository -> actions, plus the catalog."""

    access: dict[str, set[str]] = field(default_factory=dict)
    catalog: bool = False

    def allows(self, repo: str, actions: tuple[str, ...]) -> bool:
        have = self.access.get(repo, set()) | self.access.get("*", set())
        return "*" in have or any(a in have for a in actions)


def _parse_scopes(raw_scopes: list[str]) -> list[tuple[str, str, list[str]]]:
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

    # -- identities
    @property
    def login(self) -> str:
        return self.reg.login_server

    def challenge(self, scope: str | None = None) -> dict[str, str]:
        value = f'Bearer realm="https://{self.login}/oauth2/token",service="{self.login}"'
        if scope:
            value += f',scope="{scope}"'
        return {"WWW-Authenticate": value}

    def unauthorized(self, scope: str | None = None, detail: Any = None, message: str = AUTH_MESSAGE) -> web.Response:
        return _error(401, "UNAUTHORIZED", message, detail, headers=self.challenge(scope))

    def _mint_access(self, subject: str, access: list[dict[str, Any]], cap_exp: int | None = None) -> str:
        ttl = int(self.world.settings.acr_token_ttl_seconds)
        if cap_exp is not None:
            ttl = max(1, min(ttl, cap_exp - int(time.time())))
        return self.ctx.tokens.mint(
            {
                "sub": subject, "iss": "Azure Container Registry", "aud": self.login, "version": "1.0",
                "rid": hashlib.md5(self.reg.name.encode()).hexdigest(),
                "access": access, "roles": [], "grant_type": "access_token",
            },
            ttl,
        )

    def _mint_refresh(self, subject: str, permissions: list[str]) -> str:
        ttl = max(11700, int(self.world.settings.acr_token_ttl_seconds))
        return self.ctx.tokens.mint(
            {
                "sub": subject, "iss": "Azure Container Registry", "aud": self.login, "version": "1.0",
                "rid": hashlib.md5(self.reg.name.encode()).hexdigest(),
                "grant_type": "refresh_token", "tenant": self.world.tenant_id,
                "permissions": {"actions": permissions}, "roles": [],
            },
            ttl,
        )

    def _acr_claims(self, token: str | None, grant_type: str) -> dict[str, Any] | None:
        claims = self.ctx.tokens.verify(token) if token else None
        if not claims or claims.get("aud") != self.login or claims.get("iss") != "Azure Container Registry":
            return None
        return claims if claims.get("grant_type") == grant_type else None

    def _password_identity(self, username: str, password: str) -> tuple[str, Callable[[str, str], bool], int | None] | None:
        """(subject, allowed(repo, action), cap on expiry) for username/password credentials, or None."""
        if username == NULL_USER:
            refresh = self._acr_claims(password, "refresh_token")
            if refresh is not None:
                perms = set(refresh.get("permissions", {}).get("actions", []))
                return refresh.get("sub", ""), lambda _r, a: any(a in PERMISSION_ACTIONS.get(p, ()) for p in perms), None
            access = self._acr_claims(password, "access_token")
            if access is not None:
                held = {(e.get("name"), a) for e in access.get("access", []) for a in e.get("actions", [])}
                return access.get("sub", ""), lambda r, a: (r, a) in held or (r, "*") in held, int(access["exp"])
            return None
        if self.reg.admin_user_enabled and self.reg.admin_password and username == self.reg.name and password == self.reg.admin_password:
            return username, lambda _r, _a: True, None
        for tok in self.reg.tokens:
            if tok.username == username and tok.password == password:
                rules = []
                for action in tok.actions:
                    parts = action.split("/")
                    if len(parts) >= 3 and parts[0] == "repositories":
                        rules.append(("/".join(parts[1:-2]), SCOPE_MAP_ACTIONS.get("/".join(parts[-2:]), set())))

                def allowed(repo: str, act: str, rules: list = rules) -> bool:
                    return any((pat == "*" or pat == repo or (pat.endswith("/*") and repo.startswith(pat[:-1]))) and act in acts
                               for pat, acts in rules)

                return username, allowed, None
        return None

    def _grant_from(self, scopes: list[tuple[str, str, list[str]]], allowed: Callable[[str, str], bool],
                    catalog_ok: bool) -> list[dict[str, Any]]:
        access = []
        for rtype, name, actions in scopes:
            if rtype == "repository":
                granted = [a for a in actions if (a == "*" and allowed(name, "pull")) or allowed(name, a)]
                access.append({"type": "repository", "name": name, "actions": granted})
            elif rtype == "registry" and name == "catalog":
                access.append({"type": "registry", "name": "catalog", "actions": ["*"] if catalog_ok else []})
        return access

    def request_grant(self, request: web.Request) -> Grant | None:
        """What the request's Authorization header allows on this registry; None without valid credentials."""
        header = request.headers.get("Authorization", "")
        token = bearer(header)
        if token:
            claims = self._acr_claims(token, "access_token")
            if claims is None:
                return None
            grant = Grant()
            for entry in claims.get("access", []):
                if entry.get("type") == "repository":
                    grant.access.setdefault(entry.get("name", ""), set()).update(entry.get("actions", []))
                elif entry.get("type") == "registry" and entry.get("name") == "catalog" and entry.get("actions"):
                    grant.catalog = True
            return grant
        if header.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
            ident = self._password_identity(user, password)
            if ident is None:
                return None
            _sub, allowed, _cap = ident

            class _BasicGrant(Grant):
                def allows(self, repo: str, actions: tuple[str, ...]) -> bool:
                    return any(allowed(repo, a) for a in actions)

            return _BasicGrant(catalog=True)
        return None

    def require(self, request: web.Request, repo: str, actions: tuple[str, ...], scope_actions: str) -> None:
        grant = self.request_grant(request)
        if grant is not None and grant.allows(repo, actions):
            return
        detail = [{"Type": "repository", "Name": repo, "Action": a} for a in scope_actions.split(",")]
        raise _Abort(self.unauthorized(f"repository:{repo}:{scope_actions}", detail))

    # ------------------------------------------------------------------ /oauth2
    async def oauth2(self, request: web.Request, op: str) -> web.Response:
        if request.method == "GET" and op == "token":
            return self._docker_token(request)
        if request.method != "POST":
            return _error(405, "UNSUPPORTED", f"{request.method} is not supported on /oauth2/{op}; use POST with a form body")
        try:
            raw = (await request.read()).decode()
        except UnicodeDecodeError:
            return _error(400, "UNSUPPORTED", "the form body is not UTF-8")
        form = urllib.parse.parse_qs(raw, keep_blank_values=True)
        get = lambda k: (form.get(k) or [""])[0]  # noqa: E731
        service = get("service")
        if service != self.login:
            return self.unauthorized(message=f"service {service!r} does not match this registry; expected service={self.login}")
        grant_type = get("grant_type")
        if op == "exchange":
            return self._exchange(grant_type, get("access_token"), get("tenant"))
        scopes = _parse_scopes(form.get("scope", []))
        if grant_type == "refresh_token":
            refresh = self._acr_claims(get("refresh_token"), "refresh_token")
            if refresh is None:
                return self.unauthorized(message="the refresh token is invalid or expired; get a new one from /oauth2/exchange")
            perms = set(refresh.get("permissions", {}).get("actions", []))
            allowed = lambda _r, a: any(a in PERMISSION_ACTIONS.get(p, ()) for p in perms)  # noqa: E731
            # ABAC-enabled registries list the catalog only for "Container Registry Repository Catalog Lister"
            abac = self.reg.role_assignment_mode == "AbacRepositoryPermissions"
            access = self._grant_from(scopes, allowed, catalog_ok=("catalog/read" if abac else "metadata/read") in perms)
            return _json(200, {"access_token": self._mint_access(refresh.get("sub", ""), access)})
        if grant_type == "password":
            ident = self._password_identity(get("username"), get("password"))
            if ident is None:
                return self.unauthorized(message="the username or password is incorrect (or the token is invalid or expired)")
            sub, allowed, cap = ident
            access = self._grant_from(scopes, allowed, catalog_ok=cap is None)
            return _json(200, {"access_token": self._mint_access(sub, access, cap_exp=cap)})
        return self.unauthorized(message=f"grant_type {grant_type!r} is not supported here; use refresh_token or password")

    def _exchange(self, grant_type: str, aad_token: str, tenant: str) -> web.Response:
        if grant_type not in ("access_token", "access_token_refresh_token"):
            return self.unauthorized(message=f"grant_type {grant_type!r} is not supported; use access_token")
        claims = self.ctx.tokens.verify(aad_token) if aad_token else None
        if claims is None or not str(claims.get("iss", "")).startswith("https://sts.windows.net/"):
            return self.unauthorized(message="the AAD access token is missing, invalid or expired")
        aud = str(claims.get("aud", "")).rstrip("/")
        if aud not in AAD_AUDIENCES:
            return self.unauthorized(
                message=f"the AAD access token audience {aud!r} is not accepted; request a token for "
                        "https://management.azure.com or https://containerregistry.azure.net")
        if not self.reg.aad_auth_as_arm and aud in ARM_AUDIENCES:
            return self.unauthorized(
                message="ARM audience tokens are disabled for this registry (azureADAuthenticationAsArmPolicy is disabled); "
                        "request a token for https://containerregistry.azure.net")
        if tenant and tenant != claims.get("tid"):
            return self.unauthorized(message=f"tenant {tenant!r} does not match the token's tenant")
        subject = str(claims.get("upn") or claims.get("oid") or claims.get("sub") or "")
        roles = self.reg.identity_roles
        if roles is None:
            permissions = list(ALL_ACTIONS)
        else:  # the identity's role assignments on the registry; none at all still exchanges, then grants nothing
            if self.reg.role_assignment_mode == "AbacRepositoryPermissions":
                roles = [r for r in roles if r not in LEGACY_ACR_ROLES]
            permissions = [a for a in ALL_ACTIONS if any(a in ACR_ROLE_PERMISSIONS[r] for r in roles)]
        return _json(200, {"refresh_token": self._mint_refresh(subject, permissions)})

    def _docker_token(self, request: web.Request) -> web.Response:
        if request.query.get("service") != self.login:
            return self.unauthorized(message=f"service {request.query.get('service')!r} does not match; expected service={self.login}")
        header = request.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return self.unauthorized(message="anonymous pull is not enabled on this registry; send basic credentials")
        try:
            user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return self.unauthorized(message="the basic credentials are malformed")
        ident = self._password_identity(user, password)
        if ident is None:
            return self.unauthorized(message="the username or password is incorrect")
        sub, allowed, cap = ident
        access = self._grant_from(_parse_scopes(request.query.getall("scope", [])), allowed, catalog_ok=cap is None)
        return _json(200, {"access_token": self._mint_access(sub, access, cap_exp=cap)})

    # ------------------------------------------------------------------ helpers
    def repo_or_404(self, name: str) -> Repository:
        repo = self.reg.repositories.get(name)
        if repo is None:
            raise _Abort(_error(404, "NAME_UNKNOWN", "repository name not known to registry", {"name": name}))
        return repo

    @staticmethod
    def check_digest(digest: str) -> None:
        if not DIGEST_RE.match(digest):
            raise _Abort(_error(400, "DIGEST_INVALID", f"provided digest did not match uploaded content: {digest!r} is not a "
                                                       "sha256 digest (sha256: followed by 64 lowercase hex characters)"))

    def resolve(self, repo: Repository, ref: str) -> Manifest:
        if ":" in ref:
            self.check_digest(ref)
            manifest = repo.manifests.get(ref)
        else:
            rec = repo.tags.get(ref)
            manifest = repo.manifests.get(rec.digest) if rec else None
        if manifest is None:
            raise _Abort(_error(404, "MANIFEST_UNKNOWN", "manifest unknown", {"Name": repo.name, "Revision" if ":" in ref else "Tag": ref}))
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

    def tag_attrs(self, rec: TagRecord) -> dict[str, Any]:
        return {"name": rec.name, "digest": rec.digest, "createdTime": rec.created, "lastUpdateTime": rec.updated,
                "signed": False, "changeableAttributes": dict(CHANGEABLE)}

    def manifest_attrs(self, repo: Repository, m: Manifest, tags_by_digest: dict[str, list[str]] | None = None) -> dict[str, Any]:
        doc = json.loads(m.content)
        out: dict[str, Any] = {"digest": m.digest, "imageSize": 0, "createdTime": m.created, "lastUpdateTime": m.created}
        if m.media_type in oci.INDEX_TYPES:
            out["references"] = [
                {"digest": e.get("digest"), "architecture": (e.get("platform") or {}).get("architecture"),
                 "os": (e.get("platform") or {}).get("os")}
                for e in doc.get("manifests") or []
            ]
            out["imageSize"] = m.size
        else:
            out["imageSize"] = int((doc.get("config") or {}).get("size", 0)) + sum(int(x.get("size", 0)) for x in doc.get("layers") or [])
            blob = self.reg.blobs.get((doc.get("config") or {}).get("digest", ""))
            if blob is not None and blob.content is not None:
                try:
                    cfg = json.loads(blob.content)
                    if isinstance(cfg, dict) and cfg.get("architecture"):
                        out["architecture"], out["os"] = cfg.get("architecture"), cfg.get("os")
                except ValueError:
                    pass
        out["mediaType"] = m.media_type
        config_type = (doc.get("config") or {}).get("mediaType")
        if config_type:
            out["configMediaType"] = config_type
        if m.artifact_type and m.artifact_type != config_type:
            out["artifactType"] = m.artifact_type
        if tags_by_digest is None:
            tags = [t.name for t in repo.tags.values() if t.digest == m.digest]
        else:
            tags = tags_by_digest.get(m.digest, [])
        if tags:
            out["tags"] = tags
        out["changeableAttributes"] = dict(CHANGEABLE)
        return out

    # ------------------------------------------------------------------ dispatch
    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/_emulator/"):
            return await self.admin(request)
        found = _match(request.rel_url.raw_path)
        if found is None:
            return _error(404, "NOT_FOUND", f"no such registry endpoint: {request.method} {request.path}")
        route, _cls, args = found
        try:
            if route == "auth":
                return await self.oauth2(request, args["op"])
            if route == "v2":
                if self.request_grant(request) is None:
                    return self.unauthorized()
                return _json(200, {})
            if "name" in args and not REPO_RE.match(args["name"]):
                return _error(400, "NAME_INVALID", f"invalid repository name {args['name']!r}: use lowercase letters, digits "
                                                   "and separators (. _ __ -) in path components separated by /", {"name": args["name"]})
            handler: Callable[..., Awaitable[web.StreamResponse]] = getattr(self, f"h_{route}")
            return await handler(request, **args)
        except _Abort as abort:
            return abort.response

    # ------------------------------------------------------------------ catalog
    async def h_catalog(self, request: web.Request) -> web.Response:
        grant = self.request_grant(request)
        if grant is None or not grant.catalog:
            raise _Abort(self.unauthorized("registry:catalog:*", [{"Type": "registry", "Name": "catalog", "Action": "*"}]))
        if request.method != "GET":
            return _error(405, "UNSUPPORTED", "the catalog is read-only")
        page, headers = _name_page(request, sorted(self.reg.repositories))
        return _json(200, {"repositories": page}, headers)

    # ------------------------------------------------------------------ manifests
    async def h_manifest(self, request: web.Request, name: str, ref: str) -> web.StreamResponse:
        method = request.method
        if method in ("GET", "HEAD"):
            self.require(request, name, ("pull",), "pull")
            repo = self.repo_or_404(name)
            m = self.resolve(repo, ref)
            accept = ",".join(request.headers.getall("Accept", []))
            accepted = {a.split(";")[0].strip() for a in accept.split(",") if a.strip()}
            if accepted and "*/*" not in accepted and m.media_type not in accepted:
                raise _Abort(_error(404, "MANIFEST_UNKNOWN", f"manifest of media type {m.media_type} is not acceptable "
                                                             f"per the Accept header ({accept})", {"Name": name, "Revision": m.digest}))
            headers = {"Docker-Content-Digest": m.digest, "ETag": f'"{m.digest}"', "Content-Type": m.media_type}
            if method == "HEAD":
                headers["Content-Length"] = str(len(m.content))
                return web.Response(status=200, headers=headers)
            return web.Response(status=200, body=m.content, headers=headers)
        if method == "PUT":
            self.require(request, name, ("push",), "pull,push")
            return await self._put_manifest(request, name, ref)
        if method == "DELETE":
            self.require(request, name, ("delete",), "delete")
            return self._delete_manifest(name, ref, request.headers.get("User-Agent"))
        return _error(405, "UNSUPPORTED", f"{method} is not supported on manifests")

    async def _put_manifest(self, request: web.Request, name: str, ref: str) -> web.Response:
        body = await request.read()
        if ":" in ref:
            self.check_digest(ref)
        elif not TAG_RE.match(ref):
            raise _Abort(_error(400, "TAG_INVALID", f"manifest tag {ref!r} is invalid: up to 128 of [A-Za-z0-9_.-], not starting with . or -"))
        if len(body) > MAX_MANIFEST_BYTES:
            raise _Abort(_error(400, "MANIFEST_INVALID", f"manifest is {len(body)} bytes; the limit is {MAX_MANIFEST_BYTES}"))
        try:
            doc = json.loads(body)
            if not isinstance(doc, dict):
                raise ValueError("the manifest must be a JSON object")
        except ValueError as exc:
            raise _Abort(_error(400, "MANIFEST_INVALID", f"manifest invalid: not a JSON object ({exc})")) from exc
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip()
        body_type = doc.get("mediaType")
        media_type = content_type if content_type in oci.ALL_MANIFEST_TYPES else body_type
        if media_type not in oci.ALL_MANIFEST_TYPES:
            raise _Abort(_error(400, "MANIFEST_INVALID", f"manifest invalid: media type {content_type or body_type!r} is not a "
                                                         f"manifest type; use one of {sorted(oci.ALL_MANIFEST_TYPES)}"))
        if body_type is not None and body_type != media_type:
            raise _Abort(_error(400, "MANIFEST_INVALID", f"manifest invalid: mediaType {body_type!r} in the body does not match "
                                                         f"Content-Type {media_type!r}"))
        if doc.get("schemaVersion") != 2:
            raise _Abort(_error(400, "MANIFEST_INVALID", "manifest invalid: schemaVersion must be 2"))
        digest = oci.sha256(body)
        if ":" in ref and ref != digest:
            raise _Abort(_error(400, "DIGEST_INVALID", f"provided digest did not match uploaded content: the body's digest is {digest}",
                                {"Expected": ref, "Actual": digest}))
        repo = self.reg.repositories.get(name)
        if media_type in oci.INDEX_TYPES:
            for entry in doc.get("manifests") or []:
                child = entry.get("digest") if isinstance(entry, dict) else None
                if not child or repo is None or child not in repo.manifests:
                    raise _Abort(_error(400, "MANIFEST_BLOB_UNKNOWN", "blob unknown to registry: a child manifest of the index "
                                                                      "is not in the repository; push it first", child))
        else:
            config = doc.get("config")
            layers = doc.get("layers")
            if not isinstance(config, dict) or not isinstance(layers, list):
                raise _Abort(_error(400, "MANIFEST_INVALID", "manifest invalid: an image manifest needs a config descriptor and a layers list"))
            for desc in [config, *layers]:
                d = desc.get("digest") if isinstance(desc, dict) else None
                blob = self.reg.blobs.get(d or "")
                if blob is None:
                    raise _Abort(_error(400, "MANIFEST_BLOB_UNKNOWN", "blob unknown to registry: push every blob the manifest "
                                                                      "references before the manifest", d))
                if int(desc.get("size", -1)) != blob.size:
                    raise _Abort(_error(400, "MANIFEST_INVALID", f"manifest invalid: descriptor {d} declares size {desc.get('size')} "
                                                                 f"but the blob has {blob.size} bytes"))
        subject = doc.get("subject")
        if subject is not None and not (isinstance(subject, dict) and DIGEST_RE.match(str(subject.get("digest", "")))):
            raise _Abort(_error(400, "MANIFEST_INVALID", "manifest invalid: subject must be a descriptor with a sha256 digest"))
        extra = {"useragent": request.headers["User-Agent"]} if request.headers.get("User-Agent") else None
        pushed = oci.store_manifest(self.world.emit, self.reg, name, body, media_type, tag=None if ":" in ref else ref, event_extra=extra)
        headers = {"Location": f"/v2/{name}/manifests/{pushed.digest}", "Docker-Content-Digest": pushed.digest}
        if subject is not None:
            headers["OCI-Subject"] = subject["digest"]
        return web.Response(status=201, headers=headers)

    def _delete_manifest(self, name: str, ref: str, useragent: str | None = None) -> web.Response:
        repo = self.repo_or_404(name)
        if ":" not in ref:
            if ref not in repo.tags:
                raise _Abort(_error(404, "MANIFEST_UNKNOWN", "manifest tag unknown", {"Name": name, "Tag": ref}))
            del repo.tags[ref]
            return web.Response(status=202)
        m = self.resolve(repo, ref)
        doomed = [m, *self.referrers_of(repo, m.digest)]
        for victim in doomed:
            repo.manifests.pop(victim.digest, None)
            for tag in [t for t, rec in repo.tags.items() if rec.digest == victim.digest]:
                del repo.tags[tag]
        event = {"repository": name, "digest": m.digest, "mediaType": m.media_type}
        if useragent:
            event["useragent"] = useragent
        self.world.emit("ImageDeleted", self.reg, event)
        return web.Response(status=202)

    # ------------------------------------------------------------------ blobs
    async def h_blob(self, request: web.Request, name: str, digest: str) -> web.StreamResponse:
        if request.method in ("GET", "HEAD"):
            self.require(request, name, ("pull",), "pull")
            self.check_digest(digest)
            blob = self.reg.blobs.get(digest)
            if blob is None or name not in self.reg.repositories:
                raise _Abort(_error(404, "BLOB_UNKNOWN", "blob unknown to registry", digest))
            headers = {"Docker-Content-Digest": digest, "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
            if request.method == "HEAD":
                headers["Content-Length"] = str(blob.size)
                return web.Response(status=200, headers=headers)
            if blob.content is None:
                raise _Abort(_error(501, "UNSUPPORTED", f"blob {digest} is synthetic in the emulator: it declares {blob.size} bytes but "
                                                        "has no content; HEAD it for its size or push real content", digest))
            store = self.ctx.extras.get("blobstore")
            if store is not None:
                # As ACR: 307 to the registry's storage with a signed link (clients must not forward the bearer token).
                return web.Response(status=307, headers={"Location": store.link(self.reg.name, digest),
                                                         "Docker-Content-Digest": digest, "Content-Length": "0"})
            rng = request.headers.get("Range")
            if rng:
                m = re.match(r"^bytes=(\d+)-(\d*)$", rng.strip())
                if not m or int(m.group(1)) >= max(blob.size, 1):
                    return _error(416, "RANGE_INVALID", f"invalid range {rng!r} for a blob of {blob.size} bytes",
                                  headers={"Content-Range": f"bytes */{blob.size}"})
                start = int(m.group(1))
                end = min(int(m.group(2)) if m.group(2) else blob.size - 1, blob.size - 1)
                headers["Content-Range"] = f"bytes {start}-{end}/{blob.size}"
                return web.Response(status=206, body=blob.content[start:end + 1], headers=headers)
            return web.Response(status=200, body=blob.content, headers=headers)
        if request.method == "DELETE":
            self.require(request, name, ("delete",), "delete")
            self.check_digest(digest)
            if self.reg.blobs.pop(digest, None) is None:
                raise _Abort(_error(404, "BLOB_UNKNOWN", "blob unknown to registry", digest))
            return web.Response(status=202)
        return _error(405, "UNSUPPORTED", f"{request.method} is not supported on blobs")

    def _upload_location(self, name: str, upload_id: str) -> str:
        return f"/v2/{name}/blobs/uploads/{upload_id}?_nouploadcache=false&_state={upload_id}"

    def _finish_upload(self, name: str, data: bytes, digest: str) -> web.Response:
        self.check_digest(digest)
        actual = oci.sha256(data)
        if actual != digest:
            raise _Abort(_error(400, "DIGEST_INVALID", f"provided digest did not match uploaded content: the content's digest is {actual}",
                                {"Expected": digest, "Actual": actual}))
        oci.add_blob(self.reg, data)
        self.reg.repositories.setdefault(name, Repository(name=name))
        return web.Response(status=201, headers={"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest})

    def _chunk_refusal(self, content_range: str | None, have: int, got: int, name: str, uuid: str) -> web.Response | None:
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
        headers = {"Location": self._upload_location(name, uuid), "Range": f"0-{max(have - 1, 0)}", "Docker-Upload-UUID": uuid}
        return _error(416, "BLOB_UPLOAD_INVALID", f"blob upload invalid: {why}", uuid, headers=headers)

    async def h_upload(self, request: web.Request, name: str, upload_id: str = "") -> web.StreamResponse:
        self.require(request, name, ("push",), "pull,push")
        method = request.method
        if not upload_id:
            if method != "POST":
                return _error(405, "UNSUPPORTED", f"{method} is not supported here; POST to start an upload")
            mount, source = request.query.get("mount"), request.query.get("from")
            if mount:
                self.check_digest(mount)
                if mount in self.reg.blobs and (source in self.reg.repositories):
                    self.reg.repositories.setdefault(name, Repository(name=name))
                    return web.Response(status=201, headers={"Location": f"/v2/{name}/blobs/{mount}", "Docker-Content-Digest": mount})
            digest = request.query.get("digest")
            if digest:
                return self._finish_upload(name, await request.read(), digest)
            upload_id = str(uuid_mod.uuid4())
            self.uploads[upload_id] = (name, bytearray())
            return web.Response(status=202, headers={"Location": self._upload_location(name, upload_id), "Range": "0-0",
                                                     "Docker-Upload-UUID": upload_id, "Content-Length": "0"})
        uuid = upload_id
        state = self.uploads.get(uuid)
        if state is None or state[0] != name:
            raise _Abort(_error(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry; start a new upload with POST", uuid))
        buf = state[1]
        if method == "GET":
            return web.Response(status=204, headers={"Location": self._upload_location(name, uuid),
                                                     "Range": f"0-{max(len(buf) - 1, 0)}", "Docker-Upload-UUID": uuid})
        if method == "DELETE":
            self.uploads.pop(uuid, None)
            return web.Response(status=204)
        if method == "PATCH":
            chunk = await request.read()
            refused = self._chunk_refusal(request.headers.get("Content-Range"), len(buf), len(chunk), name, uuid)
            if refused is not None:
                return refused
            buf.extend(chunk)
            return web.Response(status=202, headers={"Location": self._upload_location(name, uuid),
                                                     "Range": f"0-{max(len(buf) - 1, 0)}", "Docker-Upload-UUID": uuid,
                                                     "Content-Length": "0"})
        if method == "PUT":
            digest = request.query.get("digest")
            if not digest:
                raise _Abort(_error(400, "DIGEST_INVALID", "the digest query parameter is required to complete an upload"))
            buf.extend(await request.read())
            resp = self._finish_upload(name, bytes(buf), digest)
            self.uploads.pop(uuid, None)
            return resp
        return _error(405, "UNSUPPORTED", f"{method} is not supported on uploads")

    # ------------------------------------------------------------------ referrers and tags
    async def h_referrers(self, request: web.Request, name: str, digest: str) -> web.Response:
        self.require(request, name, ("pull",), "pull")
        self.check_digest(digest)
        repo = self.repo_or_404(name)
        wanted = request.query.get("artifactType")
        descriptors = []
        for m in self.referrers_of(repo, digest):
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
        return _json(200, {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": descriptors}, headers, content_type=oci.OCI_INDEX)

    async def h_tags_list(self, request: web.Request, name: str) -> web.Response:
        self.require(request, name, ("pull",), "pull")
        repo = self.repo_or_404(name)
        page, headers = _name_page(request, self.sorted_tags(repo))
        return _json(200, {"name": name, "tags": page}, headers)

    async def h_acr_tags(self, request: web.Request, name: str) -> web.Response:
        self.require(request, name, ("metadata_read",), "metadata_read")
        repo = self.repo_or_404(name)
        n = _paging_n(request)
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
            raise _Abort(_error(400, "UNSUPPORTED", f"orderby {orderby!r} is not supported; use timedesc or timeasc"))
        else:
            names = self.sorted_tags(repo)
            if digest:
                names = [t for t in names if repo.tags[t].digest == digest]
            start = bisect.bisect_right(names, last) if last else 0
            page_recs = [repo.tags[t] for t in names[start:start + n]]
            more = start + n < len(names)
        headers = {}
        if more and page_recs:
            headers["Link"] = _link(request.path, {"last": page_recs[-1].name, "n": n, "orderby": orderby or None})
        return _json(200, {"registry": self.login, "imageName": name, "tags": [self.tag_attrs(r) for r in page_recs]}, headers)

    async def h_acr_tag(self, request: web.Request, name: str, tag: str) -> web.Response:
        if request.method == "DELETE":
            self.require(request, name, ("delete",), "delete")
            repo = self.repo_or_404(name)
            if repo.tags.pop(tag, None) is None:
                raise _Abort(_error(404, "TAG_UNKNOWN", "the specified tag does not exist", {"Name": name, "Tag": tag}))
            return web.Response(status=202)
        self.require(request, name, ("metadata_read",), "metadata_read")
        repo = self.repo_or_404(name)
        rec = repo.tags.get(tag)
        if rec is None:
            raise _Abort(_error(404, "TAG_UNKNOWN", "the specified tag does not exist", {"Name": name, "Tag": tag}))
        return _json(200, {"registry": self.login, "imageName": name, "tag": self.tag_attrs(rec)})

    async def h_acr_manifests(self, request: web.Request, name: str) -> web.Response:
        self.require(request, name, ("metadata_read",), "metadata_read")
        repo = self.repo_or_404(name)
        n = _paging_n(request)
        orderby = request.query.get("orderby", "")
        mans = list(repo.manifests.values())
        if orderby in ("timedesc", "timeasc"):
            mans.sort(key=lambda m: (m.created, m.digest), reverse=orderby == "timedesc")
        elif orderby:
            raise _Abort(_error(400, "UNSUPPORTED", f"orderby {orderby!r} is not supported; use timedesc or timeasc"))
        else:
            mans.sort(key=lambda m: m.digest)
        last = request.query.get("last")
        digests = [m.digest for m in mans]
        start = (digests.index(last) + 1 if last in digests else len(digests)) if last else 0
        page = mans[start:start + n]
        tags_by_digest: dict[str, list[str]] = {}
        for rec in repo.tags.values():
            tags_by_digest.setdefault(rec.digest, []).append(rec.name)
        headers = {}
        if start + n < len(mans) and page:
            headers["Link"] = _link(request.path, {"last": page[-1].digest, "n": n, "orderby": orderby or None})
        body = {"registry": self.login, "imageName": name,
                "manifests": [self.manifest_attrs(repo, m, tags_by_digest) for m in page]}
        return _json(200, body, headers)

    async def h_acr_manifest(self, request: web.Request, name: str, digest: str) -> web.Response:
        self.require(request, name, ("metadata_read",), "metadata_read")
        repo = self.repo_or_404(name)
        m = self.resolve(repo, digest)
        return _json(200, {"registry": self.login, "imageName": name, "manifest": self.manifest_attrs(repo, m)})

    async def h_repository(self, request: web.Request, name: str) -> web.Response:
        if request.method == "DELETE":
            self.require(request, name, ("delete",), "delete")
            repo = self.repo_or_404(name)
            for m in list(repo.manifests.values()):
                self.world.emit("ImageDeleted", self.reg, {"repository": name, "digest": m.digest, "mediaType": m.media_type})
            del self.reg.repositories[name]
            return _json(202, {"manifestsDeleted": list(repo.manifests), "tagsDeleted": list(repo.tags)})
        self.require(request, name, ("metadata_read",), "metadata_read")
        repo = self.repo_or_404(name)
        updated = max((t.updated for t in repo.tags.values()), default=repo.created)
        return _json(200, {"registry": self.login, "imageName": name, "createdTime": repo.created, "lastUpdateTime": updated,
                           "manifestCount": len(repo.manifests), "tagCount": len(repo.tags),
                           "changeableAttributes": {**CHANGEABLE, "teleportEnabled": False}})

    # ------------------------------------------------------------------ artifact streaming
    def _streaming_allowed(self) -> None:
        refused = refusal(self.reg)
        if refused is not None:
            raise _Abort(_error(refused.status, refused.code, refused.message))

    def _op_headers(self, repo: str, op_id: str) -> dict[str, str]:
        url = f"https://{self.login}/acr/v1/{repo}/_operations/{op_id}"
        return {"Location": url, "Operation-Location": url, "operation-id": op_id}

    async def _streaming_body(self, request: web.Request, repo_level: bool) -> dict[str, Any]:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError as exc:
            raise _Abort(_error(400, "INVALID_REQUEST", f"the request body is not valid JSON ({exc}); send "
                                                        '{"conversionFormat":"overlaybd","conversionVersion":"v1"}')) from exc
        if not isinstance(body, dict):
            raise _Abort(_error(400, "INVALID_REQUEST", 'the request body must be a JSON object such as '
                                                        '{"conversionFormat":"overlaybd","conversionVersion":"v1"}'))
        if body.get("conversionFormat") != "overlaybd" or body.get("conversionVersion") != "v1":
            raise _Abort(_error(400, "INVALID_REQUEST",
                                f"unsupported conversion {body.get('conversionFormat')!r}/{body.get('conversionVersion')!r}: "
                                "only conversionFormat overlaybd with conversionVersion v1 is supported"))
        if repo_level and not isinstance(body.get("convertPushedImages"), bool):
            raise _Abort(_error(400, "INVALID_REQUEST", "convertPushedImages must be true or false"))
        return body

    async def h_streaming_repo(self, request: web.Request, name: str) -> web.Response:
        if request.method == "GET":
            self.require(request, name, ("pull", "metadata_read"), "pull")
            self._streaming_allowed()
            repo = self.repo_or_404(name)
            return _json(200, {"convertPushedImages": repo.convert_pushed_images})
        if request.method != "POST":
            return _error(405, "UNSUPPORTED", f"{request.method} is not supported on _streaming; use GET or POST")
        self.require(request, name, ("push",), "pull,push")
        self._streaming_allowed()
        repo = self.repo_or_404(name)
        body = await self._streaming_body(request, repo_level=True)
        repo.convert_pushed_images = body["convertPushedImages"]
        op = RepositorySettingOperation(id=str(uuid_mod.uuid4()), repository=name, convert_pushed_images=repo.convert_pushed_images,
                                        start_time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self.engine.repository_operations[op.id] = op
        return _json(202, {"convertPushedImages": repo.convert_pushed_images, "conversionFormat": "overlaybd",
                           "conversionVersion": "v1", "status": "Succeeded", "id": op.id}, self._op_headers(name, op.id))

    async def h_streaming_digest(self, request: web.Request, name: str, digest: str) -> web.Response:
        if request.method == "GET":
            self.require(request, name, ("pull", "metadata_read"), "pull")
            self._streaming_allowed()
            self.check_digest(digest)
            repo = self.repo_or_404(name)
            op = self.engine.latest(repo, digest)
            if op is None:
                raise _Abort(_error(404, "OPERATION_UNKNOWN", "The specified operation does not exist", with_detail=False))
            return _json(200, {"id": op.id, "status": op.status}, self._op_headers(name, op.id))
        if request.method != "POST":
            return _error(405, "UNSUPPORTED", f"{request.method} is not supported on _streaming/{{digest}}; use GET or POST")
        # The az CLI POSTs with its pull,push token (exchange 24 reuses exchange 18's token; see test_conformance.py).
        self.require(request, name, ("push",), "pull,push")
        self._streaming_allowed()
        self.check_digest(digest)
        repo = self.repo_or_404(name)
        await self._streaming_body(request, repo_level=False)
        if digest not in repo.manifests:
            raise _Abort(_error(404, "MANIFEST_UNKNOWN", "manifest unknown", {"Name": name, "Revision": digest}))
        op = self.engine.start(self.reg, repo, digest)
        return _json(202, {"id": op.id, "status": op.status}, self._op_headers(name, op.id))

    async def h_operation(self, request: web.Request, name: str, op_id: str, cancel: str = "") -> web.Response:
        if cancel:
            if request.method != "POST":
                return _error(405, "UNSUPPORTED", "cancel with POST …/_operations/{id}:cancel")
            self.require(request, name, ("push",), "pull,push")
        else:
            if request.method != "GET":
                return _error(405, "UNSUPPORTED", f"{request.method} is not supported on operations; use GET")
            self.require(request, name, ("pull", "metadata_read"), "pull")
        self._streaming_allowed()
        repo = self.repo_or_404(name)
        op = repo.operations.get(op_id)
        if op is None:
            setting = self.engine.repository_operations.get(op_id)
            if setting is not None and setting.repository == name and not cancel:
                return _json(200, setting.body())
            raise _Abort(_error(404, "OPERATION_UNKNOWN", "The specified operation does not exist", with_detail=False))
        if cancel:
            self.engine.cancel(op)
        return _json(200, operation_body(op, cancel=bool(cancel)))

    # ------------------------------------------------------------------ admin (tests and demo)
    async def admin(self, request: web.Request) -> web.Response:
        path = request.path
        if path == "/_emulator/operations":
            ops = []
            for repo in self.reg.repositories.values():
                for op in repo.operations.values():
                    ops.append({"id": op.id, "repository": op.repository, "digest": op.digest, "status": op.status,
                                "progress": op.progress, "errorCode": op.error_code, "referrerDigest": op.referrer_digest,
                                "details": op.details, "startTime": op.start_time})
            return _json(200, {"registry": self.reg.name, "operations": ops})
        if path == "/_emulator/referrers":
            repo = self.reg.repositories.get(request.query.get("repository", ""))
            if repo is None:
                return _json(404, {"error": f"no repository {request.query.get('repository')!r} in registry {self.reg.name}"})
            digest = request.query.get("digest", "")
            return _json(200, {"repository": repo.name, "digest": digest,
                               "referrers": [{"digest": m.digest, "artifactType": m.artifact_type} for m in self.referrers_of(repo, digest)]})
        if path == "/_emulator/counts":
            repos = self.reg.repositories.values()
            ops = [op for r in repos for op in r.operations.values()]
            by_status: dict[str, int] = {}
            for op in ops:
                by_status[op.status] = by_status.get(op.status, 0) + 1
            return _json(200, {"registry": self.reg.name, "repositories": len(self.reg.repositories),
                               "manifests": sum(len(r.manifests) for r in repos), "tags": sum(len(r.tags) for r in repos),
                               "blobs": len(self.reg.blobs), "operations": len(ops), "operationsByStatus": by_status,
                               "streamingReferrers": sum(1 for r in repos for m in r.manifests.values()
                                                         if m.artifact_type == "application/vnd.azure.artifact.streaming.v1"),
                               "updated": utcnow_iso()})
        return _json(404, {"error": f"no admin route {path}; try /_emulator/operations, /_emulator/referrers, /_emulator/counts"})



SERVICE_KEY = web.AppKey("acr_service", RegistryService)


def create_registry_app(ctx: Context, registry: Registry) -> web.Application:
    """The registry's data plane as an aiohttp app (bind it to the registry's own port; login server 127.0.0.1:PORT)."""
    service = RegistryService(ctx, registry)
    app = web.Application(
        middlewares=[service_middleware(ctx, lambda r: classify(r.path), host=registry.name, error_style="acr")],
        client_max_size=256 * 1024**2,
    )

    async def add_common_headers(_request: web.Request, response: web.StreamResponse) -> None:
        for key, value in COMMON_HEADERS.items():
            response.headers[key] = value

    app.on_response_prepare.append(add_common_headers)
    app[SERVICE_KEY] = service
    ctx.extras.setdefault("acr_services", {})[registry.name] = service
    app.router.add_route("*", "/{tail:.*}", service.dispatch)
    return app
