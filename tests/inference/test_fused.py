"""tunehub's one-pass kernels (tunehub.inference.fused): the q/k norms and rotation before torch's
attention, and the feed-forward's GELU folded into the next int8 layer's quantization.

The kernels' source runs in Triton's interpreter (``TRITON_INTERPRET=1``, set before triton is
imported: a subprocess); the fold's torch route (no GPU) runs in this process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from tunehub.inference import fused, int8_linear
from tunehub.inference.int8_linear import Int8Linear, fold_gelu_into_int8, set_int8_kernel

_SETUP = r"""
import torch
from torch import nn
from tunehub.inference.int8_linear import Int8Linear

def int8_copy(linear):
    weight = linear.weight.detach().float()
    scale = weight.abs().amax(1, keepdim=True).clamp(min=1e-12) / 127
    data = torch.round(weight / scale).clamp(-127, 127).to(torch.int8)
    bias = None if linear.bias is None else linear.bias.detach()
    return Int8Linear.from_quantized(data, scale.to(torch.bfloat16), bias, torch.bfloat16)

def int8_feed_forward(seed, dim=128, inner=384):
    from diffusers.models.attention import FeedForward
    torch.manual_seed(seed)
    ffn = FeedForward(dim, inner_dim=inner, activation_fn="gelu-approximate").to(torch.bfloat16).eval()
    ffn.net[0].proj = int8_copy(ffn.net[0].proj)
    ffn.net[2] = int8_copy(ffn.net[2])
    for layer in (ffn.net[0].proj, ffn.net[2]):
        layer.prepare("int8mm")
    return ffn
"""

_KERNELS_CHECK = _SETUP + r"""
import functools, json
from tunehub.demo.tiny import build_transformer
from tunehub.inference import fused, int8_linear
from tunehub.inference.attention import FusedSdpaSelfAttention, _rotate
from tunehub.inference.int8_linear import _quantize_rows_int8, fold_gelu_into_int8
from tunehub.inference.transformer import sigmoid_form_gelu

def compared(name, ours, expected):
    difference = (ours.float() - expected.float()).abs()
    return dict(name=name, shape=list(ours.shape), expected_shape=list(expected.shape), dtype=str(ours.dtype),
                expected_dtype=str(expected.dtype), differing=int((difference > 0).sum()), size=ours.numel(),
                largest=float(difference.max() / expected.float().abs().max()))

results = {"parts": [], "models": [], "feed_forward": {}}
generator = torch.Generator().manual_seed(0)
batch, seq, heads, dim = 2, 40, 4, 16
width = heads * dim
q = (torch.randn(batch, seq, width, generator=generator) * 3).bfloat16()
k = (torch.randn(batch, seq, width, generator=generator) + 0.5).bfloat16()
norms = [nn.RMSNorm(width, eps=eps).bfloat16() for eps in (1e-6, 1e-5)]
with torch.no_grad():
    for norm in norms:
        norm.weight.copy_(torch.rand(width, generator=generator) + 0.5)
