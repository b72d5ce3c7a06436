"""One Wan transformer forward at 480x832, 81 frames: diffusers bf16 vs diffusers +
optimum-quanto int8 vs tunehub's int8 path (the original-layout int8 file loaded by
tunehub, each int8 kernel, optionally with 8-bit attention), in one run. Each path is timed
eager and compiled (regional torch.compile of the blocks), and every ratio is taken like
against like: eager over eager bf16, compiled over compiled bf16, both named, rel.err beside.

Anchors (docs/anchors.md, eager, diffusers 0.42.1): H100 14B bf16 3.15 s / 53.5 GiB, quanto
int8 3.36 s / 16.8 GiB; 1.3B bf16 0.57 s / 5.3 GiB, quanto int8 0.62 s / 2.9 GiB.
Targets (issue 15, compiled over compiled bf16): 14B default int8 <= 0.85x with rel.err
<= 0.032; 14B int8 + fp8 (or int8) attention <= 0.70x, rel.err <= 0.05, peak <= 17 GiB; 1.3B
<= 0.80x.

Everything is built here with random weights: nothing is downloaded. Needs torch,
diffusers and safetensors, and this checkout (the script puts it on sys.path; it uses only
tunehub.inference's torch modules: no tunehub install, no tomli); optimum-quanto only for
its own row (left out with a note when missing).

    python benchmarks/gpu_generate.py --models 14B --attention sdpa,fp8,int8
    python benchmarks/gpu_generate.py --models 1.3B --kernels auto,fp8,int8mm,dequant,quanto
    python benchmarks/gpu_generate.py --tiny [--compile]   # small shapes on CPU: checks it runs
    python benchmarks/gpu_generate.py --models 14B --layers 6 --attention sdpa,fp8 --no-quanto   # quick A/B
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
    if args.layers:  # a quick comparison on fewer blocks; rows are named so, targets not checked
        config = {**config, "num_layers": min(args.layers, config["num_layers"])}
        size = f"{size}-{config['num_layers']}L"
    rows: list[dict[str, Any]] = []
    inputs = make_inputs(config, args.frames, args.height, args.width, device)
    tokens = inputs["hidden_states"].shape[2] * (inputs["hidden_states"].shape[3] // 2) * (inputs["hidden_states"].shape[4] // 2)
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
            from tunehub.inference.attention import set_attention

            used_attention, note = set_attention(model, attention, device)  # sdpa too: its fused q/k preparation
            if note:
                log(f"({note})")
            if attention != "sdpa":
                shown = attention if used_attention == attention else f"{attention}->{used_attention}"
                label += f" + {shown} attention"
            model_rows, _ = eager_and_compiled(size, label, model, inputs, device, args, reference, kernel=kernel,
                                               attention=attention, load_seconds=load_seconds)  # fmt: skip
            rows += model_rows
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
    label = f"tunehub int8 [{kernel}] + LoRA r{args.lora_rank} ({applied.adapters} adapters)"
    rows, _ = eager_and_compiled(size, label, model, inputs, device, args, reference, kernel=kernel)
    del model
    reset_peak(device)
    return rows


# ------------------------------------------------------------------ the whole video
#
# The other components at their real shapes (Wan 2.1 T2V 14B's diffusers repo): UMT5-XXL
# text encoder (bf16, as tunehub loads it) and the Wan VAE (float32, tiled, as tunehub runs
# it); random weights, nothing downloaded. The tokenizer is tunehub's in-memory one (the
# encoder always sees 512 tokens: the pipeline pads to max_sequence_length).
UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                relative_attention_num_buckets=32, relative_attention_max_distance=128,
                feed_forward_proj="gated-gelu", tie_word_embeddings=False, pad_token_id=0, eos_token_id=1)  # fmt: skip
WAN_SCHEDULER = dict(prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000,
                     flow_shift=5.0, solver_order=2)  # fmt: skip
DEFAULT_STEPS = 30  # tunehub's (and WanGP's) default num_inference_steps for Wan t2v


def _random_components(device: torch.device, text_dim: int, tiny: bool) -> dict[str, Any]:
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler
    from transformers import UMT5Config, UMT5EncoderModel

    from tunehub.demo.tiny import make_tokenizer

    tokenizer = make_tokenizer()
    encoder_config = dict(UMT5_XXL)
    vae_config: dict[str, Any] = {}  # AutoencoderKLWan's defaults are Wan 2.1's VAE
    if tiny:  # --tiny: the same pipeline at toy sizes, to check the script on CPU
        encoder_config.update(vocab_size=len(tokenizer), d_model=text_dim, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                              relative_attention_num_buckets=8)  # fmt: skip
        vae_config = dict(base_dim=8, dim_mult=[1, 1, 1, 1], num_res_blocks=1)
    started = time.perf_counter()
    torch.manual_seed(5)
    default_dtype = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.bfloat16)
        with torch.device(device):
            text_encoder = UMT5EncoderModel(UMT5Config(**encoder_config)).eval()
    finally:
        torch.set_default_dtype(default_dtype)
    with torch.device(device):
        vae = AutoencoderKLWan(**vae_config).eval()
    vae.enable_tiling()
    for model in (text_encoder, vae):
        model.requires_grad_(False)
    count = sum(p.numel() for p in text_encoder.parameters())
    log(f"(random UMT5-XXL text encoder {count / 1e9:.2f} B parameters, Wan VAE "
        f"{sum(p.numel() for p in vae.parameters()) / 1e6:.0f} M, built in {time.perf_counter() - started:.0f} s)")  # fmt: skip
    return dict(text_encoder=text_encoder, vae=vae, tokenizer=tokenizer,
                scheduler=UniPCMultistepScheduler(**WAN_SCHEDULER))  # fmt: skip


class _Timed:
    """Wraps a module's method: device-synchronised seconds of each call, summed."""

    def __init__(self, owner: Any, name: str, device: torch.device) -> None:
        self.seconds, self.calls, self.device = 0.0, 0, device
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            sync(self.device)
            started = time.perf_counter()
            result = original(*args, **kwargs)
            sync(self.device)
            self.seconds += time.perf_counter() - started
            self.calls += 1
            return result

        setattr(owner, name, timed)


