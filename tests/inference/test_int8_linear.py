"""Int8Linear kernels against optimum-quanto's QLinear (the reference) on CPU."""

from __future__ import annotations

import pytest
import torch

from tunehub.inference.int8_linear import Int8Linear, choose_kernel, set_int8_kernel


def _quanto_layer(out_features: int, in_features: int, dtype: torch.dtype, seed: int = 0):
    from optimum.quanto import freeze, qint8, quantize

    torch.manual_seed(seed)
    holder = torch.nn.Sequential(torch.nn.Linear(in_features, out_features, dtype=dtype))
    quantize(holder, weights=qint8)
    freeze(holder)
    qlinear = holder[0]
    state = qlinear.state_dict()
    ours = Int8Linear.from_quantized(state["weight._data"], state["weight._scale"], state["bias"], dtype)
    return qlinear, ours


def test_dequant_kernel_is_quanto_exact() -> None:
    """In float32 quanto runs its generic qbytes_mm on CPU: the same math, same bits."""
    qlinear, ours = _quanto_layer(48, 64, torch.float32)
    x = torch.randn(3, 7, 64)
    with torch.no_grad():
        assert torch.equal(qlinear(x), ours(x))


@pytest.mark.parametrize("kernel,tolerance", [("fp8", 0.08), ("int8mm", 0.02), ("dequant", 0.01)])
def test_fast_kernels_stay_close_to_quanto(kernel: str, tolerance: float) -> None:
    qlinear, ours = _quanto_layer(64, 96, torch.bfloat16, seed=1)
    assert ours.prepare(kernel) == kernel
    x = torch.randn(2, 40, 96, dtype=torch.bfloat16)
    with torch.no_grad():
        reference = qlinear(x).float()
        got = ours(x)
    assert got.dtype == torch.bfloat16 and got.shape == (2, 40, 64)
    relative = (got.float() - reference).norm() / reference.norm()
    assert relative < tolerance, relative


def test_fp8_conversion_drops_the_int8_copy() -> None:
    _, ours = _quanto_layer(32, 32, torch.bfloat16)
    before = ours.dequantized_weight().float()
    ours.prepare("fp8")
    assert ours.weight_data.numel() == 0 and ours.weight_fp8.dtype == torch.float8_e4m3fn
    after = ours.dequantized_weight().float()
    assert (after - before).abs().max() <= before.abs().max() * 0.07  # e4m3: 3 mantissa bits
    assert {name for name, _ in ours.named_buffers()} >= {"weight_fp8", "weight_fp8_scale"}, "offload moves them"


def test_shapes_a_fast_kernel_cannot_take_fall_back_to_dequant() -> None:
    _, ours = _quanto_layer(20, 36, torch.bfloat16)  # not multiples of 16
    assert ours.prepare("fp8") == "dequant"
    model = torch.nn.Sequential(ours)
    assert set_int8_kernel(model, "int8mm", "cpu") == {"dequant": 1}


def test_auto_is_dequant_without_an_fp8_gpu() -> None:
    assert choose_kernel("auto", "cpu") == "dequant"
    with pytest.raises(ValueError, match="unknown int8 kernel"):
        choose_kernel("int4", "cpu")


def test_int8mm_with_few_rows_uses_the_exact_path() -> None:
    """torch._int_mm on CUDA wants more than 16 rows; modulation layers see one per sample."""
    _, ours = _quanto_layer(32, 32, torch.bfloat16)
    x = torch.randn(2, 32, dtype=torch.bfloat16)
    with torch.no_grad():
        exact = ours(x)
        ours.prepare("int8mm")
        assert torch.equal(ours(x), exact)
