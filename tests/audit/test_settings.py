"""AuditSettings: defaults, parsing, and start-up errors that name the setting."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.audit.settings import AuditSettings, ExcludeTag, Window, validate_ncrontab
from shared.settings import Env, SettingsError


def settings(**env: str) -> AuditSettings:
    return AuditSettings.from_env(Env(env))


def test_defaults_are_report_mode_hourly_with_documented_minimum():
    s = settings()
    assert s.mode == "report" and not s.enforce
    assert s.schedule == "0 0 * * * *"
    assert s.min_kubernetes == (1, 25)
    assert s.max_remediations == 10
    assert s.failure_threshold == 3
    assert s.subscriptions == ()
    assert s.window is None
    assert s.exclude_tag == ExcludeTag("artifact-streaming", "off")
    assert {"Ubuntu2404", "AzureLinux3"} <= set(s.unsupported_os_skus)


def test_parses_every_setting():
    s = settings(
        AUTOPILOT_AUDIT_MODE="Enforce",
        AUTOPILOT_AUDIT_SCHEDULE="0 */15 * * * Mon-Fri",
        AUTOPILOT_AUDIT_SUBSCRIPTIONS="3F2A3D10-0000-4000-8000-0000000000A1; 3f2a3d10-0000-4000-8000-0000000000b2",
        AUTOPILOT_AUDIT_MAX_REMEDIATIONS="0",
        AUTOPILOT_AUDIT_FAILURE_THRESHOLD="1",
        AUTOPILOT_AUDIT_WINDOW="Sat,Sun 22-06",
        AUTOPILOT_AUDIT_EXCLUDE_TAG="no-stream",
        AUTOPILOT_AUDIT_EXCLUDE="/subscriptions/*/resourceGroups/rg-legacy/*",
        AUTOPILOT_AUDIT_UNSUPPORTED_OS_SKUS="none",
        AUTOPILOT_AUDIT_MIN_KUBERNETES="1.28",
        AUTOPILOT_AUDIT_CONCURRENCY="16",
        AUTOPILOT_AUDIT_LRO_BUDGET_SECONDS="2.5",
        AUTOPILOT_AUDIT_SHARD="3/4",
    )
    assert s.enforce
    assert s.subscriptions == ("3f2a3d10-0000-4000-8000-0000000000a1", "3f2a3d10-0000-4000-8000-0000000000b2")
    assert s.max_remediations == 0 and s.failure_threshold == 1
    assert s.window is not None and s.window.days == frozenset({5, 6})
    assert s.exclude_tag == ExcludeTag("no-stream", None)
    assert s.exclude == ("/subscriptions/*/resourceGroups/rg-legacy/*",)
    assert s.unsupported_os_skus == ()
    assert s.min_kubernetes == (1, 28)
    assert s.concurrency == 16 and s.lro_budget_seconds == 2.5 and s.shard == (3, 4)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("AUTOPILOT_AUDIT_MODE", "fix-everything", "not one of report, enforce"),
        ("AUTOPILOT_AUDIT_SCHEDULE", "0 * * * *", "NCRONTAB needs 6"),
        ("AUTOPILOT_AUDIT_SCHEDULE", "0 0 25 * * *", "not a valid hour"),
        ("AUTOPILOT_AUDIT_SCHEDULE", "0 0 * * Foo *", "not a valid month"),
        ("AUTOPILOT_AUDIT_SCHEDULE", "0 */0 * * * *", "bad step"),
        ("AUTOPILOT_AUDIT_SCHEDULE", "0 30-10 * * * *", "runs backwards"),
        ("AUTOPILOT_AUDIT_SUBSCRIPTIONS", "3f2a3d10-0000-4000-8000-0000000000a1,prod-sub", "'prod-sub' is not a subscription id"),
        ("AUTOPILOT_AUDIT_MAX_REMEDIATIONS", "-1", "below the minimum"),
        ("AUTOPILOT_AUDIT_MAX_REMEDIATIONS", "ten", "not a int"),
        ("AUTOPILOT_AUDIT_FAILURE_THRESHOLD", "0", "below the minimum"),
        ("AUTOPILOT_AUDIT_WINDOW", "weekends", "not '[DAYS] HH-HH'"),
        ("AUTOPILOT_AUDIT_WINDOW", "Funday 01-02", "not a day"),
        ("AUTOPILOT_AUDIT_WINDOW", "Mon 25-02", "hours must be"),
        ("AUTOPILOT_AUDIT_MIN_KUBERNETES", "latest", "not a version"),
        ("AUTOPILOT_AUDIT_CONCURRENCY", "0", "below the minimum"),
        ("AUTOPILOT_AUDIT_LRO_BUDGET_SECONDS", "-5", "below the minimum"),
        ("AUTOPILOT_AUDIT_SHARD", "4/4", "INDEX/COUNT"),
        ("AUTOPILOT_AUDIT_EXCLUDE_TAG", "=off", "no tag name"),
        ("AUTOPILOT_AUDIT_CONTAINER", "Audit_Reports", "not a valid blob container name"),
        ("AUTOPILOT_AUDIT_CONTAINER", "audit--reports", "not a valid blob container name"),
        ("AUTOPILOT_ARM_ENDPOINT", "http://management.example", "must be an https:// URL"),
        ("AUTOPILOT_TOPIC_ENDPOINT", "http://topic.example", "https:// endpoint"),
        ("AUTOPILOT_AUDIT_EXCLUDE", "*/managedClusters/ok,aks-legacy", "'aks-legacy' is not a resource ID or glob"),
    ],
)
def test_bad_settings_fail_naming_the_setting(name: str, value: str, expected: str):
    with pytest.raises(SettingsError) as info:
        settings(**{name: value})
    assert info.value.setting == name
    assert name in str(info.value)
    assert expected in str(info.value)


@pytest.mark.parametrize("expr", ["0 0 * * * *", "0 */5 * * * *", "30 0 2 * * Sun", "0 0 9-17 * Jan,Jul 1-5", "0 0,30 * 1 * *"])
def test_valid_ncrontab(expr: str):
    assert validate_ncrontab(expr) == expr


def test_window_contains_wraps_midnight_and_respects_days():
    night = Window.parse("Mon-Fri 22-06")
    monday = datetime(2026, 11, 23, tzinfo=UTC)  # a Monday
    assert night.contains(monday.replace(hour=23))
    assert night.contains(monday.replace(day=24, hour=5))  # Tuesday 05:00 is Monday's night
    assert not night.contains(monday.replace(hour=12))
    assert not night.contains(datetime(2026, 11, 28, 23, tzinfo=UTC))  # Saturday night: not in Mon-Fri
    assert night.contains(datetime(2026, 11, 28, 3, tzinfo=UTC))  # Saturday 03:00 is Friday's night
    assert not night.contains(monday.replace(hour=3))  # Monday 03:00 is Sunday's night
    day = Window.parse("09-17")
    assert day.contains(monday.replace(hour=9)) and not day.contains(monday.replace(hour=17))
    assert Window.parse("Sun 00-24").contains(datetime(2026, 11, 29, 23, tzinfo=UTC))


def test_exclude_tag_matching_is_case_insensitive():
    tag = ExcludeTag("artifact-streaming", "off")
    assert tag.matches({"Artifact-Streaming": "OFF"}) == "Artifact-Streaming=OFF"
    assert tag.matches({"artifact-streaming": "on"}) is None
    assert ExcludeTag("freeze", None).matches({"freeze": "anything"}) == "freeze=anything"


def test_exclude_tag_can_be_disabled():
    assert settings(AUTOPILOT_AUDIT_EXCLUDE_TAG="none").exclude_tag is None
