"""Original layout -> diffusers: the probe plan against diffusers' own single-file loader,
int8 renames against optimum-quanto, shipped configs, and errors that name the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.fixtures.tiny_models import (
    ARCHS,
    build_transformer,
    quantize_reference,
    save_original,
    to_original_layout,
    transformer_class_name,
)
from tunehub.errors import InferenceError
from tunehub.inference.convert import conversion_plan
from tunehub.inference.int8_linear import Int8Linear
from tunehub.inference.pipeline import CONFIGS_DIR, transformer_config
from tunehub.inference.transformer import build_empty, load_transformer, read_config


def _write(arch: str, folder: Path, seed: int = 5) -> tuple[torch.nn.Module, Path]:
    model = build_transformer(arch, seed)
    return model, save_original(to_original_layout(arch, model.state_dict()), folder / f"{arch}_mbf16.safetensors")


@pytest.mark.parametrize("arch", ARCHS)
def test_16bit_round_trip_is_exact(arch: str, tmp_path: Path) -> None:
    model, path = _write(arch, tmp_path)
    loaded = load_transformer(transformer_class_name(arch), dict(model.config), [path], "bf16")
    expected = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    got = loaded.state_dict()
    assert set(got) == set(expected)
    for key, tensor in expected.items():
        assert torch.equal(got[key].to(torch.bfloat16), tensor), key
    assert got["proj_out.weight" if arch in ("hunyuan", "hunyuan_i2v") else "scale_shift_table"].dtype == torch.bfloat16


def test_fp16_keeps_the_modules_diffusers_keeps_in_float32(tmp_path: Path) -> None:
    model, path = _write("t2v", tmp_path)
    got = load_transformer("WanTransformer3DModel", dict(model.config), [path], "fp16").state_dict()
    assert got["scale_shift_table"].dtype == torch.float32  # in _keep_in_fp32_modules
    assert got["blocks.0.attn1.to_q.weight"].dtype == torch.float16


@pytest.mark.parametrize("arch", ["t2v", "vace_14B"])
def test_same_model_as_diffusers_from_single_file(arch: str, tmp_path: Path) -> None:
    """diffusers' own single-file loading (local config, nothing fetched) gives the same
    forward output. (Its HunyuanVideo converter hard-codes the 3072 hidden size of the
    real model, so only Wan can be compared at tiny size; Hunyuan is covered above.)"""
    import diffusers

    model, path = _write(arch, tmp_path)
    config_folder = tmp_path / "config"
    model.save_config(config_folder)
    cls = getattr(diffusers, transformer_class_name(arch))
    reference = cls.from_single_file(str(path), config=str(config_folder), torch_dtype=torch.bfloat16)
    ours = load_transformer(transformer_class_name(arch), str(config_folder), [path], "bf16")
    torch.manual_seed(0)
    inputs = dict(
        hidden_states=torch.randn(1, 16, 2, 8, 8, dtype=torch.bfloat16),
        timestep=torch.tensor([500]),
        encoder_hidden_states=torch.randn(1, 6, 32, dtype=torch.bfloat16),
        return_dict=False,
    )
    if arch == "vace_14B":
        inputs["control_hidden_states"] = torch.randn(1, 96, 2, 8, 8, dtype=torch.bfloat16)
    with torch.no_grad():
        assert torch.equal(reference(**inputs)[0], ours(**inputs)[0])


def test_probe_plan_splits_fused_hunyuan_layers() -> None:
    hidden, mlp = 32, 64
    shapes = {
        "double_blocks.0.img_attn_qkv.weight": (3 * hidden, hidden),
        "single_blocks.0.linear1.weight": (3 * hidden + mlp, hidden),
        "final_layer.adaLN_modulation.1.weight": (2 * hidden, hidden),
    }
    plan = conversion_plan("HunyuanVideoTransformer3DModel", shapes, hunyuan_hidden=hidden)
    assert (plan["transformer_blocks.0.attn.to_k.weight"].start, plan["transformer_blocks.0.attn.to_k.weight"].stop) == (hidden, 2 * hidden)
    mlp_piece = plan["single_transformer_blocks.0.proj_mlp.weight"]
    assert (mlp_piece.source, mlp_piece.start, mlp_piece.stop) == ("single_blocks.0.linear1.weight", 3 * hidden, 3 * hidden + mlp)
    # diffusers swaps shift/scale of the final modulation: rows hidden.. then 0..hidden
    final = plan["norm_out.linear.weight"]
    assert final.index == tuple(range(hidden, 2 * hidden)) + tuple(range(hidden))


@pytest.mark.parametrize("arch", ["t2v", "hunyuan", "vace_14B"])
def test_int8_file_keeps_quanto_data_and_splits_fused_layers(arch: str, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    model, path = _write(arch, tmp_path)
    int8_path = quantize_reference(path, tmp_path / f"{arch}_quanto_mbf16_int8.safetensors")
    loaded = load_transformer(transformer_class_name(arch), dict(model.config), [int8_path], "bf16", int8_kernel="dequant")
    layers = {name: m for name, m in loaded.named_modules() if isinstance(m, Int8Linear)}
    assert layers, "quantized layers became Int8Linear"
    if arch != "hunyuan":  # Wan's feed-forward GELU is folded into the next int8 layer, which computes it
        from tunehub.inference.int8_linear import unfolded_gelu

        assert all(block.ffn.net[2].input_activation == "gelu_tanh" and block.ffn.net[0].gelu is unfolded_gelu
                   for block in loaded.blocks)  # fmt: skip
    source = load_file(str(int8_path))
    assert sum(m.weight_data.numel() for m in layers.values()) == sum(
        t.numel() for k, t in source.items() if k.endswith("._data")
    ), "every int8 value is used once: nothing was dequantized to 16-bit and re-quantized"
    if arch == "hunyuan":
        fused = source["double_blocks.0.img_attn_qkv.weight._data"]
        rows = fused.shape[0] // 3
        assert torch.equal(layers["transformer_blocks.0.attn.to_v"].weight_data, fused[2 * rows :])
        scale = source["double_blocks.0.img_attn_qkv.weight._scale"]
        assert torch.equal(layers["transformer_blocks.0.attn.to_v"].weight_scale, scale[2 * rows :])
    else:
        assert torch.equal(layers["blocks.0.attn1.to_q"].weight_data, source["blocks.0.self_attn.q.weight._data"])
    # the dequantized weights are within int8 rounding of the 16-bit ones
    reference = load_transformer(transformer_class_name(arch), dict(model.config), [path], "bf16")
    for name, layer in layers.items():
        exact = reference.get_submodule(name).weight.float()
        error = (layer.dequantized_weight().float() - exact).abs().max()
        assert error <= exact.abs().max() / 127 * 0.51 + 1e-2, name


def test_int8_quanto_kernel_builds_optimum_quanto_modules(tmp_path: Path) -> None:
    model, path = _write("t2v", tmp_path)
    int8_path = quantize_reference(path, tmp_path / "t2v_quanto_mbf16_int8.safetensors")
    config = dict(model.config)
    quanto_model = load_transformer("WanTransformer3DModel", config, [int8_path], "bf16", int8_kernel="quanto")
    ours = load_transformer("WanTransformer3DModel", config, [int8_path], "bf16", int8_kernel="dequant")
    assert sum(type(m).__name__ == "QLinear" for m in quanto_model.modules()) == 20
    torch.manual_seed(0)
    inputs = dict(
        hidden_states=torch.randn(1, 16, 2, 8, 8, dtype=torch.bfloat16),
        timestep=torch.tensor([500]),
        encoder_hidden_states=torch.randn(1, 6, 32, dtype=torch.bfloat16),
        return_dict=False,
    )
    with torch.no_grad():
        a, b = quanto_model(**inputs)[0].float(), ours(**inputs)[0].float()
    # quanto's CPU bf16 path (_weight_int8pack_mm) rounds differently from its generic one
    assert (a - b).norm() / a.norm() < 0.02


def test_wrong_architecture_names_the_file(tmp_path: Path) -> None:
    _, path = _write("t2v", tmp_path)
    hunyuan_config = dict(build_transformer("hunyuan", 1).config)
    with pytest.raises(InferenceError, match=str(path)):
        load_transformer("HunyuanVideoTransformer3DModel", hunyuan_config, [path], "bf16")


def test_truncated_file_names_the_file(tmp_path: Path) -> None:
    model, path = _write("t2v", tmp_path)
    broken = tmp_path / "broken_mbf16.safetensors"
    broken.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InferenceError, match="broken_mbf16"):
        load_transformer("WanTransformer3DModel", dict(model.config), [broken], "bf16")


def test_missing_weights_are_reported(tmp_path: Path) -> None:
    model = build_transformer("t2v", 5)
    original = to_original_layout("t2v", model.state_dict())
    del original["blocks.1.ffn.0.weight"]
    path = save_original(original, tmp_path / "partial_mbf16.safetensors")
    with pytest.raises(InferenceError, match="missing.*blocks.1.ffn.net.0.proj.weight"):
        load_transformer("WanTransformer3DModel", dict(model.config), [path], "bf16")


EXPECTED_BILLIONS = {"t2v": 14.29, "t2v_1.3B": 1.42, "i2v": 16.39, "i2v_720p": 16.39, "vace_14B": 17.34,
                     "hunyuan": 12.82, "hunyuan_i2v": 12.81}  # fmt: skip


@pytest.mark.parametrize("arch", ARCHS)
def test_shipped_configs_are_the_real_sizes(arch: str, tmp_path: Path) -> None:
    config, path = transformer_config(tmp_path, arch)  # an empty base folder: the shipped one
    assert path == CONFIGS_DIR / arch / "transformer" / "config.json"
    model = build_empty(config["_class_name"], config)  # on meta: no memory
    billions = sum(p.numel() for p in model.parameters()) / 1e9
    assert billions == pytest.approx(EXPECTED_BILLIONS[arch], abs=0.01)


def test_base_repo_config_wins_over_the_shipped_one(tmp_path: Path) -> None:
    folder = tmp_path / "base" / "transformer"
    folder.mkdir(parents=True)
    build_transformer("t2v", 1).save_config(folder)
    config, path = transformer_config(tmp_path / "base", "t2v")
    assert path == folder / "config.json" and config["num_layers"] == 2
    assert read_config(folder)["num_layers"] == 2


def test_a_state_dict_works_too(tmp_path: Path) -> None:
    model = build_transformer("t2v", 5)
    original = to_original_layout("t2v", model.state_dict())
    loaded = load_transformer("WanTransformer3DModel", dict(model.config), [original], "fp16")
    assert torch.equal(loaded.state_dict()["blocks.0.attn1.to_q.weight"], model.state_dict()["blocks.0.attn1.to_q.weight"].half())
    del original["blocks.0.ffn.2.bias"]
    with pytest.raises(InferenceError, match="<state dict>.*missing"):
        load_transformer("WanTransformer3DModel", dict(model.config), [original], "fp16")
