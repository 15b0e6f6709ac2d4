"""Pure logic: event parsing (official examples, both schemas), filters, settings validation, image checks."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from shared.acr import ManifestDoc
from shared.push.checks import RegistryInfo, check_config, check_manifest
from shared.push.events import ImagePushed, Rejection, parse_event
from shared.push.filters import ImageFilter, ImageGlob
from shared.push.outcomes import EXIT_CODES, KINDS, Outcome
from shared.push.settings import PushSettings
from shared.settings import Env, SettingsError

EXAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "eventgrid"
DIGEST = "sha256:57a94fc99816c6aa225678b738ac40d85422e75dbb96115f1bb9b6ed77176166"


def example(name: str, schema: str | None = None) -> dict:
    path = EXAMPLES / schema / f"{name}.json" if schema else EXAMPLES / f"{name}.json"
    return json.loads(path.read_text())


@pytest.mark.parametrize("schema", ["event-grid-schema", "cloud-events-schema", None])
def test_official_image_pushed_examples_parse_to_the_same_value(schema):
    event = parse_event(example("image_pushed", schema))
    assert isinstance(event, ImagePushed)
    assert event.registry.name == "jolovcr" and event.registry.resource_group == "jolov"
    assert event.registry.subscription_id == "faa080af-c1d8-40ad-9cce-e1a450ca5b57"
    assert (event.repository, event.tag, event.digest) == ("samples/nginx", "latest", DIGEST)
    assert event.login_server == "jolovcr.azurecr.io"
    assert event.media_type == "application/vnd.docker.distribution.manifest.v2+json" and event.size == 1153
    assert event.pushed_at is not None and event.pushed_at.year == 2021
    assert event.schema == ("CloudEvents" if schema == "cloud-events-schema" else "EventGridSchema")


def test_short_event_type_of_old_payloads_is_accepted():
    raw = example("image_pushed")
    raw["eventType"] = "ImagePushed"
    assert isinstance(parse_event(raw), ImagePushed)


@pytest.mark.parametrize(("name", "reason"), [("image_deleted", "event-type"), ("chart_pushed", "event-type"),
                                               ("chart_deleted", "event-type")])
@pytest.mark.parametrize("schema", ["event-grid-schema", "cloud-events-schema"])
def test_other_registry_events_are_rejected_with_a_reason(name, reason, schema):
    result = parse_event(example(name, schema))
    assert isinstance(result, Rejection) and result.reason == reason


def mutated(path: str, value: object, schema: str = "event-grid-schema") -> dict:
    raw = copy.deepcopy(example("image_pushed", schema))
    node = raw
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[key]
    if value is KeyError:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return raw


@pytest.mark.parametrize(("path", "value", "reason", "says"), [
    ("data.target.tag", KeyError, "untagged", "no tag"),
    ("data.target.tag", "", "untagged", "no tag"),
    ("data.target.mediaType", "application/vnd.acr.helm.chart", "media-type", "helm"),
    ("data.target.artifactType", "application/vnd.azure.artifact.streaming.v1", "streaming-artifact", "streaming artifact"),
    ("data.target.digest", "sha256:xyz", "malformed", "digest"),
    ("data.target.repository", "Samples/NGINX", "malformed", "repository"),
    ("data.target.tag", "bad tag!", "malformed", "tag"),
    ("data.target.size", -1, "malformed", "size"),
    ("data.request.host", "evil host/x", "malformed", "host"),
    ("topic", "/subscriptions/x/resourceGroups/y", "malformed", "resource ID"),
    ("data", "not an object", "malformed", "data"),
    ("data.target", KeyError, "malformed", "target"),
    ("eventType", KeyError, "malformed", "eventType"),
])
def test_events_we_do_not_act_on_say_why(path, value, reason, says):
    result = parse_event(mutated(path, value))
    assert isinstance(result, Rejection), result
    assert result.reason == reason and says.lower() in result.detail.lower(), result.detail


@pytest.mark.parametrize("raw", [None, [], "text", 42, {"specversion": "1.0"}, {}])
def test_non_objects_and_empty_events_are_malformed_not_crashes(raw):
    result = parse_event(raw)
    assert isinstance(result, Rejection) and result.reason == "malformed"


def test_filters_exclude_wins_and_include_narrows():
    f = ImageFilter(include=(ImageGlob("prod/*", "*"),), exclude=(ImageGlob("*", "*-debug"),))
    assert f.decide("prod/api", "1.0") is None
    assert "exclude" in (f.decide("prod/api", "1.0-debug") or "")
    assert "no include" in (f.decide("dev/api", "1.0") or "")
    assert ImageFilter().decide("anything", "goes") is None


@pytest.mark.parametrize(("env", "setting"), [
    ({"AUTOPILOT_PUSH_MODE": "audit"}, "AUTOPILOT_PUSH_MODE"),
    ({"AUTOPILOT_PUSH_EXCLUDE": "prod"}, "AUTOPILOT_PUSH_EXCLUDE"),
    ({"AUTOPILOT_PUSH_INCLUDE": "a:b:c"}, "AUTOPILOT_PUSH_INCLUDE"),
    ({"AUTOPILOT_PUSH_REGISTRIES": "/subscriptions/nope"}, "AUTOPILOT_PUSH_REGISTRIES"),
    ({"AUTOPILOT_PUSH_MAX_IMAGE_GB": "lots"}, "AUTOPILOT_PUSH_MAX_IMAGE_GB"),
    ({"AUTOPILOT_PUSH_WAIT_SECONDS": "-1"}, "AUTOPILOT_PUSH_WAIT_SECONDS"),
    ({"AUTOPILOT_PUSH_LOCK_SECONDS": "5"}, "AUTOPILOT_PUSH_LOCK_SECONDS"),
    ({"AUTOPILOT_PUSH_LOCK_CONTAINER": "Bad_Name"}, "AUTOPILOT_PUSH_LOCK_CONTAINER"),
    ({"AUTOPILOT_PUSH_LOCK_CONTAINER": "-locks"}, "AUTOPILOT_PUSH_LOCK_CONTAINER"),  # Azure answers 400 to each of these
    ({"AUTOPILOT_PUSH_LOCK_CONTAINER": "locks-"}, "AUTOPILOT_PUSH_LOCK_CONTAINER"),
    ({"AUTOPILOT_PUSH_LOCK_CONTAINER": "a--b"}, "AUTOPILOT_PUSH_LOCK_CONTAINER"),
    ({"AUTOPILOT_PUSH_LOCK_CONTAINER": "ab"}, "AUTOPILOT_PUSH_LOCK_CONTAINER"),
    ({"AUTOPILOT_ARM_ENDPOINT": "http://management.example"}, "AUTOPILOT_ARM_ENDPOINT"),
    ({"AUTOPILOT_TOPIC_KEY": "k"}, "AUTOPILOT_TOPIC_KEY"),
    ({"AUTOPILOT_TOPIC_ENDPOINT": "http://plain"}, "AUTOPILOT_TOPIC_ENDPOINT"),
])
def test_bad_settings_name_the_setting(env, setting):
    with pytest.raises(SettingsError) as err:
        PushSettings.from_env(Env(env))
    assert err.value.setting == setting and setting in str(err.value)


def test_registry_allow_list_by_id_login_server_or_name():
    from shared.push.events import RegistryRef
    from shared.push.filters import RegistryAllowList

    ref = RegistryRef("5d1c7e00-0000-4000-8000-00000000b001", "rg", "contoso")
    for item in (ref.resource_id.replace("/rg/", "/RG/").replace("contoso", "Contoso"), "contoso.azurecr.io", "Contoso"):
        allow = RegistryAllowList.parse([item], "AUTOPILOT_PUSH_REGISTRIES")
        assert allow.allows(ref, "contoso.azurecr.io"), item
        assert not allow.allows(RegistryRef(ref.subscription_id, "rg", "other"), "other.azurecr.io"), item
    assert RegistryAllowList.parse([], "X").allows(ref, None)


def test_default_settings():
    s = PushSettings.from_env(Env({}))
    assert (s.mode, s.max_image_gb, s.wait_seconds, s.topic) == ("enforce", 30.0, 0.0, None)
    assert s.registries.empty and s.filters == ImageFilter()


def test_registry_that_cannot_stream_says_why():
    assert RegistryInfo("id", "r", sku="Premium").cannot_stream is None
    assert "Premium" in (RegistryInfo("id", "r", sku="Standard").cannot_stream or "")
    assert "customer-managed key" in (RegistryInfo("id", "r", sku="Premium", cmk=True).cannot_stream or "")


def manifest(doc: dict, media_type: str) -> ManifestDoc:
    return ManifestDoc(digest=DIGEST, media_type=media_type, doc=doc, size=100)


def test_image_checks():
    index = {"manifests": [{"digest": "sha256:" + "a" * 64, "platform": {"os": "linux", "architecture": "arm64"}}]}
    v = check_manifest(manifest(index, "application/vnd.oci.image.index.v1+json"), 10**12)
    assert (v.ok, v.reason, v.code) == (False, "platform", "NO_SUPPORTED_PLATFORM_FOUND")
    single = {"config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "b" * 64, "size": 10},
              "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 2 * 1024**3}]}
    assert check_manifest(manifest(single, "application/vnd.oci.image.manifest.v1+json"), 3 * 1024**3).ok
    too_big = check_manifest(manifest(single, "application/vnd.oci.image.manifest.v1+json"), 1024**3)
    assert (too_big.ok, too_big.reason) == (False, "too-large")
    assert check_config({"os": "linux", "architecture": "amd64"}).ok
    assert check_config({"os": "windows", "architecture": "amd64"}).code == "UNSUPPORTED_PLATFORM"


@pytest.mark.parametrize("entries", [
    [{"digest": "sha256:" + "a" * 64, "platform": "linux/amd64"}],  # platform as a string
    [{"platform": {"os": "linux", "architecture": "amd64"}}],  # amd64 entry without a digest
    [{"digest": 7, "platform": {"os": "linux", "architecture": "amd64"}}],
    {"linux/amd64": "sha256:" + "a" * 64},  # manifests is not a list
    "sha256:" + "a" * 64,
    42,
])
def test_a_malformed_index_is_a_skip_that_says_what_is_wrong(entries):
    v = check_manifest(manifest({"manifests": entries}, "application/vnd.oci.image.index.v1+json"), 10**12)
    assert not v.ok and v.child_digest is None
    assert v.reason in ("malformed", "platform") and v.detail


def test_an_index_verdict_names_its_linux_amd64_image():
    amd64 = "sha256:" + "c" * 64
    index = {"manifests": [{"digest": "sha256:" + "a" * 64, "platform": {"os": "linux", "architecture": "arm64"}},
                           {"digest": amd64, "platform": {"os": "linux", "architecture": "amd64"}}]}
    v = check_manifest(manifest(index, "application/vnd.oci.image.index.v1+json"), 10**12)
    assert (v.ok, v.is_index, v.child_digest) == (True, True, amd64)


def test_outcomes_are_values_with_distinct_exit_codes():
    assert set(EXIT_CODES) == set(KINDS)
    assert len({EXIT_CODES[k] for k in ("already-streaming", "skipped", "failed")}) == 3
    with pytest.raises(ValueError):
        Outcome("maybe")
    assert Outcome("already-streaming").event_type == "Autopilot.ArtifactStreaming.AlreadyStreaming"


def test_bad_push_settings_fail_the_function_at_start_up(monkeypatch):
    import importlib

    import functions.push

    for name, value in (("AUTOPILOT_PUSH_LOCK_CONTAINER", "-locks"), ("AUTOPILOT_ARM_ENDPOINT", "http://management.example"),
                        ("AUTOPILOT_TOPIC_ENDPOINT", "topic.example")):
        monkeypatch.setenv(name, value)
        with pytest.raises(SettingsError, match=f"setting {name}: "):
            importlib.reload(functions.push)
        monkeypatch.delenv(name)
    importlib.reload(functions.push)  # leave the module importable for whoever imports it next
