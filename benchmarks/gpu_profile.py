"""Where one forward's GPU time goes: torch.profiler's top kernels for diffusers bf16 and for
tunehub's int8 path, side by side, eager, for one model size (random weights, nothing
downloaded). Also counts the int8 layers by the rows they see and the kernel each used.

    python benchmarks/gpu_profile.py --models 5B --frames 21 [--kernels auto,fp8] [--attention fp8] [--skip-bf16]

``TUNEHUB_FP8_FLASH="128x128 w8 s3 pointer"`` (and ``TUNEHUB_INT8_GEMM``) profile a kernel launch
other than the default.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from gpu_generate import MODELS, log, make_inputs, random_model, time_forward, write_int8_file  # noqa: E402

from tunehub.inference.attention import set_attention  # noqa: E402
from tunehub.inference.int8_linear import Int8Linear  # noqa: E402
from tunehub.inference.transformer import compile_transformer_blocks, load_transformer  # noqa: E402


def top_kernels(model: torch.nn.Module, inputs: dict, label: str, rows: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        for _ in range(2):  # the second call: compiled graphs warmed up
            model(**inputs)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            model(**inputs)
            torch.cuda.synchronize()
    log(f"\n-- {label}: top {rows} by GPU time")
    log(prof.key_averages().table(sort_by="self_device_time_total", row_limit=rows, max_name_column_width=70))
    # GPU time by kind: the attention kernels, the GEMMs, and everything else (norms, quantization, ...)
    kinds: Counter[str] = Counter()
    for event in prof.key_averages():
        name = event.key.lower()
        kind = ("attention" if any(k in name for k in ("attention", "attn", "flash", "fmha", "kernel_tma", "sdpa"))
                else "gemm" if any(k in name for k in ("gemm", "matmul", "sm90", "cutlass", "nvjet", "int8"))
                else "other")  # fmt: skip
        kinds[kind] += event.self_device_time_total
    log("GPU time by kind: " + ", ".join(f"{kind} {us / 1e3:.1f} ms" for kind, us in kinds.most_common()))


def row_counts(model: torch.nn.Module, inputs: dict) -> None:
    seen: Counter[tuple[str, int, int, int]] = Counter()
    hooks = [
        module.register_forward_hook(
            lambda m, args, out: seen.update([(m.kernel, args[0].reshape(-1, args[0].shape[-1]).shape[0], m.in_features, m.out_features)])
        )
        for module in model.modules()
        if isinstance(module, Int8Linear)
    ]
    with torch.inference_mode():
        model(**inputs)
    for hook in hooks:
        hook.remove()
    log("int8 layers seen (kernel, rows, in, out): calls")
    for key, count in sorted(seen.items(), key=lambda item: -item[1]):
        log(f"  {key}: {count}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="5B")
    parser.add_argument("--kernels", default="auto")
    parser.add_argument("--frames", type=int, default=21)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--rows", type=int, default=18)
    parser.add_argument("--attention", default="sdpa", help="the int8 model's attention (sdpa, fp8, int8, fp8-cudnn)")
    parser.add_argument("--skip-bf16", action="store_true", help="profile the int8 path only")
    parser.add_argument("--compile", action="store_true", help="regional torch.compile of the blocks first")
    args = parser.parse_args()
    device = torch.device("cuda")
    mode = "compiled" if args.compile else "eager"
    log(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}")
    for size in args.models.split(","):
        config = MODELS[size]
        inputs = make_inputs(config, args.frames, args.height, args.width, device)
        model = random_model(config, device)
        log(f"\n== Wan {size}, {args.width}x{args.height}x{args.frames}")
        if not args.skip_bf16:
            if args.compile:
                compile_transformer_blocks(model)
            seconds, _, _ = time_forward(model, inputs, device, 1, 3)
            log(f"diffusers bf16 {mode}: {seconds:.3f} s")
            top_kernels(model, inputs, "diffusers bf16", args.rows)
        with tempfile.TemporaryDirectory() as tmp:
            int8_file = Path(tmp) / f"wan_{size}_quanto_mbf16_int8.safetensors"
            write_int8_file(model, int8_file)
            del model
            torch.cuda.empty_cache()
            for kernel in args.kernels.split(","):
                int8 = load_transformer(config["_class_name"], config, [int8_file], "bf16", device, int8_kernel=kernel)
                used, note = set_attention(int8, args.attention, device)
                if note:
                    log(note)
                if args.compile:
                    compile_transformer_blocks(int8)
                seconds, _, _ = time_forward(int8, inputs, device, 1, 3)
                log(f"\ntunehub int8 [{kernel}] + {used} attention {mode}: {seconds:.3f} s")
                row_counts(int8, inputs)
                top_kernels(int8, inputs, f"tunehub int8 [{kernel}]", args.rows)
                del int8
                torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
