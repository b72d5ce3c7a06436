"""One Wan transformer forward at 480x832, 81 frames: diffusers bf16 vs diffusers +
optimum-quanto int8 vs tunehub's int8 path (the original-layout int8 file loaded by
tunehub, each int8 kernel, optionally with fp8 attention), in one run. Each path is timed
eager and compiled (regional torch.compile of the blocks), and every ratio is taken like
against like: eager over eager bf16, compiled over compiled bf16, both named, rel.err beside.

Anchors (docs/anchors.md, eager, diffusers 0.42.1): H100 14B bf16 3.15 s / 53.5 GiB, quanto
int8 3.36 s / 16.8 GiB; 1.3B bf16 0.57 s / 5.3 GiB, quanto int8 0.62 s / 2.9 GiB.
Targets (issue 15, compiled over compiled bf16): 14B default int8 <= 0.85x with rel.err
<= 0.032; 14B int8 + fp8 attention <= 0.70x, rel.err <= 0.05, peak <= 17 GiB; 1.3B <= 0.80x.

Everything is built here with random weights: nothing is downloaded. Needs torch,
diffusers and safetensors, and this checkout (the script puts it on sys.path; it uses only
tunehub.inference's torch modules: no tunehub install, no tomli); optimum-quanto only for
its own row (left out with a note when missing).

    python benchmarks/gpu_generate.py --models 14B --attention sdpa,fp8
    python benchmarks/gpu_generate.py --models 1.3B --kernels auto,fp8,int8mm,dequant,quanto
    python benchmarks/gpu_generate.py --tiny [--compile]   # small shapes on CPU: checks it runs
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
    "tiny": {**shipped_transformer_config("t2v"), "num_attention_heads": 2, "attention_head_dim": 32, "num_layers": 2,
             "ffn_dim": 128, "text_dim": 64, "freq_dim": 32},  # fmt: skip
}
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
    shape = (1, config["in_channels"], latent_frames, height // 8, width // 8)
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


def _row(size: str, path: str, mode: str, result: tuple[float, float | None, torch.Tensor], reference: torch.Tensor | None,
         **extra: Any) -> dict[str, Any]:  # fmt: skip
    seconds, peak, output = result
    error = 0.0 if reference is None else relative_error(output, reference)
    log(f"{path:<44} {mode:<8} {seconds:8.3f} s   peak {fmt_gib(peak)}   rel.err {error:.4f}")
    return dict(model=size, path=path, mode=mode, seconds=seconds, peak_gib=peak, rel_error=error, **extra)


def eager_and_compiled(
    size: str, path: str, model: torch.nn.Module, inputs: dict[str, Any], device: torch.device,
    args: argparse.Namespace, reference: torch.Tensor | None, **extra: Any,
) -> tuple[list[dict[str, Any]], torch.Tensor]:  # fmt: skip
    """Time ``model`` eager, then (with --compile) after regional compilation: one row each."""
    eager = time_forward(model, inputs, device, args.warmup, args.repeats)
    rows = [_row(size, path, "eager", eager, reference, **extra)]
    if args.compile:
        compiled = timed_compiled(model, inputs, device, args)
        if compiled is not None:
            rows.append(_row(size, path, "compiled", compiled, reference if reference is not None else eager[2], **extra))
        torch._dynamo.reset()
    return rows, eager[2]


def run_model(size: str, args: argparse.Namespace, device: torch.device, workdir: Path) -> list[dict[str, Any]]:
    """Every path eager and compiled (``--compile``), each ratio taken later against bf16 in the
    same mode. rel.err is against the eager bf16 output of the same inputs and weights."""
    config = MODELS[size]
    rows: list[dict[str, Any]] = []
    inputs = make_inputs(config, args.frames, args.height, args.width, device)
    tokens = inputs["hidden_states"].shape[2] * (args.height // 16) * (args.width // 16)
    log(f"\n== Wan {size}: {config['num_layers']} layers, {config['num_attention_heads']} heads, "
        f"ffn {config['ffn_dim']}; {args.width}x{args.height}x{args.frames} = {tokens} tokens")  # fmt: skip

    reset_peak(device)
    model = random_model(config, device)
    base_rows, reference = eager_and_compiled(size, "diffusers bf16", model, inputs, device, args, None)
    rows += base_rows
    if args.compile:  # the int8 file and quanto need a fresh, uncompiled model (same seed)
        del model
        reset_peak(device)
        model = random_model(config, device)

    int8_file = workdir / f"wan_{size}_quanto_mbf16_int8.safetensors"
    started = time.perf_counter()
    write_int8_file(model, int8_file)
    log(f"(wrote the int8 file, {int8_file.stat().st_size / GIB:.2f} GiB, in {time.perf_counter() - started:.1f} s)")

    if "quanto" in args.kernels or args.quanto:
        try:
            from optimum.quanto import freeze, qint8, quantize
        except ImportError:
            log("diffusers + quanto int8   (optimum-quanto not installed: row left out)")
        else:
            quantize(model.blocks, weights=qint8)  # the blocks' linears, as WanGP's files
            freeze(model.blocks)
            # eager only: optimum-quanto's own modules are what WanGP runs; compiled, they graph-break
            rows.append(_row(size, "diffusers + quanto int8", "eager",
                             time_forward(model, inputs, device, args.warmup, args.repeats), reference))  # fmt: skip
    del model
    reset_peak(device)

    timed: set[str] = set()
    for kernel in [k for k in args.kernels if k != "quanto"]:
        resolved = choose_kernel(kernel, device)
        if resolved in timed:
            continue  # "auto" is one of the others
        timed.add(resolved)
        if resolved == "fp8" and device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 9):
            log(f"tunehub int8 [{kernel}]: needs an fp8 GPU (sm 8.9+): left out")
            continue
        for attention in args.attention:
            reset_peak(device)
            started = time.perf_counter()
            model = load_transformer(config["_class_name"], config, [int8_file], "bf16", device, int8_kernel=kernel)
            load_seconds = time.perf_counter() - started
            used = "/".join(sorted({m.kernel for m in model.modules() if isinstance(m, Int8Linear)}))
            label = f"tunehub int8 [{kernel}]" if kernel == used else f"tunehub int8 [{kernel}->{used}]"
            if attention != "sdpa":
                from tunehub.inference.attention import set_attention

                used_attention, note = set_attention(model, attention, device)
                if note:
                    log(f"({note})")
                shown = attention if used_attention == attention else f"{attention}->{used_attention}"
                label += f" + {shown} attention"
            model_rows, _ = eager_and_compiled(size, label, model, inputs, device, args, reference, kernel=kernel,
                                               attention=attention, load_seconds=load_seconds)  # fmt: skip
            rows += model_rows
            del model
            reset_peak(device)
    int8_file.unlink(missing_ok=True)
    return rows


def fmt_gib(value: float | None) -> str:
    return "   n/a   " if value is None else f"{value:6.2f} GiB"


# Targets of issue 15, checked on CUDA for tunehub's compiled rows: (model, attention) ->
# (max ratio over compiled bf16, max rel.err, max peak GiB or None).
TARGETS: dict[tuple[str, str], tuple[float, float | None, float | None]] = {
    ("14B", "sdpa"): (0.85, 0.032, None),
    ("14B", "fp8"): (0.70, 0.05, 17.0),
    ("1.3B", "sdpa"): (0.80, None, None),
}


def _verdict(row: dict[str, Any], ratio: float) -> str:
    target = TARGETS.get((row["model"], row.get("attention", "")))
    if target is None or not row["path"].startswith("tunehub"):
        return ""
    max_ratio, max_error, max_peak = target
    parts = [f"{'meets' if ratio <= max_ratio else 'MISSES'} <={max_ratio:.2f}x"]
    if max_error is not None:
        parts.append(f"{'meets' if row['rel_error'] <= max_error else 'MISSES'} rel.err <={max_error}")
    if max_peak is not None and row.get("peak_gib") is not None:
        parts.append(f"{'meets' if row['peak_gib'] <= max_peak else 'MISSES'} peak <={max_peak:.0f} GiB")
    return "  [target: " + "; ".join(parts) + "]"


def report(rows: list[dict[str, Any]], device: torch.device) -> None:
    """One table per model (eager and compiled side by side), then the ratios: each row over
    diffusers bf16 *in the same mode* (eager over eager, compiled over compiled), both named,
    with the rel.err (against eager bf16's output) beside the ratio."""
    for size in dict.fromkeys(row["model"] for row in rows):
        mine = [row for row in rows if row["model"] == size]
        base = {row["mode"]: row for row in mine if row["path"] == "diffusers bf16"}
        log(f"\n== Wan {size}: seconds per forward (rel.err vs eager bf16 output)")
        log(f"{'path':<44} {'eager s':>8} {'compiled s':>10} {'peak GiB e/c':>13} {'rel.err e/c':>13}")
        for path in dict.fromkeys(row["path"] for row in mine):
            by_mode = {row["mode"]: row for row in mine if row["path"] == path}
            eager, compiled = by_mode.get("eager"), by_mode.get("compiled")

            def cell(row: dict[str, Any] | None, key: str, form: str) -> str:
                return "-" if row is None or row.get(key) is None else format(row[key], form)

            log(f"{path:<44} {cell(eager, 'seconds', '.3f'):>8} {cell(compiled, 'seconds', '.3f'):>10} "
                f"{cell(eager, 'peak_gib', '.1f') + ' / ' + cell(compiled, 'peak_gib', '.1f'):>13} "
                f"{cell(eager, 'rel_error', '.4f') + ' / ' + cell(compiled, 'rel_error', '.4f'):>13}")  # fmt: skip
        log(f"\n== Wan {size}: ratios, like against like (same run)")
        for row in mine:
            reference = base.get(row["mode"])
            if row["path"] == "diffusers bf16" or reference is None:
                continue
            ratio = row["seconds"] / reference["seconds"]
            line = (f"{row['path']} {row['mode']} {row['seconds']:.3f} s / diffusers bf16 {row['mode']} "
                    f"{reference['seconds']:.3f} s = {ratio:.2f}x   rel.err {row['rel_error']:.4f}")  # fmt: skip
            if device.type == "cuda" and row["mode"] == "compiled":
                line += _verdict(row, ratio)
            log(line)
        if size in ANCHORS and device.type == "cuda" and "eager" in base:
            anchor = ANCHORS[size]
            log(f"   anchor (H100, docs/anchors.md, eager): bf16 {anchor['bf16'][0]} s / {anchor['bf16'][1]} GiB, "
                f"quanto {anchor['quanto'][0]} s / {anchor['quanto'][1]} GiB; this run's eager bf16 "
                f"{base['eager']['seconds']:.2f} s")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model and shapes on CPU: checks the script runs")
    parser.add_argument("--models", default="14B,1.3B", help="comma-separated: 14B, 1.3B")
    parser.add_argument("--kernels", default="auto,fp8,int8mm",
                        help="tunehub int8 kernels to time (each eager and compiled): auto, fp8, int8mm, dequant; "
                             "quanto adds the diffusers + optimum-quanto row")  # fmt: skip
    parser.add_argument("--attention", default="sdpa",
                        help="comma-separated attentions, each timed with every kernel: sdpa, fp8")
    parser.add_argument("--quanto", action=argparse.BooleanOptionalAction, default=True,
                        help="time diffusers + optimum-quanto int8 (eager) as the anchor row")
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
    args.attention = [a.strip() for a in args.attention.split(",") if a.strip()]
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
        for size in [s.strip() for s in args.models.split(",") if s.strip()]:
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
