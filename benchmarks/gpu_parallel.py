"""One video across the GPUs of a host (issue 10): seconds per denoising step with CFG of a
Wan 14B-sized transformer at 480x832x81 on 1 GPU and on N GPUs, the output difference
against the 1-GPU run, and peak memory per GPU, in one run.

A denoising step is what diffusers' WanPipeline does per step: the conditional and the
unconditional transformer forward, the CFG combine and a UniPC scheduler step, on latents
21x60x104 (32,760 tokens after 1x2x2 patching) with random prompt embeddings (512x4096).
The multi-GPU rows run that loop through tunehub's own driver
(:mod:`tunehub.inference.parallel`: spawned processes, NCCL, :class:`Leader` on rank 0
and :func:`serve` elsewhere; CFG-parallel and diffusers' context parallelism). The
transformer (40 layers, 40x128 heads, ffn 13824, in_channels 16) is built on the meta
device and its random bf16 weights are made directly on each GPU: nothing is downloaded,
no checkpoint is read.

Targets: <= 0.52x the 1-GPU step time on 2 GPUs, <= 0.28x on 4 (Wan's official multi-GPU
figures at 720p: 0.514x and 0.270x).

    python benchmarks/gpu_parallel.py                  # every visible GPU; ~3-4 min on 2 H100s
    python benchmarks/gpu_parallel.py --gpus 4 --counts 2,4
    python benchmarks/gpu_parallel.py --tiny --device cpu   # tiny model, gloo: checks it runs

Rows that fail (a diffusers without context parallelism, out of memory) print why; the
others are still reported. ``--json PATH`` also writes the rows.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from tunehub.inference.pipeline import shipped_transformer_config  # noqa: E402 (light: no torch)

GIB = 1024**3
# The real model sizes, from the configs tunehub ships (the ones `tunehub generate` uses).
MODELS: dict[str, dict[str, Any]] = {
    "14B": shipped_transformer_config("t2v"),
    "1.3B": shipped_transformer_config("t2v_1.3B"),
    "tiny": {**shipped_transformer_config("t2v"), "num_attention_heads": 4, "attention_head_dim": 16, "num_layers": 2,
             "ffn_dim": 128, "text_dim": 64, "freq_dim": 32},  # fmt: skip
}
TARGETS = {2: 0.52, 4: 0.28}
GUIDANCE = 5.0


def log(message: str) -> None:
    print(message, flush=True)


# ------------------------------------------------------------------ inside a rank


def random_model(config: dict[str, Any], device: Any) -> Any:
    """The diffusers transformer, built on the meta device, its random bf16 weights made
    directly on ``device`` (same seed -> same weights on every GPU and in every row)."""
    import torch

    from tunehub.inference.transformer import build_empty

    model = build_empty(config["_class_name"], config)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            for name, param in list(module._parameters.items()):
                if param is None:
                    continue
                if param.dim() >= 2:
                    value = torch.randn(param.shape, generator=generator, device=device, dtype=torch.bfloat16)
                    value.mul_(param[0].numel() ** -0.5)
                elif "norm" in name or name == "weight":
                    value = torch.ones(param.shape, device=device, dtype=torch.bfloat16)
                else:
                    value = torch.randn(param.shape, generator=generator, device=device, dtype=torch.bfloat16) * 0.02
                module._parameters[name] = torch.nn.Parameter(value, requires_grad=False)
            for name, buffer in list(module._buffers.items()):
                if buffer is not None:
                    module._buffers[name] = buffer.to(device)  # rotary tables keep their dtype
    return model.eval()


def make_inputs(config: dict[str, Any], frames: int, height: int, width: int, device: Any) -> dict[str, Any]:
    import torch

    generator = torch.Generator(device="cpu").manual_seed(0)
    shape = (1, config["in_channels"], (frames - 1) // 4 + 1, height // 8, width // 8)
    return dict(
        latents=torch.randn(shape, generator=generator, dtype=torch.float32).to(device),
        positive=torch.randn(1, 512, config["text_dim"], generator=generator).to(device, torch.bfloat16),
        negative=torch.randn(1, 512, config["text_dim"], generator=generator).to(device, torch.bfloat16),
    )


def make_scheduler(steps: int, device: Any) -> Any:
    from diffusers import UniPCMultistepScheduler

    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=3.0
    )
    scheduler.set_timesteps(steps, device=device)
    return scheduler


def sync(device: Any) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def denoise_steps(model: Any, inputs: dict[str, Any], scheduler: Any, device: Any) -> tuple[list[float], Any]:
    """WanPipeline's loop: cond + uncond forward, CFG combine, scheduler step; seconds per step."""
    import torch

    latents = inputs["latents"]
    times: list[float] = []
    with torch.inference_mode():
        for t in scheduler.timesteps:
            sync(device)
            started = time.perf_counter()
            hidden = latents.to(torch.bfloat16)
            timestep = t.expand(latents.shape[0])
            cond = model(hidden_states=hidden, timestep=timestep, encoder_hidden_states=inputs["positive"], return_dict=False)[0]
            uncond = model(hidden_states=hidden, timestep=timestep, encoder_hidden_states=inputs["negative"], return_dict=False)[0]
            noise = uncond + GUIDANCE * (cond - uncond)
            latents = scheduler.step(noise, t, latents, return_dict=False)[0]
            sync(device)
            times.append(time.perf_counter() - started)
    return times, latents


