"""``generate(cfg, registry, id, **settings)``: one video from a definition."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunehub.config import Config
from tunehub.errors import ConfigError, InferenceError
from tunehub.inference.phases import LoraRequest, parse_multiplier, phase_plan, switch_step
from tunehub.inference.pipeline import (
    Inputs,
    Progress,
    arch_spec,
    build_pipeline,
    denoise,
    pipeline_inputs,
    set_flow_shift,
)
from tunehub.inference.settings import (
    effective,
    export_settings,
    merge_settings,
    reserve_output,
    write_settings,
)
from tunehub.inference.video import write_mp4


@dataclass
class GenerateResult:
    id: str
    video: Path
    settings_file: Path
    settings: dict[str, Any]  # as written beside the video
    frames: int
    width: int
    height: int
    seed: int
    transformer_files: list[Path]
    device: str
    int8_kernels: dict[str, int] = field(default_factory=dict)
    load_seconds: float = 0.0
    denoise_seconds: float = 0.0
    attention: str = "sdpa"
    contact_sheet: Path | None = None  # clip.png beside the video
    # two experts / two guidance phases: the steps each transformer ran, the switch step
    experts: dict[str, Any] = field(default_factory=dict)
    loras: list[dict[str, Any]] = field(default_factory=list)  # what was applied, and how

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "video": str(self.video),
            "settings_file": str(self.settings_file),
            "frames": self.frames,
            "width": self.width,
            "height": self.height,
            "seed": self.seed,
            "transformer_files": [str(path) for path in self.transformer_files],
            "device": self.device,
            "int8_kernels": self.int8_kernels,
            "load_seconds": round(self.load_seconds, 3),
            "denoise_seconds": round(self.denoise_seconds, 3),
            "attention": self.attention,
            "contact_sheet": str(self.contact_sheet) if self.contact_sheet else None,
            "experts": self.experts,
            "switch_step": self.experts.get("switch_step"),
            "loras": self.loras,
        }


@dataclass
class Prepared:
    """A generation checked before anything heavy is loaded: files present, settings merged."""

    definition: Any
    resolution: Any
    spec: Any
    files: list[Any]  # the transformer file, then each module's
    merged: dict[str, Any]
    values: Any
    inputs: Inputs
    video_path: Path | None  # --out, absolute; None: a fresh name in outputs/ once the video exists
    files2: list[Any] = field(default_factory=list)  # the low-noise expert's file (URLs2)
    loras: list[LoraRequest] = field(default_factory=list)  # located, multipliers checked


def prepare(
    registry: Any,
    definition_id: str,
    quantization: str | None,
    dtype: str | None,
    settings: dict[str, Any],
    image: str | Path | None,
    video: str | Path | None,
    mask: str | Path | None,
    out: str | Path | None = None,
    *,
    loras: list[str] | None = None,
    no_loras: bool = False,
) -> Prepared:
    """Resolve the definition's files, check they are on disk, merge the settings, check inputs
    and the output name (before anything heavy is loaded, not after the denoising).

    Shared by the one-process path and the multi-GPU driver, so both refuse the same things.
    """
    definition = registry.get(definition_id)
    resolution = registry.resolve(definition_id, quantization=quantization, dtype=dtype)
    spec = arch_spec(resolution.architecture)
    if resolution.transformer is None:
        raise InferenceError(f"definition '{definition_id}' ({definition.path}) lists no transformer file (URLs)")
    files = [resolution.transformer, *resolution.modules]
    files2 = [resolution.transformer2] if resolution.transformer2 is not None else []
    if spec.two_experts and not files2:
        raise InferenceError(
            f"definition '{definition_id}' ({definition.path}): {spec.id} has two experts; "
            "list the low-noise transformer in URLs2"
        )
    missing = [choice for choice in files + files2 if not choice.present]
    if missing:
        names = ", ".join(choice.filename for choice in missing)
        raise InferenceError(
            f"definition '{definition_id}': file(s) not downloaded yet: {names}; run `tunehub pull {definition_id}`"
        )
    merged = merge_settings(definition.settings, settings, spec.family)
    values = effective(merged, f"definition '{definition_id}'")
    inputs = Inputs(*(Path(p) if p is not None else None for p in (image, video, mask)))
    for label, path in (("--image", inputs.image), ("--video", inputs.video), ("--mask", inputs.mask)):
        if path is not None and not path.is_file():
            raise ConfigError(f"{label} {path}: no such file")
    video_path: Path | None = None
    if out is not None:
        video_path = Path(out).expanduser()
        if not video_path.is_absolute():
            video_path = Path.cwd() / video_path
        if video_path.suffix.lower() != ".mp4":
            raise ConfigError(f"--out {out}: the video is written as mp4; name it *.mp4")
    source = f"definition '{definition_id}'"
    plan = phase_plan(merged, spec.two_experts, 1.0, source)  # checked now; the boundary comes with the base repo
    requests = lora_requests(registry, definition, resolution, loras or [], no_loras, plan)
    return Prepared(definition, resolution, spec, files, merged, values, inputs, video_path, files2, requests)


def lora_requests(
    registry: Any, definition: Any, resolution: Any, extra: list[str], no_loras: bool, plan: Any
) -> list[LoraRequest]:
    """The definition's LoRAs (the registry's resolution: ``loras`` at ``loras_multipliers``,
    in the family's LoRA folder where ``tunehub pull`` puts them) unless ``no_loras``, then
    each ``--lora FILE[:STRENGTH]``; every file located and every multiplier parsed."""
    from tunehub.inference.lora import parse_lora_option

    requests: list[LoraRequest] = []
    missing = []
    if not no_loras:
        for choice in resolution.loras:
            multiplier = 1.0 if choice.multiplier is None else choice.multiplier
            requests.append(LoraRequest(choice.source, multiplier, "definition", choice.path if choice.present else None))
            if not choice.present:
                missing.append(choice.filename)
    for option in extra:
        source, strength = parse_lora_option(option)
        path = Path(source).expanduser()
        if not path.is_file():
            located, present = registry.locate_lora(definition, source)
            if not present:
                raise ConfigError(f"--lora {source}: no such file (nor in {located.parent})")
            path = located
        requests.append(LoraRequest(source, strength, "command line", path.absolute()))
    for request in requests:
        where = f"LoRA {request.source}" if request.origin == "definition" else f"--lora {request.source}"
        parse_multiplier(request.multiplier, plan.phases, f"{where} (multiplier)", plan.model_switch_phase)
    if missing:
        raise InferenceError(
            f"definition '{definition.id}': LoRA file(s) not downloaded yet: {', '.join(missing)}; "
            f"run `tunehub pull {definition.id}` (or generate with --no-loras)"
        )
    return requests


def finish(
    cfg: Config,
    definition_id: str,
    prepared: Prepared,
    frames: Any,
    *,
    device: str,
    int8_kernels: dict[str, int],
    load_seconds: float,
    denoise_seconds: float,
    progress: Progress | None,
    attention: str = "sdpa",
    experts: dict[str, Any] | None = None,
    loras: list[dict[str, Any]] | None = None,
) -> GenerateResult:
    """Write the video, the settings used and the contact sheet beside it; the one-process and
    multi-GPU paths end here."""
    from tunehub.inference.contact_sheet import write_contact_sheet

    values = prepared.values
    experts = experts or {}
    loras = loras or []
    video_path = prepared.video_path or reserve_output(cfg.outputs_dir, definition_id, values.seed)
    write_mp4(frames, video_path, fps=prepared.spec.fps)
    exported = export_settings(prepared.merged, definition_id, prepared.resolution.transformer.source)
    if prepared.files2:
        exported["model_filename2"] = prepared.files2[0].source
    given = [request for request in prepared.loras if request.origin == "command line"]
    if given:
        # WanGP's keys for LoRAs chosen at run time, so that the settings file repeats the run
        exported["activated_loras"] = [str(request.path) for request in given]
        exported["loras_multipliers"] = " ".join(str(request.multiplier) for request in given)
    settings_file = write_settings(video_path, exported)
    caption = {
        "guidance2_scale": experts.get("guidance2_scale"),
        "switch_step": experts.get("switch_step"),
        "loras": [f"{Path(str(item['file'])).name}:{item['multiplier']}" for item in loras],
    }
    sheet = write_contact_sheet(frames, video_path, exported, caption)
    if progress:
        progress({"status": "done", "video": str(video_path), "settings": str(settings_file), "contact_sheet": str(sheet)})
    return GenerateResult(
        id=definition_id,
        video=video_path,
        settings_file=settings_file,
        settings=exported,
        frames=int(len(frames)),
        width=values.width,
        height=values.height,
        seed=values.seed,
        transformer_files=[choice.path for choice in prepared.files],
        device=device,
        int8_kernels=int8_kernels,
        load_seconds=load_seconds,
        denoise_seconds=denoise_seconds,
        attention=attention,
        contact_sheet=sheet,
        experts=experts,
        loras=loras,
    )


def generate(
    cfg: Config,
    registry: Any,
    definition_id: str,
    *,
    image: str | Path | None = None,
    video: str | Path | None = None,
    mask: str | Path | None = None,
    out: str | Path | None = None,
    device: str | None = None,
    offload: str = "none",
    quantization: str | None = None,
    dtype: str | None = None,
    int8_kernel: str = "auto",
    vae_tiling: bool = True,
    compile_blocks: bool = False,
    progress: Progress | None = None,
    gpus: int | str | None = None,
    parallel: str = "auto",
    attention: str | None = None,
    loras: list[str] | None = None,
    no_loras: bool = False,
    **settings: Any,
) -> GenerateResult:
    """Generate one video for ``definition_id``.

    ``gpus`` (N or "auto") > 1 runs one process per GPU, split by ``parallel``
    (auto|cfg|context|both): see :mod:`tunehub.inference.parallel`. ``attention``: ``sdpa`` or
    ``fp8`` (FP8 self-attention on Hopper+, see :mod:`tunehub.inference.attention`); None takes
    ``[generate] attention`` from tunehub.toml (default ``sdpa``).

    ``settings`` are WanGP keys (``prompt``, ``negative_prompt``, ``resolution`` "WxH",
    ``video_length``, ``num_inference_steps``, ``guidance_scale``, ``flow_shift``,
    ``seed``, ``embedded_guidance_scale``, ...): None values are ignored, the others win
    over the definition's top-level settings. The video goes to ``out`` or a new name in
    ``cfg.outputs_dir``; the settings used go beside it (``clip.mp4`` -> ``clip.json``), and
    a contact sheet (``clip.png``).

    Two-expert models (Wan 2.2 A14B) run the high-noise transformer (``URLs``) until the
    boundary (WanGP's ``switch_threshold``, else the base repo's ``boundary_ratio``) and the
    low-noise one (``URLs2``) after it, with ``guidance_scale`` then ``guidance2_scale``.
    The definition's ``loras`` are applied at ``loras_multipliers`` (WanGP's syntax, per
    phase with ``;``) unless ``no_loras``; ``loras`` adds ``FILE[:STRENGTH]`` entries.
    """
    if attention is None:
        attention = cfg.generate.get("attention", "sdpa")
    if gpus is not None and str(gpus).strip() != "1":
        from tunehub.inference.parallel import generate_parallel

        return generate_parallel(
            cfg, registry, definition_id, gpus=gpus, parallel=parallel, image=image, video=video, mask=mask,
            out=out, device=device, offload=offload, quantization=quantization, dtype=dtype,
            int8_kernel=int8_kernel, vae_tiling=vae_tiling, compile_blocks=compile_blocks, progress=progress,
            attention=attention, loras=loras, no_loras=no_loras, **settings,
        )  # fmt: skip
    prepared = prepare(
        registry, definition_id, quantization, dtype, settings, image, video, mask, out,
        loras=loras, no_loras=no_loras,
    )  # fmt: skip
    resolution, files, values = prepared.resolution, prepared.files, prepared.values
    runtime = RunPlan(prepared)
    built = build_pipeline(
        cfg,
        resolution.architecture,
        [choice.path for choice in files],
        dtype=resolution.dtype,
        device=device,
        offload=offload,
        int8_kernel=int8_kernel,
        vae_tiling=vae_tiling,
        compile_blocks=compile_blocks,
        progress=progress,
        attention=attention,
        transformer2_files=[choice.path for choice in prepared.files2],
        with_image=prepared.inputs.image is not None and prepared.spec.image_pipeline is not None,
        prepare_transformers=runtime.prepare_transformers,
    )
    built.before_step.extend(runtime.step_hooks)
    kwargs = pipeline_inputs(built, values, prepared.inputs, runtime.plan)
    started = time.perf_counter()
    frames = denoise(built, kwargs, progress)
    return finish(
        cfg, definition_id, prepared, frames,
        device=built.device, int8_kernels=built.int8_kernels, load_seconds=built.load_seconds,
        denoise_seconds=time.perf_counter() - started, progress=progress, attention=built.attention,
        experts=runtime.experts_json(built.expert_steps), loras=runtime.applied,
    )  # fmt: skip


_GUIDANCE_SWITCH_PIPELINES = ("WanPipeline", "WanVACEPipeline")


class RunPlan:
    """What is decided once the pipeline exists but before it is placed: the flow shift, the
    phases (expert switch and second guidance scale), and the LoRAs applied to each expert."""

    def __init__(self, prepared: Prepared) -> None:
        self.prepared = prepared
        self.plan: Any = None
        self.switch: int | None = None
        self.step_hooks: list[Any] = []
        self.applied: list[dict[str, Any]] = []
        self.lora_layers: dict[str, dict[str, int]] = {}  # per transformer: layers fused / with adapters

    def prepare_transformers(self, pipe: Any, transformers: list[Any]) -> None:
        from tunehub.inference.lora import apply_to_transformer, read_lora

        prepared, values = self.prepared, self.prepared.values
        spec = prepared.spec
        source = f"definition '{prepared.definition.id}'"
        set_flow_shift(pipe, values.flow_shift)
        default_boundary = pipe.config.get("boundary_ratio") if hasattr(pipe.config, "get") else None
        plan = phase_plan(prepared.merged, spec.two_experts, default_boundary, source)
        if plan.boundary_ratio is not None and not spec.two_experts:
            if type(pipe).__name__ not in _GUIDANCE_SWITCH_PIPELINES or spec.family != "wan":
                raise ConfigError(
                    f"{source}: two guidance phases (guidance2_scale, switch_threshold) are not supported "
                    f"for {spec.id} with diffusers' {type(pipe).__name__}; set guidance_phases to 1"
                )
            pipe.register_modules(transformer_2=pipe.transformer)  # one model, guidance switch only
        if plan.boundary_ratio is not None:
            pipe.register_to_config(boundary_ratio=plan.boundary_ratio)
        self.plan = plan
        steps = values.steps
        scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
        scheduler.set_timesteps(steps, device="cpu")
        self.switch = switch_step([float(t) for t in scheduler.timesteps], plan)
        if not prepared.loras:
            return
        pipeline_class = type(pipe)
        weights = [read_lora(request.path, pipeline_class) for request in prepared.loras]
        schedules = []
        for request in prepared.loras:
            multiplier = parse_multiplier(request.multiplier, plan.phases, f"LoRA {request.source}", plan.model_switch_phase)
            request.strengths = multiplier.per_step(steps, self.switch)
            schedules.append(request.strengths)
        ranges = [(0, steps)]
        if len(transformers) == 2:
            split = steps if self.switch is None else self.switch
            ranges = [(0, split), (split, steps)]
        per_expert = []
        for model, (low, high) in zip(transformers, ranges):
            own = [
                [strengths[i] if low <= i < high else strengths[low] for i in range(steps)] if high > low else []
                for strengths in schedules
            ]
            applied = apply_to_transformer(model, weights, own)
            per_expert.append(applied)
            if applied.schedules:
                self.step_hooks.append(applied.set_step)
        for request in prepared.loras:
            self.applied.append(
                {
                    "file": str(request.path),
                    "origin": request.origin,
                    "multiplier": request.multiplier,
                    "strengths": request.strengths,
                }
            )
        for name, applied in zip(("transformer", "transformer_2"), per_expert):
            self.lora_layers[name] = {"fused": applied.fused, "adapters": applied.adapters}

    def experts_json(self, expert_steps: dict[str, list[int]]) -> dict[str, Any]:
        if self.plan is None or self.plan.boundary_ratio is None:
            result: dict[str, Any] = {"steps": expert_steps} if expert_steps else {}
            if self.lora_layers:
                result["lora_layers"] = self.lora_layers
            return result
        return {
            "two_experts": self.plan.two_experts,
            "boundary_ratio": self.plan.boundary_ratio,
            "switch_threshold": self.plan.switch_threshold,
            "switch_step": self.switch,
            "guidance_scale": self.plan.guidance_scale,
            "guidance2_scale": self.plan.guidance_scale_2,
            "steps": expert_steps,
            "lora_layers": self.lora_layers,
        }
