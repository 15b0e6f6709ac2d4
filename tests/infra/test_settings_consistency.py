"""The app settings infra sets, the ones local.settings.json.example lists and the ones the code reads are one set.

The code's settings are found by reading the code (shared/, functions/, function_app.py), so a setting another branch
adds is caught here until infra and the example name it too.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

from .conftest import REPO

NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
OURS = re.compile(r"AUTOPILOT_[A-Z0-9_]*[A-Z0-9]")
ENV_METHODS = {"str", "raw", "required", "choice", "bool", "number", "container_name", "list", "is_set"}  # shared.settings.Env
CODE = [REPO / "function_app.py", *sorted((REPO / "shared").rglob("*.py")), *sorted((REPO / "functions").rglob("*.py"))]

# Settings owned by the platform (the Functions host, App Service, the Azure SDKs, OpenTelemetry), not by our code's
# settings modules. Each side may or may not carry them; infra's own must-haves are checked below.
PLATFORM = re.compile(
    r"FUNCTIONS_.*"  # FUNCTIONS_WORKER_RUNTIME (local only: Flex Consumption sets the runtime in functionAppConfig)
    r"|AzureWebJobs.*"  # the host's storage connection (a connection string locally, identity-based __* in Azure)
    r"|APPLICATIONINSIGHTS_.*"  # telemetry: connection string and Entra ID authentication (read by shared/telemetry.py too)
    r"|PYTHON_ENABLE_OPENTELEMETRY"  # the Python worker's OpenTelemetry switch
    r"|OTEL_.*"  # OpenTelemetry's standard settings (the sampler)
    r"|AZURE_CLIENT_ID|IDENTITY_.*|MSI_.*"  # managed identity, read by azure-identity
    r"|REQUESTS_CA_BUNDLE|CURL_CA_BUNDLE"  # extra trust (the emulator, a TLS-inspecting proxy), as requests reads it
)
# Read by the code but deliberately not set by infra.
NOT_IN_INFRA = {
    "AUTOPILOT_TOPIC_KEY": "a topic access key; the deployed app publishes with its identity (EventGrid Data Sender), no keys",
}
# Agreed names whose code lands on another branch: in infra and the example already, read by the code once it is merged.
# Remove an entry when the code reads it (the test then checks it like any other).
PENDING_CODE: dict[str, str] = {}
AGREED = ("AUTOPILOT_SWEEP_SCHEDULE", "AUTOPILOT_DEADLETTER_CONTAINER")  # names agreed across branches (issue 7)


def settings_read_by(paths: list[Path]) -> set[str]:
    """Setting names in the code: arguments of Env accessors, os.environ / os.getenv, constants named *SETTING, and any
    string constant that is a whole AUTOPILOT_* name (binding expressions, setting-name constants)."""
    found: set[str] = set()
    for path in paths:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and OURS.fullmatch(node.value):
                found.add(node.value)
            elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                func = node.func
                name = node.args[0].value
                is_env = isinstance(func, ast.Attribute) and (
                    func.attr in ENV_METHODS or (func.attr == "get" and _is_environ(func.value)) or func.attr == "getenv")
                if is_env and NAME.fullmatch(name):
                    found.add(name)
            elif isinstance(node, ast.Subscript) and _is_environ(node.value) and isinstance(node.slice, ast.Constant):
                found.add(str(node.slice.value))
            elif (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
                  and any(isinstance(t, ast.Name) and t.id.endswith("SETTING") for t in node.targets) and NAME.fullmatch(node.value.value)):
                found.add(node.value.value)
    return found


def _is_environ(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (isinstance(node, ast.Name) and node.id == "environ")


def infra_settings(bicep: dict[str, Any]) -> dict[str, Any]:
    """The function app's settings: the keys of the variables the `appSettings` union is built from."""
    app = bicep["app.bicep"]
    assert "appSettings: [for setting in items(appSettings)" in (REPO / "infra" / "app.bicep").read_text()
    union = app["variables"]["appSettings"]["value"]["function"]
    assert union["type"] == "union"
    settings: dict[str, Any] = {}
    for arg in union["parameters"].values():
        if arg in app["variables"]:
            settings.update(app["variables"][arg]["value"])
        else:
            assert arg in app["parameters"], arg  # appSettingsOverrides: the operator's, not a fixed name
    return settings


def example_settings() -> dict[str, str]:
    return json.loads((REPO / "local.settings.json.example").read_text())["Values"]


def ours(names: set[str]) -> set[str]:
    return {n for n in names if not PLATFORM.fullmatch(n)}


