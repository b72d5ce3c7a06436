"""Two steps of a Wan block that tunehub runs as one-pass Triton kernels (tunehub.inference.fused),
each against the torch route it replaces, compiled (what ``torch.compile`` makes of the block's
ops); same run, same inputs; the ratio is ours over the compiled anchor, with the differences from
the eager torch route beside it:

- the q/k RMS norms and rotary embedding before torch's attention (``--attention sdpa``):
  diffusers' RMSNorm and Wan's rotation against ``normed_rotated``;
- the feed-forward's tanh GELU and the next int8 layer's per-row quantization: the sigmoid-form
  GELU and ``_quantize_rows_int8`` against ``gelu_quantize_rows_int8``.

    python benchmarks/gpu_fused_steps.py            # Wan 14B's and 1.3B's shapes at 832x480x81
    python benchmarks/gpu_fused_steps.py --sweep    # also the launch settings
    python benchmarks/gpu_fused_steps.py --tiny     # small shapes on CPU (Triton's interpreter)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

# (name, tokens, heads, head size, feed-forward width)
SHAPES = [("14B", 32760, 40, 128, 13824), ("1.3B", 32760, 12, 128, 8960)]


def _differences(ours: Any, reference: Any) -> str:
    import torch

    difference = (ours.float() - reference.float()).abs()
    largest = float(difference.max() / reference.float().abs().max().clamp(min=1e-12))
    return f"{int((difference > 0).sum())} of {ours.numel()} values differ, largest {largest:.2e} of the range"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small shapes on CPU in Triton's interpreter")
    parser.add_argument("--sweep", action="store_true", help="time each launch setting")
    args = parser.parse_args()
    shapes = SHAPES
    if args.tiny:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
        shapes = [("tiny", 40, 2, 64, 200)]
    import torch
    from gpu_kernels import median_ms

    from tunehub.inference import fused
    from tunehub.inference.attention import _rotate
    from tunehub.inference.int8_linear import _quantize_rows_int8
    from tunehub.inference.transformer import sigmoid_form_gelu

    device = torch.device("cpu" if args.tiny else "cuda")
    if device.type == "cuda":
        import triton

        print(f"device: {torch.cuda.get_device_name(device)}; torch {torch.__version__}; triton {triton.__version__}")
    generator = torch.Generator(device=device).manual_seed(0)
    for name, seq, heads, dim, ffn in shapes:
        width = heads * dim
        q, k = (torch.randn(1, seq, width, device=device, generator=generator, dtype=torch.bfloat16) * s for s in (1.0, 2.0))
        norm_q, norm_k = (torch.nn.RMSNorm(width, eps=1e-6).to(device, torch.bfloat16) for _ in range(2))
        with torch.no_grad():
            for norm in (norm_q, norm_k):
                norm.weight.copy_(torch.rand(width, device=device, generator=generator) + 0.5)
        angles = torch.rand(seq, dim // 2, device=device, generator=generator) * 6
        cos, sin = (f(angles).repeat_interleave(2, -1)[None, :, None, :] for f in (torch.cos, torch.sin))

        def rope_route(q: Any, k: Any) -> Any:
            return (_rotate(norm_q(q).unflatten(2, (heads, -1)), cos, sin).flatten(2),
                    _rotate(norm_k(k).unflatten(2, (heads, -1)), cos, sin).flatten(2))  # fmt: skip

        def rope_ours() -> Any:
            return fused.normed_rotated(q, k, norm_q.weight, norm_k.weight, 1e-6, 1e-6, cos[0, :, 0, 0::2],
                                        sin[0, :, 0, 1::2], heads)  # fmt: skip

        hidden = torch.randn(seq, ffn, device=device, generator=generator, dtype=torch.bfloat16) * 2

        def gelu_route(x: Any) -> Any:
            return _quantize_rows_int8(sigmoid_form_gelu(x))

        def gelu_ours() -> Any:
            return fused.gelu_quantize_rows_int8(hidden)

        with torch.no_grad():
            for step, route, ours, inputs in (("q/k norms + rotation", rope_route, rope_ours, (q, k)),
                                               ("GELU + int8 row quantization", gelu_route, gelu_ours, (hidden,))):  # fmt: skip
                expected, got = route(*inputs), ours()
                differences = "; ".join(_differences(a, b) for a, b in zip(got, expected))
                if device.type != "cuda":
                    print(f"{name} {step}: {differences}")
                    continue
                compiled = torch.compile(route, dynamic=False)
                compiled(*inputs)
                anchor_ms = median_ms(lambda: compiled(*inputs), repeats=20)
                ours_ms = median_ms(ours, repeats=20)
                settings = fused.NORM_ROTATE if "rotation" in step else "one row a program"
                print(f"{name} {step}: compiled torch {anchor_ms:.3f} ms, tunehub {ours_ms:.3f} ms = "
                      f"{ours_ms / anchor_ms:.2f}x ({settings}); {differences}", flush=True)  # fmt: skip
            if args.sweep and device.type == "cuda":
                default = dict(fused.NORM_ROTATE)
                for rows in (1, 2, 4):
                    for warps in (2, 4, 8, 16):
                        fused.NORM_ROTATE.update(rows=rows, warps=warps)
                        print(f"  norm_rotate rows={rows} warps={warps}: {median_ms(rope_ours, repeats=20):.3f} ms")
                fused.NORM_ROTATE.update(default)
                for warps in (2, 4, 8, 16, 32):
                    fused.GELU_QUANTIZE.update(warps=warps)
                    print(f"  gelu_quantize_rows warps={warps}: {median_ms(gelu_ours, repeats=20):.3f} ms")
                fused.GELU_QUANTIZE.update(warps=0)


if __name__ == "__main__":
    main()
