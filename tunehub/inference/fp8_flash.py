"""8-bit flash attention in Triton with per-row and per-block scales and a 16-bit output (SageAttention's recipe).

cuDNN's FP8 attention on Hopper takes one scale per tensor and writes its output in e4m3, and
that output rounding alone costs a few percent of error. This kernel keeps what makes 8-bit
attention accurate:

- Q @ K^T runs in int8 (int32 sums, exact): Q gets one scale per row, K one per block of
  ``BLOCK_N`` key rows and head after K is smoothed by its mean over the tokens (softmax is
  unchanged by a constant per query row). On an H200 it costs no more time than e4m3 there,
  and removes most of e4m3's logit error (3 mantissa bits against int8's 7);
- V is smoothed the same way (its mean added back to the output) and scaled per channel,
  a scale that factors out of ``P @ V`` and is applied to the float32 accumulator;
- ``P @ V`` runs in e4m3 (``pv="e4m3"``: FP8 tensor cores accumulating in float32, the faster)
  or int8 (``pv="int8"``: P scaled per row of each block of keys to int8's range; about half
  the error, at the cost of converting each block's int32 product);
- the output is written in the input's dtype: no second rounding through FP8.

:func:`quantize_blocks` is plain torch (``torch.compile`` fuses it); :func:`fp8_flash_attention`
is a custom op, so compiled transformer blocks do not break around it. On CPU the kernel runs
in Triton's interpreter for the tests: int8 as int8, e4m3 values carried in float32 (the
interpreter has no e4m3).
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import torch

from tunehub.inference.attention import FP8_MAX, smooth_kv
from tunehub.inference.int8_linear import _quantize_rows_int8

__all__ = ["quantize_blocks", "quantize_projections", "fp8_flash_attention", "fp8_flash_attention_from_projections",
           "flash_attention_8bit", "BLOCK_M", "BLOCK_N", "ATTENTION_PV",
           "PV_TYPES", "reference"]  # fmt: skip

# The --attention choice each P @ V type runs for; Q @ K^T is always int8
ATTENTION_PV = {"fp8": "e4m3", "int8": "int8"}
PV_TYPES = tuple(ATTENTION_PV.values())
LOG2E = 1.4426950408889634
# The launch on CUDA, measured on an H200 at Wan's self-attention shapes (32,760 tokens, heads of
# 128; benchmarks/results/gpu_fp8_flash_tma_h200.txt): 64 query rows per program on one warpgroup with
# Q/K/V read by TMA ran 801 TFLOP/s, 128 rows on two warpgroups through pointers 748; Triton
# 3.6's warp specialization gained nothing there and failed to compile with 4 warps.
BLOCK_M = 64
BLOCK_N = 128
_CONFIG = {"num_warps": 4, "num_stages": 3, "warp_specialize": False}
FLASH_ENV = "TUNEHUB_FP8_FLASH"


def parse_launch(text: str) -> tuple[int, int, int, int, str, bool]:
    """``"64x128 w4 s3 tma"`` (``[ws]`` appended: warp specialization) -> (64, 128, 4, 3, "tma", False)."""
    parts = text.split()
    try:
        block_m, block_n = (int(side) for side in parts[0].split("x"))
        warps, stages, loader = int(parts[1].removeprefix("w")), int(parts[2].removeprefix("s")), parts[3]
    except (IndexError, ValueError):
        raise ValueError(f"fp8 flash launch {text!r}: expected 'BMxBN wWARPS sSTAGES pointer|tma [ws]'") from None
    if loader not in ("pointer", "tma") or parts[4:] not in ([], ["ws"]):
        raise ValueError(f"fp8 flash launch {text!r}: expected 'BMxBN wWARPS sSTAGES pointer|tma [ws]'")
    return block_m, block_n, warps, stages, loader, parts[4:] == ["ws"]


def _launch_override() -> tuple[int, int, int, int, str, bool] | None:
    """``TUNEHUB_FP8_FLASH="128x128 w8 s3 pointer"``: a launch to measure against the default
    without editing the source (benchmarks); unset, None."""
    value = os.environ.get(FLASH_ENV, "").strip()
    return parse_launch(value) if value else None


def _default_loader(device: torch.device) -> str:
    """TMA descriptors on Hopper and newer, plain pointer loads elsewhere."""
    return "tma" if torch.cuda.get_device_capability(device)[0] >= 9 else "pointer"


def _eight_bit(device: torch.device, kind: str) -> torch.dtype:
    if kind == "int8":
        return torch.int8
    # Triton's interpreter has no e4m3: on CPU the rounded values travel as float32
    return torch.float8_e4m3fn if device.type == "cuda" else torch.float32


def _largest(dtype: torch.dtype) -> float:
    """The 8-bit type's largest value (e4m3's when it is carried in float32): where an absmax
    lands, and P's largest, whose log2 the kernel adds in P's exponent."""
    return 127.0 if dtype == torch.int8 else FP8_MAX


def _rounded(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Values already scaled to the 8-bit range, rounded to ``dtype`` (int8, or e4m3 carried in ``dtype``)."""
    if dtype == torch.int8:
        return values.round().clamp(-127, 127).to(torch.int8)
    return _to_e4m3(values, dtype)


