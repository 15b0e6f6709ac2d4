"""Structured log lines: one JSON object per outcome, never a credential."""

from __future__ import annotations

import json
import logging
from typing import Any


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log `event` with its fields as one JSON line (also attached as `extra` for Application Insights)."""
    payload = {"event": event, **{k: v for k, v in fields.items() if v is not None}}
    logger.log(level, json.dumps(payload, default=str, sort_keys=False), extra={"custom_dimensions": payload})