def test_infra_example_and_code_name_the_same_settings(bicep: dict[str, Any]) -> None:
    code = ours(settings_read_by(CODE))
    infra = ours(set(infra_settings(bicep)))
    example = ours(set(example_settings()))
    assert code - set(NOT_IN_INFRA) - infra == set(), "read by the code but not set in infra/app.bicep"
    assert infra - code - set(PENDING_CODE) == set(), "set in infra but read by no code"
    assert code - example == set(), "read by the code but missing from local.settings.json.example"
    assert example - code - set(PENDING_CODE) == set(), "in local.settings.json.example but read by no code"
    assert infra | set(NOT_IN_INFRA) == example, "infra and local.settings.json.example differ"
    assert not set(NOT_IN_INFRA) & infra


def test_the_agreed_settings_are_there() -> None:
    assert set(AGREED) <= set(example_settings()) and set(AGREED) <= settings_read_by(CODE)
    assert example_settings()["AUTOPILOT_DEADLETTER_CONTAINER"] == "eventgrid-deadletter"


def test_infra_sets_the_platform_settings_the_app_needs_and_no_secret(bicep: dict[str, Any]) -> None:
    infra = infra_settings(bicep)
    assert infra["PYTHON_ENABLE_OPENTELEMETRY"] == "true"
    assert infra["AzureWebJobsStorage__credential"] == "managedidentity"
    assert {"AzureWebJobsStorage__blobServiceUri", "AzureWebJobsStorage__queueServiceUri", "AzureWebJobsStorage__clientId",
            "APPLICATIONINSIGHTS_CONNECTION_STRING", "AZURE_CLIENT_ID"} <= set(infra)
    assert "Authorization=AAD" in infra["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]
    assert "AzureWebJobsStorage" not in infra  # no connection string, so no account key
    for name in infra:
        assert not re.search(r"KEY|SECRET|PASSWORD|SAS", name), name
    host = json.loads((REPO / "host.json").read_text())
    assert host["telemetryMode"] == "OpenTelemetry"


def test_every_setting_is_documented(bicep: dict[str, Any]) -> None:
    docs = "".join((REPO / "docs" / name).read_text() for name in ("settings.md", "push-path.md", "audit-path.md", "sweep.md", "deploy.md"))
    missing = [n for n in ours(set(infra_settings(bicep))) | set(NOT_IN_INFRA) if f"`{n}`" not in docs]
    assert not missing, f"settings without a line in docs/: {missing}"


def test_the_scan_finds_settings_however_the_code_reads_them(tmp_path: Path) -> None:
    """The scanner is what keeps this honest: each way of reading a setting is recognised, messages and docstrings are not."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        'import os\n'
        'SCHEDULE_SETTING = "AUTOPILOT_NEW_SCHEDULE"\n'
        'X_SETTING = "SomeHostThing"\n'
        'def f(env):\n'
        '    """Reads AUTOPILOT_IN_DOCSTRING (not a setting read)."""\n'
        '    env.number("AUTOPILOT_NEW_COUNT", 1, int)\n'
        '    os.environ.get("AUTOPILOT_FROM_ENVIRON")\n'
        '    os.getenv("OTHER_SETTING_NAME")\n'
        '    os.environ["AUTOPILOT_SUBSCRIPT"]\n'
        '    raise ValueError("set AUTOPILOT_IN_MESSAGE and AUTOPILOT_AUDIT_* to fix it")\n'
    )
    assert settings_read_by([sample]) == {"AUTOPILOT_NEW_SCHEDULE", "SomeHostThing", "AUTOPILOT_NEW_COUNT", "AUTOPILOT_FROM_ENVIRON",
                                          "OTHER_SETTING_NAME", "AUTOPILOT_SUBSCRIPT"}


# Where the shipped configuration deliberately differs from the code's default.
DEPLOYED_DEFAULTS = {
    "AUTOPILOT_PUSH_EXCLUDE": "*:*-debug",  # deployments skip debug tags; the code alone excludes nothing
}


def test_example_and_infra_values_are_the_code_defaults(bicep: dict[str, Any]) -> None:
    """The example's values read as the code's defaults, and every literal value infra sets is the example's."""
    from shared.audit.settings import AuditSettings
    from shared.push.settings import PushSettings
    from shared.settings import AzureSettings, Env
    from shared.sweep.settings import SweepSettings

    example = example_settings()
    neutral = {k: v for k, v in example.items() if k not in DEPLOYED_DEFAULTS}
    for settings in (PushSettings, AuditSettings, AzureSettings, SweepSettings):
        assert settings.from_env(Env(neutral)) == settings.from_env(Env({})), settings.__name__
    assert {k: example[k] for k in DEPLOYED_DEFAULTS} == DEPLOYED_DEFAULTS
    app, main = bicep["app.bicep"]["parameters"], bicep["main.bicep"]["parameters"]
    literal = {}
    for name, value in infra_settings(bicep).items():
        if isinstance(value, str) and not PLATFORM.fullmatch(name):
            # a bare parameter name: app.bicep gets it from main.bicep under the same name; compare main's default
            literal[name] = main[value]["default"] if value in app else value
    assert len(literal) > 20
    assert {k: v for k, v in literal.items() if example.get(k) != v} == {}
