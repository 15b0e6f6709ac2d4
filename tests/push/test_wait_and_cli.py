"""Waiting for conversions (UNKNOWN_ERROR is retried through Event Grid) and the operator CLI `python -m shared stream`."""

from __future__ import annotations

import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stderr, redirect_stdout

from shared.__main__ import main
from shared.push.outcomes import TransientError

from .conftest import FUNCTION, PREMIUM, STANDARD, event_for, scenario


def test_wait_mode_retries_unknown_errors_through_redelivery_until_one_artifact_exists(push_stack):
    stack = push_stack(env={"AUTOPILOT_PUSH_WAIT_SECONDS": "10"}, unknown_error_rate=0.3)
    stack.subscribe("wait")
    digests = [stack.push(tags=[f"w{i}"], layers_mb=[2], seed=f"wait-{i}") for i in range(4)]
    stack.settle(timeout=120)
    failures = 0
    for digest in digests:
        ops = stack.operations(digest)
        assert ops[-1].status == "Succeeded" and len(stack.referrers(digest)) == 1, [o.status for o in ops]
        assert all(op.status == "Failed" and op.error_code == "UNKNOWN_ERROR" for op in ops[:-1])
        failures += len(ops) - 1
    assert failures > 0, "with a 30 % UNKNOWN_ERROR rate some conversion should have failed first"
    retried = [a for a in stack.eventgrid.delivery_attempts() if a.status == 500]
    assert len(retried) >= failures  # each failed conversion failed its invocation; Event Grid redelivered
    created = [o for o in stack.outcomes() if o["outcome"] == "created"]
    assert len(created) == len(digests) and all("succeeded" in o["detail"] for o in created)


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["stream", *args])
    return code, out.getvalue(), err.getvalue()


def test_cli_streams_one_image_and_lists_its_referrers(push_stack):
    stack = push_stack(images=[{"tags": ["v1"], "layers_mb": [2], "seed": "cli"},
                               {"tags": ["arm"], "platforms": ["linux/arm64"], "layers_mb": [2], "seed": "cli-arm"}])
    digest = stack.registry().repositories["app"].tags["v1"].digest

    code, out, _ = cli("--registry", PREMIUM, "--image", "app:v1", "--report")
    assert code == 20 and "report-mode" in out and stack.operations(digest) == []

    code, out, _ = cli("--registry", PREMIUM, "--image", "app:v1", "--wait", "20", "--json")
    assert code == 0, out
    result = json.loads(out)
    assert result["outcome"] == "created" and result["digest"] == digest and "succeeded" in result["detail"]

    login = stack.registry().login_server
    code, out, _ = cli("--registry", login, "--image", f"app@{digest}")
    assert code == 10 and out.startswith("already-streaming")

    code, out, _ = cli("--registry", PREMIUM, "--image", "app:v1", "--list-referrers")
    assert code == 0 and "1 streaming artifact(s)" in out and "application/vnd.azure.artifact.streaming.v1" in out

    code, out, _ = cli("--registry", stack.registry().resource_id, "--image", "app:arm")
    assert code == 20 and "skipped (platform)" in out

    code, out, _ = cli("--registry", STANDARD, "--image", "app:v1")
    assert code == 20 and "registry-cannot-stream" in out

    code, _, err = cli("--registry", PREMIUM, "--image", "App:V1!")
    assert code == 2 and "--image" in err
    code, _, err = cli("--registry", "nosuchregistry", "--image", "app:v1")
    assert code == 2 and "no registry" in err
    assert len(stack.operations(digest)) == 1


def test_cli_without_a_usable_identity_says_so_without_a_traceback(make_emulator, monkeypatch):
    make_emulator(scenario())
    monkeypatch.setenv("IDENTITY_HEADER", "wrong")  # the identity endpoint refuses us
    from shared.azure_clients import reset_credential

    reset_credential()
    code, out, err = cli("--registry", PREMIUM, "--image", "app:v1")
    assert code == 2 and "cannot get a token" in err and "Traceback" not in err + out


def test_cli_does_not_hide_an_arm_refusal_behind_no_such_registry(make_emulator):
    """A 401 listing a subscription's registries is an authentication failure, not 'no registry with that name'."""
    make_emulator(scenario(faults=[{"match": "arm.registries", "error_rate": 1.0, "statuses": [401]}]))
    code, out, err = cli("--registry", PREMIUM, "--image", "app:v1")
    assert code == 2 and "cannot get a token" in err and "no registry" not in err and "Traceback" not in err + out


def test_cli_list_referrers_reports_what_arm_answered(push_stack):
    stack = push_stack(images=[{"tags": ["v1"], "layers_mb": [2], "seed": "cli-missing"}])
    missing = stack.registry().resource_id.rsplit("/", 1)[0] + "/nosuchregistry"
    code, out, err = cli("--registry", missing, "--image", "app:v1", "--list-referrers")
    assert code == 30 and "ARM answered 404" in err and "does not exist" in err, (out, err)


def test_wait_mode_redelivery_that_finds_the_conversion_running_waits_for_it(push_stack):
    """Found by bench/push_soak.py. Event Grid stops waiting for a delivery after its timeout (30 s) and redelivers while the
    first invocation still waits for the conversion; the redelivery found the conversion running and was acknowledged
    (`in-progress`), so when the conversion then ended UNKNOWN_ERROR the first invocation's failure reached nobody and the
    image never streamed. Now the redelivery waits as well and fails with the conversion; Event Grid's next attempt converts."""
    stack = push_stack(env={"AUTOPILOT_PUSH_WAIT_SECONDS": "20"}, conversion_seconds=1.5, unknown_error_rate=1.0)
    digest = stack.push(tags=["slow"], layers_mb=[2], seed="redelivered")  # no subscription: we play Event Grid
    event = event_for(stack.emu, digest, "slow")
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(stack.host.invoke_event, FUNCTION, event)  # the delivery Event Grid gave up on
        deadline = time.monotonic() + 10
        while not stack.operations(digest) and time.monotonic() < deadline:
            time.sleep(0.02)
        redelivery = stack.host.invoke_event(FUNCTION, event)  # arrives while the conversion runs
        first_inv = first.result(30)
    assert [op.status for op in stack.operations(digest)] == ["Failed"]
    assert not first_inv.succeeded
    assert not redelivery.succeeded, "the redelivery was acknowledged while the conversion it found was still running"
    assert isinstance(redelivery.exception, TransientError) and redelivery.exception.code == "UNKNOWN_ERROR"

    stack.emu.world.settings.unknown_error_rate = 0.0
    again = stack.host.invoke_event(FUNCTION, event)  # Event Grid's next attempt after the 500
    assert again.succeeded
    assert [op.status for op in stack.operations(digest)] == ["Failed", "Succeeded"]
    assert len(stack.referrers(digest)) == 1
