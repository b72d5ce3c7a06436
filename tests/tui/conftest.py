"""A small home with one definition in each state, and helpers to drive the app."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.homes import Home

# Sizes are distinct so that a test can tell which file a number came from.
ALPHA_BF16 = 3000
GAMMA_BF16 = 2000
GAMMA_INT8 = 1000


def write_sample_definitions(home: Home) -> None:
    home.write_definition(
        "t2v_alpha",
        {
            "name": "Alpha Motion",
            "architecture": "t2v",
            "description": "A fast motion finetune for testing.",
            "URLs": [
                "alpha_bf16.safetensors",
                "https://huggingface.co/someone/alpha/resolve/main/alpha_quanto_bf16_int8.safetensors",
            ],
            "auto_quantize": True,
        },
        prompt="a red fox running",
        negative_prompt="blurry",
        resolution="832x480",
        video_length=81,
        num_inference_steps=20,
        guidance_scale=5.0,
        seed=-1,
    )
    home.write_definition(
        "hunyuan_beta",
        {
            "name": "Beta Cinema",
            "architecture": "hunyuan",
            "description": "Cinematic look.",
            "URLs": [
                "https://huggingface.co/someone/beta/resolve/main/beta_bf16.safetensors",
                "https://huggingface.co/someone/beta/resolve/main/beta_quanto_bf16_int8.safetensors",
            ],
        },
        prompt="a city at night",
    )
    home.write_definition(
        "t2v_gamma",
        {
            "name": "Gamma Anime",
            "architecture": "t2v",
            "description": "Anime style, quantized here.",
            "URLs": ["gamma_bf16.safetensors", "gamma_quanto_bf16_int8.safetensors"],
        },
    )
    home.write_raw("broken", '{"model": {"name": "Broken One", "URLs": 3}}\n')
    (home.ckpts / "alpha_bf16.safetensors").write_bytes(b"a" * ALPHA_BF16)
    (home.ckpts / "gamma_bf16.safetensors").write_bytes(b"g" * GAMMA_BF16)
    (home.ckpts / "gamma_quanto_bf16_int8.safetensors").write_bytes(b"q" * GAMMA_INT8)


@pytest.fixture
def anyio_backend() -> str:
    """The pilot tests run on asyncio through anyio's pytest plugin (no extra dependency)."""
    return "asyncio"


@pytest.fixture
def tui_home(home: Home) -> Home:
    write_sample_definitions(home)
    return home


def local_registry(home: Home) -> Any:
    """The user's folder only: screens do not change when the built-ins do."""
    from tunehub.registry import DefinitionFolder, Origin, Registry

    return Registry.load(home.config(), folders=[DefinitionFolder(home.finetunes, Origin.LOCAL)])


def make_app(home: Home, *, builtins: bool = False, **options: Any) -> Any:
    from tunehub.tui.app import TunehubApp

    options.setdefault("use_daemon", False)
    options.setdefault("watch", False)
    registry = None if builtins else local_registry(home)
    return TunehubApp(home.config(), registry=registry, **options)


async def settle(pilot: Any, timeout: float = 20.0) -> None:
    """Wait until rows, states and capabilities are known, then for the screen to be idle."""
    from tunehub.tui.screens.main import MainScreen

    app = pilot.app
    deadline = time.monotonic() + timeout
    main = next(screen for screen in app.screen_stack if isinstance(screen, MainScreen))
    while time.monotonic() < deadline:
        if main._loaded and main.states_ready and app.capabilities_checked and not main._pending_paths:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError(
            f"the TUI did not settle: loaded={main._loaded} states_ready={main.states_ready} "
            f"capabilities={app.capability_status} pending={main._pending_paths} workers={list(app.workers)}"
        )
    await pilot.pause()
    await pilot.pause()


async def wait_for(pilot: Any, condition: Any, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            await pilot.pause()
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; screen:\n{screen_text(pilot.app)}")


def screen_text(app: Any) -> str:
    """What the terminal shows, as plain text."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def row_ids(app: Any) -> list[str]:
    from tunehub.tui.widgets.definition_list import DefinitionList

    return [row.id for row in app.screen.query_one(DefinitionList).rows]


def home_path(home: Home) -> Path:
    return home.root
