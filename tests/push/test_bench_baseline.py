"""The benchmark's az CLI baseline sends exactly the recorded per-image request sequence (so the comparison is fair)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from shared.azure_clients import credential
from shared.settings import AzureSettings

from .conftest import scenario

REPO = Path(__file__).resolve().parents[2]
RECORDING = REPO / "tests" / "fixtures" / "acr_recording" / "acr_streaming_dataplane.json"
CREATE_BY_TAG = range(27, 48)  # cassette exchanges of `az acr artifact-streaming create --image microsoft:azure-cli`


def shape(method: str, path: str) -> tuple[str, str]:
    path = re.sub(r"sha256:[0-9a-f]{64}", "{digest}", path.split("?")[0])
    path = re.sub(r"/(?:microsoft|app)/", "/{repo}/", path)
    return method, re.sub(r"/_tags/[^/]+$", "/_tags/{tag}", path)


def test_az_cli_sequence_matches_the_recording(make_emulator):
    spec = importlib.util.spec_from_file_location("push_bench", REPO / "bench" / "push_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    recorded = [shape(e["method"], e["uri"]) for e in json.loads(RECORDING.read_text())["exchanges"]
                if e["cassette_index"] in CREATE_BY_TAG]
    assert len(recorded) == 15

    images = [{"tags": ["v1"], "layers_mb": [2], "seed": "baseline"}]
    raw = scenario(images)
    raw["subscriptions"][0]["registries"][0]["name"] = bench.REGISTRY
    emu = make_emulator(raw)
    aad = credential().get_token(f"{AzureSettings.from_env().acr_audience}/.default").token
    mark = emu.request_mark()
    assert bench.AzCliSequence(emu, aad).create("app", "v1") == "created"
    sent = [shape(r["method"], r["path"]) for r in emu.requests_since(mark, service="acr")]
    assert sent == recorded
