"""Shared fixtures: Azurite for the session, an emulator per test (or module) with the app's settings pointed at it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from emulator import Emulator
from emulator.azurite import Azurite
from shared.azure_clients import reset_credential

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = REPO / "emulator" / "scenarios"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    with Azurite() as instance:
        yield instance


def _apply_env(env: dict[str, str]) -> dict[str, str | None]:
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    reset_credential()
    return previous


def _restore_env(previous: dict[str, str | None]) -> None:
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    reset_credential()


@pytest.fixture
def make_emulator(tmp_path: Path, azurite: Azurite) -> Iterator[Callable[..., Emulator]]:
    """`make_emulator(scenario_dict_or_path, apply_env=True)` → a running Emulator; the app's env points at it."""
    started: list[tuple[Emulator, dict[str, str | None]]] = []

    def factory(scenario: Any, apply_env: bool = True, **kwargs: Any) -> Emulator:
        emu = Emulator(scenario, state_dir=tmp_path / f"emu{len(started)}", azurite=azurite.connection_string, **kwargs)
        emu.start()
        previous = _apply_env(emu.env) if apply_env else {}
        started.append((emu, previous))
        return emu

    yield factory
    for emu, previous in reversed(started):
        emu.stop()
        _restore_env(previous)


@pytest.fixture
def demo_emulator(make_emulator: Callable[..., Emulator]) -> Emulator:
    """The shipped demo scenario, running."""
    return make_emulator(SCENARIOS / "demo.yaml")
