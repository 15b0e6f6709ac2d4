"""Which registries a sweep walks: the push allow-list, or every registry the identity can read in the configured subscriptions."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from azure.core.exceptions import AzureError, HttpResponseError

from ..azure_clients import container_registry_client, describe_error, subscription_client
from ..push.checks import RegistryChecker
from ..push.events import RegistryRef
from .model import Tally
from .settings import SweepSettings

log = logging.getLogger("autopilot.sweep.scope")


class UnknownRegistry(ValueError):
    """A registry named on the command line is not in the sweep's scope (the message lists what is)."""


@dataclass(frozen=True)
class RegistryTarget:
    ref: RegistryRef
    login_server: str

    @property
    def name(self) -> str:
        return self.ref.name


def _matches(ref: RegistryRef, login_server: str | None, wanted: str) -> bool:
    wanted = wanted.strip().lower()
    return wanted in (ref.name.lower(), ref.resource_id.lower(), (login_server or "").lower())


def _listed(settings: SweepSettings, errors: list[Tally]) -> list[tuple[RegistryRef, str | None]]:
    """Every registry ARM lists in the configured subscriptions (or every subscription the identity can see)."""
    subs = list(settings.subscriptions)
    if not subs:
        try:
            subs = [str(s.subscription_id) for s in subscription_client(settings.push.azure).subscriptions.list() if s.subscription_id]
        except AzureError as exc:
            errors.append(Tally(registry="(subscriptions)", status="error",
                                detail=f"cannot list subscriptions: {describe_error(exc)}; set AUTOPILOT_SWEEP_SUBSCRIPTIONS "
                                       "or grant Reader"))
            return []
    found: list[tuple[RegistryRef, str | None]] = []
    for sub in subs:
        try:
            for reg in container_registry_client(settings.push.azure, sub).registries.list():
                ref = RegistryRef.parse(reg.id or "")
                if ref is not None:
                    found.append((ref, (reg.login_server or "").lower() or None))
        except HttpResponseError as exc:
            errors.append(Tally(registry=f"(subscription {sub})", status="error",
                                detail=f"cannot list registries: {describe_error(exc)}; grant the identity Reader on it"))
    return found


def resolve(settings: SweepSettings, checker: RegistryChecker, names: Iterable[str] = ()) -> tuple[list[RegistryTarget], list[Tally]]:
    """(registries to walk, report rows for the ones not walked: cannot stream, unreadable). Raises UnknownRegistry."""
    allow = settings.push.registries
    rows: list[Tally] = []
    if not allow.empty and not allow.names and not allow.login_servers:
        candidates: list[tuple[RegistryRef, str | None]] = []
        for rid in sorted(allow.resource_ids):
            ref = RegistryRef.parse(rid)
            if ref is not None:
                candidates.append((ref, None))
    else:
        candidates = [(ref, ls) for ref, ls in _listed(settings, rows) if allow.allows(ref, ls)]
    wanted = [n for n in names if n.strip()]
    if wanted:
        unknown = [w for w in wanted if not any(_matches(ref, ls, w) for ref, ls in candidates)]
        if unknown:
            known = ", ".join(sorted(ref.name for ref, _ in candidates)) or "none"
            raise UnknownRegistry(f"registry {', '.join(repr(u) for u in unknown)} is not in the sweep's scope (in scope: {known}); "
                                  "check the name, AUTOPILOT_PUSH_REGISTRIES and AUTOPILOT_SWEEP_SUBSCRIPTIONS")
        candidates = [(ref, ls) for ref, ls in candidates if any(_matches(ref, ls, w) for w in wanted)]
        rows = []  # every named registry was found: what could not be listed elsewhere is not this run's business
    targets: list[RegistryTarget] = []
    for ref, _ls in candidates:
        info = checker.info(ref)
        if info.error_code:
            rows.append(Tally(registry=ref.name, status="error", detail=f"{info.error_code}: {info.error_detail or ''}"))
        elif (why := info.cannot_stream) is not None:
            rows.append(Tally(registry=ref.name, login_server=info.login_server or "", status="cannot-stream", detail=why))
        elif not info.login_server:
            rows.append(Tally(registry=ref.name, status="error", detail="ARM gave no login server for the registry"))
        else:
            targets.append(RegistryTarget(ref, info.login_server))
    return targets, rows
