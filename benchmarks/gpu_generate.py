"""One Wan transformer forward at 480x832, 81 frames: diffusers bf16 vs diffusers +
optimum-quanto int8 vs tunehub's int8 path (the original-layout int8 file loaded by
tunehub, each int8 kernel), in one run. Seconds per forward and peak GPU memory.

Anchors (docs/anchors.md, one H100, diffusers 0.42.1): 14B bf16 3.15 s / 53.5 GiB,
quanto int8 3.36 s / 16.8 GiB; 1.3B bf16 0.57 s / 5.3 GiB, quanto int8 0.62 s / 2.9 GiB.
Targets (issue 7): tunehub int8 <= 1.0x the bf16 time of the same run with <= 17 GiB peak
(14B), then <= 0.8x.

Everything is built here with random weights: nothing is downloaded. Needs torch,
diffusers and safetensors, and this checkout (the script puts it on sys.path; it uses only
tunehub.inference's torch modules: no tunehub install, no tomli); optimum-quanto only for
its own row (left out with a note when missing).

    python benchmarks/gpu_generate.py --models 14B    # about 6-8 min on an H100
    python benchmarks/gpu_generate.py --models 1.3B --kernels fp8,int8mm,dequant,quanto
    python benchmarks/gpu_generate.py --tiny [--compile]   # small shapes on CPU: checks it runs
    python benchmarks/gpu_generate.py --models 5B,2.2-14B --lora-rank 64   # Wan 2.2, LoRA adapter cost
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import torch  # noqa: E402

from tunehub.inference.convert import wan_diffusers_to_original  # noqa: E402
from tunehub.inference.int8_linear import Int8Linear, choose_kernel  # noqa: E402
from tunehub.inference.pipeline import shipped_transformer_config  # noqa: E402 (light: no torch)
from tunehub.inference.transformer import (  # noqa: E402
    build_empty,
    compile_transformer_blocks,
    load_transformer,
)

GIB = 1024**3
# The real model sizes, from the configs tunehub ships (the ones `tunehub generate` uses).
MODELS: dict[str, dict[str, Any]] = {
    "14B": shipped_transformer_config("t2v"),
    "1.3B": shipped_transformer_config("t2v_1.3B"),
    # Wan 2.2 A14B: the high- and the low-noise expert (same shape), one forward each; the 5B
    "2.2-14B-high": shipped_transformer_config("t2v_2_2"),
    "2.2-14B-low": shipped_transformer_config("t2v_2_2"),
    "5B": shipped_transformer_config("ti2v_2_2"),
    "tiny": {**shipped_transformer_config("t2v"), "num_attention_heads": 2, "attention_head_dim": 32, "num_layers": 2,
             "ffn_dim": 128, "text_dim": 64, "freq_dim": 32},  # fmt: skip
}
MODEL_GROUPS = {"2.2-14B": ["2.2-14B-high", "2.2-14B-low"]}  # --models 2.2-14B: both experts
ANCHORS = {"14B": {"bf16": (3.15, 53.5), "quanto": (3.36, 16.8)}, "1.3B": {"bf16": (0.57, 5.3), "quanto": (0.62, 2.9)}}


def log(message: str) -> None:
    print(message, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / GIB
    return None


def make_inputs(config: dict[str, Any], frames: int, height: int, width: int, device: torch.device) -> dict[str, Any]:
    generator = torch.Generator(device="cpu").manual_seed(0)
    latent_frames = (frames - 1) // 4 + 1
    stride = 16 if config["in_channels"] == 48 else 8  # Wan 2.2 5B's own VAE compresses 16x
    shape = (1, config["in_channels"], latent_frames, height // stride, width // stride)
    return dict(
        hidden_states=torch.randn(shape, generator=generator).to(device, torch.bfloat16),
        timestep=torch.tensor([500], device=device),
        encoder_hidden_states=torch.randn(1, 512, config["text_dim"], generator=generator).to(device, torch.bfloat16),
        return_dict=False,
    )


def random_model(config: dict[str, Any], device: torch.device) -> torch.nn.Module:
    """The diffusers transformer with random bf16 weights made directly on ``device``."""
    model = build_empty(config["_class_name"], config)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            for name, param in list(module._parameters.items()):
                if param is None:
                    continue
                if param.dim() >= 2:
                    fan_in = param[0].numel()
                    value = torch.randn(param.shape, generator=generator, device=device, dtype=torch.bfloat16)
                    value.mul_(fan_in**-0.5)
                elif "norm" in name or name == "weight":
                    value = torch.ones(param.shape, device=device, dtype=torch.bfloat16)
                else:
                    value = torch.randn(param.shape, generator=generator, device=device, dtype=torch.bfloat16) * 0.02
                module._parameters[name] = torch.nn.Parameter(value, requires_grad=False)
    torch.nn.Module.to(model, device=device, dtype=torch.bfloat16)  # buffers (rotary tables)
    return model.eval()


def time_forward(model: torch.nn.Module, inputs: dict[str, Any], device: torch.device, warmup: int, repeats: int) -> tuple[float, float | None, torch.Tensor]:
    with torch.inference_mode():
        for _ in range(warmup):
            output = model(**inputs)[0]
        sync(device)
        reset_peak(device)
        started = time.perf_counter()
        for _ in range(repeats):
            output = model(**inputs)[0]
        sync(device)
    return (time.perf_counter() - started) / repeats, peak_gib(device), output.float().cpu()


def timed_compiled(
    model: torch.nn.Module, inputs: dict[str, Any], device: torch.device, args: argparse.Namespace
) -> tuple[float, float | None, torch.Tensor] | None:
    """The forward after tunehub's regional compilation (compile time excluded: warm-up)."""
    started = time.perf_counter()
    try:
        compile_transformer_blocks(model)
        result = time_forward(model, inputs, device, max(args.warmup, 2), args.repeats)
    except Exception as exc:  # a missing compiler toolchain and the like: report, go on
        log(f"(compiling failed: {type(exc).__name__}: {str(exc)[:200]})")
        return None
    log(f"(compile + warm-up + timed runs {time.perf_counter() - started:.0f} s)")
    return result


