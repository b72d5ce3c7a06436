"""tunehub's Triton 8-bit flash attention (``--attention fp8`` and ``int8``), checked on CPU.

The kernel's source runs in Triton's interpreter (``TRITON_INTERPRET=1``, set before triton
is imported, hence a process). Q @ K^T is int8 there as on the GPU, and so is P @ V with
``pv="int8"``; e4m3 values are carried in float32 (the interpreter has no e4m3), so with
``pv="e4m3"`` what is checked is the algorithm (scales, the online softmax over blocks, the
masked last block of keys, padding, layout, the 16-bit output), not e4m3 arithmetic, which
only a Hopper GPU runs (``benchmarks/gpu_kernels.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tunehub.inference.fp8_flash import BLOCK_M, BLOCK_N, FP8_MAX, quantize_blocks

_KERNEL_CHECK = r"""
import json, math, torch
from tunehub.inference.fp8_flash import flash_attention_8bit, fp8_flash_attention, quantize_blocks, reference

def rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())

results = []
# (batch, query tokens, key tokens, heads, head size, offset of k and v): a partial last block of
# keys (200 = 128 + 72), more keys than queries over three blocks, two videos in a batch
for pv in ("e4m3", "int8"):
    for batch, seq_q, seq_k, heads, dim, offset in ((1, 200, 200, 2, 64, 0.0), (1, 128, 300, 2, 64, 1.0), (2, 64, 130, 1, 32, 0.5)):
        generator = torch.Generator().manual_seed(seq_q + seq_k)
        q = torch.randn(batch, seq_q, heads, dim, generator=generator).to(torch.bfloat16)
        k = (torch.randn(batch, seq_k, heads, dim, generator=generator) + offset).to(torch.bfloat16)
        v = (torch.randn(batch, seq_k, heads, dim, generator=generator) + offset).to(torch.bfloat16)
        exact = torch.nn.functional.scaled_dot_product_attention(*(t.transpose(1, 2).float() for t in (q, k, v))).transpose(1, 2)
        out = fp8_flash_attention(q, k, v, pv=pv)
        results.append(dict(pv=pv, shape=list(out.shape), dtype=str(out.dtype), finite=bool(torch.isfinite(out).all()),
                            vs_reference=rel(out, reference(q, k, v, pv=pv)), vs_exact=rel(out, exact)))
        # a softmax scale other than 1/sqrt(d) reaches the kernel
        sharp = fp8_flash_attention(q, k, v, 2.0 / math.sqrt(dim), pv=pv)
        exact_sharp = torch.nn.functional.scaled_dot_product_attention(
            *(t.transpose(1, 2).float() for t in (q, k, v)), scale=2.0 / math.sqrt(dim)).transpose(1, 2)
        results[-1]["scaled_vs_exact"] = rel(sharp, exact_sharp)
        # the TMA kernel (Hopper's default) reads the same blocks through tensor descriptors
        tma = flash_attention_8bit(*quantize_blocks(q, k, v, pv=pv), seq_q, seq_k, q.dtype, loader="tma")
        results[-1]["tma_vs_pointer"] = rel(tma, out)
