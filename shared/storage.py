"""The app's own storage account (locks, reports, work queues): blob and queue clients from AzureWebJobsStorage, key- or identity-based."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .settings import Env, SettingsError

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient
    from azure.storage.queue import QueueClient, QueueServiceClient

SETTING = "AzureWebJobsStorage"
_lock = threading.Lock()
_clients: dict[str, BlobServiceClient] = {}
_queue_services: dict[str, QueueServiceClient] = {}


def _client_kwargs(service: str = "blob") -> dict[str, Any]:
    """Explicit timeouts, a short retry (storage's own policy: a black-holed account fails in seconds, not minutes), a pool
    for the instance's concurrent invocations, and every attempt capped by the invocation's deadline (shared/deadline.py).
    The same for the blob and the queue client (`service`: whose SDK's retry policy class to use)."""
    from .azure_clients import STORAGE_PROFILE, client_kwargs

    kwargs = client_kwargs(STORAGE_PROFILE)
    kwargs["retry_policy"] = _deadline_retry(STORAGE_PROFILE.retry_total, service)
    return kwargs


def _deadline_retry(retry_total: int, service: str = "blob") -> Any:
    """Storage's own exponential retry (1 s, 3 s, ±1 s), its waits cut to what is left of the invocation's deadline."""
    from azure.storage.blob import ExponentialRetry as BlobRetry
    from azure.storage.queue import ExponentialRetry as QueueRetry

    from .deadline import current

    base: Any = QueueRetry if service == "queue" else BlobRetry

    class DeadlineExponentialRetry(base):
        def get_backoff_time(self, settings: dict[str, Any]) -> float:
            backoff = super().get_backoff_time(settings)
            deadline = current()
            return deadline.cap(backoff) if deadline is not None else backoff

    return DeadlineExponentialRetry(initial_backoff=1, increment_base=2, retry_total=retry_total, random_jitter_range=1)


def configured(source: Mapping[str, str] | None = None) -> bool:
    """Whether the app's storage account is configured at all (a connection string, a blob service URI or an account name)."""
    env = Env(source)
    return any(env.str(k) for k in (SETTING, f"{SETTING}__blobServiceUri", f"{SETTING}__queueServiceUri",
                                      f"{SETTING}__accountName"))


_PURPOSE = {"blob": "the app keeps its locks and reports there", "queue": "the app keeps its work queues there"}


def _service_client(service: str, cache: dict[str, Any], client_class: Any, source: Mapping[str, str] | None) -> Any:
    """One client of `service` ("blob" or "queue") per storage target per process, from the forms the Functions host reads:
    the connection string in `AzureWebJobsStorage`, or `AzureWebJobsStorage__{service}ServiceUri` / `__accountName` with
    the managed identity."""
    env = Env(source)
    conn = env.str(SETTING)
    uri = env.str(f"{SETTING}__{service}ServiceUri")
    account = env.str(f"{SETTING}__accountName")
    if conn is None and uri is None and account:
        uri = f"https://{account}.{service}.core.windows.net"
    key = conn or uri
    if key is None:
        raise SettingsError(
            SETTING,
            f"is not set: give a storage connection string, or AzureWebJobsStorage__{service}ServiceUri / __accountName "
            f"for the managed identity ({_PURPOSE[service]})",
        )
    with _lock:
        client = cache.get(key)
        if client is None:
            if conn is not None:
                endpoint = f"{service.capitalize()}Endpoint="
                if "AccountName=" not in conn and "UseDevelopmentStorage" not in conn and endpoint not in conn:
                    raise SettingsError(SETTING, f"is not a storage connection string (expected AccountName=…;AccountKey=… or {endpoint}…)")
                try:
                    client = client_class.from_connection_string(conn, **_client_kwargs(service))
                except ValueError as exc:
                    raise SettingsError(SETTING, f"is not a valid storage connection string: {exc}") from None
            else:
                from .azure_clients import credential

                client = client_class(account_url=key, credential=credential(), **_client_kwargs(service))
            cache[key] = client
        return client


def blob_service_client(source: Mapping[str, str] | None = None) -> BlobServiceClient:
    """The app's blob service client (leases, reports, sweep state): a connection string in `AzureWebJobsStorage` (Azurite,
    or an account key), or identity-based `AzureWebJobsStorage__blobServiceUri` / `__accountName`."""
    from azure.storage.blob import BlobServiceClient

    client: BlobServiceClient = _service_client("blob", _clients, BlobServiceClient, source)
    return client


def queue_service_client(source: Mapping[str, str] | None = None) -> QueueServiceClient:
    """The app's queue service client (work queues of the sweep and the audit fan-out), from the same forms the Functions
    host reads for queue triggers (identity-based: Storage Queue Data Contributor)."""
    from azure.storage.queue import QueueServiceClient

    client: QueueServiceClient = _service_client("queue", _queue_services, QueueServiceClient, source)
    return client


def queue_client(name: str, source: Mapping[str, str] | None = None) -> QueueClient:
    """A client for one queue that reads and writes messages as the Functions host does by default: base64-encoded UTF-8 text
    (host.json `extensions.queues.messageEncoding` = base64), so a queue trigger decodes what this client sends."""
    from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy

    service = queue_service_client(source)
    return service.get_queue_client(name, message_encode_policy=TextBase64EncodePolicy(),
                                    message_decode_policy=TextBase64DecodePolicy())
