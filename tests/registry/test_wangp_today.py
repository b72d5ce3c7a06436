"""definitions.md, "WanGP today": one test per rule, on a WanGP-like install (tests/fixtures/wangp_tree.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.wangp_tree import (
    DEFAULTS,
    FINETUNES,
    wangp_models,
    wangp_pick,
    write_tree,
)
from tests.fixtures.wangp_tree import load_registry as _registry
from tunehub.config import load_config
from tunehub.errors import UnsupportedArchitectureError
from tunehub.registry.architectures import (
    architecture,
    require_generate,
    require_quantize,
)
from tunehub.registry.naming import parse_variant_name, quantized_filename


def test_tree_is_large_enough(wangp: Path) -> None:
    architectures = {model["architecture"] for model in DEFAULTS.values()}
    assert len(architectures) >= 30
    assert any(a.startswith("ltx") for a in architectures)


# --- Folders -------------------------------------------------------------------------


def test_folders_defaults_then_finetunes_a_finetunes_file_merges_over_the_default(wangp: Path) -> None:
    registry = _registry(wangp)
    t2v = registry.get("t2v")
    assert [p.parent.name for p in t2v.files] == ["defaults", "finetunes"]  # built-in t2v yielded
    assert t2v.name == "My Wan 14B (customised)"  # the user's model key wins
    assert t2v.model["URLs"] == DEFAULTS["t2v"]["URLs"]  # the others come from defaults/
    assert t2v.settings["num_inference_steps"] == 12 and t2v.settings["prompt"] == "a t2v"


def test_folders_builtins_fill_gaps_and_never_override_wangps_own(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "Wan2GP")
    registry = _registry(root)
    assert registry.get("hunyuan").model["URLs"] == DEFAULTS["hunyuan"]["URLs"]
    assert registry.get("hunyuan").files == [root / "defaults" / "hunyuan.json"]
    # an id WanGP's folder does not have still comes from tunehub's built-ins
    assert registry.get("t2v_fusionix").origin.value == "builtin"


def test_folders_definition_dirs_keep_their_listed_order(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "Wan2GP")
    (root / "tunehub.toml").write_text('definition_dirs = ["finetunes", "defaults"]\n', encoding="utf-8")
    registry = _registry(root)
    assert [p.parent.name for p in registry.get("t2v").files] == ["finetunes", "defaults"]
    assert registry.get("t2v").name == DEFAULTS["t2v"]["name"]  # defaults/ listed last: it wins


def test_folders_a_missing_definition_dir_is_a_warning(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "Wan2GP")
    (root / "tunehub.toml").write_text('definition_dirs = ["nowhere"]\n', encoding="utf-8")
    with pytest.warns(UserWarning, match="nowhere does not exist"):
        cfg = load_config(root)
    assert any("nowhere" in w for w in cfg.warnings)


# --- Architectures -------------------------------------------------------------------


def test_architectures_every_id_is_valid_and_has_its_family(wangp: Path) -> None:
    registry = _registry(wangp)
    for definition_id in DEFAULTS:
        definition = registry.get(definition_id)
        assert definition.valid, (definition_id, definition.problems)
    families = {registry.get(i).family for i in DEFAULTS}
    assert {"wan2.1", "wan2.2", "hunyuan", "hunyuan1.5", "ltx", "flux", "qwen", "image", "audio", "unknown"} <= families
    assert registry.get("future_model").family == "unknown"
    assert registry.get("ltx2_22B").family == "ltx"


def test_architectures_generate_and_quantize_refuse_in_one_line() -> None:
    assert require_generate("t2v").generate and require_quantize("t2v_2_2").quantize
    with pytest.raises(UnsupportedArchitectureError) as info:
        require_generate("ltx2_22B")
    message = str(info.value)
    assert "\n" not in message and "ltx2_22B" in message and "family ltx" in message and "pull" in message
    with pytest.raises(UnsupportedArchitectureError, match="brand_new.*does not know"):
        require_quantize("brand_new")


def test_architectures_empty_or_not_a_string_stays_an_error(tmp_path: Path) -> None:
    root = tmp_path / "home"
    (root / "finetunes").mkdir(parents=True)
    for name, arch in (("empty", ""), ("number", 5)):
        (root / "finetunes" / f"{name}.json").write_text(json.dumps({"model": {"name": "x", "architecture": arch}}))
    registry = _registry(root)
    assert not registry.get("empty").valid and not registry.get("number").valid


def test_architectures_i2v_720p_is_still_accepted() -> None:
    assert architecture("i2v_720p").generate and architecture("i2v_720p").family == "wan2.1"


def test_architectures_table_lora_folders_follow_wangps_handlers() -> None:
    expected = {
        "t2v": "wan", "t2v_2_2": "wan", "i2v_2_2": "wan", "i2v": "wan_i2v", "flf2v_720p": "wan_i2v",
        "t2v_1.3B": "wan_1.3B", "vace_1.3B": "wan_1.3B", "ti2v_2_2": "wan_5B", "ovi": "wan_5B",
        "animate2": "wan_animate2", "hunyuan": "hunyuan", "hunyuan_i2v": "hunyuan_i2v",
        "hunyuan_1_5_t2v": "hunyuan_1_5", "ltx2_22B": "ltx2", "flux": "flux", "flux2_dev": "flux2",
        "flux2_klein_4b": "flux2_klein_4b", "flux2_klein_9b": "flux2_klein_9b", "qwen_image_20B": "qwen",
    }
    assert {a: architecture(a).lora_dir for a in expected} == expected


# --- References ----------------------------------------------------------------------


def test_references_strings_in_every_list_key_are_followed(wangp: Path) -> None:
    registry = _registry(wangp)
    assert registry.reference_list("vace_14B_2_2", "URLs2") == DEFAULTS["t2v_2_2"]["URLs2"]
    assert registry.reference_list("hunyuan_i2v", "preload_URLs") == DEFAULTS["hunyuan"]["preload_URLs"]
    assert registry.loras("t2v_2_2_lightning_v2") == list(zip(DEFAULTS["t2v_2_2_lightning"]["loras"], ["1;0", "0;1"]))
    # modules as a string: the referenced definition's modules
    assert registry.module_lists("ltx2_22B_1_1_edit_anything") == DEFAULTS["ltx2_22B_edit_anything"]["modules"]


def test_references_module_items_list_id_and_object(wangp: Path) -> None:
    registry = _registry(wangp)
    assert registry.module_lists("vace_multitalk_14B") == [DEFAULTS["vace_14B"]["modules"][0],
                                                          DEFAULTS["multitalk"]["modules"][0]]
    lynx = DEFAULTS["lynx"]["modules"][0]
    assert registry.modules("lynx") == [(0, "URLs", lynx["URLs"]), (0, "URLs2", lynx["URLs2"])]


def test_references_circular_stops_with_a_problem(tmp_path: Path) -> None:
    root = tmp_path / "home"
    (root / "finetunes").mkdir(parents=True)
    for a, b in (("a", "b"), ("b", "a")):
        (root / "finetunes" / f"{a}.json").write_text(json.dumps({"model": {"name": a, "architecture": "t2v", "loras": b}}))
    registry = _registry(root)
    assert any("circular" in p.message for p in registry.get("a").problems)


def test_other_keys_are_kept_and_not_reported(wangp: Path) -> None:
    registry = _registry(wangp)
    ltx = registry.get("ltx2_19B")
    assert ltx.valid and ltx.model["ltx2_pipeline"] == "two_stage" and ltx.model["attention"] == {"sage": True}
    assert registry.get("qwen_image_edit_20B").model["profiles_dir"] == ["qwen"]


# --- Transformer dtype, module dtype, picks: against WanGP's rule ---------------------


def test_transformer_dtype_comes_from_the_architecture_definition_not_the_finetune(wangp: Path) -> None:
    registry = _registry(wangp)
    # finetunes/t2v.json sets dtype fp16 on the architecture t2v: every t2v finetune follows
    mine = registry.resolve("t2v_myft", "int8", "bf16")
    assert mine.dtype == "fp16" and "architecture's definition 't2v'" in mine.dtype_reason
    assert registry.resolve("ltx2_myft", "int8", "fp16").dtype == "bf16"  # ltx2_22B says bf16


def test_transformer_dtype_auto_is_bf16_only_on_a_gpu_that_supports_it(wangp: Path, monkeypatch) -> None:
    registry = _registry(wangp)
    monkeypatch.setenv("TUNEHUB_GPU_CAPABILITY", "7.5")
    old = registry.resolve("i2v", "int8")
    assert old.dtype == "fp16" and "capability < 8" in old.dtype_reason
    monkeypatch.setenv("TUNEHUB_GPU_CAPABILITY", "none")
    assert registry.resolve("i2v", "int8").dtype == "bf16"
    assert "no GPU" in registry.resolve("i2v", "int8").dtype_reason
    # no family is forced to bf16: Hunyuan follows the preference
    assert registry.resolve("hunyuan", "bf16", "fp16").dtype == "fp16"


def test_module_dtype_is_the_quantized_main_files(wangp: Path) -> None:
    registry = _registry(wangp)
    # main file picked quanto mbf16 (auto -> bf16), fp16 asked for modules? no: modules follow the main file
    resolution = registry.resolve("vace_14B_2_2", "int8", "bf16")
    assert resolution.transformer.filename.endswith("_quanto_mbf16_int8.safetensors")
    assert resolution.module_dtype == "bf16"


@pytest.mark.parametrize("quantization", ["int8", "fp8", "bf16"])
@pytest.mark.parametrize("policy", ["bf16", "fp16", "auto-bf16-gpu", "auto-old-gpu"])
def test_resolve_agrees_with_wangps_rule(wangp: Path, monkeypatch, quantization: str, policy: str) -> None:
    """Main file, URLs2 and every module of every definition, as WanGP's own loader picks them."""
    bf16_ok = policy != "auto-old-gpu"
    monkeypatch.setenv("TUNEHUB_GPU_CAPABILITY", "8.0" if bf16_ok else "7.0")
    wangp_policy = "" if policy.startswith("auto") else policy
    registry = _registry(wangp)
    models = wangp_models(wangp)
    checked = 0
    for definition_id in models:
        expected = wangp_pick(models, definition_id, quantization, wangp_policy, bf16_ok)
        got = registry.resolve(definition_id, quantization, None if not wangp_policy else wangp_policy)
        assert got.dtype == expected["dtype"], definition_id
        assert (got.transformer.source if got.transformer else "") == expected["main"], definition_id
        assert (got.transformer2.source if got.transformer2 else "") == expected["second"], definition_id
        assert [m.source for m in got.modules] == expected["modules"], definition_id
        checked += 1
    assert checked == len(set(DEFAULTS) | set(FINETUNES))


