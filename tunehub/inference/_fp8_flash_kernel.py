"""The Triton kernel of :mod:`tunehub.inference.fp8_flash` (imported only when it runs: Triton is optional)."""

import triton
import triton.language as tl

__all__ = ["kernel"]


@triton.jit
def _block(acc, l_i, m_i, q, q_descale, k_base, vt_base, kd_ptr, block, stride_ks, stride_vd, seq_k,
           BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, MASK: tl.constexpr, P_SCALE: tl.constexpr):  # fmt: skip
    """One block of keys: logits, the online softmax's running max and sum, P @ V added in."""
    offs_n = block * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    k = tl.load(k_base + offs_n[:, None] * stride_ks + offs_d[None, :])
    k_descale = tl.load(kd_ptr + block) * q_descale  # K's block scale times Q's (log2 units)
    qk = tl.dot(q, tl.trans(k)) * k_descale
    if MASK:
        qk = tl.where(offs_n[None, :] < seq_k, qk, float("-inf"))
    m_ij = tl.maximum(m_i, tl.max(qk, 1))
    p = tl.math.exp2(qk - m_ij[:, None])
    alpha = tl.math.exp2(m_i - m_ij)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    vt = tl.load(vt_base + offs_d[:, None] * stride_vd + offs_n[None, :])
    acc = tl.dot((p * P_SCALE).to(vt.dtype), tl.trans(vt), acc)
    return acc, l_i, m_ij


@triton.jit
def kernel(Q, K, VT, QD, KD, VD, VM, Out,
           stride_qb, stride_qh, stride_qs, stride_kb, stride_kh, stride_ks,
           stride_vb, stride_vh, stride_vd, stride_ob, stride_os, stride_oh,
           heads, seq_q, q_blocks, k_blocks, SEQ_K: tl.constexpr,
           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, P_SCALE: tl.constexpr):  # fmt: skip
    start_m = tl.program_id(0)
    off_bh = tl.program_id(1)
    off_b = off_bh // heads
    off_h = off_bh % heads
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q_ptrs = Q + off_b * stride_qb + off_h * stride_qh + offs_m[:, None] * stride_qs + offs_d[None, :]
    # Q's block scale folded into the logits before the exponent (it carries softmax scale and log2 e)
    q_descale = tl.load(QD + off_bh * q_blocks + start_m)
    q = tl.load(q_ptrs)
    k_base = K + off_b * stride_kb + off_h * stride_kh
    vt_base = VT + off_b * stride_vb + off_h * stride_vh
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    kd_ptr = KD + off_bh * k_blocks
    full_blocks: tl.constexpr = SEQ_K // BLOCK_N  # constexpr: a known trip count (and Triton's interpreter)
    for block in range(0, full_blocks):
        acc, l_i, m_i = _block(acc, l_i, m_i, q, q_descale, k_base, vt_base, kd_ptr, block, stride_ks, stride_vd,
                               SEQ_K, BLOCK_N, HEAD_DIM, False, P_SCALE)  # fmt: skip
    if full_blocks * BLOCK_N < SEQ_K:  # the last, partial block: keys past the end masked out
        acc, l_i, m_i = _block(acc, l_i, m_i, q, q_descale, k_base, vt_base, kd_ptr, full_blocks, stride_ks,
                               stride_vd, SEQ_K, BLOCK_N, HEAD_DIM, True, P_SCALE)  # fmt: skip
    v_descale = tl.load(VD + off_bh * HEAD_DIM + offs_d)
    v_mean = tl.load(VM + off_bh * HEAD_DIM + offs_d)
    out = acc * (v_descale[None, :] / (l_i[:, None] * P_SCALE)) + v_mean[None, :]
    o_ptrs = Out + off_b * stride_ob + off_h * stride_oh + offs_m[:, None] * stride_os + offs_d[None, :]
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=offs_m[:, None] < seq_q)

