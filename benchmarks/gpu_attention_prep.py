"""Wan's self-attention before the 8-bit kernel: the q/k RMS norms over all heads, the rotary
embedding and the quantization (Q per row, K per block after its mean, V per channel), from
the projections' bf16 output. The anchor is the torch route tunehub used before, compiled
(RMSNorm, the rotation, ``quantize_blocks``: what ``torch.compile`` makes of the processor's
ops); ours is ``quantize_projections`` (four Triton kernels). Same run, same inputs; the
ratio is ours over the compiled anchor, and the differences from the eager torch route
(the reference both compute) are printed beside it.

    python benchmarks/gpu_attention_prep.py                 # Wan 14B's shape: 1 x 32,760 x 40 x 128
    python benchmarks/gpu_attention_prep.py --sweep         # also the launch settings (fp8_flash.PREPARE)
    python benchmarks/gpu_attention_prep.py --tiny          # small shapes on CPU (Triton's interpreter)
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small shapes on CPU in Triton's interpreter")
    parser.add_argument("--sweep", action="store_true", help="time each launch setting of the passes")
    parser.add_argument("--tokens", type=int, default=32760)
    parser.add_argument("--heads", type=int, default=40)
    parser.add_argument("--head-dim", type=int, default=128)
    args = parser.parse_args()
    if args.tiny:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
        args.tokens, args.heads, args.head_dim = 200, 2, 64
    import torch
    from gpu_kernels import median_ms

    from tunehub.inference import fp8_flash
    from tunehub.inference.attention import _rotate

    device = torch.device("cpu" if args.tiny else "cuda")
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)}; torch {torch.__version__}", flush=True)
    seq, heads, dim = args.tokens, args.heads, args.head_dim
    generator = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(1, seq, heads * dim, device=device, generator=generator, dtype=torch.bfloat16) * s + o
               for s, o in ((1.0, 0.0), (2.0, 0.3), (0.5, 0.2)))  # fmt: skip
    norm_q, norm_k = (torch.nn.RMSNorm(heads * dim, eps=1e-6).to(device, torch.bfloat16) for _ in range(2))
    with torch.no_grad():
        for norm in (norm_q, norm_k):
            norm.weight.copy_(torch.rand(heads * dim, device=device, generator=generator) + 0.5)
    angles = torch.rand(seq, dim // 2, device=device, generator=generator) * 6
    cos, sin = (f(angles).repeat_interleave(2, -1)[None, :, None, :] for f in (torch.cos, torch.sin))
    fused_args = (q, k, v, norm_q.weight, norm_k.weight, 1e-6, 1e-6, cos[0, :, 0, 0::2], sin[0, :, 0, 1::2], heads)

    for pv in fp8_flash.PV_TYPES:
        def torch_route(q: Any, k: Any, v: Any, pv: str = pv) -> Any:
            rotated_q = _rotate(norm_q(q).unflatten(2, (heads, -1)), cos, sin)
            rotated_k = _rotate(norm_k(k).unflatten(2, (heads, -1)), cos, sin)
            return fp8_flash.quantize_blocks(rotated_q, rotated_k, v.unflatten(2, (heads, -1)), pv=pv)

        def fused(pv: str = pv) -> Any:
            return fp8_flash.quantize_projections(*fused_args, pv=pv)

        with torch.no_grad():
            eager = torch_route(q, k, v)
            if device.type == "cuda":
                compiled = torch.compile(torch_route, dynamic=False)
                compiled(q, k, v)
                anchor_ms = median_ms(lambda: compiled(q, k, v), repeats=20)
                if args.sweep:
                    sweep(fused, device, anchor_ms, pv)
                ours_ms = median_ms(fused, repeats=20)
                print(f"pv={pv}: compiled torch route {anchor_ms:.3f} ms, quantize_projections {ours_ms:.3f} ms "
                      f"= {ours_ms / anchor_ms:.2f}x  ({fp8_flash.PREPARE})", flush=True)  # fmt: skip
            ours = fused()
        parts = []
        for name, a, b in zip("q8 k8 v8t q_descale k_descale v_descale v_mean".split(), ours, eager):
            difference = (a.float() - b.float()).abs()
            parts.append(f"{name} {int((difference > 0).sum())} differ, max {float(difference.max()):.3g}")
        print(f"pv={pv} against the eager torch route (of {ours[0].numel()} values each): " + "; ".join(parts), flush=True)


def sweep(fused: Any, device: Any, anchor_ms: float, pv: str) -> None:
    """Each pass's time per launch setting (torch.profiler), the fastest of each kept in PREPARE."""
    import torch
    from gpu_kernels import median_ms
    from torch.profiler import ProfilerActivity, profile

    from tunehub.inference import fp8_flash

    best: dict[str, tuple[float, dict[str, int]]] = {}
    for tokens, warps, v_warps in itertools.product((8, 16, 32), (2, 4, 8), (4, 8)):
        settings = {"q_tokens": tokens, "q_warps": warps, "k_tokens": tokens, "k_warps": warps, "v_warps": v_warps}
        fp8_flash.PREPARE.update(settings)
        total = median_ms(fused, repeats=20)
        with profile(activities=[ProfilerActivity.CUDA]) as profiled:
            for _ in range(5):
                fused()
            torch.cuda.synchronize(device)
        times = {e.key: e.self_device_time_total / 5000 for e in profiled.key_averages()
                 if e.key in ("rms_rstd", "q_quantize_kv_stats", "k_quantize", "v_quantize")}  # fmt: skip
        print(f"  pv={pv} {settings}: {total:.3f} ms ({total / anchor_ms:.2f}x): "
              + ", ".join(f"{name} {ms:.3f}" for name, ms in times.items()), flush=True)  # fmt: skip
        for name, keys in (("q_quantize_kv_stats", ("q_tokens", "q_warps")), ("k_quantize", ("k_tokens", "k_warps")),
                           ("v_quantize", ("v_warps",))):  # fmt: skip
            if name in times and (name not in best or times[name] < best[name][0]):
                best[name] = (times[name], {key: settings[key] for key in keys})
    for _, settings in best.values():
        fp8_flash.PREPARE.update(settings)
    print(f"  fastest per pass: {fp8_flash.PREPARE}", flush=True)


if __name__ == "__main__":
    main()
