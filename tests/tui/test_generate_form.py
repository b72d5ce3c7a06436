"""The generate form's fields and parsing (the pilot test in test_actions runs a generation)."""

from __future__ import annotations

from tests.fixtures.homes import Home
from tests.tui.conftest import local_registry
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