# --- Quantization tokens and labels --------------------------------------------------


@pytest.mark.parametrize(
    ("name", "label", "quantized"),
    [
        ("wan2.1_text2video_14B_mbf16.safetensors", "16-bit bf16", False),
        ("wan2.1_text2video_14B_quanto_mfp16_int8.safetensors", "int8 fp16", True),
        ("flux2-dev_nvfp4.safetensors", "nvfp4", True),
        ("ltx-2.3-22b-dev_diffusion_model_q4_k_m.gguf", "gguf q4_k_m", True),
        ("flux1-kontext-dev_q8_0.gguf", "gguf q8_0", True),
        ("ltx-2-19b-dev_diffusion_model_fp8_scaled.safetensors", "fp8 scaled", True),
        ("z_image_turbo_r128_fp4.safetensors", "fp4 (nunchaku)", True),
        ("z_image_turbo_r256_int4.safetensors", "int4 (nunchaku)", True),
        ("qwen_image_20B_nf4.safetensors", "nf4", True),
    ],
)
def test_quantization_tokens_label_what_a_file_is(name: str, label: str, quantized: bool) -> None:
    info = parse_variant_name(name)
    assert info.label == label and info.quantized is quantized


def test_quantization_tokens_an_nvfp4_pick_gets_no_advice_to_quantize(wangp: Path) -> None:
    registry = _registry(wangp)
    # only 16-bit then nvfp4 then int8 listed: int8 wanted -> the int8 file; 16-bit wanted -> the first
    assert registry.resolve("hunyuan_1_5_t2v", "int8", "bf16").transformer.filename.endswith("quanto_bf16_int8.safetensors")
    flux2 = registry.resolve("flux2_dev", "int8", "bf16")  # no int8: fp8 is the second token
    assert flux2.transformer.filename == "flux2-dev_fp8.safetensors" and not flux2.needs_quantization


