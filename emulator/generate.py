"""Seeded fleet generator: a scenario dict (the format `load_scenario` reads) for thousands of AKS pools and many tags.

`python -m emulator.generate --subscriptions 100 --clusters-per-subscription 25 --pools-per-cluster 4 > fleet.yaml`
or, in a scenario file, a `generate:` block with the same parameters (underscored).
"""

from __future__ import annotations

import argparse
import random
import sys
import uuid
from collections import Counter
from typing import Any

import yaml

from .scenario import ScenarioError

# The state of every generated pool is drawn from this mix (weights, normalised). Each state is one audit case.
POOL_STATES: dict[str, str] = {
    "compliant": "Linux pool with artifact streaming enabled",
    "off": "Linux pool with artifactStreamingProfile.enabled = false",
    "null": "Linux pool with no artifactStreamingProfile (off)",
    "windows": "Windows pool (cannot stream)",
    "azure_container_linux": "AzureContainerLinux pool (cannot stream)",
    "flatcar": "Flatcar pool (cannot stream)",
    "kata": "AzureLinux pool with Kata pod sandboxing (cannot stream)",
    "old_kubernetes": "pool on Kubernetes 1.24 (below the 1.25 minimum)",
    "updating": "pool with an operation in progress (provisioningState Updating)",
    "stopped": "pool with powerState Stopped",
    "excluded": "pool tagged artifact-streaming: off",
}
DEFAULT_MIX: dict[str, float] = {
    "compliant": 0.30, "off": 0.12, "null": 0.25, "windows": 0.05, "azure_container_linux": 0.03, "flatcar": 0.02,
    "kata": 0.03, "old_kubernetes": 0.04, "updating": 0.05, "stopped": 0.05, "excluded": 0.06,
    # not pool states: shares of subscriptions the identity cannot read and of clusters excluded by tag
    "inaccessible_subscriptions": 0.05, "excluded_clusters": 0.02,
}
SUBSCRIPTION_AND_CLUSTER_KEYS = ("inaccessible_subscriptions", "excluded_clusters")
LINUX_STATES = tuple(s for s in POOL_STATES if s != "windows")
KUBERNETES_VERSIONS = ("1.29.9", "1.30.4", "1.31.2")
OLD_CLUSTER_VERSION = "1.26.6"  # pools may lag the control plane by two minors; 1.24 pools need an old control plane
OLD_POOL_VERSION = "1.24.10"
LOCATIONS = ("eastus", "westeurope", "southeastasia")
EXCLUDE_TAG = {"artifact-streaming": "off"}


def _count(name: str, value: Any, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ScenarioError(f"generate.{name}: {value!r} must be an integer >= {minimum}")
    return value


def _mix(raw: dict[str, Any] | None) -> dict[str, float]:
    mix = dict(DEFAULT_MIX)
    if raw is None:
        return mix
    if not isinstance(raw, dict):
        raise ScenarioError(f"generate.mix: expected a mapping of state -> weight, got {type(raw).__name__}")
    unknown = set(raw) - set(DEFAULT_MIX)
    if unknown:
        raise ScenarioError(f"generate.mix: unknown key(s) {sorted(unknown)}; known: {sorted(DEFAULT_MIX)}")
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ScenarioError(f"generate.mix.{key}: {value!r} must be a number >= 0")
        mix[key] = float(value)
    if not any(mix[s] for s in POOL_STATES):
        raise ScenarioError("generate.mix: every pool state has weight 0; give at least one state a positive weight")
    for key in SUBSCRIPTION_AND_CLUSTER_KEYS:
        if mix[key] > 1:
            raise ScenarioError(f"generate.mix.{key}: {mix[key]} is a share and must be between 0 and 1")
    return mix


def _apportion(total: int, weights: dict[str, float]) -> list[str]:
    """`total` labels in proportion to `weights` (largest remainder), every positive-weight label at least once if room."""
    positive = {k: w for k, w in weights.items() if w > 0}
    norm = sum(positive.values())
    exact = {k: total * w / norm for k, w in positive.items()}
    counts = {k: int(v) for k, v in exact.items()}
    if total >= len(positive):
        for k in positive:
            counts[k] = max(counts[k], 1)
    while sum(counts.values()) > total:
        k = max(counts, key=lambda k: (counts[k] - exact[k], counts[k]))
        counts[k] -= 1
    for k in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True):
        if sum(counts.values()) >= total:
            break
        counts[k] += 1
    while sum(counts.values()) < total:
        counts[max(positive, key=lambda k: positive[k])] += 1
    labels = [k for k in positive for _ in range(counts[k])]
    return labels


