"""tunehub's streaming quantizer against optimum-quanto on the model: same keys, same bytes, same map."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tests.quant.tiny import (
    TinyWan,
    hunyuan_original_shapes,
    linear_modules,
    quanto_reference,
    save_model,
    tiny_hunyuan_diffusers,
    tiny_wan_diffusers,
    tree_from_shapes,
)
from tunehub.quant.format import FORMAT_KEY, MAP_KEY, decode_map
from tunehub.quant.layers import LAYOUTS_BY_ID
from tunehub.quant.stream import quantize_file


def _raw(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().contiguous().reshape(-1).view(torch.uint8)


def assert_same_as_reference(output: Path, reference_state: dict, reference_map: dict) -> None:
    with safe_open(str(output), "pt") as handle:
        keys = set(handle.keys())
        assert keys == set(reference_state), sorted(keys ^ set(reference_state))[:10]
        for key in sorted(keys):
            ours = handle.get_tensor(key)
            theirs = reference_state[key]
            assert ours.dtype == theirs.dtype, key
            assert tuple(ours.shape) == tuple(theirs.shape), key
            assert torch.equal(_raw(ours), _raw(theirs)), f"bytes differ: {key}"
        metadata = handle.metadata()
    assert metadata[FORMAT_KEY] == "quanto"
    assert decode_map(metadata[MAP_KEY]) == reference_map


def _wan_original() -> tuple[torch.nn.Module, list[str]]:
    model = TinyWan(layers=2, image=True)
    with torch.no_grad():
        model.blocks[0].ffn[0].weight[3].zero_()  # an all-zero row: scale 0, as quanto handles it
    return model, ["blocks.*"]


def _hunyuan_original() -> tuple[torch.nn.Module, list[str]]:
    shapes = hunyuan_original_shapes(double=2, single=2)
    linear = {key[: -len(".weight")] for key, shape in shapes.items() if key.endswith(".weight") and len(shape) == 2}
    return tree_from_shapes(shapes, linear), ["double_blocks.*", "single_blocks.*"]


MODELS = {
    "wan": _wan_original,
    "wan_diffusers": lambda: (tiny_wan_diffusers(), ["blocks.*"]),
    "hunyuan": _hunyuan_original,
    "hunyuan_diffusers": lambda: (tiny_hunyuan_diffusers(), ["transformer_blocks.*", "single_transformer_blocks.*"]),
}


@pytest.mark.parametrize("layout", sorted(MODELS))
def test_each_layout_matches_quanto_byte_for_byte(layout: str, tmp_path: Path) -> None:
    torch.manual_seed(1)
    model, include = MODELS[layout]()
    source = save_model(model, tmp_path / "model_bf16.safetensors", torch.bfloat16)
    result = quantize_file(source, tmp_path / "model_quanto_bf16_int8.safetensors")
    _, state, qmap = quanto_reference(copy.deepcopy(model), torch.bfloat16, include)
    assert result.layout == layout
    assert result.quantized_layers == len(qmap) > 0
    assert_same_as_reference(result.output, state, qmap)


@pytest.mark.parametrize(
    "factory, prefixes",
    [
        (tiny_wan_diffusers, ("blocks.",)),
        (tiny_hunyuan_diffusers, ("transformer_blocks.", "single_transformer_blocks.")),
    ],
)
def test_layer_table_names_exactly_the_block_linears_of_diffusers_models(factory, prefixes) -> None:
    model = factory()
    wanted = linear_modules(model, prefixes)
    keys = [key for key in model.state_dict() if key.endswith(".weight")]
    from tunehub.quant.layers import detect_layout

    layout = detect_layout(keys)
    assert layout is not None
    chosen = {key[: -len(".weight")] for key in keys if layout.is_quantized_module(key[: -len(".weight")])}
    assert chosen == wanted


def test_fp16_source_quantized_for_bf16_equals_reference_from_bf16_weights(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = TinyWan(layers=2)
    source = save_model(model, tmp_path / "model_fp16.safetensors", torch.float16)
    result = quantize_file(source, tmp_path / "out.safetensors", dtype="bf16")
    as_bf16 = copy.deepcopy(model).to(torch.float16).to(torch.bfloat16)  # what loading fp16 as bf16 does
    _, state, qmap = quanto_reference(as_bf16, torch.bfloat16, ["blocks.*"])
    assert result.dtype == "bf16"
    assert_same_as_reference(result.output, state, qmap)


def test_fp16_output_matches_quanto_in_fp16(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = TinyWan(layers=1)
    source = save_model(model, tmp_path / "model_bf16.safetensors", torch.bfloat16)
    result = quantize_file(source, tmp_path / "out.safetensors", dtype="fp16")
    reference = copy.deepcopy(model).to(torch.bfloat16).to(torch.float16)
    _, state, qmap = quanto_reference(reference, torch.float16, ["blocks.*"])
    assert_same_as_reference(result.output, state, qmap)


def test_single_row_layer_and_layers_pattern_match_quanto(tmp_path: Path) -> None:
    # One output row: quanto falls back to a per-tensor (scalar) scale. fp32 extras stay fp32.
    torch.manual_seed(4)
    shapes = {
        "net.gate.weight": (1, 16),
        "net.gate.bias": (1,),
        "net.wide.weight": (40, 16),
        "net.keep.weight": (8, 16),
        "net.odd.weight": (3, 5),  # an odd number of int8 bytes
        "net.odd2.weight": (7, 3),
        "norm.weight": (16,),
    }
    model = tree_from_shapes(shapes, {"net.gate", "net.wide", "net.keep", "net.odd", "net.odd2"})
    source = save_model(model, tmp_path / "custom.safetensors", torch.bfloat16)
    result = quantize_file(source, tmp_path / "out.safetensors", layers="net.gate,net.wi*,net.odd*")
    _, state, qmap = quanto_reference(copy.deepcopy(model), torch.bfloat16, ["net.gate", "net.wi*", "net.odd*"])
    assert set(qmap) == {"net.gate", "net.wide", "net.odd", "net.odd2"}
    assert state["net.gate.weight._scale"].shape == ()
    assert_same_as_reference(result.output, state, qmap)


def test_layouts_are_detected_from_keys_only() -> None:
    assert set(LAYOUTS_BY_ID) == {"wan", "wan_diffusers", "hunyuan", "hunyuan_diffusers"}
    from tunehub.quant.layers import detect_layout

    assert detect_layout(["blocks.3.self_attn.q.weight"]).id == "wan"
    assert detect_layout(["blocks.0.attn1.to_q.weight"]).id == "wan_diffusers"
    assert detect_layout(["double_blocks.0.img_attn_qkv.weight"]).id == "hunyuan"
    assert detect_layout(["single_transformer_blocks.0.proj_out.weight"]).id == "hunyuan_diffusers"
    assert detect_layout(["model.layers.0.mlp.weight"]) is None


@pytest.mark.parametrize("source_dtype", [torch.bfloat16, torch.float16])
def test_layers_larger_than_a_row_block_match_quanto(tmp_path: Path, source_dtype: torch.dtype) -> None:
    # 2100 x 2048 bf16 is above the CPU row block (8 MiB): several blocks, the last one partial.
    torch.manual_seed(5)
    shapes = {
        "blocks.0.ffn.0.weight": (2100, 2048),
        "blocks.0.ffn.0.bias": (2100,),
        "blocks.0.self_attn.q.weight": (8, 8),
    }
    model = tree_from_shapes(shapes, {"blocks.0.ffn.0", "blocks.0.self_attn.q"})
    source = save_model(model, tmp_path / "big.safetensors", source_dtype)
    result = quantize_file(source, tmp_path / "out.safetensors", dtype="bf16")
    reference = copy.deepcopy(model).to(source_dtype).to(torch.bfloat16)
    _, state, qmap = quanto_reference(reference, torch.bfloat16, ["blocks.*"])
    assert_same_as_reference(result.output, state, qmap)
