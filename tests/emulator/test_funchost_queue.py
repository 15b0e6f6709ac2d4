"""The host stand-in's Storage queue trigger against Azurite: base64 messages, QueueMessage metadata, retry after the
visibility timeout, the poison queue after maxDequeueCount, batch concurrency, host.json options."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueServiceClient

from emulator.azurite import Azurite
from emulator.funchost import FunctionLoadError, FunctionsHost
from emulator.queuetrigger import QueueOptions
from shared.storage import queue_client

seen: list[dict[str, Any]] = []
lock = threading.Lock()
running = {"now": 0, "peak": 0}


def make_app(queue: str) -> func.FunctionApp:
    app = func.FunctionApp()

    @app.function_name("worker")
    @app.queue_trigger(arg_name="msg", queue_name=queue, connection="AzureWebJobsStorage")
    def worker(msg: func.QueueMessage) -> None:
        body = msg.get_json()
        with lock:
            seen.append({"id": msg.id, "body": body, "dequeue_count": msg.dequeue_count, "insertion": msg.insertion_time,
                         "pop_receipt": msg.pop_receipt, "started": time.monotonic()})
            running["now"] += 1
            running["peak"] = max(running["peak"], running["now"])
        try:
            if body.get("sleep"):
                time.sleep(body["sleep"])
            if body.get("fail_until", 0) >= msg.dequeue_count:
                raise RuntimeError(f"failing on attempt {msg.dequeue_count}")
        finally:
            with lock:
                running["now"] -= 1

    return app


@pytest.fixture
def env(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    seen.clear()
    running.update(now=0, peak=0)
    return azurite.connection_string


def start_host(queue: str, tmp_path: Path, queues: dict[str, Any]) -> FunctionsHost:
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0", "extensions": {"queues": queues}}))
    host = FunctionsHost(app=make_app(queue), max_workers=32)
    host.load()
    for fn in host.functions.values():
        fn.directory = str(tmp_path)
    return host.start()


@pytest.fixture
def queue_name() -> str:
    return f"q{uuid.uuid4().hex[:12]}"


@pytest.fixture
def host(env: str, queue_name: str, tmp_path: Path) -> Iterator[FunctionsHost]:
    h = start_host(queue_name, tmp_path, {"maxDequeueCount": 3, "visibilityTimeout": "00:00:01",
                                          "maxPollingInterval": "00:00:01", "batchSize": 8})
    yield h
    h.stop()


def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def test_base64_message_reaches_the_function_with_metadata_and_is_deleted(host: FunctionsHost, queue_name: str, env: str):
    q = queue_client(queue_name)  # the app's own client: base64 as the host expects by default
    q.send_message(json.dumps({"n": 1}))
    wait_for(lambda: len(seen) == 1)
    assert host.wait_queues_idle(10)
    assert seen[0]["body"] == {"n": 1} and seen[0]["dequeue_count"] == 1 and seen[0]["insertion"] is not None
    assert seen[0]["pop_receipt"]
    raw = QueueServiceClient.from_connection_string(env).get_queue_client(queue_name)
    assert list(raw.peek_messages(max_messages=5)) == []  # deleted after success
    assert host.invocations_of("worker")[0].succeeded


def test_a_failure_is_retried_after_the_visibility_timeout_with_a_higher_dequeue_count(host: FunctionsHost, queue_name: str):
    queue_client(queue_name).send_message(json.dumps({"fail_until": 1}))
    wait_for(lambda: len(seen) == 2)
    assert [s["dequeue_count"] for s in seen] == [1, 2]
    # not before the visibility timeout (1 s)
    invs = host.invocations_of("worker")
    assert invs[1].started - invs[0].ended >= 0.9
    assert host.wait_queues_idle(10)
    assert not host.queue_listeners[0].poisoned


def test_max_dequeue_count_moves_the_message_to_the_poison_queue(host: FunctionsHost, queue_name: str, env: str):
    queue_client(queue_name).send_message(json.dumps({"fail_until": 99, "tag": "poison-me"}))
    poison = queue_client(f"{queue_name}-poison")
    wait_for(lambda: list(poison.peek_messages(max_messages=1)), timeout=30)
    assert [s["dequeue_count"] for s in seen] == [1, 2, 3]  # maxDequeueCount 3, then no more attempts
    (moved,) = list(poison.peek_messages(max_messages=5))
    assert json.loads(moved.content) == {"fail_until": 99, "tag": "poison-me"}  # same content, still base64 on the wire
    time.sleep(1.5)
    assert len(seen) == 3


def test_a_message_that_is_not_base64_fails_and_ends_poisoned(host: FunctionsHost, queue_name: str, env: str):
    raw = QueueServiceClient.from_connection_string(env).get_queue_client(queue_name)
    raw.send_message("{not base64}")
    poison = QueueServiceClient.from_connection_string(env).get_queue_client(f"{queue_name}-poison")
    wait_for(lambda: list(poison.peek_messages(max_messages=1)), timeout=30)
    assert seen == [] and next(iter(poison.peek_messages())).content == "{not base64}"  # kept as it was, nothing lost


def test_a_message_dequeued_more_than_max_times_is_poisoned_without_running(host: FunctionsHost, queue_name: str, env: str):
    host.stop()
    seen.clear()
    q = queue_client(queue_name)
    q.send_message(json.dumps({"n": "crashed"}))
    for _ in range(3):  # three workers that died holding it (dequeued, never completed)
        (m,) = list(q.receive_messages(max_messages=1, visibility_timeout=1))
        q.update_message(m, visibility_timeout=0)
    host.start()
    wait_for(lambda: list(queue_client(f"{queue_name}-poison").peek_messages(max_messages=1)))
    assert seen == []


def test_batch_runs_messages_in_parallel(env: str, queue_name: str, tmp_path: Path):
    h = start_host(queue_name, tmp_path, {"batchSize": 4, "newBatchThreshold": 0, "maxPollingInterval": "00:00:01"})
    try:
        q = queue_client(queue_name)
        for i in range(8):
            q.send_message(json.dumps({"n": i, "sleep": 0.5}))
        wait_for(lambda: len(seen) == 8 and running["now"] == 0)
        assert 2 <= running["peak"] <= 4  # parallel within a batch, never more than batchSize
    finally:
        h.stop()


def test_a_busy_listener_fetches_the_next_batch_when_room_frees_not_after_a_backoff(env: str, queue_name: str,
                                                                                    tmp_path: Path):
    """While the batch is in flight the real host waits for completions; it backs off only on an empty queue. A listener
    whose polling interval grew while it was busy (0.2, 0.4, 0.8, 1.6 s …) would start the second batch seconds late."""
    q = queue_client(queue_name)
    with contextlib.suppress(ResourceExistsError):
        q.create_queue()
    for i in range(8):
        q.send_message(json.dumps({"n": i, "sleep": 1.5}))
    h = start_host(queue_name, tmp_path, {"batchSize": 4, "newBatchThreshold": 0, "maxPollingInterval": "00:01:00"})
    try:
        wait_for(lambda: len(seen) == 8 and running["now"] == 0)
        starts = sorted(s["started"] for s in seen)
        assert starts[3] - starts[0] < 1.0  # the first batch together
        assert 1.4 < starts[4] - starts[0] < 2.4  # the second as soon as the first is done (a backoff: ≈ 3.0 s)
    finally:
        h.stop()


def test_host_json_options_and_errors(tmp_path: Path):
    assert QueueOptions.from_host_json(tmp_path / "missing.json") == QueueOptions()
    (tmp_path / "host.json").write_text(json.dumps({"extensions": {"queues": {"batchSize": 64}}}))
    with pytest.raises(ValueError, match="batchSize"):
        QueueOptions.from_host_json(tmp_path / "host.json")
    (tmp_path / "host.json").write_text(json.dumps({"extensions": {"queues": {"visibilityTimeout": "soon"}}}))
    with pytest.raises(ValueError, match="visibilityTimeout"):
        QueueOptions.from_host_json(tmp_path / "host.json")


def test_the_queue_message_annotation_is_checked_like_the_worker(env: str):
    app = func.FunctionApp()

    @app.function_name("bad")
    @app.queue_trigger(arg_name="msg", queue_name="x", connection="AzureWebJobsStorage")
    def bad(msg: func.EventGridEvent) -> None:  # pragma: no cover - never runs
        pass

    with pytest.raises(FunctionLoadError, match="does not match"):
        FunctionsHost(app=app).load()


def test_base64_is_what_the_app_client_sends(env: str, queue_name: str):
    q = queue_client(queue_name)
    q.create_queue()
    q.send_message("héllo")
    raw = QueueServiceClient.from_connection_string(env).get_queue_client(queue_name)
    (m,) = list(raw.peek_messages(max_messages=1))
    assert base64.b64decode(m.content).decode() == "héllo"


def test_a_listener_that_cannot_start_is_logged_and_the_other_functions_run(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    with FunctionsHost(app=make_app("nostorage")) as h:
        assert h.queue_listeners == []
        assert "Functions.worker' was unable to start" in h.listener_errors[0]
        assert "AzureWebJobsStorage" in h.listener_errors[0]