def _guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _pool(state: str, name: str, mode: str, cluster_version: str, alternate: bool) -> dict[str, Any]:
    pool: dict[str, Any] = {"name": name, "mode": mode, "os_sku": "Ubuntu", "artifact_streaming": None,
                            "orchestrator_version": cluster_version}
    if state == "compliant":
        pool["artifact_streaming"] = True
        pool["os_sku"] = "AzureLinux" if alternate else "Ubuntu"
    elif state == "off":
        pool["artifact_streaming"] = False
    elif state == "windows":
        pool.update(os_type="Windows", os_sku="Windows2022")
    elif state == "azure_container_linux":
        pool["os_sku"] = "AzureContainerLinux"
    elif state == "flatcar":
        pool["os_sku"] = "Flatcar"
    elif state == "kata":
        pool.update(os_sku="AzureLinux", workload_runtime="KataMshvVmIsolation")
    elif state == "old_kubernetes":
        pool["orchestrator_version"] = OLD_POOL_VERSION
    elif state == "updating":
        pool["provisioning_state"] = "Updating"
    elif state == "stopped":
        pool["power_state"] = "Stopped"
    elif state == "excluded":
        pool["tags"] = dict(EXCLUDE_TAG)
    return pool


def generate_fleet(
    *,
    subscriptions: int = 3,
    clusters_per_subscription: int = 4,
    pools_per_cluster: int = 4,
    registries: int = 1,
    repositories: int = 4,
    tags_per_repository: int = 3,
    distinct_images_per_repository: int = 1,
    seed: int = 0,
    mix: dict[str, Any] | None = None,
    streamed_share: float = 0.0,
    name: str = "generated-fleet",
    **unknown: Any,
) -> dict[str, Any]:
    """A seeded scenario dict: subscriptions with AKS clusters whose pools cover every state of `mix`, and registries whose
    repositories hold `tags_per_repository` tags spread over `distinct_images_per_repository` images (100,000 tags load fast).

    `repositories` is per registry. Registries are Premium except, when there are five or more, every fifth is Standard
    and every fifth (offset by one) is Premium with a customer-managed key. `streamed_share` of the distinct images already
    have a streaming artifact. The same arguments always give the same scenario.
    """
    if unknown:
        raise ScenarioError(f"generate: unknown parameter(s) {sorted(unknown)}; known: subscriptions, clusters_per_subscription, "
                            "pools_per_cluster, registries, repositories, tags_per_repository, distinct_images_per_repository, seed, "
                            "mix, streamed_share, name")
    n_subs = _count("subscriptions", subscriptions, 1)
    n_clusters = _count("clusters_per_subscription", clusters_per_subscription)
    n_pools = _count("pools_per_cluster", pools_per_cluster, 1)
    n_regs = _count("registries", registries)
    n_repos = _count("repositories", repositories)
    n_tags = _count("tags_per_repository", tags_per_repository)
    n_images = _count("distinct_images_per_repository", distinct_images_per_repository, 1 if n_tags else 0)
    seed = _count("seed", seed)
    if isinstance(streamed_share, bool) or not isinstance(streamed_share, int | float) or not 0 <= streamed_share <= 1:
        raise ScenarioError(f"generate.streamed_share: {streamed_share!r} must be a number between 0 and 1")
    weights = _mix(mix)
    rng = random.Random(seed)

    # --- subscriptions (a seeded share of them inaccessible, never the first: registries live there)
    sub_ids = [_guid(rng) for _ in range(n_subs)]
    n_hidden = round(n_subs * weights["inaccessible_subscriptions"])
    if weights["inaccessible_subscriptions"] > 0 and n_subs >= 2:
        n_hidden = max(1, n_hidden)
    hidden = set(rng.sample(range(1, n_subs), min(n_hidden, n_subs - 1))) if n_subs > 1 else set()

    # --- pool states, apportioned over the whole fleet then shuffled
    total_clusters = n_subs * n_clusters
    states = _apportion(total_clusters * n_pools, {s: weights[s] for s in POOL_STATES})
    rng.shuffle(states)
    n_excluded_clusters = round(total_clusters * weights["excluded_clusters"])
    if weights["excluded_clusters"] > 0 and total_clusters >= 10:
        n_excluded_clusters = max(1, n_excluded_clusters)
    excluded_clusters = set(rng.sample(range(total_clusters), min(n_excluded_clusters, total_clusters)))

    subs_out = _subscriptions(sub_ids, hidden, states, n_clusters, n_pools, excluded_clusters)
    _add_registries(subs_out, hidden, rng, n_regs=n_regs, n_repos=n_repos, n_tags=n_tags, n_images=n_images, seed=seed,
                    streamed_share=streamed_share)

    counts = Counter(states)
    summary = ", ".join(f"{k} {counts[k]}" for k in POOL_STATES if counts[k])
    return {
        "name": name,
        "description": (f"Generated fleet (seed {seed}): {n_subs} subscriptions ({len(hidden)} inaccessible), {total_clusters} clusters "
                        f"({len(excluded_clusters)} excluded by tag), {len(states)} pools ({summary}); {n_regs} registries x {n_repos} "
                        f"repositories x {n_tags} tags over {n_images} images each."),
        "seed": seed,
        "subscriptions": subs_out,
    }



