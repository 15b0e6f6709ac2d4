"""Scenario files: YAML (or a dict) describing subscriptions, registries, images, clusters and event routes → a World."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import yaml

from . import oci
from .faults import FaultRule
from .model import (
    ACR_ROLE_PERMISSIONS,
    ROLE_ASSIGNMENT_MODES,
    AgentPool,
    Cluster,
    EmulatorSettings,
    EventSubscription,
    Registry,
    Repository,
    ScopeMapToken,
    StreamingOperation,
    Subscription,
    World,
)

DEFAULT_TENANT = "72f988bf-0000-4000-8000-00000000e001"
GB = 1024**3
MB = 1024**2


class ScenarioError(ValueError):
    """A scenario file that cannot be loaded; the message names the offending key and where it is."""


def _check_keys(where: str, raw: dict[str, Any], allowed: set[str]) -> None:
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: expected a mapping, got {type(raw).__name__}")
    unknown = set(raw) - allowed
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")


def load_scenario(source: str | Path | dict[str, Any]) -> tuple[World, list[FaultRule], int]:
    """Build the world a scenario describes. Returns (world, fault rules, fault seed)."""
    if isinstance(source, dict):
        raw = source
    else:
        path = Path(source)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ScenarioError(f"cannot read scenario {path}: {exc}") from exc
    _check_keys("scenario", raw, {"name", "description", "seed", "tenant_id", "settings", "faults", "subscriptions", "eventgrid", "generate"})
    if "generate" in raw:
        from .generate import generate_fleet

        raw = generate_fleet(**raw["generate"]) | {k: v for k, v in raw.items() if k != "generate"}

    settings_raw = raw.get("settings") or {}
    _check_keys("settings", settings_raw, set(EmulatorSettings.__dataclass_fields__))
    settings = EmulatorSettings(**settings_raw)
    seed = int(raw.get("seed", 0))
    world = World(tenant_id=str(raw.get("tenant_id", DEFAULT_TENANT)), settings=settings, seed=seed)

    for i, sub_raw in enumerate(raw.get("subscriptions") or []):
        _load_subscription(world, f"subscriptions[{i}]", sub_raw)

    eg = raw.get("eventgrid") or {}
    _check_keys("eventgrid", eg, {"subscriptions"})
    for i, es_raw in enumerate(eg.get("subscriptions") or []):
        add_event_subscription(world, es_raw, where=f"eventgrid.subscriptions[{i}]")

    faults_raw = raw.get("faults") or {}
    _check_keys("faults", faults_raw, {"seed", "rules"})
    try:
        rules = [FaultRule.from_dict(r) for r in faults_raw.get("rules") or []]
    except (TypeError, ValueError) as exc:
        raise ScenarioError(f"faults.rules: {exc}") from exc
    return world, rules, int(faults_raw.get("seed", seed))


def _load_subscription(world: World, where: str, raw: dict[str, Any]) -> None:
    _check_keys(where, raw, {"id", "name", "state", "accessible", "registries", "clusters"})
    sub_id = str(raw.get("id") or uuid.uuid4())
    try:
        uuid.UUID(sub_id)
    except ValueError as exc:
        raise ScenarioError(f"{where}.id: {sub_id!r} is not a GUID") from exc
    world.subscriptions[sub_id] = Subscription(
        id=sub_id,
        display_name=str(raw.get("name", sub_id)),
        tenant_id=world.tenant_id,
        state=str(raw.get("state", "Enabled")),
        accessible=bool(raw.get("accessible", True)),
    )
    for i, reg_raw in enumerate(raw.get("registries") or []):
        _load_registry(world, sub_id, f"{where}.registries[{i}]", reg_raw)
    for i, cl_raw in enumerate(raw.get("clusters") or []):
        _load_cluster(world, sub_id, f"{where}.clusters[{i}]", cl_raw)


def _load_registry(world: World, sub_id: str, where: str, raw: dict[str, Any]) -> None:
    _check_keys(where, raw, {"name", "resource_group", "location", "sku", "encryption", "admin_user", "tokens", "tags", "repositories",
                             "identity_roles", "aad_auth_as_arm", "role_assignment_mode"})
    name = str(raw["name"])
    if name in world.registries:
        raise ScenarioError(f"{where}.name: registry {name!r} defined twice (registry names are global)")
    sku = str(raw.get("sku", "Premium"))
    if sku not in ("Basic", "Standard", "Premium"):
        raise ScenarioError(f"{where}.sku: {sku!r} is not Basic, Standard or Premium")
    admin = raw.get("admin_user") or {}
    roles = raw.get("identity_roles")
    if roles is not None and (not isinstance(roles, list) or set(roles) - set(ACR_ROLE_PERMISSIONS)):
        raise ScenarioError(f"{where}.identity_roles: {roles!r} must be a list of {sorted(ACR_ROLE_PERMISSIONS)}")
    mode = str(raw.get("role_assignment_mode", "LegacyRegistryPermissions"))
    if mode not in ROLE_ASSIGNMENT_MODES:
        raise ScenarioError(f"{where}.role_assignment_mode: {mode!r} is not one of {', '.join(ROLE_ASSIGNMENT_MODES)}")
    reg = Registry(
        name=name,
        subscription_id=sub_id,
        resource_group=str(raw.get("resource_group", "rg-registry")),
        location=str(raw.get("location", "eastus")),
        sku=sku,
        encryption=str(raw.get("encryption", "disabled")),
        admin_user_enabled=bool(admin.get("enabled", False)),
        admin_password=str(admin.get("password", "")),
        tokens=[ScopeMapToken(**t) for t in raw.get("tokens") or []],
        tags=dict(raw.get("tags") or {}),
        identity_roles=None if roles is None else [str(r) for r in roles],
        aad_auth_as_arm=bool(raw.get("aad_auth_as_arm", True)),
        role_assignment_mode=mode,
    )
    world.registries[name] = reg
    for i, repo_raw in enumerate(raw.get("repositories") or []):
        rwhere = f"{where}.repositories[{i}]"
        _check_keys(rwhere, repo_raw, {"name", "convert_pushed_images", "images"})
        repo = reg.repositories.setdefault(repo_raw["name"], Repository(name=repo_raw["name"]))
        repo.convert_pushed_images = bool(repo_raw.get("convert_pushed_images", False))
        for j, img_raw in enumerate(repo_raw.get("images") or []):
            seed_image(world, reg, repo.name, img_raw, where=f"{rwhere}.images[{j}]", emit=False)


IMAGE_KEYS = {"tags", "platforms", "layers_mb", "layers_gb", "format", "streaming", "config_media_type", "layer_media_type", "seed"}


def seed_image(world: World, reg: Registry, repository: str, raw: dict[str, Any], where: str = "image", emit: bool = True) -> str:
    """Create an image from a spec (see IMAGE_KEYS) and tag it; returns the top-level digest.

    With emit=True every manifest stored emits ImagePushed, as a real `docker push` does.
    """
    _check_keys(where, raw, IMAGE_KEYS)
    emit_fn = world.emit if emit else (lambda *_a, **_k: None)
    platforms = [oci.PlatformSpec.parse(p) for p in raw.get("platforms") or ["linux/amd64"]]
    for plat in platforms:
        if plat.os == "windows":
            plat.os_version = "10.0.20348.2849"
    if "layers_gb" in raw:
        sizes = [int(float(s) * GB) for s in raw["layers_gb"]]
    else:
        sizes = [int(float(s) * MB) for s in raw.get("layers_mb") or [30, 80]]
    fmt = str(raw.get("format", "docker"))
    if fmt not in ("docker", "oci"):
        raise ScenarioError(f"{where}.format: {fmt!r} is not docker or oci")
    use_oci = fmt == "oci"
    seed = str(raw.get("seed", uuid.uuid4().hex[:8]))
    tags = [str(t) for t in raw.get("tags") or []]
    children = []
    for plat in platforms:
        content, mtype = oci.build_single_manifest(
            reg, repository, plat, sizes, oci=use_oci,
            config_media_type=raw.get("config_media_type"), layer_media_type=raw.get("layer_media_type"), seed=seed,
        )
        if len(platforms) == 1:
            top_content, top_type = content, mtype
            break
        pushed = oci.store_manifest(emit_fn, reg, repository, content, mtype, tag=None)
        children.append((pushed.digest, pushed.size, mtype, plat))
    if len(platforms) > 1:
        top_content, top_type = oci.build_index(children, oci=use_oci)
    if tags:
        result = None
        for tag in tags:
            result = oci.store_manifest(emit_fn, reg, repository, top_content, top_type, tag=tag)
        digest = result.digest
    else:
        digest = oci.store_manifest(emit_fn, reg, repository, top_content, top_type, tag=None).digest
    if raw.get("streaming"):
        mark_streaming(reg, repository, digest)
    return digest


def mark_streaming(reg: Registry, repository: str, digest: str) -> StreamingOperation:
    """Record a finished conversion of `digest`: the referrer's subject is `digest` itself (for a multi-arch index: the
    index, converted from its linux/amd64 entry, as a capture of real ACR shows)."""
    import json

    repo = reg.repositories[repository]
    manifest = repo.manifests[digest]
    converted = manifest
    if manifest.media_type in oci.INDEX_TYPES:
        for entry in json.loads(manifest.content).get("manifests", []):
            plat = entry.get("platform") or {}
            if plat.get("os") == "linux" and plat.get("architecture") == "amd64":
                converted = repo.manifests[entry["digest"]]
                break
    content, mtype = oci.build_streaming_referrer(reg, repository, manifest, converted=converted)
    referrer = oci.store_manifest(lambda *_a, **_k: None, reg, repository, content, mtype, tag=None)
    op = StreamingOperation(
        id=str(uuid.uuid4()), repository=repository, digest=digest, status="Succeeded", progress=100,
        details=f"Conversion succeeded for resource {repository}@{digest}", referrer_digest=referrer.digest,
    )
    repo.operations[op.id] = op
    return op


def _load_cluster(world: World, sub_id: str, where: str, raw: dict[str, Any]) -> None:
    _check_keys(where, raw, {"name", "resource_group", "location", "kubernetes_version", "provisioning_state", "power_state", "tags", "pools"})
    cluster = Cluster(
        name=str(raw["name"]),
        subscription_id=sub_id,
        resource_group=str(raw.get("resource_group", "rg-aks")),
        location=str(raw.get("location", "eastus")),
        kubernetes_version=str(raw.get("kubernetes_version", "1.30.4")),
        provisioning_state=str(raw.get("provisioning_state", "Succeeded")),
        power_state=str(raw.get("power_state", "Running")),
        tags=dict(raw.get("tags") or {}),
    )
    pool_keys = {"name", "os_type", "os_sku", "orchestrator_version", "mode", "count", "vm_size", "provisioning_state",
                 "power_state", "artifact_streaming", "workload_runtime", "tags"}
    for i, p in enumerate(raw.get("pools") or [{"name": "nodepool1", "mode": "System"}]):
        pwhere = f"{where}.pools[{i}]"
        _check_keys(pwhere, p, pool_keys)
        os_type = str(p.get("os_type", "Linux"))
        if os_type not in ("Linux", "Windows"):
            raise ScenarioError(f"{pwhere}.os_type: {os_type!r} is not Linux or Windows")
        streaming = p.get("artifact_streaming")
        if streaming not in (None, True, False):
            raise ScenarioError(f"{pwhere}.artifact_streaming: must be true, false or null")
        pool = AgentPool(
            name=str(p["name"]),
            os_type=os_type,
            os_sku=p.get("os_sku", "Windows2022" if os_type == "Windows" else "Ubuntu"),
            orchestrator_version=str(p.get("orchestrator_version", cluster.kubernetes_version)),
            mode=str(p.get("mode", "User")),
            count=int(p.get("count", 3)),
            vm_size=str(p.get("vm_size", "Standard_D4s_v5")),
            provisioning_state=str(p.get("provisioning_state", "Succeeded")),
            power_state=str(p.get("power_state", "Running")),
            artifact_streaming=streaming,
            workload_runtime=p.get("workload_runtime"),
            tags=dict(p.get("tags") or {}),
        )
        cluster.pools[pool.name] = pool
    world.add_cluster(cluster)


def add_event_subscription(world: World, raw: dict[str, Any], where: str = "event subscription") -> EventSubscription:
    _check_keys(where, raw, set(EventSubscription.__dataclass_fields__) - {"validated"})
    if raw.get("registry") not in world.registries:
        raise ScenarioError(f"{where}.registry: no registry named {raw.get('registry')!r}")
    if raw.get("schema", "EventGridSchema") not in ("EventGridSchema", "CloudEventSchemaV1_0"):
        raise ScenarioError(f"{where}.schema: must be EventGridSchema or CloudEventSchemaV1_0")
    es = EventSubscription(**raw)
    if world.settings.eventgrid_retry_base_seconds is not None:
        es.retry_base_seconds = world.settings.eventgrid_retry_base_seconds
    world.event_subscriptions[es.name] = es
    return es