def _to_e4m3(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    rounded = values.clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return rounded if dtype == torch.float8_e4m3fn else rounded.to(dtype)


def _padded(tensor: torch.Tensor, block: int) -> torch.Tensor:
    """[B, H, S, D] with zero rows after S up to a whole number of blocks."""
    missing = -tensor.shape[2] % block
    return torch.nn.functional.pad(tensor, (0, 0, 0, missing)) if missing else tensor


def _block_scaled(tensor: torch.Tensor, block: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, H, S, D] -> (8-bit values [B, H, S_padded, D], one absmax per block of rows [B, H, blocks])."""
    blocks = _padded(tensor, block).unflatten(2, (-1, block))
    amax = blocks.abs().amax(dim=(-1, -2)).clamp(min=1e-12)
    return _rounded(blocks * (_largest(dtype) / amax)[..., None, None], dtype).flatten(2, 3), amax


def _check_pv(pv: str) -> None:
    if pv not in PV_TYPES:
        raise ValueError(f"P @ V's type must be one of {', '.join(PV_TYPES)}, not {pv!r}")


def _padded_sizes(seq: int, block_m: int, block_n: int) -> tuple[int, int, int]:
    """(blocks of keys, query rows, key rows) for ``seq`` tokens padded to whole blocks."""
    blocks = -(-seq // block_n)
    return blocks, -(-seq // block_m) * block_m, blocks * block_n


def quantize_blocks(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float | None = None,
    block_m: int = BLOCK_M, block_n: int = BLOCK_N, pv: str = "e4m3",
) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """``[B, S, H, D]`` 16-bit q/k/v -> (q8 [B,H,Sq,D], k8 [B,H,Sk,D] in int8, v8 transposed
    [B,H,D,Sk] in ``pv`` (e4m3 or int8), q descale [B,H,Sq] (one per row, times softmax scale and
    log2 e), k descale [B,H,Sk/block_n], v descale [B,H,D], V's mean [B,H,D]); Sq and Sk padded
    with zero rows to whole blocks."""
    _check_pv(pv)
    softmax_scale = scale if scale is not None else 1.0 / math.sqrt(query.shape[-1])
    k, v, v_mean = smooth_kv(key.transpose(1, 2), value.transpose(1, 2), dim=2)
    # Q per row (the int8 layers' activation quantization): a scale per row is free in the kernel's FMA
    q8, q_scale = _quantize_rows_int8(_padded(query.transpose(1, 2), block_m))
    k8, k_amax = _block_scaled(k, block_n, torch.int8)
    q8, k8 = q8.contiguous(), k8.contiguous()  # written [B, H, S, D] in place: TMA reads their [rows, D] views
    v_dtype = _eight_bit(query.device, pv)
    v_amax = v.abs().amax(dim=2).clamp(min=1e-12)  # [B, H, D]: per channel
    v8t = _rounded(_padded(v, block_n) * (_largest(v_dtype) / v_amax)[:, :, None, :], v_dtype)
    v8t = v8t.transpose(2, 3).contiguous()
    q_descale = q_scale.squeeze(-1) * (softmax_scale * LOG2E)
    k_descale = k_amax / 127.0
    v_descale = v_amax / _largest(v_dtype)
    return q8, k8, v8t, q_descale, k_descale, v_descale, v_mean.squeeze(2)


def quantize_projections(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, q_weight: torch.Tensor, k_weight: torch.Tensor,
    eps_q: float, eps_k: float, cos: torch.Tensor, sin: torch.Tensor, heads: int, scale: float | None = None,
    block_m: int = BLOCK_M, block_n: int = BLOCK_N, pv: str = "e4m3",
) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """:func:`quantize_blocks` of Wan's self-attention from its projections, in four Triton kernels:
    ``query``/``key``/``value`` [B, S, H*D] 16-bit (before the norms), q and k RMS-normalised
    over all heads (``q_weight``, ``k_weight`` [H*D], ``eps_*``) and rotated (``cos``/``sin``
    [S, D/2]: the angle of each channel pair), as :class:`~tunehub.inference.attention.Fp8SelfAttention`
    does in torch. Same outputs (up to the order of sums over the tokens), same layout."""
    from tunehub.inference import _quantize_kernels as kernels

    _check_pv(pv)
    batch, seq, width = query.shape
    dim = width // heads
    if block_n % block_m or dim & (dim - 1):
        raise ValueError(f"quantize_projections: BLOCK_N a multiple of BLOCK_M and a power-of-two head size, not "
                         f"{block_n}, {block_m}, {dim}")  # fmt: skip
    query, key, value = query.contiguous(), key.contiguous(), value.contiguous()
    cos, sin = cos.float().contiguous(), sin.float().contiguous()
    device = query.device
    softmax_scale = scale if scale is not None else 1.0 / math.sqrt(dim)
    blocks, q_rows, k_rows = _padded_sizes(seq, block_m, block_n)
    rstd_q, rstd_k = _rms_rstd(query, key, eps_q, eps_k)
    q8 = torch.empty(batch, heads, q_rows, dim, dtype=torch.int8, device=device)
    q_descale = torch.empty(batch, heads, q_rows, dtype=torch.float32, device=device)
    stats = torch.empty(batch * heads, blocks, 4, dim, dtype=torch.float32, device=device)
    grid = (blocks, batch * heads)
    shapes = dict(WIDTH=width, HEAD_DIM=dim, BLOCK_T=block_n)
    # q, k and their norms' weights seen as int32 words (a channel pair each), q8 and k8 as int16
    words = {name: t.contiguous().view(torch.int32) for name, t in (("q", query), ("k", key), ("wq", q_weight), ("wk", k_weight))}
    kernels.q_quantize_kv_stats[grid](
        words["q"], words["k"], value, rstd_q, rstd_k, words["wq"], words["wk"], cos, sin, q8.view(torch.int16),
        q_descale, stats, seq, heads, q_rows, softmax_scale * LOG2E, SUB_T=min(block_n, PREPARE["q_tokens"]), **shapes,
        **_elementwise_options(device, PREPARE["q_warps"]),
    )  # fmt: skip
    # the means over the tokens, each channel's absmax of v less its mean
    k_mean, v_mean = stats[:, :, 0].sum(1) / seq, stats[:, :, 1].sum(1) / seq  # [B*H, D]
    v_amax = torch.maximum(stats[:, :, 2].amax(1) - v_mean, v_mean - stats[:, :, 3].amin(1)).clamp(min=1e-12)
    k8 = torch.empty(batch, heads, k_rows, dim, dtype=torch.int8, device=device)
    k_descale = torch.empty(batch, heads, blocks, dtype=torch.float32, device=device)
    kernels.k_quantize[grid](
        words["k"], rstd_k, words["wk"], cos, sin, k_mean, k8.view(torch.int16), k_descale, seq, heads, k_rows,
        SUB_T=min(block_n, PREPARE["k_tokens"]), **shapes, **_elementwise_options(device, PREPARE["k_warps"]),
    )  # fmt: skip
    v_dtype = _eight_bit(device, pv)
    v8t = torch.empty(batch, heads, dim, k_rows, dtype=v_dtype, device=device)
    kernels.v_quantize[grid](
        value, v_mean, v_amax, v8t, seq, heads, k_rows, V_LARGEST=_largest(v_dtype), V_INT8=v_dtype == torch.int8,
        **shapes, **_elementwise_options(device, PREPARE["v_warps"]),
    )  # fmt: skip
    return (q8, k8, v8t, q_descale, k_descale, (v_amax / _largest(v_dtype)).reshape(batch, heads, dim),
            v_mean.reshape(batch, heads, dim))  # fmt: skip


# quantize_projections' per-head passes: tokens per step (registers) and warps; V's pass takes a
# whole block of keys at once (whole rows of its transposed store). Measured on an H200 at Wan 14B's
# shape (1 x 32,760 x 40 x 128): 0.60 + 0.35 + 0.12 ms, with 0.15 for the RMS pass (benchmarks/
# results/gpu_attention_prep_h200.txt).
PREPARE = {"q_tokens": 8, "q_warps": 4, "k_tokens": 32, "k_warps": 4, "v_warps": 4}


def _rms_rstd(query: torch.Tensor, key: torch.Tensor, eps_q: float, eps_k: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's 1 / RMS of ``query`` and ``key`` [B, S, W], float32 [B*S]."""
    import triton

    from tunehub.inference import _quantize_kernels as kernels

    batch, seq, width = query.shape
    rstd_q = torch.empty(batch * seq, dtype=torch.float32, device=query.device)
    rstd_k = torch.empty_like(rstd_q)
    rows_per_program = 2
    kernels.rms_rstd[(-(-batch * seq // rows_per_program),)](
        query, key, rstd_q, rstd_k, batch * seq, eps_q, eps_k, WIDTH=width, BLOCK=triton.next_power_of_2(width),
        ROWS=rows_per_program, **_elementwise_options(query.device, 8),
    )  # fmt: skip
    return rstd_q, rstd_k


def _elementwise_options(device: torch.device, warps: int) -> dict[str, int]:
    """Launch options on a GPU; Triton's interpreter on CPU takes none."""
    return {"num_warps": warps} if device.type == "cuda" else {}


def flash_attention_8bit(
    q8: torch.Tensor, k8: torch.Tensor, v8t: torch.Tensor, q_descale: torch.Tensor, k_descale: torch.Tensor,
    v_descale: torch.Tensor, v_mean: torch.Tensor, seq_q: int, seq_k: int, out_dtype: torch.dtype,
    block_m: int = BLOCK_M, block_n: int = BLOCK_N, num_warps: int | None = None, num_stages: int | None = None,
    loader: str | None = None, warp_specialize: bool | None = None,
) -> torch.Tensor:  # fmt: skip
    """The kernel on :func:`quantize_blocks`' output; returns ``[B, seq_q, H, D]`` in ``out_dtype``.
    ``loader`` is ``pointer`` or ``tma`` (CUDA, compute capability 9 and newer); None: the default."""
    from tunehub.inference import _fp8_flash_kernel

    batch, heads, q_rows, dim = q8.shape
    pv_int8 = v8t.dtype == torch.int8
    # the int8 products' sums must stay below 2**22 for the kernel's conversion to float32
    if max(dim, block_n if pv_int8 else 0) * 127**2 >= 2**22:
        raise ValueError(f"8-bit flash attention takes a head size and BLOCK_N up to 256, not {dim} and {block_n}")
    out = torch.empty(batch, seq_q, heads, dim, dtype=out_dtype, device=q8.device)
    q_descale, k_descale = q_descale.float().contiguous(), k_descale.float().contiguous()
    v_descale, v_mean = v_descale.float().contiguous(), v_mean.float().contiguous()
    grid = (q8.shape[2] // block_m, batch * heads)
    shapes = {"SEQ_K": seq_k, "BLOCK_M": block_m, "BLOCK_N": block_n, "HEAD_DIM": dim, "PV_INT8": pv_int8,
              "LOG2_P_SCALE": math.log2(_largest(v8t.dtype))}
    if q8.device.type != "cuda":  # Triton's interpreter: no launch options; TMA only when asked for (tests)
        loader = loader or "pointer"
        options: dict[str, object] = {}
    else:
        loader = loader or _default_loader(q8.device)
        options = {"num_warps": num_warps or _CONFIG["num_warps"], "num_stages": num_stages or _CONFIG["num_stages"]}
    if loader == "tma":
        from triton.tools.tensor_descriptor import TensorDescriptor

        k_rows = k8.shape[2]
        descriptors = (
            TensorDescriptor.from_tensor(q8.reshape(-1, dim), [block_m, dim]),
            TensorDescriptor.from_tensor(k8.reshape(-1, dim), [block_n, dim]),
            TensorDescriptor.from_tensor(v8t.reshape(-1, k_rows), [dim, block_n]),
        )  # fmt: skip
        ws = _CONFIG["warp_specialize"] if warp_specialize is None else warp_specialize
        _fp8_flash_kernel.kernel_tma[grid](
            *descriptors, q_descale, k_descale, v_descale, v_mean, out, out.stride(0), out.stride(1), out.stride(2),
            heads, seq_q, q_rows, k_rows, k_descale.shape[-1], WARP_SPECIALIZE=bool(ws),
            **shapes, **options,
        )  # fmt: skip
        return out
    _fp8_flash_kernel.kernel[grid](
        q8, k8, v8t, q_descale, k_descale, v_descale, v_mean, out,
        q8.stride(0), q8.stride(1), q8.stride(2), k8.stride(0), k8.stride(1), k8.stride(2),
        v8t.stride(0), v8t.stride(1), v8t.stride(2), out.stride(0), out.stride(1), out.stride(2),
        heads, seq_q, q_rows, k_descale.shape[-1], **shapes, **options,
    )  # fmt: skip
    return out


@torch.library.custom_op("tunehub::fp8_flash_kernel", mutates_args=())
def _flash_op(
    query: torch.Tensor, q8: torch.Tensor, k8: torch.Tensor, v8t: torch.Tensor, q_descale: torch.Tensor,
    k_descale: torch.Tensor, v_descale: torch.Tensor, v_mean: torch.Tensor, seq_k: int, block_m: int, block_n: int,
    num_warps: int, num_stages: int, loader: str, warp_specialize: bool,
) -> torch.Tensor:  # fmt: skip
    return flash_attention_8bit(q8, k8, v8t, q_descale, k_descale, v_descale, v_mean, query.shape[1], seq_k,
                                query.dtype, block_m, block_n, num_warps, num_stages, loader, warp_specialize)  # fmt: skip


@_flash_op.register_fake
def _(query: torch.Tensor, *args: object) -> torch.Tensor:
    return torch.empty_like(query)


def fp8_flash_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float | None = None, pv: str = "e4m3",
) -> torch.Tensor:  # fmt: skip
    """Self-attention of ``[B, S, H, D]`` 16-bit tensors, Q @ K^T in int8 and P @ V in ``pv``
    (e4m3 or int8), output in the input dtype and layout. The quantization is plain torch (fused
    when compiled), the kernel a custom op."""
    launch = _default_launch(query.device)
    parts = quantize_blocks(query, key, value, scale, launch[0], launch[1], pv)
    return _flash_op(query, *parts, key.shape[1], *launch)


@torch.library.custom_op("tunehub::quantize_projections", mutates_args=())
def _projections_op(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, q_weight: torch.Tensor, k_weight: torch.Tensor,
    eps_q: float, eps_k: float, cos: torch.Tensor, sin: torch.Tensor, heads: int, block_m: int, block_n: int, pv: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    return quantize_projections(query, key, value, q_weight, k_weight, eps_q, eps_k, cos, sin, heads, None, block_m,
                                block_n, pv)  # type: ignore[return-value]  # fmt: skip


@_projections_op.register_fake
def _(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, q_weight: torch.Tensor, k_weight: torch.Tensor,
      eps_q: float, eps_k: float, cos: torch.Tensor, sin: torch.Tensor, heads: int, block_m: int, block_n: int,
      pv: str) -> tuple[torch.Tensor, ...]:  # fmt: skip
    batch, seq, width = query.shape
    dim = width // heads
    blocks, q_rows, k_rows = _padded_sizes(seq, block_m, block_n)
    v_dtype = _eight_bit(query.device, pv)
    empty = functools.partial(query.new_empty, dtype=torch.float32)
    return (query.new_empty(batch, heads, q_rows, dim, dtype=torch.int8),
            query.new_empty(batch, heads, k_rows, dim, dtype=torch.int8),
            query.new_empty(batch, heads, dim, k_rows, dtype=v_dtype), empty(batch, heads, q_rows),
            empty(batch, heads, blocks), empty(batch, heads, dim), empty(batch, heads, dim))  # fmt: skip


def _default_launch(device: torch.device) -> tuple[int, int, int, int, str, bool]:
    launch = _launch_override()
    if launch is None:
        loader = _default_loader(device) if device.type == "cuda" else "pointer"
        launch = (BLOCK_M, BLOCK_N, int(_CONFIG["num_warps"]), int(_CONFIG["num_stages"]), loader,
                  bool(_CONFIG["warp_specialize"]))  # fmt: skip
    return launch


def fp8_flash_attention_from_projections(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, norm_q: torch.nn.RMSNorm, norm_k: torch.nn.RMSNorm,
    rotary_emb: tuple[torch.Tensor, torch.Tensor], heads: int, pv: str = "e4m3",
) -> torch.Tensor:  # fmt: skip
    """Wan's self-attention from its q/k/v projections ``[B, S, H*D]``: the RMS norms over all
    heads, the rotary embedding (diffusers' ``(cos, sin)`` of shape [1, S, 1, D], each angle
    repeated for its channel pair) and the quantization in :func:`quantize_projections`' four
    kernels, then the attention kernel; returns ``[B, S, H, D]`` in the input dtype."""
    launch = _default_launch(query.device)
    parts = _projections_op(query, key, value, *_norm_arguments(query, norm_q, norm_k, rotary_emb), heads, launch[0],
                            launch[1], pv)  # fmt: skip
    return _flash_op(query.unflatten(2, (heads, -1)), *parts, key.shape[1], *launch)


def _norm_arguments(query: torch.Tensor, norm_q: torch.nn.RMSNorm, norm_k: torch.nn.RMSNorm,
                    rotary_emb: tuple[torch.Tensor, torch.Tensor]) -> tuple[Any, ...]:  # fmt: skip
    """(q weight, k weight, eps q, eps k, cos, sin [S, D/2]) from the modules and diffusers' tables."""
    cos, sin = rotary_emb
    # no eps: torch adds that of its float32 arithmetic, not the input dtype's
    eps_q, eps_k = (norm.eps if norm.eps is not None else torch.finfo(torch.float32).eps for norm in (norm_q, norm_k))
    return norm_q.weight, norm_k.weight, eps_q, eps_k, cos[0, :, 0, 0::2], sin[0, :, 0, 1::2]


def reference(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float | None = None, pv: str = "e4m3",
) -> torch.Tensor:  # fmt: skip
    """The same quantization in plain torch (float32 products, P rounded as the kernel does): for tests."""
    seq_q, seq_k = query.shape[1], key.shape[1]
    q8, k8, v8t, qd, kd, vd, vm = quantize_blocks(query, key, value, scale, pv=pv)
    q = (q8.float() * qd[..., None])[:, :, :seq_q]
    k = (k8.float().unflatten(2, (-1, BLOCK_N)) * kd[..., None, None]).flatten(2, 3)
    v = v8t.float().transpose(2, 3)
    logits = q @ k.transpose(2, 3)  # log2 units: the exponent is exp2
    logits[..., seq_k:] = float("-inf")  # the padding keys
    p = torch.exp2(logits - logits.amax(dim=-1, keepdim=True))
    if pv == "int8":  # per row of each block of keys, the largest on 127
        blocks = p.unflatten(-1, (-1, BLOCK_N))
        block_max = blocks.amax(dim=-1, keepdim=True).clamp(min=1e-30)
        p_rounded = (_rounded(blocks * (127.0 / block_max), torch.int8).float() * (block_max / 127.0)).flatten(-2, -1)
    elif query.device.type == "cuda":
        p_rounded = _to_e4m3(p * FP8_MAX, torch.float32) / FP8_MAX
    else:  # the interpreter carries e4m3 in float32: P is not rounded there
        p_rounded = p
    out = (p_rounded @ v) * (vd[:, :, None, :] / p.sum(-1, keepdim=True)) + vm[:, :, None, :]
    return out.transpose(1, 2).to(query.dtype)