def write_int8_file(model: torch.nn.Module, path: Path) -> dict[str, dict[str, str]]:
    """The original-layout int8 file WanGP shares: blocks' linears as quanto int8 (per-row
    absmax, scale = max|w| / 127), everything else 16-bit, quantization map in metadata."""
    import base64

    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    qmap: dict[str, dict[str, str]] = {}
    linears = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and name.startswith("blocks.")}
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            module_name = name.rsplit(".", 1)[0]
            if module_name in linears and name.endswith(".weight"):
                weight = tensor.float()
                scale = weight.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0
                data = torch.round(weight / scale).clamp(-127, 127).to(torch.int8)
                tensors[f"{module_name}.weight._data"] = data.cpu()
                tensors[f"{module_name}.weight._scale"] = scale.to(torch.bfloat16).cpu()
                tensors[f"{module_name}.input_scale"] = torch.ones((), dtype=torch.bfloat16)
                tensors[f"{module_name}.output_scale"] = torch.ones((), dtype=torch.bfloat16)
                qmap[module_name] = {"weights": "qint8", "activations": "none"}
            else:
                tensors[name] = tensor.to(torch.bfloat16).cpu()
    original = wan_diffusers_to_original(tensors)
    renamed = wan_diffusers_to_original({f"{m}.weight": m for m in qmap})
    original_map = {key[: -len(".weight")]: qmap[module] for key, module in renamed.items()}
    metadata = {
        "quantization_format": "quanto",
        "quantization_map_base64": base64.b64encode(json.dumps(original_map).encode()).decode(),
    }
    save_file({k: v.contiguous() for k, v in original.items()}, str(path), metadata=metadata)
    return original_map


def relative_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    return float((output - reference).norm() / reference.norm())


