"""TUI manners (issue 20, item 12): hints, focus, labels, narrow terminals, form errors."""

from __future__ import annotations

import pytest

from tests.fixtures.homes import Home
from tests.tui.conftest import make_app, screen_text, settle, wait_for


async def open_alpha_form(pilot) -> None:  # type: ignore[no-untyped-def]
    await settle(pilot)
    await pilot.press("down", "down", "g")
    await wait_for(pilot, lambda: "Generate with Alpha Motion" in screen_text(pilot.app), what="form")


def footer_line(app) -> str:  # type: ignore[no-untyped-def]
    return screen_text(app).splitlines()[-1]


@pytest.mark.anyio
async def test_detail_view_shows_the_esc_hint(tui_home: Home) -> None:
    from tunehub.tui.widgets.detail import DetailPane

    app = make_app(tui_home)
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: isinstance(app.focused, DetailPane), what="detail focused")
        assert "esc Back" in footer_line(app)
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.focused, DetailPane)


@pytest.mark.anyio
async def test_focus_returns_to_the_list_after_the_generate_form(tui_home: Home) -> None:
    from tunehub.tui.widgets.definition_list import DefinitionList

    app = make_app(tui_home)
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        await pilot.press("down", "down", "enter")  # detail view open, then generate from it
        await pilot.press("g")
        await wait_for(pilot, lambda: "Generate with Alpha Motion" in screen_text(app), what="form")
        await pilot.press("escape")
        await wait_for(pilot, lambda: "Generate with" not in screen_text(app), what="form closed")
        assert isinstance(app.focused, DefinitionList)
        assert app.screen.maximized is None


@pytest.mark.anyio
async def test_preference_line_says_what_each_preference_is(tui_home: Home) -> None:
    app = make_app(tui_home)
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        assert "weights int8 / compute auto" in screen_text(app)
        await pilot.press("down", "down", "s", "d")  # t2v_alpha: a resolvable definition
        await pilot.pause()
        text = screen_text(app)
        assert "weights 16-bit / compute fp16" in text
        assert "Preferences: weights 16-bit / compute fp16" in text  # the detail pane's line too


@pytest.mark.anyio
async def test_80x24_keeps_quit_in_the_footer_and_variants_apart(tui_home: Home) -> None:
    app = make_app(tui_home)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert "q Quit" in footer_line(app)
        await pilot.press("down", "down", "enter")  # t2v_alpha in the detail view: two variants
        await pilot.pause()
        text = screen_text(app)
        assert "alpha_bf16.safetensors" in text
        assert "alpha_quanto_bf16_int8.safetensors" in text


@pytest.mark.anyio
async def test_missing_files_show_a_dash_not_zero_bytes(tui_home: Home) -> None:
    app = make_app(tui_home)
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        lines = screen_text(app).splitlines()
        assert not any("0 B missing" in line for line in lines)
        assert any("— missing" in line for line in lines)


@pytest.mark.anyio
async def test_form_errors_name_the_form_field(tui_home: Home) -> None:
    app = make_app(tui_home)
    async with app.run_test(size=(120, 30)) as pilot:
        await open_alpha_form(pilot)
        app.screen.query_one("#field-video_length").value = "80"
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: "Frames" in str(app.screen.query_one("#generate-errors").render()),
                       what="form error")
        errors = str(app.screen.query_one("#generate-errors").render())
        assert "Frames: '80'" in errors
        assert "video_length" not in errors and "ConfigError" not in errors


def test_form_error_from_generate_names_the_field() -> None:
    from tunehub.tui.screens.generate import FIELDS, form_error

    message = ("generate failed: ConfigError: t2v_alpha: setting 'video_length' must be 4k+1 frames "
               "(1, 5, ..., 81), got 80: the VAE packs 4 frames into one latent frame")
    assert form_error(message, list(FIELDS)).startswith("Frames must be 4k+1 frames")


@pytest.mark.anyio
async def test_generate_form_offers_device_and_offload(tui_home: Home) -> None:
    from tunehub.tui.screens.generate import parse_form

    app = make_app(tui_home)
    async with app.run_test(size=(120, 30)) as pilot:
        await open_alpha_form(pilot)
        text = screen_text(app)
        assert "Device" in text and "Offload" in text
        fields = app.screen.fields
    settings, errors = parse_form({"device": "cpu", "offload": "model"}, fields)
    assert (settings, errors) == ({"device": "cpu", "offload": "model"}, [])
    assert parse_form({"device": "", "offload": "none"}, fields) == ({}, [])