def _cluster_spec(s: int, c: int, cluster_no: int, chunk: list[str], excluded: bool) -> dict[str, Any]:
    """One generated cluster: its pools take the states in `chunk` (the system pool is never Windows)."""
    if chunk[0] == "windows":  # the system pool must be Linux
        swap = next((i for i, st in enumerate(chunk) if st != "windows"), None)
        if swap is None:
            chunk[0] = "null"
        else:
            chunk[0], chunk[swap] = chunk[swap], chunk[0]
    version = OLD_CLUSTER_VERSION if "old_kubernetes" in chunk else KUBERNETES_VERSIONS[cluster_no % len(KUBERNETES_VERSIONS)]
    pools = []
    for p, state in enumerate(chunk):
        if p == 0:
            pool_name, mode = "system", "System"
        elif state == "windows":
            pool_name, mode = f"win{p}", "User"
        else:
            pool_name, mode = f"pool{p}", "User"
        pools.append(_pool(state, pool_name, mode, version, alternate=(cluster_no + p) % 2 == 1))
    cluster: dict[str, Any] = {
        "name": f"aks-{s:03d}-{c:03d}",
        "resource_group": f"rg-aks-{c // 5:02d}",
        "location": LOCATIONS[cluster_no % len(LOCATIONS)],
        "kubernetes_version": version,
        "pools": pools,
    }
    if excluded:
        cluster["tags"] = dict(EXCLUDE_TAG)
    return cluster


def _subscriptions(sub_ids: list[str], hidden: set[int], states: list[str], n_clusters: int, n_pools: int,
                   excluded_clusters: set[int]) -> list[dict[str, Any]]:
    subs_out: list[dict[str, Any]] = []
    cluster_no = 0
    for s, sub_id in enumerate(sub_ids):
        clusters: list[dict[str, Any]] = []
        for c in range(n_clusters):
            chunk = states[cluster_no * n_pools:(cluster_no + 1) * n_pools]
            clusters.append(_cluster_spec(s, c, cluster_no, chunk, cluster_no in excluded_clusters))
            cluster_no += 1
        sub: dict[str, Any] = {"id": sub_id, "name": f"fleet-{s:03d}", "clusters": clusters}
        if s in hidden:
            sub["accessible"] = False
        subs_out.append(sub)
    return subs_out