angles = torch.rand(seq, dim // 2, generator=generator) * 6
cos, sin = (f(angles).repeat_interleave(2, -1)[None, :, None, :] for f in (torch.cos, torch.sin))
with torch.no_grad():
    expected = [_rotate(norm(x).unflatten(2, (heads, -1)), cos, sin).flatten(2) for norm, x in zip(norms, (q, k))]
    # through the custom op, from the modules and diffusers' tables, as the processor calls it
    ours = fused.normed_rotated_projections(q, k, norms[0], norms[1], (cos, sin), heads)
results["parts"] += [compared(n, a, b) for n, a, b in zip(("q", "k"), ours, expected)]
arguments = (q, k, norms[0].weight, norms[1].weight, 1e-6, 1e-5, cos[0, :, 0, 0::2].contiguous(),
             sin[0, :, 0, 1::2].contiguous(), heads)
torch.library.opcheck(fused._norm_rotate_op, arguments, test_utils=("test_schema", "test_faketensor"))

hidden = (torch.randn(37, 300, generator=generator) * 3).bfloat16()
hidden[5] = 0  # an all-zero row: its scale is the floor, its values zero
q8, scales = fused.gelu_quantize_rows_int8(hidden)
r8, r_scales = _quantize_rows_int8(sigmoid_form_gelu(hidden))
results["parts"] += [compared("gelu q8", q8, r8), compared("gelu scales", scales, r_scales)]
torch.library.opcheck(fused.gelu_quantize_rows_op, (hidden,), test_utils=("test_schema", "test_faketensor"))

# the processor: the tiny Wan model through the fused path equals diffusers' stock processor,
# and the fused path runs only where it applies (bf16; not a float32 model)
for dtype in (torch.bfloat16, torch.float32):
    model = build_transformer("t2v", seed=3).to(dtype)
    inputs = dict(hidden_states=torch.randn(1, 16, 2, 8, 8, generator=generator).to(dtype), timestep=torch.tensor([500]),
                  encoder_hidden_states=torch.randn(1, 12, 32, generator=generator).to(dtype), return_dict=False)
    with torch.no_grad():
        stock_output = model(**inputs)[0].float()
    calls = []
    counted = fused.normed_rotated_projections
    def counting(*a, **kw):
        calls.append(1)
        return counted(*a, **kw)
    fused.normed_rotated_projections = counting
    for block in model.blocks:
        block.attn1.set_processor(FusedSdpaSelfAttention(block.attn1.processor))
    with torch.no_grad():
        fused_output = model(**inputs)[0].float()
    fused.normed_rotated_projections = counted
    results["models"].append(dict(dtype=str(dtype), fused_calls=len(calls), blocks=len(model.blocks),
                                  difference=float((fused_output - stock_output).abs().max() / stock_output.abs().max())))

# the folded GELU in Int8Linear's fused route (the int8 GEMM's Triton kernel, here interpreted)
int8_linear.fused_int8_gemm_available = lambda device: True
gelu_calls = []
kernel = int8_linear.gelu_quantize_rows_int8  # counted, still run
int8_linear.gelu_quantize_rows_int8 = lambda rows: gelu_calls.append(1) or kernel(rows)
x = torch.randn(2, 24, 128, generator=generator).bfloat16()
with torch.no_grad():
    plain = int8_feed_forward(7)(x).float()
    ffn = int8_feed_forward(7)
    folded_count = fold_gelu_into_int8(ffn)
    folded = ffn(x).float()
results["feed_forward"] = dict(folded=folded_count, kernel_calls=len(gelu_calls),
                               difference=float((folded - plain).abs().max() / plain.abs().max()))
print(json.dumps(results))
"""


def test_the_kernels_give_the_torch_routes_numbers() -> None:
    """normed_rotated and gelu_quantize_rows_int8 (in Triton's interpreter) round as diffusers'
    modules do: the same values; the sdpa processor built on the first gives the stock model's
    output; an int8 feed-forward with its GELU folded into the fused route gives the unfolded one's."""
    pytest.importorskip("triton", reason="triton is in the test extra; it has no wheel for this platform")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", _KERNELS_CHECK], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert [p["name"] for p in results["parts"]] == ["q", "k", "gelu q8", "gelu scales"]
    for part in results["parts"]:
        assert part["shape"] == part["expected_shape"] and part["dtype"] == part["expected_dtype"], part
        # the same roundings in the same order; a sum of squares may round in another order:
        # a few values one bf16 step apart at most
        assert part["differing"] <= max(2, part["size"] // 1000), part
        assert part["largest"] <= 1e-2, part
    assert [m["dtype"] for m in results["models"]] == ["torch.bfloat16", "torch.float32"]
    for model in results["models"]:
        bf16 = model["dtype"] == "torch.bfloat16"
        assert model["fused_calls"] == (model["blocks"] if bf16 else 0), model
        assert model["difference"] < 1e-3, model
    feed_forward = results["feed_forward"]
    assert feed_forward["folded"] == 1 and feed_forward["kernel_calls"] == 1, feed_forward
    assert feed_forward["difference"] < 1e-3, feed_forward


def _feed_forward(seed: int) -> nn.Module:
    namespace: dict[str, object] = {}
    exec(_SETUP, namespace)
    return namespace["int8_feed_forward"](seed)  # type: ignore[operator, no-any-return]


def test_folding_keeps_the_output_off_the_gpu_and_happens_once() -> None:
    """Off the GPU the folded layer applies the same GELU in torch before its quantization: the
    same output, bit for bit; a second fold, or tunehub's GELU swap after it, changes nothing."""
    from tunehub.inference.transformer import use_sigmoid_tanh_gelu

    x = torch.randn(2, 24, 128, generator=torch.Generator().manual_seed(1)).bfloat16()
    plain, ffn = _feed_forward(3), _feed_forward(3)
    with torch.no_grad():
        expected = plain(x)
        assert fold_gelu_into_int8(ffn) == 1
        assert ffn.net[2].input_activation == "gelu_tanh" and "input_activation=gelu_tanh" in repr(ffn.net[2])
        assert torch.equal(ffn(x), expected)
        assert fold_gelu_into_int8(ffn) == 0
        assert use_sigmoid_tanh_gelu(ffn) == 0 and use_sigmoid_tanh_gelu(plain) == 1
        assert torch.equal(ffn(x), expected)


def test_a_lora_on_the_folded_layer_sees_the_activation() -> None:
    from tunehub.inference.lora import LoraAdapted

    generator = torch.Generator().manual_seed(2)
    x = torch.randn(2, 24, 128, generator=generator).bfloat16()
    a, b = torch.randn(4, 384, generator=generator), torch.randn(128, 4, generator=generator)
    outputs = []
    for fold in (False, True):
        ffn = _feed_forward(5)
        if fold:
            assert fold_gelu_into_int8(ffn) == 1
        adapted = LoraAdapted(ffn.net[2])
        adapted.add(a, b, None, 0.5, torch.bfloat16, "cpu")
        ffn.net[2] = adapted
        with torch.no_grad():
            outputs.append(ffn(x))
    assert torch.equal(outputs[0], outputs[1])
    # a LoRA added before the fold: the layer is wrapped, nothing is folded
    ffn = _feed_forward(5)
    ffn.net[2] = LoraAdapted(ffn.net[2])
    assert fold_gelu_into_int8(ffn) == 0 and ffn.net[0].gelu is not int8_linear.unfolded_gelu


def test_set_int8_kernel_folds_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fused.UNFUSED_ENV, "1")
    ffn = _feed_forward(4)
    set_int8_kernel(ffn, "auto", "cpu")
    assert isinstance(ffn.net[2], Int8Linear) and ffn.net[2].input_activation is None
    monkeypatch.delenv(fused.UNFUSED_ENV)
    set_int8_kernel(ffn, "auto", "cpu")
    assert ffn.net[2].input_activation == "gelu_tanh"


def test_the_fused_kernels_are_for_cuda_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """On CPU set_attention keeps diffusers' processor for sdpa (no kernel to run); the switch
    that turns the kernels off is read."""
    from tunehub.demo.tiny import build_transformer
    from tunehub.inference.attention import set_attention

    assert not fused.fused_kernels_wanted("cpu")
    model = build_transformer("t2v", seed=0)
    stock = [type(block.attn1.processor) for block in model.blocks]
    assert set_attention(model, "sdpa", "cpu") == ("sdpa", None)
    assert [type(block.attn1.processor) for block in model.blocks] == stock
    monkeypatch.setenv(fused.UNFUSED_ENV, "1")
    assert fused.unfused_by_env() and not fused.fused_kernels_wanted("cuda")
    with pytest.raises(ValueError, match="at most"):
        fused.gelu_quantize_rows_int8(torch.zeros(2, fused.GELU_ROW_LIMIT + 1))


def test_gelu_rows_too_wide_take_the_torch_route() -> None:
    assert fused.gelu_rows_fit(13824) and not fused.gelu_rows_fit(fused.GELU_ROW_LIMIT + 1)


def test_a_norm_without_eps_gets_torchs_default() -> None:
    """RMSNorm(eps=None) adds float32's epsilon for a bf16 input (torch computes in float32), not bf16's."""
    from tunehub.inference.fp8_flash import _norm_arguments

    query = torch.randn(1, 4, 64).bfloat16()
    norm = nn.RMSNorm(64, eps=None).bfloat16()
    table = torch.ones(1, 4, 1, 16)
    _, _, eps_q, eps_k, _, _ = _norm_arguments(query, norm, norm, (table, table))
    assert eps_q == eps_k == torch.finfo(torch.float32).eps
    x = query.float()
    with torch.no_grad():
        assert torch.equal(norm(query), (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps_q)).bfloat16())

