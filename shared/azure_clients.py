"""Azure client construction: one credential per process, management clients aimed at the configured ARM endpoint, and
how their answers read (errors, SDK enums)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from .settings import AzureSettings

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient
    from azure.mgmt.containerservice import ContainerServiceClient
    from azure.mgmt.subscription import SubscriptionClient

_lock = threading.Lock()
_credential: TokenCredential | None = None


def credential() -> TokenCredential:
    """DefaultAzureCredential, created once per process (its token cache lives as long as the instance; a user-assigned
    identity is chosen by AZURE_CLIENT_ID, which DefaultAzureCredential reads itself)."""
    global _credential
    with _lock:
        if _credential is None:
            from azure.identity import DefaultAzureCredential

            _credential = DefaultAzureCredential()
        return _credential


def reset_credential() -> None:
    """Forget the process credential (tests that switch emulators between cases)."""
    global _credential
    with _lock:
        _credential = None


def _mgmt_kwargs(settings: AzureSettings, **kwargs: Any) -> dict[str, Any]:
    return {
        "base_url": settings.arm_endpoint,
        "credential_scopes": [f"{settings.arm_audience}/.default"],
        **kwargs,
    }


def container_service_client(settings: AzureSettings, subscription_id: str, **kwargs: Any) -> ContainerServiceClient:
    from azure.mgmt.containerservice import ContainerServiceClient

    return ContainerServiceClient(credential(), subscription_id, **_mgmt_kwargs(settings, **kwargs))


def container_registry_client(settings: AzureSettings, subscription_id: str, **kwargs: Any) -> ContainerRegistryManagementClient:
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient

    return ContainerRegistryManagementClient(credential(), subscription_id, **_mgmt_kwargs(settings, **kwargs))


def subscription_client(settings: AzureSettings, **kwargs: Any) -> SubscriptionClient:
    from azure.mgmt.subscription import SubscriptionClient

    return SubscriptionClient(credential(), **_mgmt_kwargs(settings, **kwargs))


def describe_error(exc: BaseException) -> str:
    """A short, readable account of an SDK error: status, ARM error code and message (or that authentication failed)."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

    if is_credential_failure(exc):
        lines = str(getattr(exc, "message", None) or exc).splitlines()
        return (f"authentication failed: {lines[0] if lines else type(exc).__name__} "
                "(check the managed identity, AZURE_CLIENT_ID or `az login`)")
    if isinstance(exc, HttpResponseError):
        code = getattr(getattr(exc, "error", None), "code", None)
        message = getattr(getattr(exc, "error", None), "message", None) or exc.reason or str(exc).splitlines()[0]
        return f"{exc.status_code} {code + ': ' if code else ''}{message}"
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return f"connection failed: {str(exc).splitlines()[0]}"
    return f"{type(exc).__name__}: {exc}"


def is_credential_failure(exc: BaseException) -> bool:
    """The credential could not get a token (no HTTP answer from the service at all): not a verdict about any resource."""
    from azure.core.exceptions import ClientAuthenticationError

    return isinstance(exc, ClientAuthenticationError) and exc.status_code is None


def wire_text(value: Any) -> str | None:
    """SDK enums (str subclasses whose str() is `OSSKU.UBUNTU`) and plain strings alike, as the wire value."""
    if value is None:
        return None
    return str(getattr(value, "value", value))