def run_model(size: str, args: argparse.Namespace, device: torch.device, workdir: Path) -> list[dict[str, Any]]:
    config = MODELS[size]
    rows: list[dict[str, Any]] = []
    inputs = make_inputs(config, args.frames, args.height, args.width, device)
    tokens = inputs["hidden_states"].shape[2] * (inputs["hidden_states"].shape[3] // 2) * (inputs["hidden_states"].shape[4] // 2)
    log(f"\n== Wan {size}: {config['num_layers']} layers, {config['num_attention_heads']} heads, "
        f"ffn {config['ffn_dim']}; {args.width}x{args.height}x{args.frames} = {tokens} tokens")  # fmt: skip

    reset_peak(device)
    model = random_model(config, device)
    seconds, peak, reference = time_forward(model, inputs, device, args.warmup, args.repeats)
    rows.append(dict(model=size, path="diffusers bf16", seconds=seconds, peak_gib=peak, rel_error=0.0))
    log(f"diffusers bf16           {seconds:8.3f} s   peak {fmt_gib(peak)}")

    if args.compile:
        compiled = timed_compiled(model, inputs, device, args)
        if compiled is not None:
            seconds, peak, output = compiled
            rows.append(dict(model=size, path="diffusers bf16 + compiled blocks", seconds=seconds, peak_gib=peak,
                             rel_error=relative_error(output, reference)))  # fmt: skip
            log(f"diffusers bf16 + compile  {seconds:8.3f} s   peak {fmt_gib(peak)}")
        if compiled is not None:  # the int8 file and quanto need a fresh, uncompiled model (same seed)
            del model
            torch._dynamo.reset()
            reset_peak(device)
            model = random_model(config, device)

    int8_file = workdir / f"wan_{size}_quanto_mbf16_int8.safetensors"
    started = time.perf_counter()
    write_int8_file(model, int8_file)
    log(f"(wrote the int8 file, {int8_file.stat().st_size / GIB:.2f} GiB, in {time.perf_counter() - started:.1f} s)")

    try:
        from optimum.quanto import freeze, qint8, quantize
    except ImportError:
        log("diffusers + quanto int8   (optimum-quanto not installed: row left out)")
    else:
        quantize(model.blocks, weights=qint8)  # the blocks' linears, as WanGP's files
        freeze(model.blocks)
        seconds, peak, output = time_forward(model, inputs, device, args.warmup, args.repeats)
        error = relative_error(output, reference)
        rows.append(dict(model=size, path="diffusers + quanto int8", seconds=seconds, peak_gib=peak, rel_error=error))
        log(f"diffusers + quanto int8  {seconds:8.3f} s   peak {fmt_gib(peak)}   rel.err {error:.4f}")
    del model
    reset_peak(device)

    timed: set[str] = set()
    for kernel in args.kernels:
        resolved = choose_kernel(kernel, device) if kernel != "quanto" else "quanto"
        if resolved in timed:
            continue  # "auto" is one of the others
        timed.add(resolved)
        if resolved == "fp8" and device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 9):
            log(f"tunehub int8 [{kernel}]: needs an fp8 GPU (sm 8.9+): left out")
            continue
        reset_peak(device)
        started = time.perf_counter()
        try:
            model = load_transformer(config["_class_name"], config, [int8_file], "bf16", device, int8_kernel=kernel)
        except ImportError as exc:
            log(f"tunehub int8 [{kernel}]: {exc}: left out")
            continue
        load_seconds = time.perf_counter() - started
        used = sorted({m.kernel for m in model.modules() if isinstance(m, Int8Linear)}) or ["quanto"]
        seconds, peak, output = time_forward(model, inputs, device, args.warmup, args.repeats)
        error = relative_error(output, reference)
        label = f"tunehub int8 [{kernel}->{'/'.join(used)}]"
        rows.append(dict(model=size, path=label, kernel=kernel, seconds=seconds, peak_gib=peak, rel_error=error,
                         load_seconds=load_seconds))  # fmt: skip
        log(f"{label:<25}{seconds:8.3f} s   peak {fmt_gib(peak)}   rel.err {error:.4f}   (load {load_seconds:.1f} s)")
        if args.compile and kernel == args.kernels[0]:
            compiled = timed_compiled(model, inputs, device, args)
            if compiled is not None:
                seconds, peak, output = compiled
                error = relative_error(output, reference)
                rows.append(dict(model=size, path=label + " + compiled blocks", kernel=kernel, seconds=seconds,
                                 peak_gib=peak, rel_error=error))  # fmt: skip
                log(f"{label + ' + compile':<25}{seconds:8.3f} s   peak {fmt_gib(peak)}   rel.err {error:.4f}")
        del model
        reset_peak(device)
    if args.lora_rank:
        rows += time_lora_adapters(size, config, int8_file, inputs, reference, args, device)
    int8_file.unlink(missing_ok=True)
    return rows


