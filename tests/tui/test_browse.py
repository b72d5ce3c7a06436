"""Browsing with the pilot: filter, facets, detail pane, preferences, live reload, delete."""

from __future__ import annotations

import json

import pytest
from textual.widgets import Input, Select

from tests.fixtures.homes import Home
from tests.tui.conftest import GAMMA_INT8, make_app, row_ids, screen_text, settle, wait_for
from tunehub.tui.widgets.definition_list import DefinitionList
from tunehub.tui.widgets.detail import DetailPane

pytestmark = pytest.mark.anyio


def _row(app, definition_id):  # type: ignore[no-untyped-def]
    return next(r for r in app.screen.query_one(DefinitionList).rows if r.id == definition_id)


async def test_filter_facets_and_detail(tui_home: Home) -> None:
    app = make_app(tui_home)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        assert row_ids(app) == ["broken", "hunyuan_beta", "t2v_alpha", "t2v_gamma"]
        assert "Definitions 4/4" in screen_text(app)
        await pilot.press("slash", *"motion")
        await pilot.pause()
        assert app.screen.query_one("#filter", Input).has_focus
        assert row_ids(app) == ["t2v_alpha"]
        text = screen_text(app)
        assert "Alpha Motion" in text and "A fast motion finetune for testing." in text
        assert "alpha_bf16.safetensors" in text and "2.9 KiB" in text  # variant table: present, size
        await pilot.press(*["backspace"] * 6, "enter")  # back to the list
        assert app.screen.query_one(DefinitionList).has_focus
        app.screen.query_one("#facet-arch", Select).value = "t2v"
        await pilot.pause()
        assert row_ids(app) == ["t2v_alpha", "t2v_gamma"]
        app.screen.query_one("#facet-state", Select).value = "quantized"
        await pilot.pause()
        assert row_ids(app) == ["t2v_gamma"]
        app.screen.query_one("#facet-arch", Select).clear()
        app.screen.query_one("#facet-state", Select).value = "invalid"
        await pilot.pause()
        assert row_ids(app) == ["broken"]


async def test_invalid_definition_shows_its_errors(tui_home: Home) -> None:
    app = make_app(tui_home)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        assert app.screen.query_one(DefinitionList).highlighted.id == "broken"
        await pilot.press("enter")  # opens the detail pane, maximized
        await pilot.pause()
        assert app.screen.maximized is app.screen.query_one(DetailPane)
        text = screen_text(app)
        assert "Invalid definition" in text
        assert "finetunes/broken.json: model.URLs" in text
        assert "invalid" == _row(app, "broken").state
        await pilot.press("p")  # acting on an invalid definition is refused with a reason
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen.maximized is None


async def test_switching_preferences_re_resolves_everything(tui_home: Home) -> None:
    app = make_app(tui_home)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        assert "weights int8 / compute auto" in screen_text(app)
        assert _row(app, "t2v_alpha").state == "missing"
        await pilot.press("down", "down")
        assert app.screen.query_one(DefinitionList).highlighted.id == "t2v_alpha"
        await pilot.press("s")
        await settle(pilot)
        text = screen_text(app)
        assert "weights 16-bit / compute auto" in text
        assert _row(app, "t2v_alpha").state == "present"
        assert "Preferences: weights 16-bit / compute bf16" in text
        await pilot.press("d")
        await settle(pilot)
        assert "weights 16-bit / compute fp16" in screen_text(app)
        assert "Preferences: weights 16-bit / compute fp16: your preference" in screen_text(app)


async def test_definition_added_edited_removed_on_disk_appears_live(tui_home: Home) -> None:
    app = make_app(tui_home, watch=True)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        path = tui_home.write_definition(
            "t2v_delta", {"name": "Delta Fresh", "architecture": "t2v", "URLs": ["delta_bf16.safetensors"]}
        )
        await wait_for(pilot, lambda: "t2v_delta" in row_ids(app), what="new definition listed")
        data = json.loads(path.read_text())
        data["model"]["name"] = "Delta Renamed"
        path.write_text(json.dumps(data))
        await wait_for(pilot, lambda: _row(app, "t2v_delta").name == "Delta Renamed", what="edit picked up")
        path.write_text("{not json")
        await wait_for(pilot, lambda: _row(app, "t2v_delta").state == "invalid", what="broken edit shown")
        path.unlink()
        await wait_for(pilot, lambda: "t2v_delta" not in row_ids(app), what="removal picked up")


async def test_delete_local_weights_asks_shows_bytes_and_deletes(tui_home: Home) -> None:
    app = make_app(tui_home)
    int8_file = tui_home.ckpts / "gamma_quanto_bf16_int8.safetensors"
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        await pilot.press("end")
        assert app.screen.query_one(DefinitionList).highlighted.id == "t2v_gamma"
        await pilot.press("x")
        await wait_for(pilot, lambda: "Delete local weights of t2v_gamma" in screen_text(app), what="confirm")
        text = screen_text(app)
        assert "(2.9 KiB freed)" in text and "ckpts/gamma_quanto_bf16_int8.safetensors" in text
        await pilot.press("n")  # cancelled: nothing removed
        await pilot.pause()
        assert int8_file.exists()
        await pilot.press("x")
        await wait_for(pilot, lambda: "Delete local weights" in screen_text(app), what="confirm again")
        await pilot.press("y")
        await wait_for(pilot, lambda: not int8_file.exists(), what="file deleted")
        await settle(pilot)
        assert not (tui_home.ckpts / "gamma_bf16.safetensors").exists()
        assert _row(app, "t2v_gamma").state == "missing"
        assert f"deleted {2000 + GAMMA_INT8} B" not in screen_text(app)  # sizes are shown in KiB
        assert "deleted 2.9 KiB of weights" in screen_text(app)


async def test_command_palette_offers_the_actions(tui_home: Home) -> None:
    app = make_app(tui_home)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        await pilot.press("end", "ctrl+p")
        await pilot.pause()
        await pilot.press(*"delete local")
        await wait_for(pilot, lambda: "Free the disk space of t2v_gamma" in screen_text(app), what="palette hit")
        await pilot.press("enter")
        await wait_for(pilot, lambda: "Delete local weights of t2v_gamma" in screen_text(app), what="confirm")
        await pilot.press("escape")


def test_capabilities_are_checked_by_importing_them() -> None:
    from tunehub.tui.jobs import CAPABILITIES, Capability, capabilities

    assert capabilities() == {kind: None for kind in CAPABILITIES}  # every part has landed
    missing = capabilities({"teleport": Capability("teleport", "Teleport", "tunehub.no_such_part", "run")})
    assert "tunehub.no_such_part" in (missing["teleport"] or "")
    no_function = capabilities({"x": Capability("x", "X", "tunehub.tui.model", "no_such_function")})
    assert no_function["x"] == "tunehub.tui.model.no_such_function is not available"


async def test_an_unavailable_action_is_dimmed_and_explains_itself(tui_home: Home) -> None:
    app = make_app(tui_home)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        await pilot.press("end")
        assert app.screen.check_action("publish", ()) is True
        app.capability_status["publish"] = "tunehub.hub.publish is not available (not installed)"
        app.screen.refresh_bindings()
        assert app.screen.check_action("publish", ()) is None  # the footer shows it dimmed
        await pilot.press("u")
        await pilot.pause()
        assert "Publish t2v_gamma" not in screen_text(app)  # no dialog: nothing is faked
        assert "Publish" not in [command.title for command in app.screen.palette_commands()]
        assert "Pull" in [command.title for command in app.screen.palette_commands()]
