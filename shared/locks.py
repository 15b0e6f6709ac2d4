"""Cross-instance mutual exclusion: a short, renewed blob lease per key in the app's own storage account (AzureWebJobsStorage)."""

from __future__ import annotations

import hashlib
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
    """One held blob lease; `_Renewer` renews it every third of its duration until it is released."""

    def __init__(self, lease: Any, key: str, seconds: int, waited: bool) -> None:
        self.lease = lease
        self.key = key
        self.seconds = seconds
        self.waited = waited
        self.renewed_at = time.monotonic()
        self.error: str | None = None

    def renew(self) -> None:
        try:
            self.lease.renew()
            self.renewed_at = time.monotonic()
        except Exception as exc:  # storage unreachable or the lease lost: ensure() refuses from now on
            self.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.renewed_at)

    def ensure(self) -> None:
        left = self.left()
        if self.error is not None or left < RENEW_MARGIN_SECONDS:
            why = f"renewal failed ({self.error})" if self.error else f"only {max(left, 0):.1f} s of the lease left"
            raise LockLost(f"lock {self.key!r} may no longer be ours: {why}; retry later")


class _Slot:
    """One lease blob's in-process queue: its lock, how many wait for it, and a lease handed on by the last holder."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiters = 0
        self.handed: _Lease | None = None



class _Renewer:
    """One daemon thread per lock object renewing every held lease a third of the way through it (most holds end long
    before: a push holds its lease for two registry calls), so holding costs no thread start per event."""

    def __init__(self) -> None:
        self._held: set[_Lease] = set()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, lease: _Lease) -> None:
        with self._cond:
            self._held.add(lease)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="lease-renewer", daemon=True)
                self._thread.start()
            # no notify: every lease lasts at least 15 s and the thread wakes at least every 5 s, so it is never late

    def remove(self, lease: _Lease) -> None:
        with self._cond:
            self._held.discard(lease)

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [h for h in self._held if h.error is None and now - h.renewed_at >= h.seconds / 3]
                if not due:
                    nxt = min((h.renewed_at + h.seconds / 3 for h in self._held if h.error is None), default=now + IDLE_WAKE_SECONDS)
                    self._cond.wait(max(0.05, nxt - now))
                    continue
            for held in due:  # outside the condition: a slow storage call must not block add()/remove()
                held.renew()


IDLE_WAKE_SECONDS = 5.0  # the renewer's longest sleep: a third of the shortest lease Azure allows
RENEW_MARGIN_SECONDS = 5.0  # ensure() refuses when less than this is left of the lease since its last renewal


class BlobLeaseLock:
    """`with lock.hold("registry/repo/sha256:…") as held:` — at most one holder across every instance sharing the storage
    account. `held.ensure()` right before the guarded action raises LockLost if the lease may have lapsed.

    The lease lasts `lease_seconds` (15-60, Azure's bounds) and is renewed every third of that while held, so a slow
    registry call cannot outlive it; a crashed holder blocks others for at most that long. Waiters poll until
    `wait_seconds` (default: one lease period plus a margin) or the invocation's deadline, then raise LockBusy.
    """

    def __init__(self, service_client: Any, container: str = "autopilot-locks", lease_seconds: int = 30,
                 wait_seconds: float | None = None, poll_seconds: float = 0.05, shards: int = 256) -> None:
        if not 15 <= lease_seconds <= 60:
            raise ValueError("lease_seconds must be between 15 and 60 (blob lease bounds)")
        self.container = service_client.get_container_client(container)
        self.lease_seconds = lease_seconds
        self.wait_seconds = lease_seconds + 5.0 if wait_seconds is None else wait_seconds
        self.poll_seconds = poll_seconds
        self.shards = shards
        self._container_ready = False
        self._guard = threading.Lock()
        self._renewer = _Renewer()
        self._blobs: dict[str, Any] = {}
        self._slots: dict[str, _Slot] = {}  # holders in this process queue here, not by polling the lease

    def blob_name(self, key: str) -> str:
        """The lease blob guarding `key`: one of `shards` per scope (the key's first path segment, e.g. the registry), so
        blobs exist after a warm-up and holding costs two requests (acquire, release) instead of creating a blob per key.
        Two keys sharing a shard only wait for each other; exclusion per key is unchanged."""
        scope = SAFE_RE.sub("-", key.split("/", 1)[0].replace(":", "-"))[:200] or "default"
        shard = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % self.shards
        return f"{scope}/shard-{shard:04d}"

    def _ensure_container(self) -> None:
        with self._guard:
            if self._container_ready:
                return
            with suppress(ResourceExistsError):
                self.container.create_container()
            self._container_ready = True

    def _blob(self, name: str) -> Any:
        """The blob's client, made once per name (at most `shards` per scope; used by one holder at a time)."""
        self._ensure_container()
        with self._guard:
            blob = self._blobs.get(name)
            if blob is None:
                blob = self._blobs[name] = self.container.get_blob_client(name)
            return blob

    def _acquire(self, blob: Any, key: str) -> tuple[Any, bool]:
        wait = self._wait_budget()
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
        """Yields the held lease (`.waited`: True when it had to wait for another holder, who may have done the work).

        Holders of one lease blob in this process queue on an in-process lock; a holder that finishes while others queue
        hands its (still renewed) lease to the next instead of releasing it, so a burst of tags of one digest costs one
        acquire and one release. Other instances still see the blob leased throughout."""
        name = self.blob_name(key)
        slot = self._enter(name)
        try:
            waited_here = not slot.lock.acquire(blocking=False)
            got = not waited_here or slot.lock.acquire(timeout=self._wait_budget())
        finally:
            with self._guard:
                slot.waiters -= 1
        if not got:
            self._settle(name, slot)
            raise LockBusy(f"lock {key!r} is still held in this instance after {self._wait_budget():.0f} s; retry later")
        try:
            held, slot.handed = slot.handed, None  # ours to take: we hold the slot's lock
            if held is not None and (held.error is not None or held.left() <= RENEW_MARGIN_SECONDS):
                self._release(held)  # lapsing anyway: acquire a new one
                held = None
            if held is None:
                lease, waited = self._acquire(self._blob(name), key)
                held = _Lease(lease, key, self.lease_seconds, waited or waited_here)
                self._renewer.add(held)
            else:
                held.key, held.waited = key, True
            try:
                yield held
            finally:
                with self._guard:
                    pass_on = slot.waiters > 0 and held.error is None and held.left() > RENEW_MARGIN_SECONDS
                    if pass_on:
                        slot.handed = held
                if not pass_on:
                    self._release(held)
        finally:
            slot.lock.release()
            self._settle(name, slot)

    def _release(self, held: _Lease) -> None:
        self._renewer.remove(held)
        with suppress(HttpResponseError, ServiceRequestError):  # expired or lost: it lapses on its own within lease_seconds
            held.lease.release()

    def _enter(self, name: str) -> _Slot:
        with self._guard:
            slot = self._slots.get(name)
            if slot is None:
                slot = self._slots[name] = _Slot()
            slot.waiters += 1
            return slot

    def _settle(self, name: str, slot: _Slot) -> None:
        """Nobody queues for the slot any more: release a lease still handed to it, and drop the slot."""
        handed = None
        with self._guard:
            if slot.waiters == 0 and slot.lock.acquire(blocking=False):
                handed, slot.handed = slot.handed, None
                if self._slots.get(name) is slot:
                    del self._slots[name]
                slot.lock.release()
        if handed is not None:
            self._release(handed)

    def _wait_budget(self) -> float:
        bound = current_deadline()
        return max(0.0, bound.cap(self.wait_seconds)) if bound is not None else self.wait_seconds
