"""Classification: each pool gets exactly one state and a reason, from an ordered list of small, named filter rules."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass

from .model import Decision, PoolRecord, PoolState
from .settings import AuditSettings, parse_version

# A rule looks at a pool and returns a reason when it applies, None when it does not. The first rule that applies decides.
Check = Callable[[PoolRecord, AuditSettings], "str | None"]


@dataclass(frozen=True)
class Rule:
    name: str
    state: PoolState
    check: Check


def _excluded_by_tag(p: PoolRecord, s: AuditSettings) -> str | None:
    if s.exclude_tag is None:
        return None
    hit = s.exclude_tag.matches(p.pool_tags)
    if hit:
        return f"pool tag {hit}"
    hit = s.exclude_tag.matches(p.cluster_tags)
    return f"cluster tag {hit}" if hit else None


def _excluded_by_list(p: PoolRecord, s: AuditSettings) -> str | None:
    for pattern in s.exclude:
        pat = pattern.lower().rstrip("/")
        for rid in (p.resource_id.lower(), p.cluster_id.lower()):
            if fnmatch.fnmatchcase(rid, pat):
                return f"matches exclusion {pattern}"
    return None


def _windows(p: PoolRecord, s: AuditSettings) -> str | None:
    if (p.os_type or "").lower() == "windows" or (p.os_sku or "").lower().startswith("windows"):
        return f"Windows node pool ({p.os_sku or p.os_type}): artifact streaming supports Linux only"
    return None


# Azure's Arm64 VM sizes (Ampere Altra: Dpsv5, Dpdsv5, Dplsv5, Epsv5, Bpsv2...; Cobalt 100: Dpsv6, Dpdsv6, Epdsv6...):
# a lower-case `p` among the additive features after the vCPU count, e.g. Standard_D4ps_v5, Standard_E8pds_v6.
_SIZE_FEATURES = re.compile(r"(?i:standard_)[A-Za-z]+\d+([a-z]*)_v\d+")


def is_arm64_size(vm_size: str, extra: tuple[str, ...] = ()) -> bool:
    """An Arm64 VM size: Azure's naming (a `p` feature letter) or a name or glob of AUTOPILOT_AUDIT_ARM64_VM_SIZES."""
    match = _SIZE_FEATURES.fullmatch(vm_size.strip())
    if match and "p" in match.group(1):
        return True
    lowered = vm_size.strip().lower()
    return any(fnmatch.fnmatchcase(lowered, pattern.lower()) for pattern in extra)


def _arm64(p: PoolRecord, s: AuditSettings) -> str | None:
    if p.vm_size and is_arm64_size(p.vm_size, s.arm64_vm_sizes):
        return f"VM size {p.vm_size} is Arm64: artifact streaming does not support ARM64 node pools"
    return None


def _immutable_os(p: PoolRecord, s: AuditSettings) -> str | None:
    if (p.os_sku or "").lower() in ("azurecontainerlinux", "flatcar"):
        return f"OS SKU {p.os_sku} does not support artifact streaming"
    return None


def _kata(p: PoolRecord, s: AuditSettings) -> str | None:
    if (p.workload_runtime or "").lower().startswith("kata"):
        return f"workload runtime {p.workload_runtime} (Kata VM isolation) does not support artifact streaming"
    return None


def _old_kubernetes(p: PoolRecord, s: AuditSettings) -> str | None:
    version = parse_version(p.kubernetes_version)
    minimum = ".".join(map(str, s.min_kubernetes))
    if version is None:
        return f"Kubernetes version {p.kubernetes_version!r} is unknown; artifact streaming needs {minimum} or later"
    if version < s.min_kubernetes:
        return f"Kubernetes {p.kubernetes_version} is below the documented minimum {minimum}"
    return None


def _unsupported_sku(p: PoolRecord, s: AuditSettings) -> str | None:
    if p.os_sku and p.os_sku.lower() in {x.lower() for x in s.unsupported_os_skus}:
        return f"OS SKU {p.os_sku} is listed as unsupported (AUTOPILOT_AUDIT_UNSUPPORTED_OS_SKUS)"
    return None


def _enabled(p: PoolRecord, s: AuditSettings) -> str | None:
    return "artifact streaming is enabled" if p.streaming_enabled is True else None


def _stopped(p: PoolRecord, s: AuditSettings) -> str | None:
    if (p.cluster_power_state or "").lower() == "stopped":
        return "the cluster is stopped"
    if (p.power_state or "").lower() == "stopped":
        return "the node pool is stopped"
    return None


def _busy(p: PoolRecord, s: AuditSettings) -> str | None:
    if (p.cluster_provisioning_state or "Succeeded").lower() != "succeeded":
        return f"the cluster is {p.cluster_provisioning_state}"
    if (p.provisioning_state or "").lower() != "succeeded":
        return f"provisioning state is {p.provisioning_state}, not Succeeded"
    return None


def _remediable(p: PoolRecord, s: AuditSettings) -> str | None:
    return "artifact streaming is off" if p.streaming_enabled is False else "artifact streaming is not configured (null profile)"


# Order matters: an operator's exclusion wins over everything, then what can never stream, then what already streams,
# then what cannot be changed right now. Whatever is left is remediable.
RULES: tuple[Rule, ...] = (
    Rule("exclude-tag", "excluded", _excluded_by_tag),
    Rule("exclude-list", "excluded", _excluded_by_list),
    Rule("windows", "ineligible", _windows),
    Rule("arm64", "ineligible", _arm64),
    Rule("immutable-os", "ineligible", _immutable_os),
    Rule("kata-runtime", "ineligible", _kata),
    Rule("kubernetes-minimum", "ineligible", _old_kubernetes),
    Rule("unsupported-os-sku", "ineligible", _unsupported_sku),
    Rule("enabled", "compliant", _enabled),
    Rule("stopped", "stopped", _stopped),
    Rule("busy", "busy", _busy),
    Rule("remediable", "remediable", _remediable),
)


def classify(pool: PoolRecord, settings: AuditSettings) -> Decision:
    for rule in RULES:
        reason = rule.check(pool, settings)
        if reason:
            return Decision(state=rule.state, reason=reason, rule=rule.name)
    raise AssertionError("the last rule always applies")  # pragma: no cover
