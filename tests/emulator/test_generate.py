"""The fleet generator: seeded, every audit state covered, valid scenarios, 100,000 tags over few images, and its CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from emulator.generate import DEFAULT_MIX, POOL_STATES, generate_fleet, pool_state_counts
from emulator.scenario import ScenarioError, load_scenario

REPO = Path(__file__).resolve().parents[2]


def test_the_same_arguments_give_the_same_fleet_and_another_seed_another() -> None:
    a = generate_fleet(subscriptions=5, clusters_per_subscription=6, pools_per_cluster=4, seed=3)
    b = generate_fleet(subscriptions=5, clusters_per_subscription=6, pools_per_cluster=4, seed=3)
    c = generate_fleet(subscriptions=5, clusters_per_subscription=6, pools_per_cluster=4, seed=4)
    assert a == b
    assert a != c
    assert [s["id"] for s in a["subscriptions"]] != [s["id"] for s in c["subscriptions"]]


def test_every_state_appears_in_proportion_to_the_mix() -> None:
    fleet = generate_fleet(subscriptions=20, clusters_per_subscription=10, pools_per_cluster=5, seed=11)
    counts = pool_state_counts(fleet)
    assert set(counts) == set(POOL_STATES), f"missing: {set(POOL_STATES) - set(counts)}"
    total = 20 * 10 * 5
    assert sum(counts.values()) == total
    weight_sum = sum(DEFAULT_MIX[s] for s in POOL_STATES)
    for state in POOL_STATES:
        expected = total * DEFAULT_MIX[state] / weight_sum
        assert abs(counts[state] - expected) <= 1, (state, counts[state], expected)
    subs = fleet["subscriptions"]
    assert sum(1 for s in subs if s.get("accessible") is False) == 1, "5 % of 20 subscriptions"
    assert subs[0].get("accessible", True), "the first subscription stays readable"
    clusters = [c for s in subs for c in s["clusters"]]
    assert sum(1 for c in clusters if c.get("tags") == {"artifact-streaming": "off"}) == 4, "2 % of 200 clusters"


def test_system_pools_are_linux_and_versions_are_consistent() -> None:
    fleet = generate_fleet(subscriptions=6, clusters_per_subscription=10, pools_per_cluster=2, seed=2,
                           mix={"windows": 5, "compliant": 1, "old_kubernetes": 1})
    for sub in fleet["subscriptions"]:
        for cluster in sub["clusters"]:
            system = cluster["pools"][0]
            assert system["mode"] == "System" and system.get("os_type", "Linux") == "Linux"
            for pool in cluster["pools"]:
                assert pool["orchestrator_version"] in (cluster["kubernetes_version"], "1.24.10")
                if pool["orchestrator_version"] == "1.24.10":
                    assert cluster["kubernetes_version"] == "1.26.6"
                if pool.get("os_type") == "Windows":
                    assert len(pool["name"]) <= 6


def test_a_small_mix_can_pick_exactly_the_states_wanted() -> None:
    fleet = generate_fleet(subscriptions=2, clusters_per_subscription=3, pools_per_cluster=3, seed=1,
                           mix={s: 0 for s in DEFAULT_MIX} | {"null": 1})
    assert pool_state_counts(fleet) == {"null": 18}
    assert all(s.get("accessible", True) for s in fleet["subscriptions"])


def test_the_generated_scenario_loads_and_a_generate_block_takes_top_level_overrides() -> None:
    world, _rules, _seed = load_scenario({
        "generate": {"subscriptions": 3, "clusters_per_subscription": 2, "pools_per_cluster": 3, "registries": 5, "repositories": 2,
                     "tags_per_repository": 4, "distinct_images_per_repository": 2, "streamed_share": 1.0, "seed": 9},
        "settings": {"page_size": 7},
    })
    assert world.settings.page_size == 7
    assert len(world.clusters) == 6 and sum(len(c.pools) for c in world.clusters.values()) == 18
    skus = sorted((r.sku, r.encryption) for r in world.registries.values())
    assert skus == [("Premium", "disabled")] * 3 + [("Premium", "enabled"), ("Standard", "disabled")]
    for reg in world.registries.values():
        assert world.subscriptions[reg.subscription_id].accessible
        for repo in reg.repositories.values():
            assert len(repo.tags) == 4 and len({t.digest for t in repo.tags.values()}) == 2
            assert len(repo.operations) == 2, "streamed_share 1.0: every image already streams"


def test_one_hundred_thousand_tags_share_a_few_distinct_images() -> None:
    scenario = generate_fleet(subscriptions=1, clusters_per_subscription=0, pools_per_cluster=1, registries=2, repositories=50,
                              tags_per_repository=1000, distinct_images_per_repository=3, seed=1)
    world, _rules, _seed = load_scenario(scenario)
    repos = [repo for reg in world.registries.values() for repo in reg.repositories.values()]
    assert sum(len(r.tags) for r in repos) == 100_000
    assert all(len({t.digest for t in r.tags.values()}) == 3 for r in repos)


def test_the_shipped_fleet_bench_scenario_is_ten_thousand_pools() -> None:
    world, _rules, _seed = load_scenario(REPO / "emulator" / "scenarios" / "fleet-bench.yaml")
    assert len(world.subscriptions) == 100 and len(world.clusters) == 2500
    assert sum(len(c.pools) for c in world.clusters.values()) == 10_000
    assert sum(len(repo.tags) for reg in world.registries.values() for repo in reg.repositories.values()) == 100_000
    assert world.settings.page_size == 100


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"subscriptions": 0}, "generate.subscriptions: 0 must be an integer >= 1"),
        ({"pools_per_cluster": "4"}, "generate.pools_per_cluster: '4'"),
        ({"mix": {"purple": 1}}, "generate.mix: unknown key(s) ['purple']"),
        ({"mix": {"windows": -1}}, "generate.mix.windows: -1 must be a number >= 0"),
        ({"mix": dict.fromkeys(POOL_STATES, 0)}, "every pool state has weight 0"),
        ({"mix": {"inaccessible_subscriptions": 2}}, "must be between 0 and 1"),
        ({"clusters": 3}, "generate: unknown parameter(s) ['clusters']"),
        ({"streamed_share": 1.5}, "generate.streamed_share"),
    ],
)
def test_bad_parameters_name_the_offending_key(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ScenarioError) as info:
        generate_fleet(**kwargs)
    assert fragment in str(info.value)


def test_bad_parameters_in_a_scenario_file_surface_through_load_scenario() -> None:
    with pytest.raises(ScenarioError, match=r"unknown parameter\(s\) \['pool_count'\]"):
        load_scenario({"generate": {"pool_count": 3}})


def test_cli_writes_yaml_that_loads_to_the_same_fleet(tmp_path: Path) -> None:
    args = ["--subscriptions", "2", "--clusters-per-subscription", "3", "--pools-per-cluster", "2", "--registries", "1",
            "--repositories", "2", "--tags-per-repository", "5", "--seed", "8", "--mix", "compliant=1,null=1"]
    out = subprocess.run([sys.executable, "-m", "emulator.generate", *args], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    expanded = yaml.safe_load(out.stdout)
    assert expanded == generate_fleet(subscriptions=2, clusters_per_subscription=3, pools_per_cluster=2, registries=1, repositories=2,
                                      tags_per_repository=5, seed=8, mix={"compliant": 1, "null": 1})
    block = subprocess.run([sys.executable, "-m", "emulator.generate", *args, "--as-block"], cwd=REPO, capture_output=True, text=True,
                           timeout=60)
    assert block.returncode == 0 and "generate:" in block.stdout
    a, _r, _s = load_scenario(expanded)
    b, _r, _s = load_scenario(yaml.safe_load(block.stdout))
    assert sorted(a.clusters) == sorted(b.clusters)
    assert {k: [p.artifact_streaming for p in c.pools.values()] for k, c in a.clusters.items()} == \
           {k: [p.artifact_streaming for p in c.pools.values()] for k, c in b.clusters.items()}


def test_cli_rejects_a_bad_mix_with_a_clear_message() -> None:
    out = subprocess.run([sys.executable, "-m", "emulator.generate", "--mix", "windows"], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert "--mix: 'windows' is not STATE=WEIGHT" in out.stderr
