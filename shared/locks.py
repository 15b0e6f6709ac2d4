"""Cross-instance mutual exclusion: a short blob lease per key in the app's own storage account (AzureWebJobsStorage)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any, Protocol

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

SAFE_RE = re.compile(r"[^A-Za-z0-9._/-]")


class LockBusy(RuntimeError):
    """Another instance held the lock for longer than we were willing to wait (retry later)."""


class KeyLock(Protocol):
    """What the push path needs of a cross-instance lock: hold a key (yielding whether it had to wait for another holder)."""

    def hold(self, key: str) -> AbstractContextManager[bool]: ...


class BlobLeaseLock:
    """`with lock.hold("registry/repo/sha256:…"):` — at most one holder across every instance sharing the storage account.

    The lease lasts `lease_seconds` (15-60, Azure's bounds), so a crashed holder blocks others for at most that long.
    Waiters poll until `wait_seconds` (default: one lease period plus a margin) and then raise LockBusy.
    """

    def __init__(self, service_client: Any, container: str = "autopilot-locks", lease_seconds: int = 30,
                 wait_seconds: float | None = None, poll_seconds: float = 0.05) -> None:
        if not 15 <= lease_seconds <= 60:
            raise ValueError("lease_seconds must be between 15 and 60 (blob lease bounds)")
        self.container = service_client.get_container_client(container)
        self.lease_seconds = lease_seconds
        self.wait_seconds = lease_seconds + 5.0 if wait_seconds is None else wait_seconds
        self.poll_seconds = poll_seconds
        self._container_ready = False
        self._guard = threading.Lock()

    @staticmethod
    def blob_name(key: str) -> str:
        return SAFE_RE.sub("-", key.replace(":", "-"))[:1024]

    def _ensure_container(self) -> None:
        with self._guard:
            if self._container_ready:
                return
            with suppress(ResourceExistsError):
                self.container.create_container()
            self._container_ready = True

    def _blob(self, key: str) -> Any:
        self._ensure_container()
        blob = self.container.get_blob_client(self.blob_name(key))
        return blob

    @contextmanager
    def hold(self, key: str) -> Iterator[bool]:
        """Yields True when the lock had to wait for another holder (the caller should re-check what that holder did)."""
        blob = self._blob(key)
        deadline = time.monotonic() + self.wait_seconds
        waited = False
        lease = None
        delay = self.poll_seconds
        while lease is None:
            try:
                lease = blob.acquire_lease(lease_duration=self.lease_seconds)
            except ResourceNotFoundError:
                try:
                    blob.upload_blob(b"", overwrite=False)
                except ResourceExistsError:
                    pass
                except HttpResponseError as exc:
                    if exc.status_code != 412:  # 412: leased by another instance that created it first
                        raise
            except HttpResponseError as exc:
                if exc.status_code != 409:  # 409 LeaseAlreadyPresent
                    raise
                waited = True
                if time.monotonic() >= deadline:
                    raise LockBusy(f"lock {key!r} is still held after {self.wait_seconds:.0f} s; retry later") from None
                time.sleep(delay)
                delay = min(delay * 1.5, 0.5)
        try:
            yield waited
        finally:
            with suppress(HttpResponseError):  # expired or lost: it lapses on its own within lease_seconds
                lease.release()
