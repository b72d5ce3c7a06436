"""Loading, merging, references and resolving, on real files in a temporary home."""

from __future__ import annotations

import os

import pytest

from tests.fixtures.homes import Home
from tunehub.errors import InvalidDefinitionError, UnknownDefinitionError
from tunehub.registry import Origin

HUB = "https://huggingface.co/ns/repo/resolve/main/"


def model(name: str = "Ft", arch: str = "t2v", **extra: object) -> dict[str, object]:
    return {"name": name, "architecture": arch, **extra}


def test_builtins_load_and_resolve_under_every_preference(home: Home) -> None:
    registry = home.registry()
    builtin_ids = {"t2v", "t2v_1.3B", "i2v", "i2v_720p", "vace_14B", "hunyuan", "hunyuan_i2v", "t2v_fusionix"}
    assert builtin_ids <= set(registry.definitions)
    for definition_id in builtin_ids:
        definition = registry.get(definition_id)
        assert definition.valid, definition.problems
        assert definition.origin is Origin.BUILTIN
        for quantization in ("int8", "fp8", "bf16"):
            for dtype in ("bf16", "fp16"):
                resolution = registry.resolve(definition_id, quantization, dtype)
                assert resolution.transformer is not None
                assert resolution.transformer.path.parent == home.ckpts
    vace = registry.resolve("vace_14B", "int8", "fp16")
    assert vace.transformer is not None and vace.transformer.filename == "wan2.1_text2video_14B_quanto_mfp16_int8.safetensors"
    assert [m.filename for m in vace.modules] == ["wan2.1_Vace_14B_module_quanto_mfp16_int8.safetensors"]
    # no family is forced to bf16 any more (WanGP today): the preference decides for Hunyuan too
    hunyuan = registry.resolve("hunyuan", "int8", "fp16")
    assert hunyuan.dtype == "fp16" and "preference" in hunyuan.dtype_reason


def test_same_id_merges_key_by_key_and_user_folder_wins(home: Home) -> None:
    home.write_definition("t2v", {"description": "my notes"}, num_inference_steps=12)
    definition = home.registry().get("t2v")
    assert definition.valid
    assert definition.description == "my notes"
    assert definition.name == "Wan2.1 text2video 14B"  # kept from the built-in
    assert definition.settings["num_inference_steps"] == 12
    assert definition.settings["video_length"] == 81
    assert definition.origin is Origin.LOCAL and definition.path.parent == home.finetunes


def test_visible_false_hides_a_builtin(home: Home) -> None:
    home.write_definition("hunyuan_i2v", {"visible": False})
    registry = home.registry()
    assert "hunyuan_i2v" not in {d.id for d in registry.visible()}
    assert registry.get("hunyuan_i2v").valid


def test_string_references_three_deep(home: Home) -> None:
    home.write_definition("a", model(URLs="b"))
    home.write_definition("b", model(URLs="c"))
    home.write_definition("c", model(URLs="t2v"))
    registry = home.registry()
    assert registry.get("a").valid
    resolution = registry.resolve("a", "int8", "bf16")
    assert resolution.transformer is not None
    assert resolution.transformer.filename == "wan2.1_text2video_14B_quanto_mbf16_int8.safetensors"


def test_reference_cycle_is_named(home: Home) -> None:
    home.write_definition("x", model(URLs="y"))
    home.write_definition("y", model(URLs="z"))
    home.write_definition("z", model(URLs="x"))
    registry = home.registry()
    for definition_id in ("x", "y", "z"):
        problems = registry.get(definition_id).problems
        assert any("circular reference" in p.message for p in problems), problems
    message = next(p.message for p in registry.get("x").problems if p.key == "model.URLs")
    assert "x -> y -> z -> x" in message
    with pytest.raises(InvalidDefinitionError, match="circular"):
        registry.resolve("x")


def test_missing_reference(home: Home) -> None:
    home.write_definition("m", model(URLs="nope"))
    problems = home.registry().get("m").problems
    assert [p.key for p in problems] == ["model.URLs"]
    assert "'nope'" in problems[0].message


