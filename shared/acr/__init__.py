"""ACR data-plane access for the push path: a PipelineClient with cached, thread-safe token exchange (no azure-containerregistry)."""

from .auth import PROCESS_TOKEN_CACHE, AuthError, TokenCache
from .client import AcrClient, AcrError, ManifestDoc, Operation, client_for, reset_clients

__all__ = [
    "PROCESS_TOKEN_CACHE",
    "AcrClient",
    "AcrError",
    "AuthError",
    "ManifestDoc",
    "Operation",
    "TokenCache",
    "client_for",
    "reset_clients",
]
