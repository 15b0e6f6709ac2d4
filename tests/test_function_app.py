"""The function app as the Python worker sees it: indexing `function_app.app`, names, triggers, bindings, cheap import."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

EXPECTED = {
    "on_image_pushed": {"type": "eventGridTrigger", "name": "event", "direction": "IN"},
    "audit_node_pools": {"type": "timerTrigger", "name": "timer", "direction": "IN", "useMonitor": True, "runOnStartup": False},
    "sweep_plan": {"type": "timerTrigger", "name": "timer", "direction": "IN", "useMonitor": True, "runOnStartup": False},
    "sweep_work": {"type": "queueTrigger", "name": "msg", "direction": "IN", "queueName": "autopilot-sweep",
                   "connection": "AzureWebJobsStorage"},
    "sweep_poison": {"type": "queueTrigger", "name": "msg", "direction": "IN", "queueName": "autopilot-sweep-poison",
                     "connection": "AzureWebJobsStorage"},
}


def _index_in_fresh_process(code: str, env: dict[str, str] | None = None) -> str:
    """Index in a new interpreter: `get_functions()` may run once per app object, and module caches must not leak."""
    import os

    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_every_blueprint_is_registered_with_its_trigger_and_bindings() -> None:
    out = _index_in_fresh_process(
        "import json, function_app\n"
        "print(json.dumps({f.get_function_name(): json.loads(f.get_function_json()) for f in function_app.app.get_functions()}))"
    )
    import json

    functions = json.loads(out.strip().splitlines()[-1])
    assert set(functions) >= set(EXPECTED), f"missing functions: {set(EXPECTED) - set(functions)}"
    for name, expected in EXPECTED.items():
        bindings = functions[name]["bindings"]
        assert functions[name]["scriptFile"] == "function_app.py"
        triggers = [b for b in bindings if b["type"].endswith("Trigger")]
        assert len(triggers) == 1, bindings
        for key, value in expected.items():
            assert triggers[0][key] == value, (name, key, triggers[0])
    # Default hourly schedule when the setting is absent; the binding expression when it is set.
    assert functions["audit_node_pools"]["bindings"][0]["schedule"] == "0 0 * * * *"
    out = _index_in_fresh_process(
        "import json, function_app\n"
        "print(json.dumps([json.loads(f.get_function_json()) for f in function_app.app.get_functions()]))",
        env={"AUTOPILOT_AUDIT_SCHEDULE": "0 */15 * * * *"},
    )
    schedules = [b.get("schedule") for f in json.loads(out.strip().splitlines()[-1]) for b in f["bindings"] if "schedule" in b]
    assert schedules == ["%AUTOPILOT_AUDIT_SCHEDULE%", "0 30 2 * * *"]  # the sweep's daily default
    assert functions["sweep_plan"]["bindings"][0]["schedule"] == "0 30 2 * * *"
    out = _index_in_fresh_process(
        "import json, function_app\n"
        "print(json.dumps([json.loads(f.get_function_json()) for f in function_app.app.get_functions()]))",
        env={"AUTOPILOT_SWEEP_SCHEDULE": "0 0 4 * * Sun"},
    )
    schedules = [b.get("schedule") for f in json.loads(out.strip().splitlines()[-1]) for b in f["bindings"] if "schedule" in b]
    assert schedules == ["0 0 * * * *", "%AUTOPILOT_SWEEP_SCHEDULE%"]


def test_indexing_fails_if_a_blueprint_is_not_registered(tmp_path: Path) -> None:
    """The check above is only worth something if an unregistered blueprint makes it fail: prove it on a copy."""
    source = (REPO / "function_app.py").read_text()
    broken = source.replace("app.register_functions(audit_bp)\n", "")
    assert broken != source
    (tmp_path / "function_app_broken.py").write_text(broken)
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module("function_app_broken")
        names = {f.get_function_name() for f in module.app.get_functions()}
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("function_app_broken", None)
    assert "audit_node_pools" not in names
    assert not set(EXPECTED) <= names


def test_importing_function_app_loads_no_azure_sdk() -> None:
    """Cold start: the SDKs (azure.core pipelines, identity, mgmt clients, storage) load on first use, not at import."""
    out = _index_in_fresh_process(
        "import sys, function_app\n"
        "function_app.app.get_functions()\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('requests', 'urllib3', 'msal') or m.startswith(("
        "'azure.core', 'azure.identity', 'azure.mgmt', 'azure.storage', 'azure.eventgrid')))\n"
        "print(','.join(heavy))"
    )
    assert out.strip() == "", f"imported at cold start: {out.strip()[:500]}"


def test_sdk_request_logging_is_quiet_in_the_app_unless_asked_for() -> None:
    out = _index_in_fresh_process(
        "import logging, function_app\n"
        "print(logging.getLogger('azure.core.pipeline.policies.http_logging_policy').level)"
    )
    assert out.strip().splitlines()[-1] == str(__import__("logging").WARNING)
    out = _index_in_fresh_process(
        "import logging, function_app\n"
        "print(logging.getLogger('azure.core.pipeline.policies.http_logging_policy').level)",
        env={"AUTOPILOT_LOG_HTTP": "true"},
    )
    assert out.strip().splitlines()[-1] == str(__import__("logging").NOTSET)
