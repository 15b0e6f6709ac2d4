"""The real az CLI (azure-cli 2.91.0, its own venv .venv-az from `make setup-az`) through the seed's two manual steps."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from emulator import Emulator

from .test_conformance import load as recorded_exchanges

REPO = Path(__file__).resolve().parents[2]
AZ = REPO / ".venv-az" / "bin" / "az"
SUB = "00000000-0000-4000-8000-0000000000e1"
# exchanges 10-24 of the recorded live session: one `az acr artifact-streaming create -n … -t repo:tag --no-wait`
RECORDED_CREATE = slice(10, 25)


def scenario() -> dict[str, Any]:
    return {
        "settings": {"conversion_seconds": 0.5, "lro_seconds": 0.5},
        "subscriptions": [{
            "id": SUB, "name": "az-cli-sub",
            "registries": [{"name": "clireg", "sku": "Premium", "resource_group": "rg-acr", "repositories": [
                {"name": "microsoft", "images": [{"tags": ["azure-cli"], "layers_mb": [30, 200], "seed": "azure-cli"}]}]}],
            "clusters": [{"name": "aks1", "resource_group": "rg-aks", "kubernetes_version": "1.30.4",
                          "pools": [{"name": "nodepool1", "mode": "System", "os_sku": "Ubuntu", "artifact_streaming": False}]}],
        }],
    }


class Az:
    """Runs the az CLI against the emulator with an isolated config dir, as a user on a sovereign cloud would."""

    def __init__(self, emu: Emulator, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.env = {
            "PATH": f"{AZ.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": str(home),
            "AZURE_CONFIG_DIR": str(home / ".azure"), "REQUESTS_CA_BUNDLE": emu.endpoints["ca_bundle"],
            "IDENTITY_ENDPOINT": emu.env["IDENTITY_ENDPOINT"], "IDENTITY_HEADER": emu.env["IDENTITY_HEADER"],
            "AZURE_CORE_COLLECT_TELEMETRY": "false", "AZURE_CORE_SURVEY_MESSAGE": "false", "AZURE_CORE_NO_COLOR": "true",
            "AZURE_EXTENSION_USE_DYNAMIC_INSTALL": "no",
        }

    def __call__(self, *args: str, check: bool = True) -> Any:
        run = subprocess.run([str(AZ), *args, "--only-show-errors"], env=self.env, capture_output=True, text=True,
                             timeout=240, stdin=subprocess.DEVNULL)
        if check:
            assert run.returncode == 0, f"az {' '.join(args)} failed ({run.returncode}):\n{run.stderr[-4000:]}"
        return json.loads(run.stdout) if run.stdout.strip().startswith(("{", "[")) else run


@pytest.fixture
def az_cli() -> Path:
    if not AZ.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"the az CLI is missing at {AZ}: `make test` installs it (make setup-az)")
        pytest.skip(f"the az CLI is not installed at {AZ}; run `make setup-az`")
    return AZ


@pytest.mark.slow
def test_az_cli_does_the_two_manual_steps_against_the_emulator(az_cli: Path, make_emulator: Callable[..., Emulator],
                                                               tmp_path: Path) -> None:
    emu = make_emulator(scenario(), apply_env=False)
    az = Az(emu, tmp_path / "home")
    arm = emu.endpoints["arm"]
    # a sovereign cloud, discovered from ARM's metadata endpoint (no --skip-endpoint-discovery)
    az("cloud", "register", "--name", "LocalAzure", "--endpoint-resource-manager", arm)
    az("cloud", "set", "--name", "LocalAzure")
    shown = az("cloud", "show", "--name", "LocalAzure", "--output", "json")
    assert shown["endpoints"]["resourceManager"].rstrip("/") == arm
    accounts = az("login", "--identity", "--output", "json")
    assert [a["id"] for a in accounts] == [SUB]

    # step 1: the streaming artifact for one image tag
    mark = emu.request_mark()
    # as recorded (`-n -t --no-wait`): the CLI's own poller would add GETs of the operation that the recording does not have
    az("acr", "artifact-streaming", "create", "--name", "clireg", "--image", "microsoft:azure-cli", "--no-wait")
    registry_calls = [r for r in emu.requests_since(mark) if r["host"] == "clireg"]
    got = [(r["method"], r["path"], r["status"]) for r in registry_calls]
    want = [(e["method"], e["uri"].split("?")[0], e["status"]) for e in recorded_exchanges()[RECORDED_CREATE]]
    digest = emu.call(lambda: emu.world.registries["clireg"].repositories["microsoft"].tags["azure-cli"].digest)
    want = [(m, p.replace("sha256:622731d3e3a16b11a1f318b1c5018d0c44996b4c096b864fe2eac5b8beab535a", digest), s) for m, p, s in want]
    assert got == want, "the az CLI's registry requests differ from the recorded live session"
    ops = emu.call(lambda: list(emu.world.registries["clireg"].repositories["microsoft"].operations.values()))
    assert [op.digest for op in ops] == [digest]
    shown_op = az("acr", "artifact-streaming", "operation", "show", "--name", "clireg", "--image", "microsoft:azure-cli",
                  "--output", "json")
    assert shown_op["status"] in ("NotStarted", "Running", "Succeeded") and shown_op["resource"] == f"microsoft@{digest}"
    deadline = time.monotonic() + 30
    while emu.call(lambda: ops[0].status) != "Succeeded" and time.monotonic() < deadline:
        time.sleep(0.2)
    referrers = az("acr", "manifest", "list-referrers", "--registry", "clireg", "--name", "microsoft:azure-cli", "--output", "json")
    assert [m["artifactType"] for m in referrers["manifests"]] == ["application/vnd.azure.artifact.streaming.v1"]

    # step 2: streaming on for a node pool (GET the pool, PUT it whole with the flag)
    mark = emu.request_mark()
    pool = az("aks", "nodepool", "update", "--resource-group", "rg-aks", "--cluster-name", "aks1", "--name", "nodepool1",
              "--enable-artifact-streaming", "--output", "json")
    assert pool["artifactStreamingProfile"]["enabled"] is True
    puts = [r for r in emu.requests_since(mark) if r["method"] == "PUT" and r["endpoint_class"] == "arm.agentpools"]
    assert [r["status"] for r in puts] == [200], puts  # an update of an existing pool
    assert puts[0]["path"].lower().endswith("/managedclusters/aks1/agentpools/nodepool1")
    assert json.loads(puts[0]["body"])["properties"]["artifactStreamingProfile"] == {"enabled": True}  # the whole pool, flag on
    assert emu.call(lambda: emu.world.clusters[next(iter(emu.world.clusters))].pools["nodepool1"].artifact_streaming) is True
