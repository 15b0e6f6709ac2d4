"""Reading app settings: typed parsers that fail once, at start-up, with a message naming the setting."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
Text = str  # `Env.str` shadows the builtin inside the class body

DEFAULT_ARM_ENDPOINT = "https://management.azure.com"
CONTAINER_NAME_RE = re.compile(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]")  # Azure's blob container naming rules


class SettingsError(ValueError):
    """A setting is missing or malformed. The message names it, says what was found and what is expected."""

    def __init__(self, name: str, problem: str) -> None:
        self.setting = name
        super().__init__(f"setting {name}: {problem}")


class Env:
    """Typed access to a settings mapping (os.environ by default)."""

    def __init__(self, source: Mapping[Text, Text] | None = None) -> None:
        self.source = os.environ if source is None else source

    def is_set(self, name: Text) -> bool:
        """Whether the setting is present at all (an empty value counts: it may mean "none")."""
        return self.source.get(name) is not None

    def raw(self, name: Text) -> Text | None:
        value = self.source.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def str(self, name: Text, default: Text | None = None) -> Text | None:
        value = self.raw(name)
        return default if value is None else value

    def required(self, name: Text, hint: Text) -> Text:
        value = self.raw(name)
        if value is None:
            raise SettingsError(name, f"is required: {hint}")
        return value

    def choice(self, name: Text, choices: tuple[Text, ...], default: Text) -> Text:
        value = (self.raw(name) or default).lower()
        if value not in choices:
            raise SettingsError(name, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def bool(self, name: Text, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise SettingsError(name, f"{value!r} is not a boolean (use true or false)")

    def number(self, name: Text, default: T, parse: Callable[[Text], T], minimum: float | None = None,
               maximum: float | None = None) -> T:
        value = self.raw(name)
        if value is None:
            return default
        try:
            parsed = parse(value)
        except ValueError:
            raise SettingsError(name, f"{value!r} is not a {parse.__name__}") from None
        if minimum is not None and parsed < minimum:  # type: ignore[operator]
            raise SettingsError(name, f"{value} is below the minimum {minimum}")
        if maximum is not None and parsed > maximum:  # type: ignore[operator]
            raise SettingsError(name, f"{value} is above the maximum {maximum}")
        return parsed

    def container_name(self, name: Text, default: Text) -> Text:
        """A blob container name: 3-63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit."""
        value = self.str(name, default) or default
        if not CONTAINER_NAME_RE.fullmatch(value):
            raise SettingsError(name, f"{value!r} is not a valid blob container name (3-63 lowercase letters, digits and single "
                                      "hyphens, starting and ending with a letter or digit)")
        return value

    def list(self, name: Text) -> list[Text]:
        """A comma, semicolon or newline separated list; empty when unset."""
        value = self.raw(name)
        if value is None:
            return []
        for sep in (";", "\n"):
            value = value.replace(sep, ",")
        return [item.strip() for item in value.split(",") if item.strip()]


@dataclass(frozen=True)
class AzureSettings:
    """Where Azure is: the ARM endpoint and audience (public cloud by default; sovereign clouds and the emulator differ)."""

    arm_endpoint: str = DEFAULT_ARM_ENDPOINT
    arm_audience: str = "https://management.azure.com"
    # ACR's own audience works on every registry; ARM-audience tokens (what the az CLI sends) can be disabled per registry
    # by azureADAuthenticationAsArmPolicy, which Azure Policy enforces in many tenants.
    acr_audience: str = "https://containerregistry.azure.net"

    @classmethod
    def from_env(cls, env: Env | None = None) -> AzureSettings:
        env = env or Env()
        endpoint = env.str("AUTOPILOT_ARM_ENDPOINT", DEFAULT_ARM_ENDPOINT) or DEFAULT_ARM_ENDPOINT
        if not endpoint.startswith("https://"):
            raise SettingsError("AUTOPILOT_ARM_ENDPOINT", f"{endpoint!r} must be an https:// URL")
        audience = env.str("AUTOPILOT_ARM_AUDIENCE", "https://management.azure.com") or ""
        return cls(
            arm_endpoint=endpoint.rstrip("/"),
            arm_audience=audience.rstrip("/"),
            acr_audience=(env.str("AUTOPILOT_ACR_AUDIENCE", "https://containerregistry.azure.net") or "").rstrip("/"),
        )
