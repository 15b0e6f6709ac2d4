"""The Functions entry point: creates the FunctionApp and registers the blueprints; nothing heavy is imported here."""

import azure.functions as func

from functions.audit import bp as audit_bp
from functions.push import bp as push_bp
from functions.sweep import bp as sweep_bp
from shared.logs import quiet_sdk_loggers
from shared.telemetry import configure as configure_telemetry

quiet_sdk_loggers()  # one INFO line per SDK HTTP request is noise in Application Insights (AUTOPILOT_LOG_HTTP=true keeps it)
# Azure Monitor's OpenTelemetry distro, only when APPLICATIONINSIGHTS_CONNECTION_STRING is set (infra sets it, with
# PYTHON_ENABLE_OPENTELEMETRY=true and host.json telemetryMode OpenTelemetry, so the worker exports once and host and
# worker spans share the invocation's trace). Without it nothing is imported.
configure_telemetry()
app = func.FunctionApp()
app.register_functions(push_bp)
app.register_functions(audit_bp)
app.register_functions(sweep_bp)