def test_module_referenced_by_id(home: Home) -> None:
    home.write_definition("myvace", model(arch="vace_14B", URLs=[HUB + "ft_bf16.safetensors"], modules=["vace_14B"]))
    resolution = home.registry().resolve("myvace", "int8", "bf16")
    assert [m.filename for m in resolution.modules] == ["wan2.1_Vace_14B_module_quanto_mbf16_int8.safetensors"]
    assert resolution.transformer is not None and resolution.transformer.filename == "ft_bf16.safetensors"


def test_module_reference_needs_exactly_one_module(home: Home) -> None:
    home.write_definition("two", model(URLs=[HUB + "a_bf16.safetensors"], modules=[[HUB + "m1.safetensors"], [HUB + "m2.safetensors"]]))
    home.write_definition("user", model(URLs=[HUB + "b_bf16.safetensors"], modules=["two"]))
    problems = home.registry().get("user").problems
    assert len(problems) == 1 and "declares 2 modules" in problems[0].message


def test_preload_reference_and_presence(home: Home) -> None:
    home.write_definition("base", model(URLs=[HUB + "b_bf16.safetensors"], preload_URLs=[HUB + "b_map.json"]))
    home.write_definition("ft", model(URLs=[HUB + "f_bf16.safetensors"], preload_URLs="base"))
    (home.ckpts / "b_map.json").write_text("{}")
    resolution = home.registry().resolve("ft")
    assert [(p.filename, p.present) for p in resolution.preload] == [("b_map.json", True)]
    assert resolution.transformer is not None and not resolution.transformer.present


def test_local_paths_found_by_base_name_in_any_weights_folder(home: Home, tmp_path) -> None:
    other = tmp_path / "wangp" / "ckpts"
    other.mkdir(parents=True)
    (other / "ft_quanto_bf16_int8.safetensors").write_bytes(b"x")
    home.write_config(f'weights_dirs = ["ckpts", "{other}"]\n')
    home.write_definition(
        "ft", model(URLs=[HUB + "ft_bf16.safetensors", "ckpts/ft_quanto_bf16_int8.safetensors"])
    )
    resolution = home.registry().resolve("ft", "int8", "bf16")
    assert resolution.transformer is not None
    assert resolution.transformer.present and resolution.transformer.path == other / "ft_quanto_bf16_int8.safetensors"


def test_remote_definitions_cannot_leave_the_weights_folder(home: Home) -> None:
    remote = home.root / "remote" / "ns--defs"
    home.write_definition("evil", model(URLs=["../../etc/passwd", "/abs/x.safetensors"]), folder=remote)
    home.write_definition("fine", model(URLs=["../x_bf16.safetensors"]))  # the user's own folder: allowed
    registry = home.registry()
    evil = registry.get("evil")
    assert evil.origin is Origin.REMOTE
    assert {p.key for p in evil.problems} == {"model.URLs[0]", "model.URLs[1]"}
    assert registry.get("fine").valid


def test_unknown_id(home: Home) -> None:
    with pytest.raises(UnknownDefinitionError, match="tunehub list"):
        home.registry().get("nope")


def test_incremental_reload_and_remove(home: Home) -> None:
    registry = home.registry()
    path = home.write_definition("late", model(URLs="late2"))
    assert registry.reload_file(path) == "late"
    assert not registry.get("late").valid
    second = home.write_definition("late2", model(URLs=[HUB + "x_bf16.safetensors"]))
    registry.reload_file(second)
    assert registry.get("late").valid  # the reference is re-checked when its target appears
    os.unlink(second)
    registry.remove_file(second)
    assert "late2" not in registry and not registry.get("late").valid


def test_invalid_definition_does_not_stop_the_others(home: Home) -> None:
    home.write_raw("broken", "{ not json")
    home.write_definition("good", model(URLs=[HUB + "g_bf16.safetensors"]))
    registry = home.registry()
    assert not registry.get("broken").valid
    assert registry.get("good").valid
