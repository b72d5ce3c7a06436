"""``tunehub generate ID``: one video from a definition through diffusers."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tunehub.cli.common import config_and_registry, print_json
from tunehub.config import QUANTIZATIONS
from tunehub.inference.parallel import PARALLEL_MODES  # torch-free at import time
from tunehub.inference.pipeline import (  # torch-free at import time
    ATTENTIONS,
    INT8_KERNELS,
    OFFLOAD_MODES,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate a video from a definition",
        description=(
            "Build the diffusers pipeline of the definition's architecture with the transformer file "
            "the registry picks (16-bit or int8), run it, and write an mp4 plus the settings used "
            "(clip.mp4 -> clip.json, WanGP's export shape). The definition's top-level settings are "
            "the defaults; options given here win."
        ),
    )
    p.add_argument("id")
    p.add_argument("--prompt")
    p.add_argument("--negative-prompt")
    p.add_argument("--resolution", metavar="WxH", help="width x height, e.g. 832x480")
    p.add_argument("--frames", type=int, metavar="N", help="number of frames (video_length)")
    p.add_argument("--steps", type=int, metavar="N", help="denoising steps")
    p.add_argument("--guidance", type=float, metavar="G", help="guidance scale")
    p.add_argument("--flow-shift", type=float, metavar="S")
    p.add_argument("--seed", type=int, metavar="N", help="-1 for a random seed (recorded in the settings file)")
    p.add_argument("--image", metavar="PATH", help="start image (i2v models)")
    p.add_argument("--video", metavar="PATH", help="control video (VACE)")
    p.add_argument("--mask", metavar="PATH", help="mask video or image (VACE)")
    p.add_argument("--out", metavar="PATH", help="output .mp4 (default: a new name in <home>/outputs/)")
    p.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when available")
    p.add_argument("--offload", choices=OFFLOAD_MODES, default="none",
                   help="none; model (one model on the GPU at a time: 14B int8 on a 24 GB card); "
                        "group (also the transformer's blocks streamed from CPU: least GPU memory)")  # fmt: skip
    p.add_argument("--quantization", choices=QUANTIZATIONS, help="int8, fp8, or bf16 (16-bit)")
    p.add_argument("--dtype", choices=("bf16", "fp16"), help="transformer dtype preference")
    p.add_argument("--int8-kernel", choices=INT8_KERNELS, default="auto",
                   help="how int8 layers run: auto (int8mm on CUDA with Triton, else fp8 on fp8 GPUs, else "
                        "dequant), dequant (optimum-quanto's math, pure torch), fp8, int8mm (exact int8 GEMM: "
                        "fused Triton kernel, or torch._int_mm), quanto (optimum-quanto's own QLinear modules)")  # fmt: skip
    p.add_argument("--attention", choices=ATTENTIONS, default=None,
                   help="self-attention: sdpa (default; or [generate] attention in tunehub.toml), fp8 (8-bit "
                        "attention on Hopper and newer, tunehub's Triton kernel: int8 Q.K, e4m3 P.V; faster, less "
                        "accurate), int8 (the same with int8 P.V: half fp8's error, less of its speed) or "
                        "fp8-cudnn (cuDNN's per-tensor FP8: 2.7x fp8's error; needs tunehub[fp8-attention]); "
                        "each falls back to sdpa with a note elsewhere")  # fmt: skip
    p.add_argument("--no-vae-tiling", action="store_true", help="decode the whole video at once")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the transformer blocks: faster steps, slower first step")  # fmt: skip
    p.add_argument("--gpus", metavar="N|auto",
                   help="one video across N GPUs of this host (auto: all visible), one process each; "
                        "with --device cpu, N gloo processes")  # fmt: skip
    p.add_argument("--parallel", choices=PARALLEL_MODES, default="auto",
                   help="how --gpus splits the work: cfg (cond / uncond pass on different GPUs), context "
                        "(the video's tokens split, Ulysses or ring attention; Wan t2v/i2v), both, or auto")  # fmt: skip
    p.add_argument("--lora", action="append", default=[], metavar="FILE[:STRENGTH]",
                   help="apply this LoRA too (repeatable); STRENGTH in WanGP's multiplier syntax: 0.8, "
                        "0.9,0.7 (over the steps), 1;0 (per phase: high-noise;low-noise expert); default 1")  # fmt: skip
    p.add_argument("--no-loras", action="store_true", help="skip the LoRAs the definition lists (loras)")
    p.add_argument("--guidance2", type=float, metavar="G",
                   help="second guidance scale (guidance2_scale: the low-noise phase of Wan 2.2)")  # fmt: skip
    p.add_argument("--guidance-phases", type=int, choices=(1, 2), metavar="N",
                   help="guidance phases (guidance_phases): 2 switches to --guidance2 at --switch-threshold "
                        "(two-expert models always have 2)")  # fmt: skip
    p.add_argument("--switch-threshold", type=float, metavar="T",
                   help="noise level 0-1000 where the second phase (low-noise expert) starts (switch_threshold)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the result as JSON; progress as JSON lines on stderr")
    p.add_argument("--cluster", action="store_true",
                   help="render on the Ray cluster of [cluster]: queue the job in this home's running daemon and wait "
                        "for its video (it lands in outputs/, or --out)")  # fmt: skip
    p.set_defaults(func=cmd_generate)


def _progress_printer(as_json: bool) -> Any:
    def show(event: dict[str, Any]) -> None:
        if as_json:
            print(json.dumps(event), file=sys.stderr, flush=True)
        elif event.get("status") == "denoising":
            end = "\n" if event["completed"] == event["total"] else ""
            print(f"\rstep {event['completed']}/{event['total']}  {event['elapsed']:.1f}s", end=end,
                  file=sys.stderr, flush=True)  # fmt: skip
        elif event.get("status") == "note":
            print(f"note: {event.get('message', '')}", file=sys.stderr, flush=True)
        elif event.get("status") == "parallel":
            print(event.get("description", "parallel"), file=sys.stderr, flush=True)
        elif event.get("status") not in ("done", "decoded"):
            print(event.get("status", ""), "...", file=sys.stderr, flush=True)

    return show


def _job_params(args: argparse.Namespace) -> dict[str, Any]:
    """The options given, as a daemon job's params (paths made absolute: the daemon has its own cwd)."""
    from pathlib import Path

    values: dict[str, Any] = {
        "prompt": args.prompt, "negative_prompt": args.negative_prompt, "resolution": args.resolution,
        "video_length": args.frames, "num_inference_steps": args.steps, "guidance_scale": args.guidance,
        "flow_shift": args.flow_shift, "seed": args.seed, "device": args.device, "quantization": args.quantization,
        "dtype": args.dtype, "gpus": args.gpus,
    }  # fmt: skip
    for key in ("image", "video", "mask", "out"):
        if getattr(args, key):
            values[key] = str(Path(getattr(args, key)).expanduser().resolve())
    if args.offload != "none":
        values["offload"] = args.offload
    if args.int8_kernel != "auto":
        values["int8_kernel"] = args.int8_kernel
    if args.no_vae_tiling:
        values["vae_tiling"] = False
    if args.compile:
        values["compile_blocks"] = True
    if args.parallel != "auto":
        values["parallel"] = args.parallel
    return {key: value for key, value in values.items() if value is not None}


