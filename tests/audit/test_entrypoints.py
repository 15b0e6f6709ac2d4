"""The two ways the audit runs: `python -m shared audit` (a real subprocess) and the timer function (its user code)."""

from __future__ import annotations

import importlib
import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from azure.functions.timer import TimerRequest

from shared.audit.cli import ProgressBar
from shared.settings import SettingsError
from shared.storage import blob_service_client

REPO = Path(__file__).resolve().parents[2]
SUB = "3f2a3d10-0000-4000-8000-00000000ab01"
SCENARIO = {
    "settings": {"lro_seconds": 0.2},
    "subscriptions": [{"id": SUB, "name": "solo", "clusters": [{"name": "aks-solo", "resource_group": "rg-solo", "pools": [
        {"name": "system", "mode": "System", "artifact_streaming": True},
        {"name": "user", "artifact_streaming": None},
        {"name": "win", "os_type": "Windows"},
    ]}]}],
}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shared", "audit", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_cli_report_json_without_a_progress_bar_off_a_terminal(make_emulator):
    emu = make_emulator(SCENARIO)
    done = cli("--format", "json", "--no-store")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["mode"] == "report"
    assert {r["pool"]: r["state"] for r in report["rows"]} == {"system": "compliant", "user": "remediable", "win": "ineligible"}
    assert "\r" not in done.stderr and "[#" not in done.stderr
    assert emu.world.arm_writes == []


def test_cli_enforce_table_for_one_subscription(make_emulator):
    emu = make_emulator(SCENARIO)
    done = cli("--enforce", "--subscription", SUB, env={"AUTOPILOT_AUDIT_POLL_SECONDS": "0.1",
                                                        "AUTOPILOT_AUDIT_CONTAINER": f"cli-{uuid.uuid4().hex[:8]}"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("subscription") and any("user" in ln and "enabled" in ln for ln in lines)
    assert "mode enforce" in lines[-1]
    assert "report stored: reports/" in done.stderr
    assert [(w.cluster, w.pool) for w in emu.world.arm_writes] == [("aks-solo", "user")]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--subscription", "prod"], {}, "setting --subscription: 'prod' is not a subscription id"),
        ([], {"AUTOPILOT_AUDIT_MODE": "yolo"}, "setting AUTOPILOT_AUDIT_MODE: 'yolo' is not one of report, enforce"),
        ([], {"AUTOPILOT_AUDIT_MAX_REMEDIATIONS": "-3"}, "setting AUTOPILOT_AUDIT_MAX_REMEDIATIONS: -3 is below the minimum 0"),
    ],
)
def test_cli_bad_input_is_a_clear_error_and_exit_code_2(args, env, message):
    done = cli(*args, env=env)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_only_on_a_terminal():
    term, pipe = _Terminal(), io.StringIO()
    for stream in (term, pipe):
        bar = ProgressBar(stream)
        bar("clusters", 1, 4)
        bar("clusters", 4, 4)
        bar.close()
    assert "\rclusters     [#######" in term.getvalue() and "4/4" in term.getvalue()
    assert pipe.getvalue() == ""


# ------------------------------------------------------------------------------------------------------ the function


def _load_function_module():
    import functions.audit

    return importlib.reload(functions.audit)


def test_timer_function_runs_the_audit_and_stores_the_report(make_emulator, monkeypatch):
    make_emulator(SCENARIO)
    container = f"fn-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("AUTOPILOT_AUDIT_CONTAINER", container)
    module = _load_function_module()
    user_function = module.audit_node_pools._function.get_user_function()
    user_function(TimerRequest(past_due=True))
    service = blob_service_client()
    stored = json.loads(service.get_container_client(container).download_blob("latest.json").readall())
    assert stored["mode"] == "report" and stored["summary"]["by_state"]["remediable"] == 1


def test_bad_settings_fail_the_function_at_start_up(monkeypatch):
    monkeypatch.setenv("AUTOPILOT_AUDIT_SCHEDULE", "every hour")
    with pytest.raises(SettingsError, match="setting AUTOPILOT_AUDIT_SCHEDULE: 'every hour' has 2 field"):
        _load_function_module()
    monkeypatch.delenv("AUTOPILOT_AUDIT_SCHEDULE")
    # where Azure is, too: a bad ARM or topic endpoint fails start-up, not the first tick an hour later
    for name, value in (("AUTOPILOT_ARM_ENDPOINT", "http://management.example"), ("AUTOPILOT_TOPIC_ENDPOINT", "topic.example")):
        monkeypatch.setenv(name, value)
        with pytest.raises(SettingsError, match=f"setting {name}: .* https://"):
            _load_function_module()
        monkeypatch.delenv(name)
    _load_function_module()  # leave the module importable for whoever imports it next


def test_cli_nothing_readable_is_exit_3_with_the_reason_in_the_report(make_emulator):
    make_emulator(SCENARIO)
    done = cli("--format", "json", "--no-store", env={"IDENTITY_HEADER": "not-the-header"})
    assert done.returncode == 3, done.stderr
    rows = json.loads(done.stdout)["rows"]
    assert len(rows) == 1 and rows[0]["state"] == "error" and "cannot list subscriptions: authentication failed" in rows[0]["reason"]


def test_timer_function_fails_the_invocation_when_nothing_is_readable(make_emulator, monkeypatch):
    make_emulator(SCENARIO)
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-header")
    monkeypatch.setenv("AUTOPILOT_AUDIT_CONTAINER", f"fn-{uuid.uuid4().hex[:8]}")
    from shared.azure_clients import reset_credential

    reset_credential()
    user_function = _load_function_module().audit_node_pools._function.get_user_function()
    with pytest.raises(RuntimeError, match="could not read anything: cannot list subscriptions: authentication failed"):
        user_function(TimerRequest(past_due=False))