def bench_rank(rank: int, world: int, channel: Any, job: dict[str, Any]) -> dict[str, Any] | None:
    """One process of one row: build, (parallelise), run the steps; rank 0 reports."""
    import warnings

    import torch

    from tunehub.inference import parallel

    warnings.filterwarnings("ignore", category=FutureWarning)
    plan = job["plan"]
    ctx = None
    if world > 1:
        ctx = parallel.init_rank(rank, plan, job["init_method"])
        device = ctx.device
    else:
        device = "cuda:0" if job["device"] == "cuda" else "cpu"
        if job["device"] == "cuda":
            torch.cuda.set_device(0)
    try:
        started = time.perf_counter()
        model = random_model(job["config"], torch.device(device))
        sync(device)
        build_seconds = time.perf_counter() - started
        if ctx is not None:
            parallel.enable_context_parallel(model, ctx)
        inputs = make_inputs(job["config"], job["frames"], job["height"], job["width"], device)
        if str(device).startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(device)
        if ctx is not None and rank != 0:
            parallel.serve(model, ctx)
            result = None
        else:
            leader = parallel.Leader(model, ctx, cfg_pairs=plan.cfg == 2) if ctx is not None else None
            times, latents = denoise_steps(model, inputs, make_scheduler(job["warmup"] + job["steps"], device), device)
            if leader is not None:
                leader.finish()  # on failure: no stop, no teardown; the parent ends the other ranks
            final = latents.float().cpu()
            baseline_file = Path(job["workdir"]) / "baseline.pt"
            if world == 1 and job["save_baseline"]:
                torch.save(final, baseline_file)
            diff: dict[str, Any] = {}
            if world > 1 and baseline_file.is_file():
                reference = torch.load(baseline_file)
                delta = (final - reference).abs()
                diff = {
                    "max_abs_diff": float(delta.max()),
                    "rel_diff": float(delta.mean() / reference.abs().mean().clamp_min(1e-12)),
                }
            timed = times[job["warmup"] :] or times
            result = {
                "step_s": sum(timed) / len(timed),
                "step_times": [round(t, 4) for t in times],
                "build_s": build_seconds,
                "finite": bool(torch.isfinite(final).all()),
                **diff,
            }
        peak = torch.cuda.max_memory_allocated(device) / GIB if str(device).startswith("cuda") else None
        channel.send({"rank": rank, "peak_gib": peak, "build_s": build_seconds})
        return result  # the process exits without process-group teardown (parallel._child_main)
    finally:
        gc.collect()


# ------------------------------------------------------------------ the parent


