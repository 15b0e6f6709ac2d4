"""The registry's token service (/oauth2/exchange, /oauth2/token, docker's GET token) and what a request's credentials grant."""

from __future__ import annotations

import base64
import hashlib
import time
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ...model import ACR_ROLE_PERMISSIONS, LEGACY_ACR_ROLES
from ...tokens import bearer
from .common import (
    AAD_AUDIENCES,
    ALL_ACTIONS,
    ARM_AUDIENCES,
    NULL_USER,
    PERMISSION_ACTIONS,
    SCOPE_MAP_ACTIONS,
    Grant,
    error_reply,
    parse_scopes,
    reply,
)

if TYPE_CHECKING:
    from .service import RegistryService


def mint_access(svc: RegistryService, subject: str, access: list[dict[str, Any]], cap_exp: int | None = None) -> str:
    ttl = int(svc.world.settings.acr_token_ttl_seconds)
    if cap_exp is not None:
        ttl = max(1, min(ttl, cap_exp - int(time.time())))
    return svc.ctx.tokens.mint(
        {
            "sub": subject, "iss": "Azure Container Registry", "aud": svc.login, "version": "1.0",
            "rid": hashlib.md5(svc.reg.name.encode()).hexdigest(),
            "access": access, "roles": [], "grant_type": "access_token",
        },
        ttl,
    )


def mint_refresh(svc: RegistryService, subject: str, permissions: list[str]) -> str:
    ttl = max(11700, int(svc.world.settings.acr_token_ttl_seconds))
    return svc.ctx.tokens.mint(
        {
            "sub": subject, "iss": "Azure Container Registry", "aud": svc.login, "version": "1.0",
            "rid": hashlib.md5(svc.reg.name.encode()).hexdigest(),
            "grant_type": "refresh_token", "tenant": svc.world.tenant_id,
            "permissions": {"actions": permissions}, "roles": [],
        },
        ttl,
    )


def acr_claims(svc: RegistryService, token: str | None, grant_type: str) -> dict[str, Any] | None:
    claims = svc.ctx.tokens.verify(token) if token else None
    if not claims or claims.get("aud") != svc.login or claims.get("iss") != "Azure Container Registry":
        return None
    return claims if claims.get("grant_type") == grant_type else None


def password_identity(svc: RegistryService, username: str, password: str) -> tuple[str, Callable[[str, str], bool], int | None] | None:
    """(subject, allowed(repo, action), cap on expiry) for username/password credentials, or None."""
    if username == NULL_USER:
        refresh = acr_claims(svc, password, "refresh_token")
        if refresh is not None:
            perms = set(refresh.get("permissions", {}).get("actions", []))
            return refresh.get("sub", ""), lambda _r, a: any(a in PERMISSION_ACTIONS.get(p, ()) for p in perms), None
        access = acr_claims(svc, password, "access_token")
        if access is not None:
            held = {(e.get("name"), a) for e in access.get("access", []) for a in e.get("actions", [])}
            return access.get("sub", ""), lambda r, a: (r, a) in held or (r, "*") in held, int(access["exp"])
        return None
    if svc.reg.admin_user_enabled and svc.reg.admin_password and username == svc.reg.name and password == svc.reg.admin_password:
        return username, lambda _r, _a: True, None
    for tok in svc.reg.tokens:
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


def grant_from(svc: RegistryService, scopes: list[tuple[str, str, list[str]]], allowed: Callable[[str, str], bool],
                catalog_ok: bool) -> list[dict[str, Any]]:
    access = []
    for rtype, name, actions in scopes:
        if rtype == "repository":
            granted = [a for a in actions if (a == "*" and allowed(name, "pull")) or allowed(name, a)]
            access.append({"type": "repository", "name": name, "actions": granted})
        elif rtype == "registry" and name == "catalog":
            access.append({"type": "registry", "name": "catalog", "actions": ["*"] if catalog_ok else []})
    return access


def request_grant(svc: RegistryService, request: web.Request) -> Grant | None:
    """What the request's Authorization header allows on this registry; None without valid credentials."""
    header = request.headers.get("Authorization", "")
    token = bearer(header)
    if token:
        claims = acr_claims(svc, token, "access_token")
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
        ident = password_identity(svc, user, password)
        if ident is None:
            return None
        _sub, allowed, _cap = ident

        class _BasicGrant(Grant):
            def allows(self, repo: str, actions: tuple[str, ...]) -> bool:
                return any(allowed(repo, a) for a in actions)

        return _BasicGrant(catalog=True)
    return None


