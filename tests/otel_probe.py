"""Runs one push invocation or one audit run in a fresh process with telemetry on, exporting to OpenTelemetry's in-memory
exporters, and prints what was exported as JSON (tests/test_telemetry.py reads it).

A process of its own because OpenTelemetry's providers are process globals. The Python worker's part is played here as it
plays it with PYTHON_ENABLE_OPENTELEMETRY=true: the root logger at INFO, and the invocation run inside the trace context the
host sends (traceparent), so whatever the function does is a child of the host's invocation span.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

# The host's invocation span, as its traceparent names it (OpenTelemetry is imported only inside the probe process).
HOST_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
HOST_SPAN_ID = "00f067aa0ba902b7"


def invoke(name: str, trigger: Any) -> None:
    """Run one function of the app as the worker does: inside the trace context the host sent with the invocation."""
    from opentelemetry import context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    import function_app

    (function,) = [f for f in function_app.app.get_functions() if f.get_function_name() == name]
    carrier = {"traceparent": f"00-{HOST_TRACE_ID}-{HOST_SPAN_ID}-01"}
    token = context.attach(TraceContextTextMapPropagator().extract(carrier))
    try:
        function.get_user_function()(trigger)
    finally:
        context.detach(token)


def run_push(event: dict[str, Any]) -> None:
    import azure.functions as func

    invoke("on_image_pushed", func.EventGridEvent(id=event["id"], data=event["data"], topic=event["topic"], subject=event["subject"],
                                                  event_type=event["eventType"], event_time=None, data_version=event["dataVersion"]))


def run_audit() -> None:
    from azure.functions.timer import TimerRequest

    invoke("audit_node_pools", TimerRequest(past_due=False))


def main() -> None:
    from opentelemetry.sdk._logs.export import InMemoryLogExporter, SimpleLogRecordProcessor
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    request = json.loads(sys.stdin.read())
    spans, logs = InMemorySpanExporter(), InMemoryLogExporter()
    logging.getLogger().setLevel(logging.INFO)
    import shared.telemetry

    configured = shared.telemetry.configure(
        span_processors=[SimpleSpanProcessor(spans)], log_record_processors=[SimpleLogRecordProcessor(logs)],
        disable_offline_storage=True, enable_live_metrics=False, enable_performance_counters=False, disable_metrics=True,
    )
    if request["mode"] == "push":
        run_push(request["event"])
    else:
        run_audit()
    out = {
        "configured": configured,
        "spans": [{"name": s.name, "trace_id": f"{s.context.trace_id:032x}", "span_id": f"{s.context.span_id:016x}",
                   "parent_id": f"{s.parent.span_id:016x}" if s.parent else None, "kind": s.kind.name,
                   "attributes": dict(s.attributes or {})} for s in spans.get_finished_spans()],
        "logs": [{"body": str(r.log_record.body), "attributes": dict(r.log_record.attributes or {}),
                  "trace_id": f"{r.log_record.trace_id or 0:032x}", "logger": r.instrumentation_scope.name if r.instrumentation_scope else None}
                 for r in logs.get_finished_logs()],
    }
    sys.stdout.write("\n" + json.dumps(out, default=str) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
