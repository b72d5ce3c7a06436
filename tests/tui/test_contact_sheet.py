"""The contact sheet after a generation: shown when the job ends, again from the job's line.

The job's end arrives as the JobFinished message a local or daemon generate job posts, with
a result carrying the video and its contact sheet, written by tunehub's own writer from
frames (the inference tests check that generate writes it).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tests.fixtures.homes import Home
from tests.tui.conftest import make_app, screen_text, settle, wait_for


def _finished_generation(root: Path) -> SimpleNamespace:
    import json

    from tunehub.inference.contact_sheet import write_contact_sheet

    video = root / "outputs" / "clip.mp4"
    video.parent.mkdir(parents=True, exist_ok=True)
    video.write_bytes(b"")  # the sheet is what is shown; the video's bytes do not matter here
    ys, xs = np.mgrid[0:48, 0:64]
    frames = np.stack([np.stack([xs / 64, ys / 48, np.full_like(xs, k / 8.0, dtype=float)], -1) for k in range(9)])
    settings = {"model_type": "t2v_alpha", "seed": 7, "resolution": "64x48", "video_length": 9,
                "num_inference_steps": 20, "guidance_scale": 5.0, "flow_shift": 5.0, "prompt": "a red fox running"}  # fmt: skip
    video.with_suffix(".json").write_text(json.dumps(settings), encoding="utf-8")
    sheet = write_contact_sheet(frames, video, settings, {"switch_step": 4})
    return SimpleNamespace(video=str(video), contact_sheet=str(sheet))


async def _after_job(pilot: Any) -> None:
    """The generate form of t2v_alpha, its job finished: the sheet below the settings used."""
    from tunehub.tui.messages import JobFinished

    await settle(pilot)
    app = pilot.app
    await pilot.press("down", "down", "g")
    await wait_for(pilot, lambda: "Generate with Alpha Motion" in screen_text(app), what="form")
    result = _finished_generation(Path(app.cfg.home))
    app.screen.job_key = "local-1"
    app.post_message(JobFinished("local-1", "generate", "t2v_alpha", True, "video written: outputs/clip.mp4", result))
    await wait_for(pilot, lambda: bool(app.screen.query("#generate-sheet")), what="contact sheet")
    app.screen.query_one("#generate-sheet").scroll_visible(animate=False)
    # The job's notification lasts 6 s: on a loaded machine it was gone before the screenshot.
    app.clear_notifications()
    await pilot.pause()
    await pilot.pause()


@pytest.fixture
def half_block_images(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sheet drawn in coloured half blocks on 10x20-pixel cells, whatever the terminal.

    textual-image picks its renderer and cell size from the terminal the process was started
    on, once, at import: unicode shades when pytest holds fd 1, half blocks or sixel with
    ``pytest -s`` on a terminal, and cells as large as that terminal's font. A snapshot needs
    one picture, so it pins the half blocks a terminal without a graphics protocol shows."""
    from textual_image._terminal import CellSize, get_cell_size
    from textual_image.widget import HalfcellImage

    from tunehub.tui.screens import contact_sheet

    monkeypatch.setattr(contact_sheet, "prepare_terminal_images", lambda: HalfcellImage)
    monkeypatch.setattr(get_cell_size, "_result", CellSize(10, 20), raising=False)


@pytest.mark.parametrize("size", [pytest.param((100, 40), id="100x40")])
def test_contact_sheet_after_a_generation(
    snap_compare: Any, tui_home: Home, size: tuple[int, int], half_block_images: None
) -> None:
    assert snap_compare(make_app(tui_home), terminal_size=size, run_before=_after_job)


@pytest.mark.anyio
async def test_job_line_and_v_show_it_again(tui_home: Home) -> None:
    from tunehub.tui.messages import JobFinished
    from tunehub.tui.screens.contact_sheet import ContactSheetScreen
    from tunehub.tui.widgets.jobs import JobLine

    app = make_app(tui_home)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(pilot)
        result = _finished_generation(tui_home.root)
        app.post_message(JobFinished("local-1", "generate", "t2v_alpha", True, "video written", result))
        await wait_for(pilot, lambda: bool(app.screen.query(JobLine)), what="job line")
        line = app.screen.query_one(JobLine)
        await wait_for(pilot, lambda: line.contact_sheet == Path(result.contact_sheet), what="sheet on the line")
        await pilot.click(JobLine)
        await wait_for(pilot, lambda: isinstance(app.screen, ContactSheetScreen), what="sheet from the job line")
        text = screen_text(app)
        assert "t2v_alpha  seed 7" in text and "expert switch at step 4" in text, text  # the sheet's caption
        assert "video: outputs/clip.mp4" in text
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, ContactSheetScreen), what="closed")
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(app.screen, ContactSheetScreen), what="sheet from v")
