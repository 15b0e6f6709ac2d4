"""The emulated ACR token service: challenges, AAD exchange, scoped access tokens, password grants, scope enforcement."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
import requests

from emulator import Emulator

SUB = "00000000-0000-4000-8000-0000000000b1"
AUTH_MESSAGE = "authentication required, visit https://aka.ms/acr/authorization for more information."


def scenario(**settings: Any) -> dict[str, Any]:
    """A Premium registry `reg` with `microsoft:azure-cli`, admin user and two scope-map tokens."""
    return {
        "settings": {"conversion_seconds": 0.3, **settings},
        "subscriptions": [{
            "id": SUB,
            "registries": [{
                "name": "reg",
                "admin_user": {"enabled": True, "password": "admin-secret"},
                "tokens": [
                    {"username": "reader", "password": "r-secret", "actions": ["repositories/microsoft/content/read"]},
                    {"username": "teamwriter", "password": "w-secret",
                     "actions": ["repositories/team/*/content/read", "repositories/team/*/content/write"]},
                ],
                "repositories": [
                    {"name": "microsoft", "images": [{"tags": ["azure-cli"], "seed": "cli"}]},
                    {"name": "team/app", "images": [{"tags": ["v1"], "seed": "app"}]},
                ],
            }],
        }],
    }


def claims_of(token: str) -> dict[str, Any]:
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


class RegistryHTTP:
    """Raw HTTP against one emulated registry, getting tokens the way the az CLI does (exchange, then token)."""

    def __init__(self, emu: Emulator, name: str = "reg") -> None:
        self.emu = emu
        self.url = emu.endpoints["registries"][name]
        self.login = self.url.removeprefix("https://")
        self.session = requests.Session()
        self.session.verify = emu.endpoints["ca_bundle"]

    def aad_token(self, resource: str = "https://management.azure.com") -> str:
        resp = self.session.get(
            self.emu.env["IDENTITY_ENDPOINT"],
            params={"api-version": "2019-08-01", "resource": resource},
            headers={"X-IDENTITY-HEADER": self.emu.env["IDENTITY_HEADER"]},
        )
        resp.raise_for_status()
        return resp.json()["access_token"]

    def exchange(self, aad_token: str | None = None, **form: str) -> requests.Response:
        data = {"grant_type": "access_token", "service": self.login, "tenant": self.emu.world.tenant_id,
                "access_token": aad_token or self.aad_token(), **form}
        return self.session.post(f"{self.url}/oauth2/exchange", data=data)

    def refresh_token(self) -> str:
        resp = self.exchange()
        assert resp.status_code == 200, resp.text
        return resp.json()["refresh_token"]

    def token(self, **form: str) -> requests.Response:
        return self.session.post(f"{self.url}/oauth2/token", data={"service": self.login, **form})

    def access_token(self, scope: str) -> str:
        resp = self.token(grant_type="refresh_token", scope=scope, refresh_token=self.refresh_token())
        assert resp.status_code == 200, resp.text
        return resp.json()["access_token"]

    def call(self, method: str, path: str, scope: str | None = None, token: str | None = None, **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if scope is not None:
            token = self.access_token(scope)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.session.request(method, f"{self.url}{path}", headers=headers, **kwargs)


@pytest.fixture
def reg(make_emulator: Callable[..., Emulator]) -> RegistryHTTP:
    return RegistryHTTP(make_emulator(scenario()))


def test_v2_without_a_token_is_the_recorded_challenge(reg: RegistryHTTP) -> None:
    resp = reg.call("GET", "/v2/")
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == f'Bearer realm="https://{reg.login}/oauth2/token",service="{reg.login}"'
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    assert resp.json() == {"errors": [{"code": "UNAUTHORIZED", "message": AUTH_MESSAGE, "detail": None}]}
    assert resp.headers["Docker-Distribution-Api-Version"] == "registry/2.0"


@pytest.mark.parametrize("audience", ["https://management.azure.com", "https://containerregistry.azure.net"])
def test_exchange_accepts_arm_and_registry_audiences_and_tokens_verify(reg: RegistryHTTP, audience: str) -> None:
    resp = reg.exchange(reg.aad_token(audience))
    assert resp.status_code == 200
    refresh = resp.json()["refresh_token"]
    assert set(resp.json()) == {"refresh_token"}
    rc = reg.emu.ctx.tokens.verify(refresh)
    assert rc is not None and rc["grant_type"] == "refresh_token" and rc["aud"] == reg.login
    assert rc["exp"] - rc["iat"] >= 3 * 3600, "refresh tokens are long-lived"
    resp = reg.token(grant_type="refresh_token", scope="repository:microsoft:pull", refresh_token=refresh)
    access = resp.json()["access_token"]
    claims = reg.emu.ctx.tokens.verify(access)
    assert claims is not None and access in reg.emu.ctx.tokens.issued
    assert claims["access"] == [{"type": "repository", "name": "microsoft", "actions": ["pull"]}]
    assert claims["exp"] - claims["iat"] == reg.emu.world.settings.acr_token_ttl_seconds
    assert reg.call("GET", "/v2/", token=access).status_code == 200


@pytest.mark.parametrize(
    ("form", "fragment"),
    [
        ({"grant_type": "password"}, "grant_type 'password' is not supported"),
        ({"service": "other.azurecr.io"}, "does not match this registry"),
        ({"tenant": "11111111-0000-0000-0000-000000000000"}, "does not match the token's tenant"),
        ({"access_token": "not-a-token"}, "missing, invalid or expired"),
    ],
)
def test_exchange_refuses_bad_grant_service_tenant_and_token(reg: RegistryHTTP, form: dict[str, str], fragment: str) -> None:
    resp = reg.exchange(**form) if "access_token" not in form else reg.exchange(form["access_token"])
    assert resp.status_code == 401
    err = resp.json()["errors"][0]
    assert err["code"] == "UNAUTHORIZED" and fragment in err["message"]


def test_exchange_refuses_wrong_audience_and_expired_tokens(reg: RegistryHTTP) -> None:
    wrong = reg.exchange(reg.aad_token("https://storage.azure.com"))
    assert wrong.status_code == 401 and "audience" in wrong.json()["errors"][0]["message"]
    expired = reg.emu.ctx.tokens.mint({"aud": "https://management.azure.com/", "iss": f"https://sts.windows.net/{reg.emu.world.tenant_id}/",
                                       "tid": reg.emu.world.tenant_id}, -60)
    assert reg.exchange(expired).status_code == 401
    stale_refresh = reg.emu.ctx.tokens.mint({"aud": reg.login, "iss": "Azure Container Registry", "grant_type": "refresh_token",
                                             "permissions": {"actions": ["read"]}}, -60)
    resp = reg.token(grant_type="refresh_token", scope="repository:microsoft:pull", refresh_token=stale_refresh)
    assert resp.status_code == 401 and resp.json()["errors"][0]["code"] == "UNAUTHORIZED"


def test_token_with_each_recorded_scope_grants_exactly_that(reg: RegistryHTTP) -> None:
    refresh = reg.refresh_token()
    for scope, actions in [("repository:microsoft:pull", ["pull"]), ("repository:microsoft:pull,push", ["pull", "push"]),
                           ("repository:microsoft:metadata_read", ["metadata_read"])]:
        resp = reg.token(grant_type="refresh_token", scope=scope, refresh_token=refresh)
        assert resp.status_code == 200 and set(resp.json()) == {"access_token"}
        assert claims_of(resp.json()["access_token"])["access"] == [{"type": "repository", "name": "microsoft", "actions": actions}]
    both = reg.session.post(f"{reg.url}/oauth2/token", data=[("service", reg.login), ("grant_type", "refresh_token"),
                                                             ("refresh_token", refresh), ("scope", "repository:microsoft:pull"),
                                                             ("scope", "registry:catalog:*")])
    assert claims_of(both.json()["access_token"])["access"] == [
        {"type": "repository", "name": "microsoft", "actions": ["pull"]}, {"type": "registry", "name": "catalog", "actions": ["*"]}]


def test_wrong_scope_is_401_with_a_challenge_naming_the_scope(reg: RegistryHTTP) -> None:
    pull = reg.access_token("repository:microsoft:pull")
    resp = reg.call("POST", "/acr/v1/microsoft/_streaming", token=pull,
                    json={"convertPushedImages": True, "conversionFormat": "overlaybd", "conversionVersion": "v1"})
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].endswith(',scope="repository:microsoft:pull,push"')
    err = resp.json()["errors"][0]
    assert err["code"] == "UNAUTHORIZED" and err["message"] == AUTH_MESSAGE
    assert {"Type": "repository", "Name": "microsoft", "Action": "push"} in err["detail"]
    other_repo = reg.call("GET", "/v2/team/app/tags/list", token=pull)
    assert other_repo.status_code == 401 and 'scope="repository:team/app:pull"' in other_repo.headers["WWW-Authenticate"]
    missing = reg.call("GET", "/acr/v1/microsoft/_tags/azure-cli")
    assert missing.status_code == 401 and 'scope="repository:microsoft:metadata_read"' in missing.headers["WWW-Authenticate"]
    assert reg.call("GET", "/acr/v1/microsoft/_tags/azure-cli", token=pull).status_code == 401, "pull is not metadata_read"
    assert reg.call("GET", "/v2/", headers={"Authorization": "Bearer " + reg.aad_token()}).status_code == 401, "AAD tokens are not ACR tokens"


def test_password_grant_with_the_null_user_and_a_refresh_or_access_token(reg: RegistryHTTP) -> None:
    refresh = reg.refresh_token()
    resp = reg.token(grant_type="password", username="00000000-0000-0000-0000-000000000000", password=refresh,
                     scope="repository:microsoft:pull")
    assert resp.status_code == 200
    # recorded exchange 45: the password is the previous pull,push ACCESS token; the new token keeps its expiry
    pushpull = reg.access_token("repository:microsoft:pull,push")
    resp = reg.token(grant_type="password", username="00000000-0000-0000-0000-000000000000", password=pushpull,
                     scope="repository:microsoft:pull,delete")
    new = claims_of(resp.json()["access_token"])
    assert new["access"] == [{"type": "repository", "name": "microsoft", "actions": ["pull"]}], "never more than the source token"
    assert new["exp"] <= claims_of(pushpull)["exp"]
    bad = reg.token(grant_type="password", username="00000000-0000-0000-0000-000000000000", password="nope", scope="repository:microsoft:pull")
    assert bad.status_code == 401


def test_admin_user_and_scope_map_tokens_limit_the_grant(reg: RegistryHTTP) -> None:
    admin = reg.token(grant_type="password", username="reg", password="admin-secret", scope="repository:microsoft:pull,push,delete")
    assert claims_of(admin.json()["access_token"])["access"][0]["actions"] == ["pull", "push", "delete"]
    assert reg.token(grant_type="password", username="reg", password="wrong", scope="repository:microsoft:pull").status_code == 401
    reader = reg.token(grant_type="password", username="reader", password="r-secret",
                       scope="repository:microsoft:pull,push").json()["access_token"]
    assert claims_of(reader)["access"] == [{"type": "repository", "name": "microsoft", "actions": ["pull"]}]
    writer = reg.token(grant_type="password", username="teamwriter", password="w-secret",
                       scope="repository:team/app:pull,push").json()["access_token"]
    assert claims_of(writer)["access"][0]["actions"] == ["pull", "push"]
    outside = reg.token(grant_type="password", username="teamwriter", password="w-secret", scope="repository:microsoft:pull")
    assert claims_of(outside.json()["access_token"])["access"][0]["actions"] == []


def test_docker_style_get_token_with_basic_credentials(reg: RegistryHTTP) -> None:
    resp = reg.session.get(f"{reg.url}/oauth2/token", params={"service": reg.login, "scope": "repository:microsoft:pull"},
                           auth=("reader", "r-secret"))
    assert resp.status_code == 200
    token = resp.json()["access_token"]
    assert reg.call("GET", "/v2/microsoft/tags/list", token=token).json()["tags"] == ["azure-cli"]
    anonymous = reg.session.get(f"{reg.url}/oauth2/token", params={"service": reg.login, "scope": "repository:microsoft:pull"})
    assert anonymous.status_code == 401
    basic = reg.session.get(f"{reg.url}/v2/microsoft/tags/list", auth=("reader", "r-secret"))
    assert basic.status_code == 200, "ACR also takes basic credentials on data-plane calls"


def test_catalog_needs_the_catalog_scope(reg: RegistryHTTP) -> None:
    no = reg.call("GET", "/v2/_catalog", scope="repository:microsoft:pull")
    assert no.status_code == 401 and 'scope="registry:catalog:*"' in no.headers["WWW-Authenticate"]
    yes = reg.call("GET", "/acr/v1/_catalog", scope="registry:catalog:*")
    assert yes.json() == {"repositories": ["microsoft", "team/app"]}


def test_expired_or_foreign_access_tokens_get_the_challenge(reg: RegistryHTTP, make_emulator: Callable[..., Emulator]) -> None:
    claims = {"aud": reg.login, "iss": "Azure Container Registry", "grant_type": "access_token",
              "access": [{"type": "repository", "name": "microsoft", "actions": ["pull"]}]}
    expired = reg.emu.ctx.tokens.mint(claims, -5)
    resp = reg.call("GET", "/v2/microsoft/tags/list", token=expired)
    assert resp.status_code == 401 and 'scope="repository:microsoft:pull"' in resp.headers["WWW-Authenticate"]
    assert reg.call("GET", "/v2/microsoft/tags/list", token=reg.emu.ctx.tokens.mint(claims, 60)).status_code == 200
    other = make_emulator(scenario(), apply_env=False)
    foreign = other.ctx.tokens.mint(claims, 60)  # same claims, another emulator's key
    assert reg.call("GET", "/v2/microsoft/tags/list", token=foreign).status_code == 401
    refresh_as_access = reg.refresh_token()
    assert reg.call("GET", "/v2/", token=refresh_as_access).status_code == 401, "a refresh token is not an access token"


@pytest.mark.parametrize(("mode", "roles", "pull", "push", "catalog"), [
    ("LegacyRegistryPermissions", ["AcrPull"], 200, 401, 200),
    ("LegacyRegistryPermissions", ["AcrPush"], 200, 202, 200),
    ("LegacyRegistryPermissions", [], 401, 401, 401),
    # ABAC-enabled registries do not honour the legacy Acr* roles; the Repository roles grant instead
    ("AbacRepositoryPermissions", ["AcrPush"], 401, 401, 401),
    ("AbacRepositoryPermissions", ["Owner"], 401, 401, 401),  # broad roles: control plane only
    ("AbacRepositoryPermissions", ["Container Registry Repository Writer"], 200, 202, 401),
    ("AbacRepositoryPermissions", ["Container Registry Repository Reader"], 200, 401, 401),  # catalog needs its own role
    ("AbacRepositoryPermissions", ["Container Registry Repository Reader", "Container Registry Repository Catalog Lister"], 200, 401, 200),
])
def test_identity_roles_limit_what_the_exchange_grants(make_emulator: Callable[..., Emulator], mode: str, roles: list[str],
                                                       pull: int, push: int, catalog: int) -> None:
    raw = scenario()
    raw["subscriptions"][0]["registries"][0]["identity_roles"] = roles
    raw["subscriptions"][0]["registries"][0]["role_assignment_mode"] = mode
    reg = RegistryHTTP(make_emulator(raw))
    assert reg.exchange().status_code == 200, "the exchange succeeds; the grant is what RBAC allows"
    assert reg.call("GET", "/v2/microsoft/tags/list", scope="repository:microsoft:pull").status_code == pull
    digest = reg.call("HEAD", "/v2/microsoft/manifests/azure-cli", scope="repository:microsoft:pull").headers.get("Docker-Content-Digest")
    body = {"conversionFormat": "overlaybd", "conversionVersion": "v1"}
    resp = reg.call("POST", f"/acr/v1/microsoft/_streaming/{digest or 'sha256:' + '0' * 64}", scope="repository:microsoft:pull,push", json=body)
    assert resp.status_code == push
    if push == 401:
        assert resp.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert reg.call("GET", "/v2/_catalog", scope="registry:catalog:*").status_code == catalog


def test_unknown_identity_roles_are_a_scenario_error() -> None:
    from emulator.scenario import ScenarioError, load_scenario

    raw = scenario()
    raw["subscriptions"][0]["registries"][0]["identity_roles"] = ["AcrPusher"]
    with pytest.raises(ScenarioError, match=r"identity_roles: \['AcrPusher'\] must be a list of"):
        load_scenario(raw)


def test_a_registry_can_refuse_arm_audience_tokens(make_emulator: Callable[..., Emulator]) -> None:
    """azureADAuthenticationAsArmPolicy disabled (Azure Policy can enforce it): only ACR-audience AAD tokens exchange."""
    raw = scenario()
    raw["subscriptions"][0]["registries"][0]["aad_auth_as_arm"] = False
    reg = RegistryHTTP(make_emulator(raw))
    refused = reg.exchange(reg.aad_token("https://management.azure.com"))
    assert refused.status_code == 401 and "azureADAuthenticationAsArmPolicy" in refused.text
    assert reg.exchange(reg.aad_token("https://containerregistry.azure.net")).status_code == 200
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient

    from shared.azure_clients import credential

    arm = ContainerRegistryManagementClient(credential(), SUB, base_url=reg.emu.env["AUTOPILOT_ARM_ENDPOINT"])
    policy = arm.registries.get("rg-registry", "reg").policies.azure_ad_authentication_as_arm_policy
    assert policy.status == "disabled"