print(json.dumps(results))
"""


def test_kernel_matches_the_scheme_and_exact_attention() -> None:
    pytest.importorskip("triton", reason="triton is in the test extra; it has no wheel for this platform")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", _KERNEL_CHECK], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert [(r["pv"], r["shape"]) for r in results] == [
        (pv, shape) for pv in ("e4m3", "int8") for shape in ([1, 200, 2, 64], [1, 128, 2, 64], [2, 64, 1, 32])
    ]
    for result in results:
        assert result["dtype"] == "torch.bfloat16" and result["finite"]
        # the kernel computes the scheme: bf16 output rounding apart (the reference takes one global max)
        assert result["vs_reference"] < 0.01, result
        # int8 Q/K (per row, per block), e4m3 or int8 V (per channel), P int8 (per row of each
        # block) or unrounded (e4m3 carried in float32 here): 1.8% and 2.8% on near-uniform
        # random attention (the output is a small average there), far less with a common
        # component; a wrong mask, scale or block order is off by tens of percent
        assert result["vs_exact"] < 0.035, result
        assert result["scaled_vs_exact"] < 0.05, result
        assert result["tma_vs_pointer"] < 1e-6, result


def test_blocks_are_padded_and_scaled_to_the_8_bit_range() -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 200, 3, 64, dtype=torch.bfloat16) * s for s in (1.0, 5.0, 0.1))
    for pv, v_largest in (("e4m3", FP8_MAX), ("int8", 127.0)):
        q8, k8, v8t, q_descale, k_descale, v_descale, v_mean = quantize_blocks(q, k, v, pv=pv)
        assert q8.dtype == k8.dtype == torch.int8 and (v8t.dtype == torch.int8) == (pv == "int8")
        assert q8.shape == (1, 3, 256, 64) and k8.shape == (1, 3, 256, 64)  # 200 -> 4 blocks of 64, 2 of 128
        assert v8t.shape == (1, 3, 64, 256) and v_mean.shape == (1, 3, 64)
        assert q_descale.shape == (1, 3, 256) and k_descale.shape == (1, 3, 256 // BLOCK_N)  # Q: one per row
        assert v_descale.shape == (1, 3, 64) and BLOCK_M == 64
        # each query row's and each block of keys' absmax lands on 127; the padding rows are zero
        assert torch.equal(q8[:, :, :200].abs().amax(dim=-1), torch.full((1, 3, 200), 127, dtype=torch.int8))
        assert torch.equal(k8.unflatten(2, (2, 128)).abs().amax(dim=(-1, -2)), torch.full((1, 3, 2), 127, dtype=torch.int8))
        assert q8[:, :, 200:].abs().max() == 0 and k8[:, :, 200:].abs().max() == 0
        # V per channel: each channel's absmax on the type's largest value
        assert torch.allclose(v8t[..., :200].float().abs().amax(dim=-1), torch.full((1, 3, 64), v_largest))
        assert v8t[..., 200:].float().abs().max() == 0
        # undoing the scales gives the smoothed K back within int8's rounding
        smoothed = k.float().transpose(1, 2) - k.float().transpose(1, 2).mean(dim=2, keepdim=True)
        restored = (k8.float().unflatten(2, (2, 128)) * k_descale[..., None, None]).flatten(2, 3)[:, :, :200]
        assert float((restored - smoothed).norm() / smoothed.norm()) < 0.02


def test_head_sizes_past_the_int32_trick_and_unknown_types_are_refused() -> None:
    from tunehub.inference.fp8_flash import flash_attention_8bit

    q = torch.randn(1, 64, 1, 512, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="head size and BLOCK_N up to 256, not 512"):
        flash_attention_8bit(*quantize_blocks(q, q, q), 64, 64, q.dtype)
    with pytest.raises(ValueError, match="P @ V's type must be one of e4m3, int8, not 'fp16'"):
        quantize_blocks(q, q, q, pv="fp16")


def test_attention_choices_and_their_fallback_notes() -> None:
    from tunehub.demo.tiny import build_transformer
    from tunehub.inference.attention import ATTENTIONS, set_attention
    from tunehub.inference.pipeline import ATTENTIONS as PIPELINE_ATTENTIONS

    from tunehub.config import GENERATE_KEYS

    assert ATTENTIONS == PIPELINE_ATTENTIONS == GENERATE_KEYS["attention"] == ("sdpa", "fp8", "int8", "fp8-cudnn")
    model = build_transformer("t2v_1.3B", 0)
    assert set_attention(model, "fp8-cudnn", "cpu") == ("sdpa", "fp8-cudnn attention needs a CUDA GPU (device is cpu): using sdpa")
    with pytest.raises(ValueError, match="choose one of sdpa, fp8, int8, fp8-cudnn"):
        set_attention(model, "fp8-sage", "cpu")


def test_launch_override_is_parsed_or_refused_with_its_format() -> None:
    from tunehub.inference.fp8_flash import parse_launch

    assert parse_launch("64x128 w4 s3 tma") == (64, 128, 4, 3, "tma", False)
    assert parse_launch("128x128 w8 s3 pointer ws") == (128, 128, 8, 3, "pointer", True)
    for bad in ("64x128 w4 s3", "64x128 w4 s3 cuda", "64 w4 s3 tma", "64x128 w4 s3 tma fast"):
        with pytest.raises(ValueError, match="expected 'BMxBN wWARPS sSTAGES pointer\\|tma \\[ws\\]'"):
            parse_launch(bad)


_PROJECTIONS_CHECK = r"""
import functools, json, torch
from tunehub.demo.tiny import build_transformer
from tunehub.inference.attention import Fp8SelfAttention, _rotate
from tunehub.inference.fp8_flash import (_projections_op, fp8_flash_attention, fp8_flash_attention_from_projections,
                                         quantize_blocks, quantize_projections)

