"""The kernels under tunehub's int8 path and fp8 attention, alone, at Wan 14B's shapes (one
forward at 832x480x81: 32,760 tokens, 40 heads of 128, dim 5120, ffn 13824).

Attention: torch's bf16 SDPA (the kernel torch picks: cuDNN on an H100/H200) vs tunehub's
two fp8 attentions (cuDNN frontend FP8 SDPA, and tunehub's Triton kernel with per-block
scales), eager against eager and compiled against compiled, with rel.err against a float32
reference on the same inputs: random q/k/v, sharper attention (q x 2) and q/k/v with a common
offset (where the mean smoothing pays); then each kernel alone.

Linears: bf16 matmul, fp8 ``_scaled_mm`` with row scales, ``torch._int_mm`` + compiled
rescale, and the fused Triton int8 GEMM (each tile config given), from int8 activations
and weights, output bf16; rel.err against float64 math on the same int8 values.

    python benchmarks/gpu_kernels.py [--configs 128,256,128,8,8,3;128,128,128,8,4,4]
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import torch  # noqa: E402


def log(message: str) -> None:
    print(message, flush=True)


def median_ms(function: Callable[[], Any], warmup: int = 3, repeats: int = 10) -> float:
    for _ in range(warmup):
        function()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def rel(output: torch.Tensor, reference: torch.Tensor) -> float:
    return float((output.double() - reference.double()).norm() / reference.double().norm())


def _sdpa_bshd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """torch's SDPA on the model's [B, S, H, D] layout."""
    sdpa = torch.nn.functional.scaled_dot_product_attention
    return sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


def _mode_rows(case: str, name: str, functions: dict[str, Callable[..., torch.Tensor]], q: torch.Tensor,
               k: torch.Tensor, v: torch.Tensor, reference: torch.Tensor, sdpa_ms: dict[str, float],
               flops: float) -> None:  # fmt: skip
    """One row per mode (eager, compiled): time, TFLOP/s, rel.err and the ratio to bf16 SDPA in that mode."""
    for mode, function in functions.items():
        out = function(q, k, v)
        ms = median_ms(lambda: function(q, k, v))
        log(f"{case:<18} {name + ' ' + mode:<19} {ms:7.2f} ms {flops / ms / 1e9:6.0f} TFLOP/s  rel.err "
            f"{rel(out, reference):.4f}  ({sdpa_ms[mode] / ms:.2f}x sdpa bf16 {mode})")  # fmt: skip


# BLOCK_MxBLOCK_N, warps, stages, loader (pointer or tma), "ws" for Triton's warp specialization
FLASH_CONFIGS = ("64x128 w4 s3 tma;64x128 w4 s3 pointer;128x128 w8 s3 tma;128x128 w8 s3 pointer;128x64 w4 s3 tma;"
                 "64x128 w4 s2 tma;64x128 w4 s4 tma;64x64 w4 s3 tma;64x64 w4 s4 tma;64x256 w4 s2 tma;64x128 w8 s3 tma")


def attention_bench(tokens: int, heads: int, dim: int, sweep: bool = False, flash_configs: str = FLASH_CONFIGS) -> None:
    from tunehub.inference.attention import fp8_attention, quantize_qkv, unavailable_reason

    reason = unavailable_reason("cuda", dim)
    flops = 4 * tokens * tokens * dim * heads
    log(f"\n== self-attention 1 x {tokens} x {heads} x {dim} ({flops / 1e12:.1f} TFLOP); fp8: {reason or 'available'}")
    sdpa_modes = {"eager": _sdpa_bshd, "compiled": torch.compile(_sdpa_bshd)}
    fp8_modes = {"eager": fp8_attention, "compiled": torch.compile(fp8_attention)}
    for case in ("random", "sharper (q x 2)", "offset (k, v + 1)"):
        generator = torch.Generator(device="cuda").manual_seed(1)
        q, k, v = (torch.randn(1, tokens, heads, dim, device="cuda", generator=generator, dtype=torch.bfloat16)
                   for _ in range(3))  # fmt: skip
        if case.startswith("sharper"):
            q = q * 2
        if case.startswith("offset"):
            k, v = k + 1, v + 1
        reference = _sdpa_bshd(q.float(), k.float(), v.float())
        sdpa_ms: dict[str, float] = {}
        for mode, function in sdpa_modes.items():
            sdpa_ms[mode] = median_ms(lambda: function(q, k, v))
            log(f"{case:<18} {'sdpa bf16 ' + mode:<19} {sdpa_ms[mode]:7.2f} ms {flops / sdpa_ms[mode] / 1e9:6.0f} "
                f"TFLOP/s  rel.err {rel(function(q, k, v), reference):.4f}")  # fmt: skip
        if reason:
            continue
        _mode_rows(case, "fp8", fp8_modes, q, k, v, reference, sdpa_ms, flops)
        if case == "random":
            from tunehub.inference.attention import cudnn_fp8_sdpa

            q8, k8, v8, dq, dk, dv, _ = quantize_qkv(q, k, v)
            descales = torch.stack([dq, dk, dv, torch.full_like(dq, 1 / 256)])
            scales = torch.stack([torch.full_like(dq, 256.0), dv.reciprocal() * 0.5])
            kernel_ms = median_ms(lambda: cudnn_fp8_sdpa(q8, k8, v8, descales, scales, 1 / math.sqrt(dim)))
            log(f"{case:<18} fp8 kernel alone    {kernel_ms:7.2f} ms {flops / kernel_ms / 1e9:6.0f} TFLOP/s")
        flash_rows(case, q, k, v, reference, sdpa_ms, flops, flash_configs)
        if sweep and not case.startswith("offset"):
            for p_scale in (1.0, 16.0, 256.0, 448.0, 4096.0, 65536.0):
                for headroom in (0.5, 8.0):
                    out = fp8_attention(q, k, v, p_scale=p_scale, o_headroom=headroom)
                    log(f"{case:<18} fp8 P scale {p_scale:>7.0f}, output scale x{headroom:<4} rel.err "
                        f"{rel(out, reference):.4f}  max|out| {float(out.abs().max()):.3f}")  # fmt: skip
        del q, k, v, reference
        torch.cuda.empty_cache()


def parse_flash_configs(text: str) -> list[tuple[int, int, int, int, str, bool]]:
    """"64x128 w4 s3 tma;..." -> [(64, 128, 4, 3, "tma", False), ...]"""
    from tunehub.inference.fp8_flash import parse_launch

    return [parse_launch(part) for part in text.split(";") if part.strip()]


def flash_rows(case: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, reference: torch.Tensor,
               sdpa_ms: dict[str, float], flops: float, configs: str = FLASH_CONFIGS,
) -> None:  # fmt: skip
    """tunehub's Triton 8-bit flash attention (int8 Q @ K^T, P @ V in e4m3 for ``--attention fp8``,
    in int8 for ``--attention int8``): end to end eager and compiled, then the kernel alone per
    launch (BLOCK_MxBLOCK_N, warps, stages, loader)."""
    from tunehub.inference.fp8_flash import ATTENTION_PV, flash_attention_8bit, fp8_flash_attention, quantize_blocks

    for attention, pv in ATTENTION_PV.items():
        eager = functools.partial(fp8_flash_attention, pv=pv)
        modes = {"eager": eager, "compiled": torch.compile(eager)}
        _mode_rows(case, f"{attention} flash", modes, q, k, v, reference, sdpa_ms, flops)
    if case != "random":
        return
    seq = q.shape[1]
    for attention, pv in ATTENTION_PV.items():
        for block_m, block_n, warps, stages, loader, ws in parse_flash_configs(configs):
            name = f"{block_m}x{block_n} w{warps} s{stages} {loader}{' ws' if ws else ''}"
            parts = quantize_blocks(q, k, v, None, block_m, block_n, pv)
            run = functools.partial(flash_attention_8bit, *parts, seq, seq, q.dtype, block_m, block_n, warps, stages,
                                    loader, ws)  # fmt: skip
            try:
                out = run()
                kernel_ms = median_ms(run)
            except Exception as exc:  # a tile that does not fit (shared memory, registers) is reported, not fatal
                log(f"{case:<18} {attention} flash kernel {name}: {type(exc).__name__}: {str(exc)[:160]}")
                continue
            log(f"{case:<18} {attention} flash kernel {name:<22} {kernel_ms:7.2f} ms "
                f"{flops / kernel_ms / 1e9:6.0f} TFLOP/s  rel.err {rel(out, reference):.4f}")  # fmt: skip
            del parts, run


def gemm_bench(tokens: int, shapes: list[tuple[int, int]], configs: list[tuple[str, tuple[int, ...]]]) -> dict[str, float]:
    """Milliseconds per path summed over ``shapes`` (inf where one failed)."""
    from tunehub.inference.int8_linear import _int8mm_epilogue, _quantize_rows_int8, int8_gemm

    totals: dict[str, float] = {}

    epilogue = torch.compile(_int8mm_epilogue)
    for n, k in shapes:
        flops = 2 * tokens * n * k
        log(f"\n== linear {tokens} x {k} -> {n} ({flops / 1e12:.2f} TFLOP)")
        generator = torch.Generator(device="cuda").manual_seed(2)
        x = torch.randn(tokens, k, device="cuda", generator=generator, dtype=torch.bfloat16)
        w = torch.randn(n, k, device="cuda", generator=generator, dtype=torch.bfloat16) * k**-0.5
        bias = torch.randn(n, device="cuda", generator=generator, dtype=torch.bfloat16) * 0.02
        xq, xs = _quantize_rows_int8(x)
        wq, ws = _quantize_rows_int8(w)
        ws = ws.to(torch.bfloat16)
        exact = (xq.double() @ wq.double().t()) * xs.double() * ws.double().t() + bias.double()
        rows: list[tuple[str, Callable[[], torch.Tensor]]] = [
            ("bf16 matmul + bias", lambda: torch.nn.functional.linear(x, w, bias)),
            ("int_mm + compiled rescale", lambda: epilogue(torch._int_mm(xq, wq.t()), xs, ws, torch.bfloat16) + bias),
        ]
        if torch.cuda.get_device_capability() >= (8, 9):
            x8, x8s = (xq.float() * 1).to(torch.float8_e4m3fn), xs  # same values: |int8| <= 127 < 448
            w8 = wq.float().to(torch.float8_e4m3fn)
            rows.append(("fp8 _scaled_mm (int8 values)", lambda: torch._scaled_mm(
                x8, w8.t(), scale_a=x8s, scale_b=ws.float().reshape(1, -1), bias=bias, out_dtype=torch.bfloat16)))  # fmt: skip
        for variant, config in configs:
            rows.append((f"triton int8 {variant}:{','.join(map(str, config))}",
                         lambda v=variant, c=config: int8_gemm(xq, wq, xs, ws, bias, torch.bfloat16, c, v)))  # fmt: skip
        for label, function in rows:
            try:
                out = function()
                ms = median_ms(function)
            except Exception as exc:  # a tile that does not fit: report, go on
                log(f"{label:<44} failed: {type(exc).__name__}: {str(exc)[:120]}")
                totals[label] = float("inf")
                continue
            totals[label] = totals.get(label, 0.0) + ms
            error = rel(out, exact) if not label.startswith("bf16") else rel(out, x.double() @ w.double().t() + bias.double())
            log(f"{label:<44} {ms:7.3f} ms {flops / ms / 1e9:6.0f} TFLOP/s  rel.err {error:.4f}")
        del x, w, xq, wq, exact
        torch.cuda.empty_cache()
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=32760)
    parser.add_argument("--configs", default="pointer:128,256,128,8,8,4;pointer:256,128,128,8,8,3;tma:128,256,128,8,8,3;"
                        "tma:128,256,128,8,8,4;tma:256,128,128,8,8,3;tma:128,128,128,8,4,4",
                        help="Triton int8 GEMM tiles, variant:BLOCK_M,BLOCK_N,BLOCK_K,GROUP_M,warps,stages;...")
    parser.add_argument("--best-out", type=Path, default=None,
                        help="write the fastest Triton tile over the three shapes (TUNEHUB_INT8_GEMM syntax)")
    parser.add_argument("--shapes", default="5120x5120,13824x5120,5120x13824",
                        help="linear shapes OUTxIN, comma-separated (default Wan 14B's; Wan 2.2 5B: "
                        "3072x3072,14336x3072,3072x14336)")
    parser.add_argument("--skip-attention", action="store_true")
    parser.add_argument("--heads", default="40", help="attention heads, comma-separated (Wan 14B 40, 1.3B 12)")
    parser.add_argument("--skip-gemm", action="store_true")
    parser.add_argument("--sweep", action="store_true", help="fp8 attention's P and output scales swept")
    parser.add_argument("--flash-configs", default=FLASH_CONFIGS,
                        help="tunehub's fp8 flash kernel launches timed alone: 'BMxBN wW sS pointer|tma [ws];...'")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        log("no CUDA device")
        return 2
    import importlib.metadata as md

    versions = {}
    for name in ("triton", "nvidia-cudnn-frontend"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "-"
    log(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; cuDNN {torch.backends.cudnn.version()}; "
        f"{versions}")  # fmt: skip
    configs = [(c.split(":")[0], tuple(int(v) for v in c.split(":")[1].split(","))) for c in args.configs.split(";") if c]
    if not args.skip_attention:
        for heads in (int(h) for h in args.heads.split(",")):
            attention_bench(args.tokens, heads, 128, args.sweep, args.flash_configs)
    if not args.skip_gemm:
        shapes = [(int(out), int(inp)) for out, inp in (shape.split("x") for shape in args.shapes.split(","))]
        totals = gemm_bench(args.tokens, shapes, configs)
        log(f"\n== summed over the {len(shapes)} shapes")
        for label, ms in sorted(totals.items(), key=lambda item: item[1]):
            log(f"{label:<44} {ms:7.3f} ms")
        triton_rows = {k: v for k, v in totals.items() if k.startswith("triton int8 ")}
        if args.best_out and triton_rows:
            best = min(triton_rows, key=triton_rows.__getitem__)
            args.best_out.write_text(best.removeprefix("triton int8 "))
            log(f"fastest Triton tile: {best}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
