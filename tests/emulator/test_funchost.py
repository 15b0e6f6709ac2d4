"""The Functions host stand-in: indexing like the worker, the Event Grid webhook contract, timers, and the whole path
registry push → Event Grid → host → function."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
import requests
from azure.functions.timer import TimerRequest

from emulator.funchost import FunctionLoadError, FunctionsHost

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
APP_DIR = FIXTURES / "sample_funcapp"
SUB_ID = "3c9a1f0e-0000-4000-8000-00000000f401"
REGISTRY = "acrhost"


def reference(schema: str, name: str = "image_pushed") -> dict[str, Any]:
    return json.loads((FIXTURES / "eventgrid" / schema / f"{name}.json").read_text())


@pytest.fixture
def app_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(APP_DIR))


@pytest.fixture
def host(app_path: None) -> Iterator[FunctionsHost]:
    with FunctionsHost("sample_function_app") as h:
        yield h


def post(host: FunctionsHost, function: str, body: Any, event_type: str = "Notification",
         content_type: str = "application/json") -> requests.Response:
    return requests.post(f"{host.url}/runtime/webhooks/eventgrid", params={"functionName": function}, data=json.dumps(body),
                         headers={"aeg-event-type": event_type, "Content-Type": content_type}, timeout=30)


# ------------------------------------------------------------------------------------------------ indexing


def test_indexes_the_app_like_the_worker(host: FunctionsHost):
    assert {n: f.trigger_type for n, f in host.functions.items()} == {
        "on_image_pushed": "eventGridTrigger", "on_cloud_event": "eventGridTrigger", "on_raw": "eventGridTrigger",
        "on_async": "eventGridTrigger", "nightly_audit": "timerTrigger",
    }
    assert host.functions["on_async"].is_async
    assert host.functions["on_image_pushed"].requires_context
    assert host.functions["on_raw"].params["raw"].binding_type == "generic"  # str annotation: the worker's generic binding


def test_annotation_mismatch_is_refused_at_indexing(app_path: None):
    with pytest.raises(FunctionLoadError) as info:
        FunctionsHost("bad_function_app").load()
    assert str(info.value) == ('cannot load the mismatched function: type of event binding in function.json "eventGridTrigger" '
                               'does not match its Python annotation "TimerRequest"')


def test_each_host_imports_the_app_afresh(app_path: None):
    with FunctionsHost("sample_function_app") as one, FunctionsHost("sample_function_app") as two:
        assert one.functions["on_raw"].func is not two.functions["on_raw"].func


# ------------------------------------------------------------------------------------------------ webhook contract


def test_subscription_validation_handshake_both_forms(host: FunctionsHost):
    eg = [{"id": "1", "topic": "/t", "subject": "", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
           "eventTime": "2026-11-27T00:00:00.0000000Z", "data": {"validationCode": "ABC-123", "validationUrl": "https://x"},
           "dataVersion": "2", "metadataVersion": "1"}]
    resp = post(host, "on_image_pushed", eg, event_type="SubscriptionValidation")
    assert resp.status_code == 200 and resp.json() == {"validationResponse": "ABC-123"}
    ce = {"specversion": "1.0", "id": "2", "source": "/t", "type": "Microsoft.EventGrid.SubscriptionValidationEvent",
          "data": json.dumps({"validationCode": "XYZ"})}  # double-encoded, as the host expects for CloudEvents
    resp = post(host, "on_cloud_event", ce, event_type="SubscriptionValidation")
    assert resp.json() == {"validationResponse": "XYZ"}
    resp = requests.options(f"{host.url}/runtime/webhooks/eventgrid?functionName=on_cloud_event",
                            headers={"WebHook-Request-Origin": "eventgrid.azure.net"}, timeout=10)
    assert resp.status_code == 200 and resp.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert host.invocations == []  # handshakes invoke nothing


def test_eventgrid_event_is_decoded_to_func_eventgridevent(host: FunctionsHost):
    ref = reference("event-grid-schema")
    resp = post(host, "on_image_pushed", [ref])
    assert resp.status_code == 202
    [inv] = host.invocations_of("on_image_pushed")
    event = inv.trigger
    assert isinstance(event, func.EventGridEvent)
    assert (event.id, event.subject, event.event_type, event.topic) == (ref["id"], ref["subject"], ref["eventType"], ref["topic"])
    assert event.data_version == "2.0" and event.get_json() == ref["data"]
    assert event.event_time == datetime.datetime(2021, 9, 8, 6, 37, 45, 660994, tzinfo=datetime.UTC)
    assert inv.succeeded and inv.messages[0].startswith(f"pushed samples/nginx@{ref['data']['target']['digest']} (invocation ")


def test_cloudevent_is_decoded_to_func_cloudevent(host: FunctionsHost):
    ref = reference("cloud-events-schema")
    resp = post(host, "on_cloud_event", ref, content_type="application/cloudevents+json; charset=utf-8")  # a single object
    assert resp.status_code == 202
    [inv] = host.invocations_of("on_cloud_event")
    assert isinstance(inv.trigger, func.CloudEvent)
    assert (inv.trigger.type, inv.trigger.source, inv.trigger.subject) == (ref["type"], ref["source"], ref["subject"])
    assert inv.trigger.get_json() == ref["data"] and inv.trigger.specversion == "1.0" and inv.trigger.extension_attrs == {}
    assert inv.messages == [f"cloud event {ref['type']} {ref['subject']}"]


def test_str_annotation_receives_the_event_json(host: FunctionsHost):
    ref = reference("event-grid-schema")
    assert post(host, "on_raw", [ref]).status_code == 202
    [inv] = host.invocations_of("on_raw")
    assert isinstance(inv.trigger, str) and json.loads(inv.trigger) == ref


def test_one_invocation_per_event_and_500_when_any_fails(host: FunctionsHost):
    ok, bad = reference("event-grid-schema"), reference("event-grid-schema")
    bad["id"], bad["subject"] = "bad-one", "samples/nginx:fail"
    resp = post(host, "on_image_pushed", [ok, bad])
    assert resp.status_code == 500 and resp.text == "Exception while executing function: Functions.on_image_pushed"
    invs = sorted(host.invocations_of("on_image_pushed"), key=lambda i: i.succeeded)
    assert [i.succeeded for i in invs] == [False, True]
    assert isinstance(invs[0].exception, RuntimeError) and "refusing samples/nginx:fail" in str(invs[0].exception)
    assert any(r.levelname == "ERROR" and r.exc_info for r in invs[0].records)


def test_unknown_function_unknown_event_type_and_timer_name(host: FunctionsHost):
    resp = post(host, "nope", [])
    assert resp.status_code == 404 and "cannot find function: 'nope'" in resp.text
    assert post(host, "nightly_audit", []).status_code == 404  # timers have no webhook
    assert post(host, "on_raw", [], event_type="Bogus").status_code == 400
    assert post(host, "on_raw", [], event_type="Unsubscribe").status_code == 202


def test_two_deliveries_run_at_once(host: FunctionsHost):
    """Each function waits for the other at a barrier: only a host that invokes concurrently completes both."""
    events = []
    for i in range(2):
        e = reference("event-grid-schema")
        e["id"], e["subject"] = f"together-{i}", "samples/nginx:together"
        events.append(e)
    results: list[int] = []
    threads = [threading.Thread(target=lambda e=e: results.append(post(host, "on_image_pushed", [e]).status_code)) for e in events]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [202, 202]


def test_async_functions_share_one_event_loop(host: FunctionsHost):
    ref = reference("event-grid-schema")
    assert post(host, "on_async", [ref, {**ref, "id": "second"}]).status_code == 202
    messages = [i.messages for i in host.invocations_of("on_async")]
    assert len(messages) == 2 and messages[0] == messages[1]  # same loop id, and each invocation's log captured
    assert messages[0][0].startswith("async on loop ")


def test_fire_timer_passes_a_real_timer_request(host: FunctionsHost):
    inv = host.fire_timer("nightly_audit", past_due=True)
    assert inv.succeeded and isinstance(inv.trigger, TimerRequest) and inv.trigger.past_due is True
    assert inv.trigger.schedule == {"AdjustForDST": True}
    assert [(r.levelname, r.getMessage()) for r in inv.records] == [("WARNING", "audit fired past_due=True")]
    with pytest.raises(KeyError, match="timer functions: \\['nightly_audit'\\]"):
        host.fire_timer("on_raw")


def test_system_key_is_required_when_set(app_path: None):
    with FunctionsHost("sample_function_app", system_key="s3cret") as h:
        url = h.webhook_url("on_raw")
        assert url.endswith("functionName=on_raw&code=s3cret")
        assert requests.post(url.replace("s3cret", "wrong"), json=[], headers={"aeg-event-type": "Notification"},
                             timeout=10).status_code == 401
        assert requests.post(url, json=[], headers={"aeg-event-type": "Notification"}, timeout=10).status_code == 202


def test_cli_fires_a_timer_and_explains_bad_names():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(APP_DIR), str(REPO)])}
    ok = subprocess.run([sys.executable, "-m", "emulator.funchost", "--app", "sample_function_app", "--fire-timer", "nightly_audit"],
                        capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "audit fired past_due=False" in ok.stderr
    bad = subprocess.run([sys.executable, "-m", "emulator.funchost", "--app", "sample_function_app", "--fire-timer", "nope"],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert bad.returncode == 2 and "no timer function 'nope'" in bad.stderr


# ------------------------------------------------------------------------------------------------ end to end


def test_registry_push_reaches_the_function_through_event_grid(make_emulator, host: FunctionsHost):
    emu = make_emulator({
        "seed": 5,
        "settings": {"eventgrid_retry_base_seconds": 0.05},
        "subscriptions": [{"id": SUB_ID, "registries": [{"name": REGISTRY, "location": "westeurope"}]}],
        "eventgrid": {"subscriptions": [
            {"name": "push-fn", "registry": REGISTRY, "endpoint": host.webhook_url("on_image_pushed"),
             "included_event_types": ["Microsoft.ContainerRegistry.ImagePushed"], "max_delivery_attempts": 2},
            {"name": "cloud-fn", "registry": REGISTRY, "endpoint": host.webhook_url("on_cloud_event"),
             "schema": "CloudEventSchemaV1_0"},
        ]},
    })
    admin, ca = emu.endpoints["admin"], emu.endpoints["ca_bundle"]
    resp = requests.post(f"{admin}/registries/{REGISTRY}/images", json={"repository": "team/api", "tags": ["2.1.0"]},
                         verify=ca, timeout=30)
    digest = resp.json()["digest"]
    requests.post(f"{admin}/registries/{REGISTRY}/images", json={"repository": "team/api", "tags": ["fail"]},
                  verify=ca, timeout=30).raise_for_status()
    eg = emu.ctx.extras["eventgrid"]
    assert eg.wait_idle_blocking(30)

    pushed = {i.trigger.subject: i for i in host.invocations_of("on_image_pushed")}
    good = pushed["team/api:2.1.0"]
    assert good.succeeded and isinstance(good.trigger, func.EventGridEvent)
    data = good.trigger.get_json()
    assert data["target"]["digest"] == digest and data["location"] == "westeurope"
    assert data["request"]["host"] == emu.world.registries[REGISTRY].login_server
    assert good.trigger.topic == emu.world.registries[REGISTRY].resource_id

    clouds = host.invocations_of("on_cloud_event")
    assert sorted(i.trigger.subject for i in clouds) == ["team/api:2.1.0", "team/api:fail"]
    assert all(isinstance(i.trigger, func.CloudEvent) and i.succeeded for i in clouds)

    # the failing function: the host answers 500, Event Grid retries, then dead-letters after max_delivery_attempts
    failing = [a for a in eg.delivery_attempts("push-fn") if a.status == 500]
    assert [a.attempt for a in failing] == [1, 2]
    [dead] = eg.dead_letters
    assert dead["event"]["subject"] == "team/api:fail" and dead["event"]["deadLetterReason"] == "MaxDeliveryAttemptsExceeded"
    assert dead["event"]["lastHttpStatusCode"] == 500
    assert [a.status for a in eg.delivery_attempts("cloud-fn")] == [202, 202]


@pytest.mark.parametrize(("expression", "valid"), [
    ("0 */5 * * * *", True), ("0 30 9 * * mon-fri", True), ("0 0 0 1 jan,jul *", True), ("01:00:00", True),
    ("0 * * * *", False), ("61 * * * * *", False), ("0 0 25 * * *", False), ("0 0 * * * 8", False), ("*/0 * * * * *", False),
    ("hourly", False),
])
def test_timer_schedules_are_checked_like_the_host(expression: str, valid: bool):
    from emulator.funchost import check_schedule

    assert check_schedule(expression) is valid


def test_setting_expressions_resolve_from_the_environment_or_fail_indexing(monkeypatch: pytest.MonkeyPatch):
    from emulator.funchost import HostIndexingError

    def make_app() -> func.FunctionApp:
        app = func.FunctionApp()

        @app.timer_trigger(schedule="%MY_SCHEDULE%", arg_name="timer", run_on_startup=True)
        def tick(timer: func.TimerRequest) -> None:
            import logging

            logging.info("tick")

        return app

    monkeypatch.delenv("MY_SCHEDULE", raising=False)
    with pytest.raises(HostIndexingError, match="'%MY_SCHEDULE%' does not resolve to a value"):
        FunctionsHost(app=make_app()).load()
    monkeypatch.setenv("MY_SCHEDULE", "every hour")
    with pytest.raises(HostIndexingError, match="schedule expression 'every hour' was not recognized"):
        FunctionsHost(app=make_app()).load()
    monkeypatch.setenv("MY_SCHEDULE", "0 0 * * * *")
    with FunctionsHost(app=make_app()) as h:
        assert h.functions["tick"].trigger_settings["schedule"] == "0 0 * * * *"
        [started] = h.startup  # run_on_startup: the host fires it once in the background when it starts
        assert started.result(30).messages == ["tick"]
        assert len(h.invocations_of("tick")) == 1


def test_the_real_function_app_indexes(azurite, monkeypatch: pytest.MonkeyPatch):
    """The shipped function_app.py loads in the host: its functions, the triggers the platform will bind (the queue
    trigger needs the storage connection, as on Azure)."""
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    with FunctionsHost("function_app") as h:
        kinds = {n: f.trigger_type for n, f in h.functions.items()}
    assert kinds.get("on_image_pushed") == "eventGridTrigger"
    assert any(kind == "timerTrigger" for kind in kinds.values())
    assert kinds.get("audit_work_item") == "queueTrigger"


def test_function_timeout_fails_the_delivery_like_the_host(tmp_path: Path):
    from emulator.funchost import read_function_timeout

    assert read_function_timeout(REPO / "host.json") == 600.0  # the shipped host.json: 00:10:00
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0", "functionTimeout": "-1"}))
    assert read_function_timeout(tmp_path / "host.json") == float("inf")
    (tmp_path / "host.json").write_text(json.dumps({"functionTimeout": "ten minutes"}))
    with pytest.raises(ValueError, match="is not a TimeSpan"):
        read_function_timeout(tmp_path / "host.json")

    release = threading.Event()
    app = func.FunctionApp()

    @app.event_grid_trigger(arg_name="event")
    def slow(event: func.EventGridEvent) -> None:
        release.wait(30)

    @app.timer_trigger(schedule="0 0 * * * *", arg_name="timer")
    def slow_timer(timer: func.TimerRequest) -> None:
        release.wait(30)

    with FunctionsHost(app=app, function_timeout=0.5) as h:
        resp = post(h, "slow", [reference("event-grid-schema")])
        assert resp.status_code == 500 and resp.text.startswith("Timeout value of 00:00:00.500 exceeded by function 'Functions.slow'")
        inv = h.fire_timer("slow_timer")
        assert inv.timed_out and not inv.succeeded
        release.set()
    assert all(i.timed_out and not i.succeeded for i in h.invocations)


def test_cli_serves_with_local_settings_and_stops_on_sigterm(tmp_path: Path):
    (tmp_path / "local.settings.json").write_text(json.dumps({
        "IsEncrypted": False, "Values": {"FUNCHOST_TEST_SETTING": "from-file", "FUNCHOST_TEST_PRESET": "from-file"}}))
    (tmp_path / "settings_app.py").write_text(
        "import os\nimport azure.functions as func\napp = func.FunctionApp()\n"
        "SEEN = (os.environ['FUNCHOST_TEST_SETTING'], os.environ['FUNCHOST_TEST_PRESET'])\n\n"
        "@app.event_grid_trigger(arg_name='event')\ndef show(event: func.EventGridEvent) -> None:\n"
        "    import logging\n    logging.warning('settings %s', SEEN)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]), "FUNCHOST_TEST_PRESET": "from-env"}
    proc = subprocess.Popen([sys.executable, "-m", "emulator.funchost", "--app", "settings_app", "--port", "0"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()  # "show: eventGridTrigger http://127.0.0.1:PORT/runtime/webhooks/..."
        assert line.startswith("show: eventGridTrigger http://127.0.0.1:"), line
        url = line.split(" ", 2)[2]
        resp = requests.post(url, json=[reference("event-grid-schema")], headers={"aeg-event-type": "Notification"}, timeout=30)
        assert resp.status_code == 202
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "FUNCHOST_TEST_PRESET from local.settings.json skipped: already set in the environment" in err
    assert "settings ('from-file', 'from-env')" in err


def test_encrypted_or_broken_settings_are_refused(tmp_path: Path):
    from emulator.funchost import load_local_settings

    (tmp_path / "enc.json").write_text(json.dumps({"IsEncrypted": True, "Values": {"A": "x"}}))
    with pytest.raises(ValueError, match="is encrypted"):
        load_local_settings(tmp_path / "enc.json", {})
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ValueError, match="cannot read"):
        load_local_settings(tmp_path / "bad.json", {})
    target: dict[str, str] = {"B": "env"}
    (tmp_path / "ok.json").write_text(json.dumps({"Values": {"A": 1, "B": "file"}}))
    assert load_local_settings(tmp_path / "ok.json", target) == ["B"] and target == {"A": "1", "B": "env"}
