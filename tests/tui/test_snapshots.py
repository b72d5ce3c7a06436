"""SVG snapshots (pytest-textual-snapshot) at 80x24 and 160x48: the main screen, the
detail pane, the generate form and an invalid definition.

Regenerate after an intended change with ``pytest tests/tui/test_snapshots.py --snapshot-update``
and look at the SVGs (the report links them) before committing.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.homes import Home
from tests.tui.conftest import make_app, settle

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]


async def _main(pilot: Any) -> None:
    await settle(pilot)


async def _detail(pilot: Any) -> None:
    await settle(pilot)
    await pilot.press("down", "down", "enter")  # t2v_alpha, maximized detail pane
    await pilot.pause()


async def _generate(pilot: Any) -> None:
    await settle(pilot)
    await pilot.press("down", "down", "g")
    await pilot.pause()
    await pilot.pause()


async def _invalid(pilot: Any) -> None:
    await settle(pilot)
    await pilot.press("home", "enter")  # broken
    await pilot.pause()


@pytest.mark.parametrize("size", SIZES)
def test_main_screen(snap_compare: Any, tui_home: Home, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(tui_home), terminal_size=size, run_before=_main)


@pytest.mark.parametrize("size", SIZES)
def test_detail_pane(snap_compare: Any, tui_home: Home, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(tui_home), terminal_size=size, run_before=_detail)


@pytest.mark.parametrize("size", SIZES)
def test_generate_form(snap_compare: Any, tui_home: Home, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(tui_home), terminal_size=size, run_before=_generate)


@pytest.mark.parametrize("size", SIZES)
def test_invalid_definition(snap_compare: Any, tui_home: Home, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(tui_home), terminal_size=size, run_before=_invalid)
