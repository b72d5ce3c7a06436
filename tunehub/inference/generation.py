"""``generate(cfg, registry, id, **settings)``: one video from a definition."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunehub.config import Config
from tunehub.errors import ConfigError, InferenceError
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
    missing = [choice for choice in files if not choice.present]
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
    return Prepared(definition, resolution, spec, files, merged, values, inputs, video_path)


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
) -> GenerateResult:
    """Write the video and the settings used beside it; the one-process and multi-GPU paths end here."""
    values = prepared.values
    video_path = prepared.video_path or reserve_output(cfg.outputs_dir, definition_id, values.seed)
    write_mp4(frames, video_path, fps=prepared.spec.fps)
    exported = export_settings(prepared.merged, definition_id, prepared.resolution.transformer.source)
    settings_file = write_settings(video_path, exported)
    if progress:
        progress({"status": "done", "video": str(video_path), "settings": str(settings_file)})
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
    ``cfg.outputs_dir``; the settings used go beside it (``clip.mp4`` -> ``clip.json``).
    """
    if attention is None:
        attention = cfg.generate.get("attention", "sdpa")
    if gpus is not None and str(gpus).strip() != "1":
        from tunehub.inference.parallel import generate_parallel

        return generate_parallel(
            cfg, registry, definition_id, gpus=gpus, parallel=parallel, image=image, video=video, mask=mask,
            out=out, device=device, offload=offload, quantization=quantization, dtype=dtype,
            int8_kernel=int8_kernel, vae_tiling=vae_tiling, compile_blocks=compile_blocks, progress=progress,
            attention=attention, **settings,
        )  # fmt: skip
    prepared = prepare(registry, definition_id, quantization, dtype, settings, image, video, mask, out)
    resolution, files, values = prepared.resolution, prepared.files, prepared.values
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
    )
    set_flow_shift(built.pipe, values.flow_shift)
    kwargs = pipeline_inputs(built, values, prepared.inputs)
    started = time.perf_counter()
    frames = denoise(built, kwargs, progress)
    return finish(
        cfg, definition_id, prepared, frames,
        device=built.device, int8_kernels=built.int8_kernels, load_seconds=built.load_seconds,
        denoise_seconds=time.perf_counter() - started, progress=progress, attention=built.attention,
    )  # fmt: skip