results = {"parts": [], "models": []}
generator = torch.Generator().manual_seed(0)
# two videos, a partial last block of tokens (200 = 128 + 72), k and v off zero (their means matter)
batch, seq, heads, dim = 2, 200, 3, 64
for pv in ("e4m3", "int8"):
    q, k, v = ((torch.randn(batch, seq, heads * dim, generator=generator) * s + o).to(torch.bfloat16)
               for s, o in ((1.0, 0.0), (2.0, 0.5), (0.5, 1.0)))
    norms = [torch.nn.RMSNorm(heads * dim, eps=1e-6) for _ in range(2)]
    with torch.no_grad():
        for norm in norms:
            norm.weight.copy_(torch.rand(heads * dim, generator=generator) + 0.5)
    norm_q, norm_k = (norm.to(torch.bfloat16) for norm in norms)
    angles = torch.rand(seq, dim // 2, generator=generator) * 6
    cos, sin = (f(angles).repeat_interleave(2, -1)[None, :, None, :] for f in (torch.cos, torch.sin))
    with torch.no_grad():
        expected = quantize_blocks(_rotate(norm_q(q).unflatten(2, (heads, -1)), cos, sin),
                                   _rotate(norm_k(k).unflatten(2, (heads, -1)), cos, sin), v.unflatten(2, (heads, -1)), pv=pv)
        args = (q, k, v, norm_q.weight, norm_k.weight, 1e-6, 1e-6, cos[0, :, 0, 0::2], sin[0, :, 0, 1::2], heads)
        fused = quantize_projections(*args, pv=pv)
    for name, a, b in zip("q8 k8 v8t q_descale k_descale v_descale v_mean".split(), fused, expected):
        difference = (a.float() - b.float()).abs()
        results["parts"].append(dict(pv=pv, name=name, shape=list(a.shape), expected_shape=list(b.shape), dtype=str(a.dtype),
                                     expected_dtype=str(b.dtype), differing=int((difference > 0).sum()), size=a.numel(),
                                     largest=float(difference.max()), relative=float(difference.max() / b.float().abs().max())))
    # the custom op: its schema, and its fake (shapes for torch.compile) against the kernels' outputs
    torch.library.opcheck(_projections_op, (*args, 64, 128, pv), test_utils=("test_schema", "test_faketensor"))

# the processor: the tiny Wan model's output through the fused path equals the torch route's,
# and the fused path runs only where it applies (bf16; not a float32 model)
for dtype in (torch.bfloat16, torch.float32):
    model = build_transformer("t2v", seed=3).to(dtype)
    inputs = dict(hidden_states=torch.randn(1, 16, 2, 8, 8, generator=generator).to(dtype), timestep=torch.tensor([500]),
                  encoder_hidden_states=torch.randn(1, 12, 32, generator=generator).to(dtype), return_dict=False)
    for pv in ("e4m3", "int8"):
        calls = []
        def counted(*a, pv=pv, **kw):
            calls.append(1)
            return fp8_flash_attention_from_projections(*a, pv=pv, **kw)
        outputs = []
        for from_projections in (None, counted):
            for block in model.blocks:
                stock = block.attn1.processor
                stock = stock.stock if isinstance(stock, Fp8SelfAttention) else stock
                block.attn1.set_processor(Fp8SelfAttention(stock, functools.partial(fp8_flash_attention, pv=pv), from_projections))
            with torch.no_grad():
                outputs.append(model(**inputs)[0].float())
        results["models"].append(dict(dtype=str(dtype), pv=pv, fused_calls=len(calls), blocks=len(model.blocks),
                                      difference=float((outputs[1] - outputs[0]).abs().max() / outputs[0].abs().max())))
print(json.dumps(results))
"""


def test_quantization_from_the_projections_matches_the_torch_route() -> None:
    """quantize_projections (the q/k norms, rotation and 8-bit quantization in four Triton kernels,
    here in Triton's interpreter) gives what the torch route gives: RMSNorm, the rotary embedding,
    then quantize_blocks; the attention processor takes it for bf16 Wan models only."""
    pytest.importorskip("triton", reason="triton is in the test extra; it has no wheel for this platform")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", _PROJECTIONS_CHECK], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(results["parts"]) == 14
    for part in results["parts"]:
        assert part["shape"] == part["expected_shape"] and part["dtype"] == part["expected_dtype"], part
        # the same roundings in the same order (bf16 after the norm and after the rotation, half
        # to even into int8 and e4m3); sums over the tokens may round in another order: a few
        # values one step apart at most
        assert part["differing"] <= max(2, part["size"] // 1000), part
        assert part["relative"] <= (0.02 if part["name"] in ("q8", "k8", "v8t") else 1e-5), part
    models = results["models"]
    assert [(m["dtype"], m["pv"]) for m in models] == [
        (dtype, pv) for dtype in ("torch.bfloat16", "torch.float32") for pv in ("e4m3", "int8")
    ]
    for model in models:
        bf16 = model["dtype"] == "torch.bfloat16"
        assert model["fused_calls"] == (model["blocks"] if bf16 else 0), model
        assert model["difference"] < 1e-3, model
