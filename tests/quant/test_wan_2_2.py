"""int8 for Wan 2.2 (the A14B experts, the 5B) and VACE 1.3B: the layer plan names exactly the
block linears of diffusers' own models, and tunehub's file is byte-identical to optimum-quanto's.

The tiny models are diffusers' real classes with the new families' structure (2.2 i2v without
the CLIP image branch, the 5B's 48 latent channels, VACE blocks), saved in the original layout.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from tests.quant.test_exactness import assert_same_as_reference
from tests.quant.tiny import quanto_reference, tree_from_shapes
from tunehub.demo.tiny import ARCHS_2_2, build_transformer, to_original_layout
from tunehub.inference.convert import wan_diffusers_to_original
from tunehub.quant.layers import layout_for_architecture
from tunehub.quant.stream import quantize_file

BLOCKS = ("blocks.", "vace_blocks.")


def _original(arch: str, seed: int) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    model = build_transformer(arch, seed)
    return model, {k: v.detach().to(torch.bfloat16).contiguous() for k, v in to_original_layout(arch, model.state_dict()).items()}


@pytest.mark.parametrize("arch", ARCHS_2_2)
def test_plan_names_exactly_the_block_linears_of_the_diffusers_model(arch: str) -> None:
    model, original = _original(arch, 1)
    diffusers_linears = {
        name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear) and name.startswith(BLOCKS)
    }
    expected = {key[: -len(".weight")] for key in wan_diffusers_to_original({f"{n}.weight": 0 for n in diffusers_linears})}
    layout = layout_for_architecture(arch)
    assert layout is not None and layout.id == "wan"
    chosen = {key[: -len(".weight")] for key in original if key.endswith(".weight") and layout.is_quantized_module(key[: -len(".weight")])}
    assert chosen == expected


@pytest.mark.parametrize("arch", ARCHS_2_2)
def test_quantized_file_is_byte_identical_to_optimum_quanto(arch: str, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    _, original = _original(arch, 2)
    source = tmp_path / f"{arch}_mbf16.safetensors"
    save_file(original, str(source), metadata={"format": "pt"})
    result = quantize_file(source, tmp_path / f"{arch}_quanto_mbf16_int8.safetensors")
    assert result.layout == "wan"
    shapes = {key: tuple(tensor.shape) for key, tensor in original.items()}
    linear = {
        key[: -len(".weight")]
        for key, shape in shapes.items()
        if key.endswith(".weight") and len(shape) == 2 and key.startswith(BLOCKS)
    }
    tree = tree_from_shapes(shapes, linear)
    tree.load_state_dict({key: tensor.float() for key, tensor in original.items()})
    _, state, qmap = quanto_reference(copy.deepcopy(tree), torch.bfloat16, ["blocks.*", "vace_blocks.*"])
    assert result.quantized_layers == len(qmap) > 0
    assert_same_as_reference(result.output, state, qmap)
