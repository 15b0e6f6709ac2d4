"""A conversion ACR refused for good is reported, not posted again; a transient failure is retried. The digest view
(`/_streaming/{digest}`) shows only id and status, so the push path reads the operation for the error code."""

from __future__ import annotations

import uuid

from emulator.model import StreamingOperation
from emulator.streaming import FAILURES

from .conftest import FUNCTION, event_for


def failed_before(stack, digest: str, code: str) -> None:
    with stack.emu.world.lock:
        repo = stack.registry().repositories["app"]
        op_id = str(uuid.uuid4())
        repo.operations[op_id] = StreamingOperation(op_id, "app", digest, status="Failed", progress=100, error_code=code,
                                                    details=f"Conversion failed for resource app@{digest}. {code}: {FAILURES[code]}")


def test_permanent_refusal_is_reported_and_transient_failure_retried(push_stack):
    stack = push_stack(images=[{"tags": ["perm"], "layers_mb": [2], "seed": "perm"},
                               {"tags": ["trans"], "layers_mb": [2], "seed": "trans"}])
    tags = stack.registry().repositories["app"].tags
    perm, trans = tags["perm"].digest, tags["trans"].digest
    failed_before(stack, perm, "IMAGE_NOT_RUNNABLE")
    failed_before(stack, trans, "UNKNOWN_ERROR")
    assert stack.host.invoke_event(FUNCTION, event_for(stack.emu, perm, "perm")).succeeded
    assert stack.host.invoke_event(FUNCTION, event_for(stack.emu, trans, "trans")).succeeded
    by_digest = {o["digest"]: o for o in stack.outcomes()}
    assert (by_digest[perm]["outcome"], by_digest[perm]["code"]) == ("failed", "IMAGE_NOT_RUNNABLE")
    assert by_digest[trans]["outcome"] == "created"
    assert len(stack.operations(perm)) == 1 and len(stack.operations(trans)) == 2
