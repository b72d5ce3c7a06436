"""The Triton kernels of :mod:`tunehub.inference.fp8_flash` (imported only when they run: Triton is optional).

``kernel`` loads K and V through pointers (any GPU Triton supports, and Triton's interpreter on
CPU); ``kernel_tma`` through host tensor descriptors (Hopper's TMA). Both share ``_step``.
"""

import triton
import triton.language as tl

__all__ = ["kernel", "kernel_tma"]


@triton.jit
def _step(acc, l_i, m_i, q, k, vt, scale, offs_n, seq_k, MASK: tl.constexpr, LOG2_P_SCALE: tl.constexpr,
          PV_INT8: tl.constexpr):  # fmt: skip
    """One block of keys: logits, the online softmax's running max and sum, P @ V added in.

    Q @ K^T is int8 with an int32 result, turned into float32 without a conversion instruction
    (those run at an eighth of the FMA rate): with ``|x| < 2**22``, the bits of ``x + 0x4B400000``
    are the float32 ``1.5 * 2**23 + x`` exactly (Triton folds the add into the MMA's
    accumulator), and the constant is taken off in the FMA that scales the logits. ``scale``
    ([BLOCK_M]) is each query row's scale times this block of K's, softmax scale and log2 e in.

    e4m3 P @ V (``PV_INT8`` false): P's factor of ``2**LOG2_P_SCALE`` (448, e4m3's largest value)
    rides in the exponent, and so in ``l_i`` too; the product accumulates in ``acc``.

    int8 P @ V: P is scaled per row of this block so that its largest value is 127
    (``2**LOG2_P_SCALE``): int8's step is absolute, and a block whose logits are far below the
    running max keeps its resolution; the block's factor ``beta`` (<= 1) goes on its product,
    whose int32 comes to float32 by the same trick. Rounding P to int8 is that trick backwards:
    the low byte of ``p + 1.5 * 2**23``."""
    qk = (tl.dot(q, tl.trans(k)) + 0x4B400000).to(tl.float32, bitcast=True)
    offset = scale * 12582912.0
    if MASK:
        qk = tl.where(offs_n[None, :] < seq_k, qk, float("-inf"))
    m_block = tl.max(qk, 1) * scale - offset
    m_ij = tl.maximum(m_i, m_block)
    alpha = tl.math.exp2(m_i - m_ij)
    acc = acc * alpha[:, None]
    if PV_INT8:
        p = tl.math.exp2(qk * scale[:, None] - (offset + m_block - LOG2_P_SCALE)[:, None])
        beta = tl.math.exp2(m_block - m_ij)
        l_i = l_i * alpha + tl.sum(p, 1) * beta
        p8 = (p + 12582912.0).to(tl.int32, bitcast=True).to(tl.int8)
        pv = (tl.dot(p8, tl.trans(vt)) + 0x4B400000).to(tl.float32, bitcast=True)
        acc += pv * beta[:, None] - (beta * 12582912.0)[:, None]
    else:
        p = tl.math.exp2(qk * scale[:, None] - (offset + m_ij - LOG2_P_SCALE)[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = tl.dot(p.to(vt.dtype), tl.trans(vt), acc)
    return acc, l_i, m_ij


@triton.jit
def _load_step(acc, l_i, m_i, q, q_descale, k_base, vt_base, kd_ptr, block, stride_ks, stride_vd, seq_k,
               BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, MASK: tl.constexpr, LOG2_P_SCALE: tl.constexpr,
               PV_INT8: tl.constexpr):  # fmt: skip
    """``_step`` on the block of keys ``block``, loaded through pointers."""
    offs_n = block * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    k = tl.load(k_base + offs_n[:, None] * stride_ks + offs_d[None, :])
    vt = tl.load(vt_base + offs_d[:, None] * stride_vd + offs_n[None, :])
    scale = tl.load(kd_ptr + block) * q_descale
    return _step(acc, l_i, m_i, q, k, vt, scale, offs_n, seq_k, MASK, LOG2_P_SCALE, PV_INT8)


@triton.jit
def _finish(acc, l_i, VD, VM, Out, off_bh, off_b, off_h, stride_ob, stride_os, stride_oh, offs_m, seq_q,
            HEAD_DIM: tl.constexpr):  # fmt: skip
    """V's per-channel scale and mean back in, the softmax's sum divided out, stored in Out's dtype."""
    offs_d = tl.arange(0, HEAD_DIM)
    v_descale = tl.load(VD + off_bh * HEAD_DIM + offs_d)
    v_mean = tl.load(VM + off_bh * HEAD_DIM + offs_d)
    out = acc * (v_descale[None, :] / l_i[:, None]) + v_mean[None, :]
    o_ptrs = Out + off_b * stride_ob + off_h * stride_oh + offs_m[:, None] * stride_os + offs_d[None, :]
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=offs_m[:, None] < seq_q)


@triton.jit
def kernel(Q, K, VT, QD, KD, VD, VM, Out,
           stride_qb, stride_qh, stride_qs, stride_kb, stride_kh, stride_ks,
           stride_vb, stride_vh, stride_vd, stride_ob, stride_os, stride_oh,
           heads, seq_q, q_rows, k_blocks, SEQ_K: tl.constexpr,
           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, LOG2_P_SCALE: tl.constexpr,
           PV_INT8: tl.constexpr):  # fmt: skip
    start_m = tl.program_id(0)
    off_bh = tl.program_id(1)
    off_b = off_bh // heads
    off_h = off_bh % heads
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + off_b * stride_qb + off_h * stride_qh + offs_m[:, None] * stride_qs + offs_d[None, :])
    # Q's scale, one per row, carries softmax scale and log2 e; K's is one per block of keys
    q_descale = tl.load(QD + off_bh * q_rows + offs_m)
    k_base = K + off_b * stride_kb + off_h * stride_kh
    vt_base = VT + off_b * stride_vb + off_h * stride_vh
    kd_ptr = KD + off_bh * k_blocks
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    full_blocks: tl.constexpr = SEQ_K // BLOCK_N  # constexpr: a known trip count (and Triton's interpreter)
    for block in range(0, full_blocks):
        acc, l_i, m_i = _load_step(acc, l_i, m_i, q, q_descale, k_base, vt_base, kd_ptr, block, stride_ks,
                                   stride_vd, SEQ_K, BLOCK_N, HEAD_DIM, False, LOG2_P_SCALE, PV_INT8)  # fmt: skip
    if full_blocks * BLOCK_N < SEQ_K:  # the last, partial block: keys past the end masked out
        acc, l_i, m_i = _load_step(acc, l_i, m_i, q, q_descale, k_base, vt_base, kd_ptr, full_blocks, stride_ks,
                                   stride_vd, SEQ_K, BLOCK_N, HEAD_DIM, True, LOG2_P_SCALE, PV_INT8)  # fmt: skip
    _finish(acc, l_i, VD, VM, Out, off_bh, off_b, off_h, stride_ob, stride_os, stride_oh, offs_m, seq_q, HEAD_DIM)


