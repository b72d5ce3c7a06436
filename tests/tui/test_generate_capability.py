"""The TUI's generate reads the architecture table, as `tunehub generate` does."""

from __future__ import annotations

import pytest

from tests.fixtures.homes import Home
from tests.tui.conftest import make_app, settle, wait_for


@pytest.mark.anyio
async def test_generate_is_refused_for_an_architecture_tunehub_does_not_generate(tui_home: Home) -> None:
    from tunehub.tui.screens.generate import GenerateScreen

    tui_home.write_definition("a_flux", {"name": "A Flux finetune", "architecture": "flux_dev",
                                         "URLs": ["flux_bf16.safetensors"]})  # fmt: skip
    app = make_app(tui_home)
    async with app.run_test(size=(120, 32)) as pilot:
        await settle(pilot)
        await pilot.press("home", "g")

        def messages() -> list[str]:
            return [notification.message for notification in app._notifications]

        await wait_for(pilot, lambda: any("cannot generate with flux_dev" in m for m in messages()), what="refusal")
        message = next(m for m in messages() if "cannot generate with flux_dev" in m)
        assert "(Flux)" in message and "quantize" not in message, message  # what the table says it can do
        assert not isinstance(app.screen, GenerateScreen)
