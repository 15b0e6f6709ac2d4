"""Cross-instance mutual exclusion: a short, renewed blob lease per key in the app's own storage account (AzureWebJobsStorage)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any, Protocol

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError, ServiceRequestError

from .deadline import current as current_deadline

SAFE_RE = re.compile(r"[^A-Za-z0-9._/-]")


class LockBusy(RuntimeError):
    """Another instance held the lock for longer than we were willing to wait (retry later)."""


class LockLost(LockBusy):
    """The lease lapsed or could not be renewed while we held it: another instance may hold it now (retry later)."""


class Held(Protocol):
    """A lock being held: whether acquiring it waited for another holder, and a check that it is still ours."""

    waited: bool

    def ensure(self) -> None:
        """Raise LockLost unless the lock is certainly still held (call right before an action only the holder may take)."""


class KeyLock(Protocol):
    """What the push path needs of a cross-instance lock: hold a key for a block of work."""

    def hold(self, key: str) -> AbstractContextManager[Held]: ...


class _Lease:
    """One held blob lease, renewed by a background thread every third of its duration until released."""

    def __init__(self, lease: Any, key: str, seconds: int, waited: bool) -> None:
        self.lease = lease
        self.key = key
        self.seconds = seconds
        self.waited = waited
        self.renewed_at = time.monotonic()
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease-renew-{self.key[-12:]}", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                self.lease.renew()
                self.renewed_at = time.monotonic()
            except Exception as exc:  # storage unreachable or the lease lost: ensure() refuses from now on
                self.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                return

    def ensure(self) -> None:
        left = self.seconds - (time.monotonic() - self.renewed_at)
        if self.error is not None or left < RENEW_MARGIN_SECONDS:
            why = f"renewal failed ({self.error})" if self.error else f"only {max(left, 0):.1f} s of the lease left"
            raise LockLost(f"lock {self.key!r} may no longer be ours: {why}; retry later")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


RENEW_MARGIN_SECONDS = 5.0  # ensure() refuses when less than this is left of the lease since its last renewal


class BlobLeaseLock:
    """`with lock.hold("registry/repo/sha256:…") as held:` — at most one holder across every instance sharing the storage
    account. `held.ensure()` right before the guarded action raises LockLost if the lease may have lapsed.

    The lease lasts `lease_seconds` (15-60, Azure's bounds) and is renewed every third of that while held, so a slow
    registry call cannot outlive it; a crashed holder blocks others for at most that long. Waiters poll until
    `wait_seconds` (default: one lease period plus a margin) or the invocation's deadline, then raise LockBusy.
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
        return self.container.get_blob_client(self.blob_name(key))

    def _acquire(self, blob: Any, key: str) -> tuple[Any, bool]:
        wait = self.wait_seconds
        bound = current_deadline()
        if bound is not None:
            wait = bound.cap(wait)
        deadline = time.monotonic() + wait
        waited = False
        delay = self.poll_seconds
        while True:
            try:
                return blob.acquire_lease(lease_duration=self.lease_seconds), waited
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
                if time.monotonic() + delay >= deadline:
                    raise LockBusy(f"lock {key!r} is still held after {wait:.0f} s; retry later") from None
                time.sleep(delay)
                delay = min(delay * 1.5, 0.5)

    @contextmanager
    def hold(self, key: str) -> Iterator[Held]:
        """Yields the held lease (`.waited`: True when it had to wait for another holder, who may have done the work)."""
        blob = self._blob(key)
        lease, waited = self._acquire(blob, key)
        held = _Lease(lease, key, self.lease_seconds, waited)
        held.start()
        try:
            yield held
        finally:
            held.stop()
            with suppress(HttpResponseError, ServiceRequestError):  # expired or lost: it lapses on its own within lease_seconds
                lease.release()
