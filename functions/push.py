"""Push path trigger adapter: Event Grid ImagePushed (Event Grid schema or CloudEvents 1.0) → shared.push service."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import azure.functions as func

from shared.push.settings import PushSettings

if TYPE_CHECKING:
    from shared.push.service import PushService

# Validate every push setting when the worker indexes the app, so a bad value fails start-up with a message naming it
# instead of failing every event (no SDK is imported for this: tests/test_function_app.py checks).
PushSettings.from_env()

bp = func.Blueprint()
_service: PushService | None = None
_lock = threading.Lock()


def service() -> PushService:
    """One service per instance: settings validated once, caches (registries, tokens, clients) live as long as the worker."""
    global _service
    with _lock:
        if _service is None:
            from shared.push.service import PushService  # the SDKs load on the first event, not at cold start

            _service = PushService.from_env()
        return _service


def as_dict(event: func.EventGridEvent | func.CloudEvent) -> dict:
    """The delivered event back in its own schema (the worker decodes both schemas, whatever the annotation says)."""
    if isinstance(event, func.CloudEvent):
        return {"specversion": event.specversion, "id": event.id, "source": event.source, "type": event.type,
                "subject": event.subject, "time": event.time.isoformat() if event.time else None, "data": event.get_json()}
    return {"id": event.id, "topic": event.topic, "subject": event.subject, "eventType": event.event_type,
            "eventTime": event.event_time.isoformat() if event.event_time else None, "data": event.get_json(),
            "dataVersion": event.data_version}


@bp.function_name("on_image_pushed")
@bp.event_grid_trigger(arg_name="event")
def on_image_pushed(event: func.EventGridEvent) -> None:
    """Skips and permanent failures return (acknowledged); TransientError propagates: the host answers 500, Event Grid retries."""
    service().handle_event(as_dict(event))
