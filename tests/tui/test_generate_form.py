"""The generate form's fields and parsing (the pilot test in test_actions runs a generation)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.homes import Home
from tests.tui.conftest import local_registry, make_app, screen_text, settle, wait_for
from tunehub.tui.screens.generate import form_fields, parse_form


def test_image_field_only_for_image_to_video(home: Home) -> None:
    home.write_definition("t2v_x", {"name": "x", "architecture": "t2v", "URLs": ["x_bf16.safetensors"]})
    home.write_definition("i2v_y", {"name": "y", "architecture": "i2v", "URLs": ["y_bf16.safetensors"]})
    registry = local_registry(home)
    assert "image" not in [key for key, _, _ in form_fields(registry.get("t2v_x"))]
    assert "image" in [key for key, _, _ in form_fields(registry.get("i2v_y"))]


def test_parse_form_types_values_and_names_bad_fields(home: Home) -> None:
    home.write_definition("t2v_x", {"name": "x", "architecture": "t2v", "URLs": ["x_bf16.safetensors"]})
    fields = form_fields(local_registry(home).get("t2v_x"))
    settings, errors = parse_form(
        {"prompt": " a cat ", "resolution": "832x480", "video_length": "81", "guidance_scale": "5", "seed": ""},
        fields,
    )
    assert errors == []
    assert settings == {"prompt": "a cat", "resolution": "832x480", "video_length": 81, "guidance_scale": 5.0}
    _, errors = parse_form({"resolution": "832 by 480", "num_inference_steps": "ten", "guidance_scale": "x"}, fields)
    assert errors == [
        "Steps: 'ten' is not a whole number",
        "Guidance: 'x' is not a number",
        "Resolution: '832 by 480' must look like 832x480",
    ]


def test_parse_form_gpus_and_parallel(home: Home) -> None:
    home.write_definition("t2v_x", {"name": "x", "architecture": "t2v", "URLs": ["x_bf16.safetensors"]})
    fields = form_fields(local_registry(home).get("t2v_x"))
    assert [key for key, _, _ in fields][-2:] == ["gpus", "parallel"]
    # empty or 1: the single-GPU path, nothing passed
    assert parse_form({"gpus": "", "parallel": "auto"}, fields) == ({}, [])
    assert parse_form({"gpus": "1", "parallel": "auto"}, fields) == ({}, [])
    assert parse_form({"gpus": " 2 ", "parallel": "cfg"}, fields) == ({"gpus": 2, "parallel": "cfg"}, [])
    assert parse_form({"gpus": "AUTO", "parallel": "both"}, fields) == ({"gpus": "auto", "parallel": "both"}, [])
    for bad in ("0", "-2", "two", "1.5"):
        assert parse_form({"gpus": bad, "parallel": "auto"}, fields)[1] == [
            f"GPUs: '{bad}' must be a positive whole number or auto"
        ]
    assert parse_form({"gpus": "", "parallel": "cfg"}, fields)[1] == [
        "Parallel: 'cfg' needs GPUs of 2 or more (or auto)"
    ]
    assert parse_form({"gpus": "2", "parallel": "rings"}, fields)[1] == [
        "Parallel: 'rings' must be one of auto, cfg, context, both"
    ]


class _FakeDaemon:
    """Records what the app submits; a daemon's generate job passes params to generate()."""

    def __init__(self) -> None:
        self.submitted: list[tuple[str, str, dict[str, Any]]] = []

    def submit_job(self, kind: str, definition_id: str, **params: Any) -> dict[str, Any]:
        self.submitted.append((kind, definition_id, params))
        return {"job": {"id": 41}}


@pytest.mark.anyio
async def test_daemon_generate_job_carries_gpus_and_parallel_and_shows_the_plan(tui_home: Home) -> None:
    from tunehub.tui.daemon_events import handle_event
    from tunehub.tui.screens.main import MainScreen

    app = make_app(tui_home)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        daemon = _FakeDaemon()
        app.daemon_client = daemon
        await pilot.press("down", "down", "g")
        await wait_for(pilot, lambda: "Generate with Alpha Motion" in screen_text(app), what="form")
        screen = app.screen
        screen.query_one("#field-gpus").value = "auto"
        screen.query_one("#field-parallel").value = "both"
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: bool(daemon.submitted), what="daemon submit")
        kind, definition_id, params = daemon.submitted[0]
        assert (kind, definition_id) == ("generate", "t2v_alpha")
        assert (params["gpus"], params["parallel"]) == ("auto", "both")
        await wait_for(pilot, lambda: app.job_key_for_daemon(41) is not None, what="daemon job id")
        # At 80x24 the form fills the screen: the status line is scrolled into view.
        await wait_for(pilot, lambda: "queued as daemon job 41" in screen_text(app), what="status line on screen")
        main = next(s for s in app.screen_stack if isinstance(s, MainScreen))
        description = "4 processes (nccl): CFG-parallel x2 (cond / uncond) + context-parallel x2 (ulysses)"
        handle_event(
            app,
            main,
            {"type": "job.progress", "job": 41, "kind": "generate", "definition": "t2v_alpha",
             "status": "parallel", "description": description},
        )  # fmt: skip
        await wait_for(pilot, lambda: "parallel: 4 processes (nccl)" in str(screen.query_one("#generate-plan").render()),
                       what="plan line")
        app.daemon_client = None
