"""Push-path app settings (AUTOPILOT_PUSH_*): read and validated once per instance, errors name the setting."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..publish import TopicSettings
from ..settings import AzureSettings, Env, SettingsError
from .filters import ImageFilter, ImageGlob, RegistryAllowList

GB = 1024**3
MAX_INVOCATION_SECONDS = 570.0  # host.json functionTimeout is 10 minutes; the wait and the deadline together stay 30 s inside it
PUBLISH_SECONDS = 5.0  # the outcome publish's own budget, after the decision's


@dataclass(frozen=True)
class PushSettings:
    mode: str = "enforce"  # enforce: create conversions | report: log what would be done, create nothing
    registries: RegistryAllowList = field(default_factory=RegistryAllowList)
    filters: ImageFilter = field(default_factory=ImageFilter)
    max_image_gb: float = 30.0  # the ACR guidance; larger images convert slowly
    wait_seconds: float = 0.0  # 0: start the conversion and return; > 0: poll it up to this long
    registry_cache_seconds: float = 300.0  # how long a registry's SKU/encryption answer is trusted
    lock_seconds: int = 30  # blob lease per digest (Azure allows 15-60 s)
    lock_container: str = "autopilot-locks"
    not_found_window_seconds: float = 300.0  # RESOURCE_NOT_FOUND / manifest 404 this soon after the push: retry later
    request_timeout_seconds: float = 30.0  # read timeout of one registry request (each attempt is capped to the deadline too)
    # The invocation's budget for its decision and conversion (plus wait_seconds in wait mode; the outcome publish gets
    # PUBLISH_SECONDS more): every request, retry wait, lease wait and poll fits in it. 20 + 5 s stays inside Event Grid's
    # 30 s delivery timeout, so a slow registry is redelivered rather than answered after Event Grid gave up.
    deadline_seconds: float = 20.0
    http_retries: int = 4  # data-plane retries inside one invocation (429/5xx, honouring Retry-After) before Event Grid's own
    topic: TopicSettings | None = None
    azure: AzureSettings = field(default_factory=AzureSettings)

    @property
    def report_only(self) -> bool:
        return self.mode == "report"

    @property
    def max_image_bytes(self) -> int:
        return int(self.max_image_gb * GB)

    @classmethod
    def from_env(cls, env: Env | None = None) -> PushSettings:
        env = env or Env()
        include = tuple(ImageGlob.parse(g, "AUTOPILOT_PUSH_INCLUDE") for g in env.list("AUTOPILOT_PUSH_INCLUDE"))
        exclude = tuple(ImageGlob.parse(g, "AUTOPILOT_PUSH_EXCLUDE") for g in env.list("AUTOPILOT_PUSH_EXCLUDE"))
        settings = cls(
            mode=env.choice("AUTOPILOT_PUSH_MODE", ("enforce", "report"), "enforce"),
            registries=RegistryAllowList.parse(env.list("AUTOPILOT_PUSH_REGISTRIES"), "AUTOPILOT_PUSH_REGISTRIES"),
            filters=ImageFilter(include=include, exclude=exclude),
            max_image_gb=env.number("AUTOPILOT_PUSH_MAX_IMAGE_GB", 30.0, float, minimum=0.001, maximum=10_000),
            wait_seconds=env.number("AUTOPILOT_PUSH_WAIT_SECONDS", 0.0, float, minimum=0, maximum=540),
            registry_cache_seconds=env.number("AUTOPILOT_PUSH_REGISTRY_CACHE_SECONDS", 300.0, float, minimum=0, maximum=86_400),
            lock_seconds=env.number("AUTOPILOT_PUSH_LOCK_SECONDS", 30, int, minimum=15, maximum=60),
            lock_container=env.container_name("AUTOPILOT_PUSH_LOCK_CONTAINER", "autopilot-locks"),
            not_found_window_seconds=env.number("AUTOPILOT_PUSH_NOT_FOUND_WINDOW_SECONDS", 300.0, float, minimum=0, maximum=86_400),
            request_timeout_seconds=env.number("AUTOPILOT_PUSH_TIMEOUT_SECONDS", 30.0, float, minimum=1, maximum=300),
            deadline_seconds=env.number("AUTOPILOT_PUSH_DEADLINE_SECONDS", 20.0, float, minimum=2, maximum=MAX_INVOCATION_SECONDS),
            http_retries=env.number("AUTOPILOT_PUSH_HTTP_RETRIES", 4, int, minimum=0, maximum=10),
            topic=TopicSettings.from_env(env),
            azure=AzureSettings.from_env(env),
        )
        if settings.deadline_seconds + settings.wait_seconds > MAX_INVOCATION_SECONDS:
            raise SettingsError("AUTOPILOT_PUSH_DEADLINE_SECONDS", f"{settings.deadline_seconds:g} s plus AUTOPILOT_PUSH_WAIT_SECONDS "
                                f"({settings.wait_seconds:g} s) is over {MAX_INVOCATION_SECONDS:g} s (host.json functionTimeout is 10 minutes)")
        return settings
