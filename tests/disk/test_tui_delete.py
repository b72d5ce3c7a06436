"""The TUI's delete (`x`) is `tunehub rm`: the same plan, the same warning, the same mark."""

from __future__ import annotations

import pytest

from tests.tui.conftest import local_registry, make_app, settle, wait_for, write_sample_definitions
from tunehub.disk.remove import plan_removal, removal_lines, removed_marks
from tunehub.tui.widgets.definition_list import DefinitionList

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_delete_shows_rm_warning_and_marks_removed(home) -> None:
    from tunehub.tui.screens.dialogs import ConfirmScreen

    write_sample_definitions(home)
    home.write_definition("t2v_gamma_copy", {"name": "Copy", "architecture": "t2v", "URLs": ["gamma_bf16.safetensors"]})
    cli_lines = removal_lines(plan_removal(home.config(), local_registry(home), "t2v_gamma"), home.root)
    assert any("also used by t2v_gamma_copy" in line for line in cli_lines)
    app = make_app(home)
    async with app.run_test(size=(140, 40)) as pilot:
        await settle(pilot, timeout=60)
        await pilot.press("slash", *"gamma anime", "enter")
        await pilot.pause()
        assert app.screen.query_one(DefinitionList).highlighted.id == "t2v_gamma"
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation", timeout=60)
        body = app.screen.body
        assert all(line in body.splitlines() for line in cli_lines), body
        assert "not be fetched again until you pull t2v_gamma" in body
        await pilot.press("y")
        await wait_for(pilot, lambda: not (home.ckpts / "gamma_quanto_bf16_int8.safetensors").exists(),
                       what="the int8 file deleted", timeout=60)
    assert (home.ckpts / "gamma_bf16.safetensors").exists()  # t2v_gamma_copy needs it
    assert "t2v_gamma" in removed_marks(home.config())