def time_lora_adapters(
    size: str, config: dict[str, Any], int8_file: Path, inputs: dict[str, Any], reference: torch.Tensor,
    args: argparse.Namespace, device: torch.device,
) -> list[dict[str, Any]]:
    """The cost of a LoRA on an int8 file: a random rank-r LoRA on every block linear, applied
    as tunehub's unfused adapters (the int8 weights stay int8), first kernel, eager and
    compiled. (On 16-bit weights tunehub fuses a LoRA: no cost per step.)"""
    from tunehub.inference.lora import LoraWeights, apply_to_transformer

    kernel = args.kernels[0]
    model = load_transformer(config["_class_name"], config, [int8_file], "bf16", device, int8_kernel=kernel)
    generator = torch.Generator(device="cpu").manual_seed(1)
    modules = {}
    for name, module in model.named_modules():
        if isinstance(module, Int8Linear) and name.startswith("blocks."):
            a = torch.randn(args.lora_rank, module.in_features, generator=generator) * module.in_features**-0.5
            b = torch.randn(module.out_features, args.lora_rank, generator=generator) * 1e-3
            modules[name] = (a, b, None)
    applied = apply_to_transformer(model, [LoraWeights(Path("random_lora"), modules)], [[1.0]])
    label = f"tunehub int8 [{kernel}] + LoRA r{args.lora_rank} adapters"
    rows = []
    seconds, peak, output = time_forward(model, inputs, device, args.warmup, args.repeats)
    rows.append(dict(model=size, path=label, kernel=kernel, seconds=seconds, peak_gib=peak,
                     rel_error=relative_error(output, reference), adapters=applied.adapters))  # fmt: skip
    log(f"{label:<25}{seconds:8.3f} s   peak {fmt_gib(peak)}   ({applied.adapters} adapters)")
    if args.compile:
        compiled = timed_compiled(model, inputs, device, args)
        if compiled is not None:
            seconds, peak, output = compiled
            rows.append(dict(model=size, path=label + " + compiled blocks", kernel=kernel, seconds=seconds,
                             peak_gib=peak, rel_error=relative_error(output, reference)))  # fmt: skip
            log(f"{label + ' + compile':<25}{seconds:8.3f} s   peak {fmt_gib(peak)}")
    del model
    reset_peak(device)
    return rows


def fmt_gib(value: float | None) -> str:
    return "   n/a   " if value is None else f"{value:6.2f} GiB"


def report(rows: list[dict[str, Any]], device: torch.device) -> None:
    log("\n== ratios (same run)")
    for size in dict.fromkeys(row["model"] for row in rows):
        mine = [row for row in rows if row["model"] == size]
        bf16 = next(row for row in mine if row["path"] == "diffusers bf16")
        for row in mine:
            if row is bf16:
                continue
            ratio = row["seconds"] / bf16["seconds"]
            line = f"Wan {size:>4} {row['path']:<34} {ratio:5.2f}x bf16 time"
            if row["path"].startswith("tunehub") and device.type == "cuda":
                verdict = "meets <=0.8x" if ratio <= 0.8 else "meets <=1.0x" if ratio <= 1.0 else "MISSES <=1.0x"
                line += f"  [{verdict}]"
                if size == "14B" and row["peak_gib"] is not None:
                    line += f"  peak {row['peak_gib']:.1f} GiB [{'meets' if row['peak_gib'] <= 17 else 'MISSES'} <=17 GiB]"
            log(line)
        if size in ANCHORS and device.type == "cuda":
            anchor = ANCHORS[size]
            log(f"   anchor (H100, docs/anchors.md): bf16 {anchor['bf16'][0]} s / {anchor['bf16'][1]} GiB, "
                f"quanto {anchor['quanto'][0]} s / {anchor['quanto'][1]} GiB; this run's bf16 {bf16['seconds']:.2f} s")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model and shapes on CPU: checks the script runs")
    parser.add_argument("--models", default="14B,1.3B",
                        help="comma-separated: 14B, 1.3B, 2.2-14B (both Wan 2.2 experts), 5B (Wan 2.2 ti2v)")
    parser.add_argument("--lora-rank", type=int, default=0, metavar="R",
                        help="also time a rank-R LoRA as unfused adapters on the int8 model (0: off)")
    parser.add_argument("--kernels", default="auto,int8mm",
                        help="tunehub int8 kernels to time, the first also compiled: auto (fp8 on sm 8.9+), "
                             "fp8, int8mm, dequant, quanto")  # fmt: skip
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="also time regional torch.compile of the blocks (default: on with CUDA)")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the int8 file is written (default: a temp dir)")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.tiny:
        args.models, args.frames, args.height, args.width = "tiny", 5, 64, 64
        args.warmup, args.repeats = 1, 2
    device = torch.device(args.device or ("cpu" if args.tiny else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        log("no CUDA device: run on the GPU machine, or with --tiny on CPU")
        return 2
    args.kernels = [k.strip() for k in args.kernels.split(",") if k.strip()]
    if args.compile is None:
        args.compile = device.type == "cuda"
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    import diffusers

    log(f"device: {card}; torch {torch.__version__}; diffusers {diffusers.__version__}; "
        f"load average {os.getloadavg()}")  # fmt: skip
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tunehub-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    try:
        sizes = [s.strip() for s in args.models.split(",") if s.strip()]
        for size in [part for s in sizes for part in MODEL_GROUPS.get(s, [s])]:
            rows += run_model(size, args, device, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    report(rows, device)
    log(f"load average {os.getloadavg()}; max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2:.2f} GiB")
    if args.json_out:
        args.json_out.write_text(json.dumps({"device": card, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
