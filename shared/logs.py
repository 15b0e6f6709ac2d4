"""Structured log lines: one JSON object per outcome, never a credential."""

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


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log `event` with its fields as one JSON line (also attached as `extra` for Application Insights)."""
    payload = {"event": event, **{k: v for k, v in fields.items() if v is not None}}
    logger.log(level, json.dumps(payload, default=str, sort_keys=False), extra={"custom_dimensions": payload})