def _add_registries(subs_out: list[dict[str, Any]], hidden: set[int], rng: random.Random, *, n_regs: int, n_repos: int,
                    n_tags: int, n_images: int, seed: int, streamed_share: float) -> None:
    """Registries in the readable subscriptions, round-robin (see generate_fleet for the SKU and CMK pattern)."""
    readable = [i for i in range(len(subs_out)) if i not in hidden]
    for r in range(n_regs):
        sku, encryption = "Premium", "disabled"
        if n_regs >= 5 and r % 5 == 3:
            sku = "Standard"
        elif n_regs >= 5 and r % 5 == 4:
            encryption = "enabled"
        reg_name = f"fleetacr{seed % 10000:04d}{r:03d}"
        repos = []
        for k in range(n_repos):
            images = []
            for i in range(n_images if n_tags else 0):
                tags = [f"1.{t // 100}.{t % 100}" for t in range(i, n_tags, n_images)]
                image: dict[str, Any] = {"tags": tags, "layers_mb": [20, 60 + (k + i) % 200], "seed": f"{reg_name}-{k}-{i}"}
                if streamed_share and rng.random() < streamed_share:
                    image["streaming"] = True
                images.append(image)
            repos.append({"name": f"team{k % 20:02d}/app{k:04d}", "images": images})
        registry = {"name": reg_name, "resource_group": "rg-registry", "sku": sku, "encryption": encryption, "repositories": repos}
        subs_out[readable[r % len(readable)]].setdefault("registries", []).append(registry)

def pool_state_counts(scenario: dict[str, Any]) -> Counter:
    """How many pools of a generated scenario are in each state of POOL_STATES (recomputed from the pools themselves)."""
    counts: Counter = Counter()
    for sub in scenario["subscriptions"]:
        for cluster in sub.get("clusters", []):
            for pool in cluster["pools"]:
                counts[_state_of(pool)] += 1
    return counts


def _state_of(pool: dict[str, Any]) -> str:
    if pool.get("os_type") == "Windows":
        return "windows"
    if pool.get("os_sku") == "AzureContainerLinux":
        return "azure_container_linux"
    if pool.get("os_sku") == "Flatcar":
        return "flatcar"
    if pool.get("workload_runtime"):
        return "kata"
    if pool.get("orchestrator_version") == OLD_POOL_VERSION:
        return "old_kubernetes"
    if pool.get("provisioning_state") == "Updating":
        return "updating"
    if pool.get("power_state") == "Stopped":
        return "stopped"
    if pool.get("tags"):
        return "excluded"
    return {True: "compliant", False: "off", None: "null"}[pool.get("artifact_streaming")]


def _parse_mix(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise ScenarioError(f"--mix: {part!r} is not STATE=WEIGHT (e.g. compliant=0.3,windows=0.05)")
        try:
            mix[key.strip()] = float(value)
        except ValueError:
            raise ScenarioError(f"--mix: weight {value!r} of {key!r} is not a number") from None
    return mix


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulator.generate", description="Write a generated fleet scenario (YAML) to stdout.")
    parser.add_argument("--subscriptions", type=int, default=3)
    parser.add_argument("--clusters-per-subscription", type=int, default=4)
    parser.add_argument("--pools-per-cluster", type=int, default=4)
    parser.add_argument("--registries", type=int, default=1)
    parser.add_argument("--repositories", type=int, default=4, help="per registry")
    parser.add_argument("--tags-per-repository", type=int, default=3)
    parser.add_argument("--distinct-images-per-repository", type=int, default=1)
    parser.add_argument("--streamed-share", type=float, default=0.0, help="share of images that already have a streaming artifact")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mix", default="", help=f"STATE=WEIGHT,... over {', '.join(DEFAULT_MIX)} (others keep their defaults)")
    parser.add_argument("--as-block", action="store_true",
                        help="write a small scenario with a `generate:` block instead of the expanded fleet (loads the same world)")
    args = parser.parse_args(argv)
    params: dict[str, Any] = {
        "subscriptions": args.subscriptions, "clusters_per_subscription": args.clusters_per_subscription,
        "pools_per_cluster": args.pools_per_cluster, "registries": args.registries, "repositories": args.repositories,
        "tags_per_repository": args.tags_per_repository, "distinct_images_per_repository": args.distinct_images_per_repository,
        "streamed_share": args.streamed_share, "seed": args.seed,
    }
    try:
        if args.mix:
            params["mix"] = _parse_mix(args.mix)
        scenario = generate_fleet(**params)
    except ScenarioError as exc:
        print(f"emulator.generate: {exc}", file=sys.stderr)
        return 2
    out: dict[str, Any] = {"name": scenario["name"], "description": scenario["description"], "generate": params} if args.as_block else scenario
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    yaml.dump(out, sys.stdout, Dumper=dumper, sort_keys=False, default_flow_style=None, width=160)
    return 0


if __name__ == "__main__":
    sys.exit(main())