def cmd_generate_cluster(args: argparse.Namespace) -> int:
    """Submit the generation as a daemon job (the daemon hands it to the cluster) and follow it."""
    from tunehub.cli.common import config_from_args
    from tunehub.cluster.settings import cluster_settings
    from tunehub.daemon.client import DaemonClient
    from tunehub.errors import ConfigError, DaemonError

    cfg = config_from_args(args)
    if cluster_settings(cfg) is None:
        raise ConfigError(f"--cluster: no [cluster] in {cfg.home / 'tunehub.toml'} (see docs/fleet.md)")
    client = DaemonClient(cfg.home)
    since = client.events(0)["last_id"]
    job = client.submit_job("generate", args.id, **_job_params(args))
    print(f"queued job #{job['id']} on the cluster", file=sys.stderr, flush=True)
    show = _progress_printer(args.json)
    where = ""
    while True:
        answer = client.events(since, timeout=30)
        since = answer["last_id"]
        for event in answer["events"]:
            if event.get("job") != job["id"]:
                continue
            if event["type"] == "job.progress":
                node = event.get("host") or event.get("node")
                if node and node != where and not args.json:
                    where = node
                    print(f"on node {event.get('node')} ({event.get('host')}), {event.get('gpu')}", file=sys.stderr, flush=True)
                if event.get("status") == "denoising" and not {"completed", "total", "elapsed"} <= set(event):
                    continue
                show(event)
            elif event["type"] == "job.retry" and not args.json:
                print(f"retrying: {event.get('error')}", file=sys.stderr, flush=True)
            elif event["type"] in ("job.done", "job.failed", "job.cancelled"):
                final = next(j for j in client.jobs() if j["id"] == job["id"])
                if final["state"] != "done":
                    raise DaemonError(f"job #{job['id']} {final['state']}: {final.get('last_error') or ''}".strip())
                result = final["result"] or {}
                if args.json:
                    print_json(result)
                else:
                    print(result.get("video"))
                    print(f"settings: {result.get('settings_file')}", file=sys.stderr)
                return 0


def cmd_generate(args: argparse.Namespace) -> int:
    if args.cluster:
        return cmd_generate_cluster(args)
    from tunehub.inference import generate

    cfg, registry = config_and_registry(args)
    result = generate(
        cfg,
        registry,
        args.id,
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        resolution=args.resolution,
        video_length=args.frames,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        flow_shift=args.flow_shift,
        seed=args.seed,
        image=args.image,
        video=args.video,
        mask=args.mask,
        out=args.out,
        device=args.device,
        offload=args.offload,
        quantization=args.quantization,
        dtype=args.dtype,
        int8_kernel=args.int8_kernel,
        vae_tiling=not args.no_vae_tiling,
        compile_blocks=args.compile,
        progress=_progress_printer(args.json),
        gpus=args.gpus,
        parallel=args.parallel,
        loras=args.lora,
        no_loras=args.no_loras,
        guidance2_scale=args.guidance2,
        guidance_phases=args.guidance_phases,
        switch_threshold=args.switch_threshold,
        attention=args.attention,  # None: [generate] attention in tunehub.toml
    )
    if args.json:
        print_json(result.to_json())
    else:
        print(result.video)
        print(f"settings: {result.settings_file}", file=sys.stderr)
        if result.contact_sheet:
            print(f"contact sheet: {result.contact_sheet}", file=sys.stderr)
        if result.experts.get("switch_step") is not None:
            what = "low-noise expert" if result.experts.get("two_experts") else "second guidance phase"
            print(f"{what} from step {result.experts['switch_step'] + 1}", file=sys.stderr)
    return 0