def time_video(pipe: Any, args: argparse.Namespace, device: torch.device, steps: int, decode: bool = True) -> dict[str, Any]:
    """One pipeline call at 832x480x81 with CFG: text encoding, each denoising step, VAE decode."""
    encoder = _Timed(pipe.text_encoder, "forward", device)
    decoder = _Timed(pipe.vae, "decode", device)
    step_ends: list[float] = []

    def on_step_end(pipeline: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        sync(device)
        step_ends.append(time.perf_counter())
        return callback_kwargs

    sync(device)
    started = time.perf_counter()
    with torch.inference_mode():
        frames = pipe(prompt="a red fox runs through fresh snow", negative_prompt="blurry", height=args.height,
                      width=args.width, num_frames=args.frames, num_inference_steps=steps, guidance_scale=5.0,
                      generator=torch.Generator(device="cpu").manual_seed(0), output_type="np" if decode else "latent",
                      callback_on_step_end=on_step_end).frames[0]  # fmt: skip
    sync(device)
    total = time.perf_counter() - started
    del pipe.text_encoder.forward, pipe.vae.decode  # the instance wrappers: the class's methods again
    first_step_start = started + encoder.seconds  # the encoder runs before the first step
    step_seconds = [end - begin for begin, end in zip([first_step_start, *step_ends[:-1]], step_ends)]
    return dict(total=total, encode=encoder.seconds, encoder_calls=encoder.calls, steps=step_seconds,
                decode=decoder.seconds, other=total - encoder.seconds - sum(step_seconds) - decoder.seconds,
                finite=bool(torch.isfinite(torch.as_tensor(frames)).all()))  # fmt: skip


def run_pipeline(args: argparse.Namespace, device: torch.device, workdir: Path) -> list[dict[str, Any]]:
    """The whole video, bf16 vs tunehub int8 (and with fp8 attention), both compiled: a short
    warm-up call (compilation) then a timed call of ``--pipeline-steps`` steps; the
    definition's default steps are extrapolated from the measured per-step time."""
    from diffusers import WanPipeline

    size = args.models.split(",")[0].strip()
    config = MODELS[size]
    components = _random_components(device, config["text_dim"], args.tiny)
    rows: list[dict[str, Any]] = []
    model = random_model(config, device)
    int8_file = workdir / "wan_pipeline_quanto_mbf16_int8.safetensors"
    write_int8_file(model, int8_file)
    variants = [("diffusers bf16", None, "sdpa")] + [(f"tunehub int8 [{args.kernels[0]}]", args.kernels[0], a) for a in args.attention]
    for label, kernel, attention in variants:
        if kernel is not None:
            del model
            reset_peak(device)
            model = load_transformer(config["_class_name"], config, [int8_file], "bf16", device, int8_kernel=kernel)
            from tunehub.inference.attention import set_attention

            used, note = set_attention(model, attention, device)  # sdpa too: its fused q/k preparation
            if attention != "sdpa":
                label += f" + {attention if used == attention else attention + '->' + used} attention"
            if note:
                log(f"({note})")
        if args.compile:
            compile_transformer_blocks(model)
            label += " compiled"
        pipe = WanPipeline(transformer=model, **components)
        pipe.set_progress_bar_config(disable=True)
        reset_peak(device)
        started = time.perf_counter()
        time_video(pipe, args, device, steps=1, decode=False)  # compiles the blocks: not timed
        log(f"({label}: warm-up call {time.perf_counter() - started:.0f} s)")
        timing = time_video(pipe, args, device, steps=args.pipeline_steps)
        per_step = sorted(timing["steps"])[len(timing["steps"]) // 2]
        whole = timing["encode"] + DEFAULT_STEPS * per_step + timing["decode"] + timing["other"]
        row = dict(model=size, path=label, steps_measured=len(timing["steps"]), per_step=per_step,
                   whole_at_default_steps=whole, peak_gib=peak_gib(device), **timing)  # fmt: skip
        rows.append(row)
        log(f"{label:<48} encode {timing['encode']:6.2f} s ({timing['encoder_calls']} calls)  steps "
            f"{' '.join(f'{t:.2f}' for t in timing['steps'])} s  decode {timing['decode']:6.2f} s  other "
            f"{timing['other']:5.2f} s  total {timing['total']:6.1f} s  peak {fmt_gib(row['peak_gib'])}"
            f"{'' if timing['finite'] else '  NON-FINITE FRAMES'}")  # fmt: skip
        del pipe
        torch._dynamo.reset()
    int8_file.unlink(missing_ok=True)
    log(f"\n== the whole video, {args.width}x{args.height}x{args.frames}, CFG 5.0, {DEFAULT_STEPS} steps (the "
        f"definition's default): {rows[0]['steps_measured']} steps measured per path, the other steps "
        f"extrapolated at the median measured step time")  # fmt: skip
    log(f"{'path':<48} {'encode s':>8} {'step s':>7} {'decode s':>8} {'other s':>7} {'whole s':>8}  where the time goes")
    for row in rows:
        whole = row["whole_at_default_steps"]
        shares = (row["encode"], DEFAULT_STEPS * row["per_step"], row["decode"])
        log(f"{row['path']:<48} {row['encode']:8.2f} {row['per_step']:7.3f} {row['decode']:8.2f} {row['other']:7.2f} "
            f"{whole:8.1f}  encode {shares[0] / whole:.1%}, denoise {shares[1] / whole:.1%}, decode {shares[2] / whole:.1%}")  # fmt: skip
    base = rows[0]
    for row in rows[1:]:
        ratio = row["whole_at_default_steps"] / base["whole_at_default_steps"]
        step_ratio = row["per_step"] / base["per_step"]
        verdict = f"  [target: {'meets' if ratio <= 0.75 else 'MISSES'} <=0.75x]" if device.type == "cuda" else ""
        log(f"{row['path']} {row['whole_at_default_steps']:.1f} s / {base['path']} {base['whole_at_default_steps']:.1f} s "
            f"= {ratio:.2f}x whole video (per step {step_ratio:.2f}x){verdict}")  # fmt: skip
    return rows


def fmt_gib(value: float | None) -> str:
    return "   n/a   " if value is None else f"{value:6.2f} GiB"


# Targets of issue 15, checked on CUDA for tunehub's compiled rows: (model, attention) ->
# (max ratio over compiled bf16, max rel.err, max peak GiB or None).
TARGETS: dict[tuple[str, str], tuple[float, float | None, float | None]] = {
    ("14B", "sdpa"): (0.85, 0.032, None),
    ("14B", "fp8"): (0.70, 0.05, 17.0),
    ("14B", "int8"): (0.70, 0.05, 17.0),
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
    parser.add_argument("--models", default="14B,1.3B",
                        help="comma-separated: 14B, 1.3B, 2.2-14B (both Wan 2.2 experts), 5B (Wan 2.2 ti2v)")
    parser.add_argument("--lora-rank", type=int, default=0, metavar="R",
                        help="also time a rank-R LoRA as unfused adapters on the int8 model (0: off)")
    parser.add_argument("--kernels", default="auto,fp8,int8mm",
                        help="tunehub int8 kernels to time (each eager and compiled): auto, fp8, int8mm, dequant; "
                             "quanto adds the diffusers + optimum-quanto row")  # fmt: skip
    parser.add_argument("--attention", default="sdpa",
                        help="comma-separated attentions, each timed with every kernel: sdpa, fp8, int8")
    parser.add_argument("--quanto", action=argparse.BooleanOptionalAction, default=True,
                        help="time diffusers + optimum-quanto int8 (eager) as the anchor row")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="also time regional torch.compile of the blocks (default: on with CUDA)")
    parser.add_argument("--layers", type=int, default=0, metavar="N",
                        help="only the first N transformer blocks (quick A/B runs of the forward, not --pipeline; the "
                             "embeddings and the head weigh more, and the issue's targets are not checked)")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pipeline", action="store_true",
                        help="time the whole video instead (text encoder, all steps, VAE decode): bf16 vs tunehub "
                             "int8 [first kernel] with each --attention, both compiled")  # fmt: skip
    parser.add_argument("--pipeline-steps", type=int, default=3,
                        help="denoising steps measured with --pipeline; the default 30 are extrapolated")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the int8 file is written (default: a temp dir)")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.tiny:
        args.models, args.frames, args.height, args.width = "tiny", 5, 64, 64
        args.warmup, args.repeats = 1, 2
        args.pipeline_steps = min(args.pipeline_steps, 2)
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

    from tunehub.inference import int8_linear

    gemm = os.environ.get("TUNEHUB_INT8_GEMM") or "{}:{}".format(*int8_linear._default_gemm(device))
    log(f"device: {card}; torch {torch.__version__}; diffusers {diffusers.__version__}; fused int8 GEMM {gemm}; "
        f"load average {os.getloadavg()}")  # fmt: skip
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tunehub-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    try:
        if args.pipeline:
            rows += run_pipeline(args, device, workdir)
        else:
            sizes = [s.strip() for s in args.models.split(",") if s.strip()]
            for size in [part for s in sizes for part in MODEL_GROUPS.get(s, [s])]:
                rows += run_model(size, args, device, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if not args.pipeline:
        report(rows, device)
    log(f"load average {os.getloadavg()}; max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2:.2f} GiB")
    if args.json_out:
        args.json_out.write_text(json.dumps({"device": card, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
