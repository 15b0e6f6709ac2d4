"""Azure client construction: one credential per process and management clients aimed at the configured ARM endpoint."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from .settings import AzureSettings

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

_lock = threading.Lock()
_credential: TokenCredential | None = None


def credential(settings: AzureSettings | None = None) -> TokenCredential:
    """DefaultAzureCredential, created once per process (its token cache lives as long as the instance)."""
    global _credential
    with _lock:
        if _credential is None:
            from azure.identity import DefaultAzureCredential

            client_id = settings.managed_identity_client_id if settings else None
            _credential = DefaultAzureCredential(managed_identity_client_id=client_id) if client_id else DefaultAzureCredential()
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


def container_service_client(settings: AzureSettings, subscription_id: str, **kwargs: Any):
    from azure.mgmt.containerservice import ContainerServiceClient

    return ContainerServiceClient(credential(settings), subscription_id, **_mgmt_kwargs(settings, **kwargs))


def container_registry_client(settings: AzureSettings, subscription_id: str, **kwargs: Any):
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient

    return ContainerRegistryManagementClient(credential(settings), subscription_id, **_mgmt_kwargs(settings, **kwargs))


def subscription_client(settings: AzureSettings, **kwargs: Any):
    from azure.mgmt.subscription import SubscriptionClient

    return SubscriptionClient(credential(settings), **_mgmt_kwargs(settings, **kwargs))