# --- Local files ---------------------------------------------------------------------


def test_local_files_relative_path_under_the_weights_folder_first(wangp: Path) -> None:
    registry = _registry(wangp)
    choice = registry.resolve("t2v_myft", "int8").transformer
    assert choice.present and choice.path == wangp / "ckpts" / "sub" / "my_ft_quanto_bf16_int8.safetensors"


def test_local_files_then_base_name_then_as_given(tmp_path: Path) -> None:
    root = tmp_path / "home"
    (root / "finetunes").mkdir(parents=True)
    (root / "ckpts").mkdir()
    (root / "ckpts" / "flat_bf16.safetensors").write_bytes(b"x")
    (root / "elsewhere").mkdir()
    (root / "elsewhere" / "given_bf16.safetensors").write_bytes(b"y")
    for name, entry in (("flat", "ckpts/flat_bf16.safetensors"), ("given", "elsewhere/given_bf16.safetensors")):
        (root / "finetunes" / f"{name}.json").write_text(json.dumps({"model": {"name": name, "architecture": "t2v",
                                                                             "URLs": [entry]}}))
    registry = _registry(root)
    assert registry.resolve("flat").transformer.path == root / "ckpts" / "flat_bf16.safetensors"
    assert registry.resolve("given").transformer.path == root / "elsewhere" / "given_bf16.safetensors"


