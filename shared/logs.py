"""Structured log lines: one JSON object per outcome, its fields also as log record attributes (Application Insights
customDimensions); never a credential."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

SDK_LOGGERS = ("azure.core.pipeline.policies.http_logging_policy", "azure.identity", "msal")


def quiet_sdk_loggers(env: dict[str, str] | None = None) -> None:
    """In the function app, the SDKs' per-request INFO lines (one per HTTP call) stay out of Application Insights.

    `AUTOPILOT_LOG_HTTP=true` keeps them, for troubleshooting a deployment.
    """
    if (env if env is not None else os.environ).get("AUTOPILOT_LOG_HTTP", "").strip().lower() in ("1", "true", "yes", "on"):
        return
    for name in SDK_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


# Attributes a LogRecord already has (or `extra` may not set): a field with one of these names is logged as `field.NAME`.
RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def dimensions(payload: dict[str, Any]) -> dict[str, str | int | float | bool]:
    """Flat, typed attributes for a payload, as OpenTelemetry log record attributes (Application Insights customDimensions).

    Scalars stay as they are; a mapping becomes one attribute per key (`by_state.compliant`), so every count is its own
    column in KQL; anything else (lists, objects) is JSON text, which KQL reads back with `parse_json`.
    """
    flat: dict[str, str | int | float | bool] = {}

    def put(key: str, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, dict):
            for sub, item in value.items():
                put(f"{key}.{sub}", item)
        elif isinstance(value, (str, bool, int, float)):
            flat[f"field.{key}" if key in RESERVED else key] = value
        else:
            flat[f"field.{key}" if key in RESERVED else key] = json.dumps(value, default=str)

    for key, value in payload.items():
        put(key, value)
    return flat


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log `event` with its fields: one JSON line as the message, and each field as a log record attribute.

    With telemetry on (shared.telemetry), OpenTelemetry's logging handler exports the record's attributes, which
    Application Insights shows as customDimensions (`customDimensions.outcome`, `customDimensions["by_state.error"]`).
    """
    if not logger.isEnabledFor(level):
        return  # no handler would see it (the level is below the logger's): neither the JSON nor the attributes are built
    payload = {"event": event, **{k: v for k, v in fields.items() if v is not None}}
    logger.log(level, json.dumps(payload, default=str, sort_keys=False), extra=dimensions(payload))