@triton.jit
def kernel_tma(desc_q, desc_k, desc_vt, QD, KD, VD, VM, Out, stride_ob, stride_os, stride_oh,
               heads, seq_q, q_rows, k_rows, k_blocks, SEQ_K: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, LOG2_P_SCALE: tl.constexpr,
               PV_INT8: tl.constexpr, WARP_SPECIALIZE: tl.constexpr):  # fmt: skip
    """``kernel`` with Q, K and V^T read through TMA descriptors over their [B*H*rows, D] and
    [B*H*D, rows] views (rows padded to whole blocks, as :func:`quantize_blocks` leaves them)."""
    start_m = tl.program_id(0)
    off_bh = tl.program_id(1)
    off_b = off_bh // heads
    off_h = off_bh % heads
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    q = desc_q.load([off_bh * q_rows + start_m * BLOCK_M, 0])
    q_descale = tl.load(QD + off_bh * q_rows + offs_m)
    kd_ptr = KD + off_bh * k_blocks
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    full_blocks: tl.constexpr = SEQ_K // BLOCK_N
    for block in tl.range(0, full_blocks, warp_specialize=WARP_SPECIALIZE):
        k = desc_k.load([off_bh * k_rows + block * BLOCK_N, 0])
        vt = desc_vt.load([off_bh * HEAD_DIM, block * BLOCK_N])
        scale = tl.load(kd_ptr + block) * q_descale
        acc, l_i, m_i = _step(acc, l_i, m_i, q, k, vt, scale, tl.arange(0, BLOCK_N), SEQ_K, False, LOG2_P_SCALE, PV_INT8)
    if full_blocks * BLOCK_N < SEQ_K:
        offs_n = full_blocks * BLOCK_N + tl.arange(0, BLOCK_N)
        k = desc_k.load([off_bh * k_rows + full_blocks * BLOCK_N, 0])
        vt = desc_vt.load([off_bh * HEAD_DIM, full_blocks * BLOCK_N])
        scale = tl.load(kd_ptr + full_blocks) * q_descale
        acc, l_i, m_i = _step(acc, l_i, m_i, q, k, vt, scale, offs_n, SEQ_K, True, LOG2_P_SCALE, PV_INT8)
    _finish(acc, l_i, VD, VM, Out, off_bh, off_b, off_h, stride_ob, stride_os, stride_oh, offs_m, seq_q, HEAD_DIM)
