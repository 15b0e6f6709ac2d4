"""Telemetry export: Azure Monitor's OpenTelemetry distro, switched on once per process when APPLICATIONINSIGHTS_CONNECTION_STRING is set."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

CONNECTION_SETTING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
# How the exporter authenticates: "Authorization=AAD" (the Functions host's own convention) sends Entra ID tokens of the
# app's identity, which an Application Insights resource with local authentication disabled requires.
AUTHENTICATION_SETTING = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"
# Only what this app uses is instrumented: the Azure SDKs' pipelines (one span per HTTP call) and requests under them.
INSTRUMENTATIONS = {
    "azure_sdk": {"enabled": True},
    "requests": {"enabled": True},
    "urllib3": {"enabled": True},
    "urllib": {"enabled": False},
    "django": {"enabled": False},
    "fastapi": {"enabled": False},
    "flask": {"enabled": False},
    "psycopg2": {"enabled": False},
}

# The host samples each invocation and passes its decision in traceparent; the worker follows it (an operator may still
# choose another sampler with the standard OTEL_TRACES_SAMPLER setting). The distro's own default, 5 traces per second,
# would cut an invocation's trace in pieces.
DEFAULT_SAMPLER = "parentbased_always_on"

log = logging.getLogger("autopilot.telemetry")
_lock = threading.Lock()
_configured = False


def uses_entra_id(env: Mapping[str, str]) -> bool:
    """Whether APPLICATIONINSIGHTS_AUTHENTICATION_STRING asks for Entra ID (`Authorization=AAD`, optionally `ClientId=…`)."""
    parts = dict(p.split("=", 1) for p in (env.get(AUTHENTICATION_SETTING) or "").split(";") if "=" in p)
    return parts.get("Authorization", "").strip().upper() == "AAD"


def configure(env: Mapping[str, str] | None = None, **options: Any) -> bool:
    """Configure the distro once per process; returns whether telemetry is exported.

    Nothing happens (and nothing heavy is imported) without a connection string: local runs, tests and the CLI stay as
    they are. `options` go to `configure_azure_monitor` (tests add in-memory span and log processors this way). A second
    call is a no-op, so the log handler is never attached twice (the double logging users report).
    """
    global _configured
    env = os.environ if env is None else env
    connection_string = (env.get(CONNECTION_SETTING) or "").strip()
    if not connection_string:
        return False
    with _lock:
        if _configured:
            return True
        from azure.monitor.opentelemetry import configure_azure_monitor

        os.environ.setdefault("OTEL_TRACES_SAMPLER", DEFAULT_SAMPLER)  # the distro reads it from the process environment

        if uses_entra_id(env) and "credential" not in options:
            from .azure_clients import credential

            options["credential"] = credential()  # the user-assigned identity named by AZURE_CLIENT_ID
        configure_azure_monitor(connection_string=connection_string, instrumentation_options=INSTRUMENTATIONS, **options)
        from opentelemetry.instrumentation.threading import ThreadingInstrumentor

        # Work a function hands to a thread pool (the audit's discovery and remediation) stays in the invocation's trace.
        ThreadingInstrumentor().instrument()
        _configured = True
    log.info("telemetry: exporting to Azure Monitor (OpenTelemetry)")
    return True