def row_plans(world_counts: list[int], modes: list[str], heads: int, tokens: int, device_type: str,
              context_ok: bool) -> list[tuple[str, Any]]:  # fmt: skip
    from tunehub.inference.parallel import ParallelPlan, plan_parallel

    rows: list[tuple[str, Any]] = [("1 GPU" if device_type == "cuda" else "1 process", ParallelPlan(1, device_type=device_type))]
    for count in world_counts:
        for mode in modes:
            if mode == "cfg" and count != 2:
                continue
            if mode == "both" and (count < 4 or count % 2):
                continue
            try:
                plan = plan_parallel(count, mode, guidance=True, context_plan=True, heads=heads, tokens=tokens,
                                     device_type=device_type, model_name="WanTransformer3DModel")  # fmt: skip
            except Exception as exc:  # noqa: BLE001
                rows.append((f"{mode} x{count}", exc))
                continue
            label = {"cfg": "cfg", "context": f"context ({plan.attention})", "both": f"cfg x context ({plan.attention})"}[mode]
            if mode != "cfg" and not context_ok:
                rows.append((f"{label} x{count}", RuntimeError("context parallelism unavailable (see above)")))
                continue
            rows.append((f"{label} x{count}", plan))
    return rows


def fmt(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", type=int, help="largest process count (default: every visible GPU; 2 with --device cpu)")
    parser.add_argument("--counts", help="process counts to time, e.g. 2,4 (default: 2 and --gpus)")
    parser.add_argument("--modes", default="cfg,context,both", help="axes to time (cfg,context,both)")
    parser.add_argument("--model", choices=sorted(MODELS), default="14B")
    parser.add_argument("--tiny", action="store_true", help="tiny model and shapes (with --device cpu: checks the script)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--steps", type=int, default=3, help="timed denoising steps per row")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (CUDA / NCCL warm-up)")
    parser.add_argument("--budget-s", type=float, default=540.0, help="skip rows that would start after this many seconds")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    began = time.monotonic()

    import torch

    if args.tiny:
        args.model = "tiny"
        args.frames, args.height, args.width = 9, 64, 64
    config = MODELS[args.model]
    if args.device == "cuda" and not torch.cuda.is_available():
        log("no CUDA device: run with --tiny --device cpu to check the script")
        return 2
    visible = torch.cuda.device_count() if args.device == "cuda" else 2
    top = args.gpus or visible
    if args.device == "cuda" and top > visible:
        log(f"--gpus {top}: only {visible} visible")
        return 2
    counts = sorted({int(c) for c in args.counts.split(",")}) if args.counts else sorted({2, top} if top >= 2 else set())
    counts = [c for c in counts if 2 <= c <= top]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    latent = ((args.frames - 1) // 4 + 1, args.height // 8, args.width // 8)
    patch = config["patch_size"]
    tokens = latent[0] // patch[0] * (latent[1] // patch[1]) * (latent[2] // patch[2])

    import diffusers

    from tunehub.inference import parallel

    log(f"host: {platform.node()}  python {platform.python_version()}  torch {torch.__version__}  "
        f"diffusers {diffusers.__version__}  cuda {torch.version.cuda}")  # fmt: skip
    if args.device == "cuda":
        for index in range(visible):
            props = torch.cuda.get_device_properties(index)
            log(f"  cuda:{index} {props.name} {props.total_memory / GIB:.0f} GiB")
    env = {key: os.environ.get(key, "(unset: off by default)") for key in parallel.NVLINK_MULTICAST_OFF}
    log(f"NVLink multicast: {env}; NCCL_* inherited: {sorted(k for k in os.environ if k.startswith('NCCL_'))}")
    log(f"model {args.model}: {config['num_layers']} layers, {config['num_attention_heads']}x{config['attention_head_dim']} "
        f"heads, ffn {config['ffn_dim']}; video {args.width}x{args.height}x{args.frames} -> latents "
        f"{latent[0]}x{latent[1]}x{latent[2]} -> {tokens} tokens; {args.warmup} warm-up + {args.steps} timed steps, CFG {GUIDANCE}")  # fmt: skip
    context_ok = parallel.has_context_plan("WanTransformer3DModel")
    if not context_ok:
        log("context parallelism unavailable: this diffusers lacks ContextParallelConfig / enable_parallelism / "
            "WanTransformer3DModel._cp_plan; CFG-parallel rows only")  # fmt: skip

    workdir = Path(tempfile.mkdtemp(prefix="tunehub-gpu-parallel-"))
    rows: list[dict[str, Any]] = []
    plans = row_plans(counts, modes, config["num_attention_heads"], tokens, args.device, context_ok)
    baseline: float | None = None
    for index, (label, plan) in enumerate(plans):
        row: dict[str, Any] = {"row": label}
        rows.append(row)
        if isinstance(plan, Exception):
            row["error"] = str(plan)
            log(f"[{label}] skipped: {plan}")
            continue
        row["gpus"] = plan.world
        if time.monotonic() - began > args.budget_s:
            row["error"] = f"skipped: past the {args.budget_s:.0f} s budget"
            log(f"[{label}] {row['error']}")
            continue
        log(f"[{label}] {plan.describe()} ...")
        peaks: dict[int, float | None] = {}
        job = dict(plan=plan, config=config, device=args.device, frames=args.frames, height=args.height,
                   width=args.width, steps=args.steps, warmup=args.warmup, workdir=str(workdir),
                   init_method=(workdir / f"rendezvous-{index}").as_uri(), save_baseline=index == 0)  # fmt: skip
        started = time.monotonic()
        try:
            result = parallel.launch(bench_rank, (job,), plan.world,
                                     on_message=lambda rank, payload, peaks=peaks: peaks.__setitem__(rank, payload.get("peak_gib")))  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - a failed row is reported, the others still run
            row["error"] = f"{type(exc).__name__}: {exc}"
            log(f"[{label}] FAILED after {time.monotonic() - started:.0f} s: {row['error']}")
            remote = getattr(exc, "remote_traceback", None)
            log(remote or traceback.format_exc())
            continue
        row.update(result)
        row["peak_gib"] = [peaks.get(rank) for rank in range(plan.world)]
        if plan.world == 1:
            baseline = result["step_s"]
        if baseline:
            row["ratio"] = result["step_s"] / baseline
        row["target"] = TARGETS.get(plan.world)
        log(f"[{label}] {result['step_s']:.3f} s/step = {fmt(row.get('ratio'))}x 1-GPU (steps {result['step_times']}), "
            f"max|diff| {fmt(row.get('max_abs_diff'), '.2e')}, rel diff {fmt(row.get('rel_diff'), '.2e')}, "
            f"peak GiB {[fmt(p, '.1f') for p in row['peak_gib']]}, build {result['build_s']:.1f} s, "
            f"row {time.monotonic() - started:.0f} s")  # fmt: skip

    log("")
    header = f"{'row':34} {'GPUs':>4} {'s/step':>8} {'x 1-GPU':>8} {'target':>7} {'max|diff|':>10} {'rel diff':>9}  peak GiB per GPU"
    log(header)
    log("-" * len(header))
    for row in rows:
        if "error" in row:
            log(f"{row['row']:34} {row.get('gpus', '-'):>4} {'failed' if not row['error'].startswith('skipped') else 'skipped':>8}  {row['error'][:160]}")
            continue
        peaks_text = ", ".join(fmt(p, ".1f") for p in row["peak_gib"])
        verdict = ""
        if row.get("target") and row.get("ratio") is not None:
            verdict = " ok" if row["ratio"] <= row["target"] else " MISSED"
        log(f"{row['row']:34} {row['gpus']:>4} {row['step_s']:>8.3f} {fmt(row.get('ratio')):>8} "
            f"{fmt(row.get('target'), '.2f'):>7} {fmt(row.get('max_abs_diff'), '.2e'):>10} {fmt(row.get('rel_diff'), '.2e'):>9}  "
            f"{peaks_text}{verdict}{'' if row.get('finite', True) else '  (NaN/inf!)'}")  # fmt: skip
    log(f"(diff: final latents after {args.warmup + args.steps} steps vs the 1-GPU row; rel diff = mean|diff| / mean|ref|)")
    log(f"total {time.monotonic() - began:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    import shutil

    shutil.rmtree(workdir, ignore_errors=True)
    return 0 if all("error" not in row for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
