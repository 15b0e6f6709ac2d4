"""The azd postdeploy hook (the first `azd up`'s second pass), run against stand-ins for azd and az that record each call."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import yaml

from .conftest import REPO

HOOK = REPO / "infra" / "hooks" / "postdeploy.sh"
FAKE_AZD = """#!/bin/sh
echo "azd $*" >> "$CALLS"
case "$1 $2" in
  "env get-value") [ -f "$STATE/$3" ] && cat "$STATE/$3" && exit 0; echo "ERROR: key '$3' not found" >&2; exit 1 ;;
  "env set") printf %s "$4" > "$STATE/$3"; exit 0 ;;
  "provision --no-prompt") exit "${PROVISION_RC:-0}" ;;
esac
exit 2
"""
FAKE_AZ = """#!/bin/sh
echo "az $*" >> "$CALLS"
n=$(cat "$STATE/.shows" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "$STATE/.shows"
[ "$n" -ge "${FUNCTION_APPEARS_AFTER:-1}" ]
"""


def run_hook(tmp_path: Path, **env: str) -> tuple[int, list[str], dict[str, str]]:
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    for d in (bin_dir, state):
        d.mkdir(exist_ok=True)
    for name, body in (("azd", FAKE_AZD), ("az", FAKE_AZ)):
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    calls = tmp_path / "calls.log"
    result = subprocess.run(["sh", str(HOOK)], capture_output=True, text=True, timeout=60, env={
        "PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(calls), "STATE": str(state), "AUTOPILOT_HOOK_POLL_SECONDS": "0",
        "AZURE_FUNCTION_APP_NAME": "func-asa-x", "AZURE_RESOURCE_GROUP": "rg-x", **env})
    lines = calls.read_text().splitlines() if calls.exists() else []
    values = {p.name: p.read_text() for p in state.iterdir() if not p.name.startswith(".")}
    return result.returncode, lines, values


def test_first_run_waits_for_the_function_then_provisions_the_subscriptions_once(tmp_path: Path) -> None:
    rc, calls, values = run_hook(tmp_path, FUNCTION_APPEARS_AFTER="3")
    assert rc == 0
    assert [c for c in calls if c.startswith("az ")] == [
        "az functionapp function show --resource-group rg-x --name func-asa-x --function-name on_image_pushed --output none"] * 3
    assert calls[-2:] == ["azd env set AUTOPILOT_EVENTS_READY true", "azd provision --no-prompt"]
    assert values == {"AUTOPILOT_EVENTS_READY": "true"}
    # the next azd up: the subscriptions are in the template's parameters already, the hook provisions nothing
    rc, calls, _ = run_hook(tmp_path)
    assert rc == 0 and calls[-1] == "azd env get-value AUTOPILOT_EVENTS_READY" and "azd provision --no-prompt" not in calls[-1:]


def test_a_failed_provision_is_retried_by_the_next_azd_up(tmp_path: Path) -> None:
    rc, calls, values = run_hook(tmp_path, PROVISION_RC="1")
    assert rc == 1 and values == {"AUTOPILOT_EVENTS_READY": "false"}
    rc, calls, values = run_hook(tmp_path)
    assert rc == 0 and calls[-1] == "azd provision --no-prompt" and values == {"AUTOPILOT_EVENTS_READY": "true"}


def test_a_function_that_never_appears_fails_with_what_to_do(tmp_path: Path) -> None:
    rc, calls, values = run_hook(tmp_path, FUNCTION_APPEARS_AFTER="99", AUTOPILOT_HOOK_ATTEMPTS="2")
    assert rc == 1 and "azd provision --no-prompt" not in calls and values == {}


def test_azure_yaml_runs_the_hook_and_the_parameters_wire_its_flag() -> None:
    config = yaml.safe_load((REPO / "azure.yaml").read_text())
    assert config["hooks"]["postdeploy"]["posix"]["run"] == "./infra/hooks/postdeploy.sh"
    assert config["services"]["api"]["host"] == "function"
    params = json.loads((REPO / "infra" / "main.parameters.json").read_text())["parameters"]
    assert params["subscribeToRegistries"]["value"] == "${AUTOPILOT_EVENTS_READY=false}"
    main = (REPO / "infra" / "main.bicep").read_text()
    for name in params:
        assert f"param {name} " in main, name
    assert os.access(HOOK, os.X_OK)