# --- Quantized names -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "dtype", "expected"),
    [
        ("model_bf16_v2_bf16.safetensors", "bf16", "model_quanto_bf16_int8_v2_quanto_bf16_int8.safetensors"),
        ("wan2.1_text2video_14B_mbf16.safetensors", "bf16", "wan2.1_text2video_14B_quanto_mbf16_int8.safetensors"),
        ("wan2.1_text2video_14B_mbf16.safetensors", "fp16", "wan2.1_text2video_14B_quanto_mfp16_int8.safetensors"),
        ("Wan14BT2VFusioniX_fp16.safetensors", "bf16", "Wan14BT2VFusioniX_quanto_bf16_int8.safetensors"),
        ("model_FP16.safetensors", "bf16", "model_quanto_bf16_int8.safetensors"),  # FP16 -> bf16
        ("model_BF16.safetensors", "fp16", "model_quanto_bf16_int8.safetensors"),  # WanGP's quirk: BF16 -> bf16
        ("model_BF16.safetensors", "bf16", "model_BF16_quanto_int8.safetensors"),  # upper case is no token
        ("plain_model.safetensors", "fp16", "plain_model_quanto_int8.safetensors"),
        ("hunyuan_video_i2v_720_bf16v2.safetensors", "bf16", "hunyuan_video_i2v_720_quanto_bf16_int8v2.safetensors"),
    ],
)
def test_quantized_names_exactly_as_wangp_writes_them(source: str, dtype: str, expected: str) -> None:
    assert quantized_filename(source, dtype) == expected


# --- LoRAs ---------------------------------------------------------------------------


def test_loras_are_listed_with_multipliers_in_the_familys_folder(wangp: Path) -> None:
    registry = _registry(wangp)
    animate2 = registry.resolve("animate2", "int8")
    assert [(c.filename, c.multiplier) for c in animate2.loras] == [("animate2_relight_lora_bf16.safetensors", 0.7)]
    assert animate2.loras[0].path == wangp / "loras" / "wan_animate2" / "animate2_relight_lora_bf16.safetensors"
    mine = registry.resolve("ltx2_myft", "int8")  # a file name in the LoRA folder, multiplier default 1.0
    assert mine.loras[0].present and mine.loras[0].multiplier == 1.0


def test_loras_folder_is_configurable(wangp: Path) -> None:
    (wangp / "tunehub.toml").write_text('[lora_dirs]\nwan_animate2 = "/srv/loras/a2"\n', encoding="utf-8")
    registry = _registry(wangp)
    assert registry.resolve("animate2").loras[0].path == Path("/srv/loras/a2/animate2_relight_lora_bf16.safetensors")
