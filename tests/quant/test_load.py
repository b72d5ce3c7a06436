"""Reading int8 files back: our loader and quanto's requantize give the reference model's outputs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from optimum.quanto import requantize
from optimum.quanto.nn import QLinear
from optimum.quanto.tensor.weights import WeightQBytesTensor
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.utils._python_dispatch import TorchDispatchMode

from tests.quant.tiny import DIM, TEXT_DIM, TinyWan, quanto_reference, save_model, tiny_wan_diffusers
from tunehub.errors import QuantizationError
from tunehub.quant.format import read_quantization_map, sidecar_map_path
from tunehub.quant.load import load_quantized, load_quantized_file
from tunehub.quant.stream import quantize_file


@pytest.fixture(scope="module")
def wan_files(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(10)
    folder = tmp_path_factory.mktemp("load")
    model = TinyWan(layers=2, image=True)
    source = save_model(model, folder / "tiny_bf16.safetensors", torch.bfloat16)
    output = quantize_file(source, folder / "tiny_quanto_bf16_int8.safetensors").output
    reference, _, _ = quanto_reference(copy.deepcopy(model), torch.bfloat16, ["blocks.*"])
    return output, reference


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(1, 6, DIM, generator=generator).to(torch.bfloat16)
    text = torch.randn(1, 4, TEXT_DIM, generator=generator).to(torch.bfloat16)
    return tokens, text


class _FloatWeightAllocations(TorchDispatchMode):
    """Records every real (not meta) floating tensor made with the shape of a linear weight."""

    def __init__(self, shapes: set[tuple[int, ...]]) -> None:
        super().__init__()
        self.shapes = shapes
        self.seen: list[tuple[str, tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if (
            type(out) is torch.Tensor  # quanto's int8 wrapper tensors report bf16 but hold int8
            and not out.is_meta
            and out.is_floating_point()
            and tuple(out.shape) in self.shapes
        ):
            self.seen.append((str(func), tuple(out.shape)))
        return out


def test_loader_on_meta_model_gives_reference_outputs_without_16bit_weights(wan_files) -> None:
    output, reference = wan_files
    tokens, text = _inputs()
    with torch.no_grad():
        expected = reference(tokens, text)
    with torch.device("meta"):
        model = TinyWan(layers=2, image=True).to(torch.bfloat16)
    # Shapes only quantized layers have (the ffn linears), so that legit 16-bit tensors don't count.
    kept = {tuple(p.shape) for name, p in model.named_parameters() if not name.startswith("blocks.")}
    block_shapes = {tuple(m.weight.shape) for m in model.blocks.modules() if isinstance(m, torch.nn.Linear)}
    assert block_shapes - kept
    recorder = _FloatWeightAllocations(block_shapes - kept)
    with recorder:
        report = load_quantized_file(model, output, device="cpu")
    assert recorder.seen == []  # no bf16 weight of a linear's shape was ever built
    assert report.quantized == 24 and report.missing == [] and report.unexpected == []
    assert not any(p.is_meta for p in model.parameters())
    layer = model.blocks[1].ffn[0]
    assert isinstance(layer, QLinear) and isinstance(layer.weight, WeightQBytesTensor)
    assert layer.weight._data.dtype == torch.int8
    with torch.no_grad():
        assert torch.equal(model(tokens, text), expected)


def test_requantize_reads_our_file_to_the_same_outputs(wan_files) -> None:
    output, reference = wan_files
    tokens, text = _inputs()
    with torch.device("meta"):
        model = TinyWan(layers=2, image=True).to(torch.bfloat16)
    kept = {tuple(p.shape) for name, p in model.named_parameters() if not name.startswith("blocks.")}
    block_shapes = {tuple(m.weight.shape) for m in model.blocks.modules() if isinstance(m, torch.nn.Linear)}
    recorder = _FloatWeightAllocations(block_shapes - kept)
    with recorder:
        requantize(model, load_file(str(output)), read_quantization_map(output), device=torch.device("cpu"))
    assert recorder.seen  # quanto builds full-size 16-bit weights first: what our loader avoids
    with torch.no_grad():
        assert torch.equal(model(tokens, text), reference(tokens, text))


def test_sidecar_map_and_renamed_keys_for_the_inference_code(wan_files, tmp_path: Path) -> None:
    output, reference = wan_files
    tokens, text = _inputs()
    # An older-style file: no map in the metadata, the map in <stem>_map.json beside it.
    qmap = read_quantization_map(output)
    old_style = tmp_path / "old_quanto_int8.safetensors"
    save_file(load_file(str(output)), str(old_style), metadata={"format": "pt"})
    assert read_quantization_map(old_style) is None
    with pytest.raises(QuantizationError, match="no quantization map"):
        load_quantized_file(TinyWan(layers=2, image=True).to(torch.bfloat16), old_style)
    sidecar_map_path(old_style).write_text(json.dumps(qmap), encoding="utf-8")
    with torch.device("meta"):
        model = TinyWan(layers=2, image=True).to(torch.bfloat16)
    load_quantized_file(model, old_style)
    with torch.no_grad():
        assert torch.equal(model(tokens, text), reference(tokens, text))

    # A caller that renames keys passes an opened file and its own mapping of names.
    with safe_open(str(output), "pt") as handle:
        renamed = {f"inner.{key}": handle.get_tensor(key) for key in handle.keys()}
    wrapper = torch.nn.Module()
    with torch.device("meta"):
        wrapper.inner = TinyWan(layers=2, image=True).to(torch.bfloat16)
    report = load_quantized(wrapper, renamed, {f"inner.{name}": cfg for name, cfg in qmap.items()}, "cpu")
    assert report.quantized == len(qmap)
    with torch.no_grad():
        assert torch.equal(wrapper.inner(tokens, text), reference(tokens, text))


def test_mismatches_are_reported_by_name(wan_files) -> None:
    output, _ = wan_files
    qmap = read_quantization_map(output)
    with pytest.raises(QuantizationError, match="blocks.9.ffn.0"):
        load_quantized(TinyWan(layers=2, image=True), output, {**qmap, "blocks.9.ffn.0": qmap["blocks.0.ffn.0"]})
    with pytest.raises(QuantizationError, match="not a Linear"):
        load_quantized(TinyWan(layers=2, image=True), output, {"blocks.0.norm3": qmap["blocks.0.ffn.0"]})
    smaller = TinyWan(layers=1, image=True).to(torch.bfloat16)
    small_map = {k: v for k, v in qmap.items() if k.startswith("blocks.0.")}
    with pytest.raises(QuantizationError, match="unexpected tensor"):
        load_quantized(smaller, output, small_map)
    report = load_quantized(TinyWan(layers=1, image=True).to(torch.bfloat16), output, small_map, strict=False)
    assert report.unexpected and all(key.startswith("blocks.1.") for key in report.unexpected)


def test_diffusers_wan_from_our_file_matches_the_reference_forward(tmp_path: Path) -> None:
    torch.manual_seed(11)
    model = tiny_wan_diffusers(layers=2)
    source = save_model(model, tmp_path / "wan_diffusers_bf16.safetensors", torch.bfloat16)
    output = quantize_file(source, tmp_path / "wan_diffusers_quanto_bf16_int8.safetensors").output
    reference, _, _ = quanto_reference(copy.deepcopy(model), torch.bfloat16, ["blocks.*"])
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(1, 4, 1, 4, 4, generator=generator).to(torch.bfloat16)
    context = torch.randn(1, 3, TEXT_DIM, generator=generator).to(torch.bfloat16)
    timestep = torch.tensor([500])
    fresh = tiny_wan_diffusers(layers=2).to(torch.bfloat16)  # rotary buffers are computed, not stored
    load_quantized_file(fresh, output)
    by_quanto = tiny_wan_diffusers(layers=2).to(torch.bfloat16)
    requantize(by_quanto, load_file(str(output)), read_quantization_map(output), device=torch.device("cpu"))
    with torch.no_grad():
        expected = reference(hidden, timestep, context, return_dict=False)[0]
        assert torch.equal(fresh(hidden, timestep, context, return_dict=False)[0], expected)
        assert torch.equal(by_quanto(hidden, timestep, context, return_dict=False)[0], expected)
