"""One-pass Triton kernels for two steps that ``torch.compile`` runs in several passes, as custom
ops (opaque to the compiler, with fakes for its shapes):

- :func:`normed_rotated`: Wan self-attention's q/k RMS norms and rotary embedding before torch's
  attention (the default ``--attention sdpa``), read and written once;
- :func:`gelu_quantize_rows_int8`: the feed-forward's tanh GELU folded into the next int8
  layer's per-row quantization (:func:`tunehub.inference.int8_linear.fold_gelu_into_int8`).

Both need a CUDA GPU and Triton (Triton's interpreter runs them on CPU in the tests); the callers
keep the torch route elsewhere.
"""

from __future__ import annotations

import os
from typing import Any

import torch

UNFUSED_ENV = "TUNEHUB_UNFUSED"  # "1": torch's route for both steps (A/B measurements)

# norm_rotate: tokens per program and warps (a Wan 14B row is 2,560 words of q and as many of k);
# gelu_quantize_rows: warps a row (0: by the row's width)
NORM_ROTATE = {"rows": 1, "warps": 8}
GELU_QUANTIZE = {"warps": 0}
# widest row gelu_quantize_rows keeps in registers (64 float32 values a thread at 16 warps)
GELU_ROW_LIMIT = 32768


def unfused_by_env() -> bool:
    return os.environ.get(UNFUSED_ENV, "") not in ("", "0")


def fused_kernels_wanted(device: torch.device | str) -> bool:
    """Whether these kernels run on ``device``: a CUDA GPU with Triton, unless turned off."""
    if torch.device(device).type != "cuda" or unfused_by_env():
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def normed_rotated(
    query: torch.Tensor, key: torch.Tensor, q_weight: torch.Tensor, k_weight: torch.Tensor, eps_q: float,
    eps_k: float, cos: torch.Tensor, sin: torch.Tensor, heads: int,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """``query``/``key`` [B, S, H*D] bf16 projections: each token RMS-normalised over all heads
    (weights [H*D] bf16), rounded to bf16, each channel pair (2i, 2i+1) rotated by its angle
    (``cos``/``sin`` [S, D/2], float32 as diffusers keeps them, or bf16), rounded to bf16: the same
    layout back, as diffusers' RMSNorm and Wan's rotary embedding give them."""
    import triton

    from tunehub.inference import _quantize_kernels as kernels
    from tunehub.inference.fp8_flash import _elementwise_options

    batch, seq, width = query.shape
    query, key = query.contiguous(), key.contiguous()
    q_out, k_out = torch.empty_like(query), torch.empty_like(key)
    rows = batch * seq
    per_program = NORM_ROTATE["rows"]
    # bf16 pairs as int32 words: whole-word loads, a rotation pair in each
    kernels.norm_rotate[(triton.cdiv(rows, per_program),)](
        query.view(torch.int32), key.view(torch.int32), q_weight.contiguous().view(torch.int32),
        k_weight.contiguous().view(torch.int32), cos.float().contiguous(), sin.float().contiguous(),
        q_out.view(torch.int32), k_out.view(torch.int32), rows, seq, eps_q, eps_k, WIDTH=width,
        HEAD_DIM=width // heads, BLOCK=triton.next_power_of_2(width // 2), ROWS=per_program,
        BF16_TABLE=cos.dtype == torch.bfloat16,
        **_elementwise_options(query.device, NORM_ROTATE["warps"]),
    )  # fmt: skip
    return q_out, k_out


@torch.library.custom_op("tunehub::norm_rotate", mutates_args=())
def _norm_rotate_op(
    query: torch.Tensor, key: torch.Tensor, q_weight: torch.Tensor, k_weight: torch.Tensor, eps_q: float,
    eps_k: float, cos: torch.Tensor, sin: torch.Tensor, heads: int,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    return normed_rotated(query, key, q_weight, k_weight, eps_q, eps_k, cos, sin, heads)


@_norm_rotate_op.register_fake
def _(query: torch.Tensor, key: torch.Tensor, *args: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.empty_like(query, memory_format=torch.contiguous_format), torch.empty_like(
        key, memory_format=torch.contiguous_format)


def normed_rotated_projections(
    query: torch.Tensor, key: torch.Tensor, norm_q: torch.nn.RMSNorm, norm_k: torch.nn.RMSNorm,
    rotary_emb: tuple[torch.Tensor, torch.Tensor], heads: int,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """:func:`normed_rotated` from the attention module's norms and diffusers' rotary tables
    ([1, S, 1, D], each angle repeated for its pair), through the custom op."""
    from tunehub.inference.fp8_flash import _norm_arguments

    return _norm_rotate_op(query, key, *_norm_arguments(query, norm_q, norm_k, rotary_emb), heads)


def gelu_rows_fit(width: int) -> bool:
    return 0 < width <= GELU_ROW_LIMIT


def gelu_quantize_rows_int8(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows`` [N, W] 16-bit: the tanh GELU (rounded to the input dtype), then per-row absmax int8:
    (int8 [N, W], float32 scales [N, 1]) as ``_quantize_rows_int8(gelu(rows))``, in one kernel."""
    import triton

    from tunehub.inference import _quantize_kernels as kernels
    from tunehub.inference.fp8_flash import _elementwise_options

    count, width = rows.shape
    if not gelu_rows_fit(width):
        raise ValueError(f"gelu_quantize_rows_int8 takes rows of at most {GELU_ROW_LIMIT} values, not {width}")
    rows = rows.contiguous()
    quantized = torch.empty(count, width, dtype=torch.int8, device=rows.device)
    scales = torch.empty(count, 1, dtype=torch.float32, device=rows.device)
    block = triton.next_power_of_2(width)
    if count:
        kernels.gelu_quantize_rows[(count,)](
            rows, quantized, scales, WIDTH=width, BLOCK=block,
            **_elementwise_options(rows.device, GELU_QUANTIZE["warps"] or max(4, min(16, block // 1024))),
        )
    return quantized, scales


@torch.library.custom_op("tunehub::gelu_quantize_rows_int8", mutates_args=())
def gelu_quantize_rows_op(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return gelu_quantize_rows_int8(rows)


@gelu_quantize_rows_op.register_fake
def _(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return rows.new_empty(rows.shape, dtype=torch.int8), rows.new_empty(rows.shape[0], 1, dtype=torch.float32)
