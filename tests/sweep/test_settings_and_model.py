"""Sweep settings (errors name the setting) and work items (what a queue message may hold)."""

from __future__ import annotations

import pytest

from shared.settings import Env, SettingsError
from shared.sweep.model import BadWorkItem, Tally, WorkItem
from shared.sweep.settings import DEFAULT_SCHEDULE, SweepSettings


def settings(**env: str) -> SweepSettings:
    return SweepSettings.from_env(Env(env))


def test_defaults():
    s = settings()
    assert s.mode == "enforce" and s.schedule == DEFAULT_SCHEDULE and s.max_conversions == 1000
    assert s.deadletter_container == "eventgrid-deadletter" and s.container == "autopilot-sweep" and not s.auto_convert


@pytest.mark.parametrize(("env", "name"), [
    ({"AUTOPILOT_SWEEP_SCHEDULE": "daily"}, "AUTOPILOT_SWEEP_SCHEDULE"),
    ({"AUTOPILOT_SWEEP_MODE": "yolo"}, "AUTOPILOT_SWEEP_MODE"),
    ({"AUTOPILOT_SWEEP_SUBSCRIPTIONS": "prod"}, "AUTOPILOT_SWEEP_SUBSCRIPTIONS"),
    ({"AUTOPILOT_SWEEP_MAX_CONVERSIONS": "-1"}, "AUTOPILOT_SWEEP_MAX_CONVERSIONS"),
    ({"AUTOPILOT_SWEEP_TIME_BUDGET_SECONDS": "1"}, "AUTOPILOT_SWEEP_TIME_BUDGET_SECONDS"),
    ({"AUTOPILOT_SWEEP_PAGE_SIZE": "5000"}, "AUTOPILOT_SWEEP_PAGE_SIZE"),
    ({"AUTOPILOT_DEADLETTER_CONTAINER": "Bad_Name"}, "AUTOPILOT_DEADLETTER_CONTAINER"),
    ({"AUTOPILOT_SWEEP_AUTO_CONVERT": "prod/*:latest"}, "AUTOPILOT_SWEEP_AUTO_CONVERT"),
])
def test_bad_settings_name_themselves(env: dict[str, str], name: str):
    with pytest.raises(SettingsError) as info:
        settings(**env)
    assert info.value.setting == name


def test_auto_convert_globs():
    s = settings(AUTOPILOT_SWEEP_AUTO_CONVERT="prod/*, web/frontend")
    assert s.wants_auto_conversion("prod/api/x") and s.wants_auto_conversion("web/frontend")
    assert not s.wants_auto_conversion("web/frontend2")


def test_work_items_round_trip_and_bad_ones_are_refused():
    item = WorkItem("r1", "repos", 1e9, "enforce", "/subscriptions/x", "reg", "reg.azurecr.io", (("a", None), ("b", "v1")))
    assert WorkItem.from_json(item.to_json()) == item
    assert len(item.to_json()) < 64 * 1024  # a queue message's limit
    for bad in ("not json", "[]", '{"v": 99}', '{"v": 1, "run_id": "r", "kind": "nope", "deadline": 1, "mode": "enforce"}',
                '{"v": 1, "run_id": "r", "kind": "repos", "deadline": "soon", "mode": "enforce"}'):
        with pytest.raises(BadWorkItem):
            WorkItem.from_json(bad)


def test_tallies_merge_and_round_trip():
    a, b = Tally("reg", started=1), Tally("reg", started=2, status="error", detail="403")
    a.skipped["filtered"] += 1
    b.fail("repo@sha256:x", "IMAGE_NOT_RUNNABLE", "no")
    a.merge(b)
    assert (a.started, a.status, dict(a.failed), dict(a.skipped)) == (3, "error", {"IMAGE_NOT_RUNNABLE": 1}, {"filtered": 1})
    assert Tally.from_dict(a.as_dict()).as_dict() == a.as_dict()
