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


_FUSED_GEMM_CHECK = """
import json, sys, torch
from tunehub.inference.int8_linear import int8_gemm
results = []
for variant, rows, bias in (("pointer", 70, True), ("pointer", 33, False), ("tma", 70, True), ("tma", 33, False)):
    generator = torch.Generator().manual_seed(rows)
    a = torch.randint(-127, 128, (rows, 64), dtype=torch.int8, generator=generator)
    b = torch.randint(-127, 128, (40, 64), dtype=torch.int8, generator=generator)
    a_scale = torch.rand(rows, 1, generator=generator) + 0.5
    b_scale = (torch.rand(40, 1, generator=generator) + 0.5).to(torch.bfloat16)
    bias_values = torch.randn(40, generator=generator).to(torch.bfloat16) if bias else None
    out = int8_gemm(a, b, a_scale, b_scale, bias_values, torch.bfloat16, config=(32, 32, 32, 2, 4, 2), variant=variant)
    exact = (a.double() @ b.double().t()) * a_scale.double() * b_scale.double().t()
    if bias_values is not None:
        exact = exact + bias_values.double()
    results.append(dict(shape=list(out.shape), dtype=str(out.dtype), finite=bool(torch.isfinite(out).all()),
                        error=float((out.double() - exact).norm() / exact.norm())))
try:
    int8_gemm(a[:, :48], b[:, :48], a_scale, b_scale, None, torch.bfloat16, config=(32, 32, 32, 2, 4, 2))
    refused = ""
except ValueError as exc:
    refused = str(exc)
print(json.dumps(dict(results=results, refused=refused)))
"""


def test_fused_int8_gemm_matches_exact_math() -> None:
    """The fused int8 GEMM's Triton kernels (plain loads; persistent with bulk tensor copies),
    run by Triton's CPU interpreter (the same kernel source; the variable must be set before
    triton is imported, hence a process; four programs walk six tiles). int8 x int8
    products are exact in int32, both row scales and the bias are applied in the epilogue: only
    the final bf16 rounding differs from float64 math. Row and column counts that are not a
    multiple of the tile are handled; a K that is not a multiple of BLOCK_K is refused."""
    import json
    import os
    import subprocess
    import sys

    pytest.importorskip("triton", reason="triton is in the test extra; it has no wheel for this platform")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", _FUSED_GEMM_CHECK], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert [r["shape"] for r in report["results"]] == [[70, 40], [33, 40]] * 2
    for result in report["results"]:
        assert result["dtype"] == "torch.bfloat16" and result["finite"]
        assert result["error"] < 0.005  # bf16 output rounding
    assert "not a multiple of 32" in report["refused"]


def test_fused_int8_gemm_is_not_used_off_cuda() -> None:
    from tunehub.inference.int8_linear import fused_int8_gemm_available

    assert not fused_int8_gemm_available(torch.device("cpu"))