async def oauth2(svc: RegistryService, request: web.Request, op: str) -> web.Response:
    if request.method == "GET" and op == "token":
        return docker_token(svc, request)
    if request.method != "POST":
        return error_reply(405, "UNSUPPORTED", f"{request.method} is not supported on /oauth2/{op}; use POST with a form body")
    try:
        raw = (await request.read()).decode()
    except UnicodeDecodeError:
        return error_reply(400, "UNSUPPORTED", "the form body is not UTF-8")
    form = urllib.parse.parse_qs(raw, keep_blank_values=True)
    get = lambda k: (form.get(k) or [""])[0]  # noqa: E731
    service = get("service")
    if service != svc.login:
        return svc.unauthorized(message=f"service {service!r} does not match this registry; expected service={svc.login}")
    grant_type = get("grant_type")
    if op == "exchange":
        return exchange(svc, grant_type, get("access_token"), get("tenant"))
    scopes = parse_scopes(form.get("scope", []))
    if grant_type == "refresh_token":
        refresh = acr_claims(svc, get("refresh_token"), "refresh_token")
        if refresh is None:
            return svc.unauthorized(message="the refresh token is invalid or expired; get a new one from /oauth2/exchange")
        perms = set(refresh.get("permissions", {}).get("actions", []))
        allowed = lambda _r, a: any(a in PERMISSION_ACTIONS.get(p, ()) for p in perms)  # noqa: E731
        # ABAC-enabled registries list the catalog only for "Container Registry Repository Catalog Lister"
        abac = svc.reg.role_assignment_mode == "AbacRepositoryPermissions"
        access = grant_from(svc, scopes, allowed, catalog_ok=("catalog/read" if abac else "metadata/read") in perms)
        return reply(200, {"access_token": mint_access(svc, refresh.get("sub", ""), access)})
    if grant_type == "password":
        ident = password_identity(svc, get("username"), get("password"))
        if ident is None:
            return svc.unauthorized(message="the username or password is incorrect (or the token is invalid or expired)")
        sub, allowed, cap = ident
        access = grant_from(svc, scopes, allowed, catalog_ok=cap is None)
        return reply(200, {"access_token": mint_access(svc, sub, access, cap_exp=cap)})
    return svc.unauthorized(message=f"grant_type {grant_type!r} is not supported here; use refresh_token or password")


def exchange(svc: RegistryService, grant_type: str, aad_token: str, tenant: str) -> web.Response:
    if grant_type not in ("access_token", "access_token_refresh_token"):
        return svc.unauthorized(message=f"grant_type {grant_type!r} is not supported; use access_token")
    claims = svc.ctx.tokens.verify(aad_token) if aad_token else None
    if claims is None or not str(claims.get("iss", "")).startswith("https://sts.windows.net/"):
        return svc.unauthorized(message="the AAD access token is missing, invalid or expired")
    aud = str(claims.get("aud", "")).rstrip("/")
    if aud not in AAD_AUDIENCES:
        return svc.unauthorized(
            message=f"the AAD access token audience {aud!r} is not accepted; request a token for "
                    "https://management.azure.com or https://containerregistry.azure.net")
    if not svc.reg.aad_auth_as_arm and aud in ARM_AUDIENCES:
        return svc.unauthorized(
            message="ARM audience tokens are disabled for this registry (azureADAuthenticationAsArmPolicy is disabled); "
                    "request a token for https://containerregistry.azure.net")
    if tenant and tenant != claims.get("tid"):
        return svc.unauthorized(message=f"tenant {tenant!r} does not match the token's tenant")
    subject = str(claims.get("upn") or claims.get("oid") or claims.get("sub") or "")
    roles = svc.reg.identity_roles
    if roles is None:
        permissions = list(ALL_ACTIONS)
    else:  # the identity's role assignments on the registry; none at all still exchanges, then grants nothing
        if svc.reg.role_assignment_mode == "AbacRepositoryPermissions":
            roles = [r for r in roles if r not in LEGACY_ACR_ROLES]
        permissions = [a for a in ALL_ACTIONS if any(a in ACR_ROLE_PERMISSIONS[r] for r in roles)]
    return reply(200, {"refresh_token": mint_refresh(svc, subject, permissions)})


def docker_token(svc: RegistryService, request: web.Request) -> web.Response:
    if request.query.get("service") != svc.login:
        return svc.unauthorized(message=f"service {request.query.get('service')!r} does not match; expected service={svc.login}")
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("basic "):
        return svc.unauthorized(message="anonymous pull is not enabled on this registry; send basic credentials")
    try:
        user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return svc.unauthorized(message="the basic credentials are malformed")
    ident = password_identity(svc, user, password)
    if ident is None:
        return svc.unauthorized(message="the username or password is incorrect")
    sub, allowed, cap = ident
    access = grant_from(svc, parse_scopes(request.query.getall("scope", [])), allowed, catalog_ok=cap is None)
    return reply(200, {"access_token": mint_access(svc, sub, access, cap_exp=cap)})
