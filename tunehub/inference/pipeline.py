"""Architecture -> diffusers pipeline: base repo components + the finetune's transformer.

Two separate steps, so that a multi-process driver (CFG-parallel, context-parallel) can
reuse them: :func:`build_pipeline` makes a ready pipeline from a resolution (no
denoising), :func:`pipeline_inputs` turns checked settings into the pipeline's call
arguments, and :func:`denoise` runs the call with per-step progress events.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunehub.config import ATTENTIONS, Config  # ATTENTIONS re-exported for the CLI
from tunehub.errors import (
    ConfigError,
    HubAuthError,
    HubError,
    HubNotFoundError,
    InferenceError,
    OfflineError,
)
from tunehub.inference.settings import Effective

Progress = Callable[[dict[str, Any]], None]

OFFLOAD_MODES = ("none", "model", "group")
INT8_KERNELS = ("auto", "dequant", "fp8", "int8mm", "quanto")  # int8_linear.KERNELS + optimum-quanto's QLinear
CONFIGS_DIR = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class ArchSpec:
    """What tunehub needs to know per architecture beyond the registry's table."""

    id: str
    family: str  # "wan" | "hunyuan"
    pipeline: str  # diffusers pipeline class
    transformer: str  # diffusers transformer class
    base_repo: str  # default diffusers-layout repo for the other components
    needs_image: bool = False
    vace: bool = False
    fps: int = 16
    two_experts: bool = False  # Wan 2.2 A14B: high-noise `transformer` (URLs) + low-noise `transformer_2` (URLs2)
    image_pipeline: str | None = None  # takes an optional start image with this pipeline class (ti2v 5B)


ARCH_SPECS: dict[str, ArchSpec] = {
    spec.id: spec
    for spec in (
        ArchSpec("t2v", "wan", "WanPipeline", "WanTransformer3DModel", "Wan-AI/Wan2.1-T2V-14B-Diffusers"),
        ArchSpec("t2v_1.3B", "wan", "WanPipeline", "WanTransformer3DModel", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"),
        ArchSpec(
            "i2v", "wan", "WanImageToVideoPipeline", "WanTransformer3DModel",
            "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", needs_image=True,
        ),  # fmt: skip
        ArchSpec(
            "i2v_720p", "wan", "WanImageToVideoPipeline", "WanTransformer3DModel",
            "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers", needs_image=True,
        ),  # fmt: skip
        ArchSpec(
            "vace_14B", "wan", "WanVACEPipeline", "WanVACETransformer3DModel",
            "Wan-AI/Wan2.1-VACE-14B-diffusers", vace=True,
        ),  # fmt: skip
        ArchSpec(
            "vace_1.3B", "wan", "WanVACEPipeline", "WanVACETransformer3DModel",
            "Wan-AI/Wan2.1-VACE-1.3B-diffusers", vace=True,
        ),  # fmt: skip
        ArchSpec(
            "t2v_2_2", "wan", "WanPipeline", "WanTransformer3DModel",
            "Wan-AI/Wan2.2-T2V-A14B-Diffusers", two_experts=True,
        ),  # fmt: skip
        ArchSpec(
            "i2v_2_2", "wan", "WanImageToVideoPipeline", "WanTransformer3DModel",
            "Wan-AI/Wan2.2-I2V-A14B-Diffusers", needs_image=True, two_experts=True,
        ),  # fmt: skip
        ArchSpec(
            "ti2v_2_2", "wan", "WanPipeline", "WanTransformer3DModel",
            "Wan-AI/Wan2.2-TI2V-5B-Diffusers", fps=24, image_pipeline="WanImageToVideoPipeline",
        ),  # fmt: skip
        ArchSpec(
            "hunyuan", "hunyuan", "HunyuanVideoPipeline", "HunyuanVideoTransformer3DModel",
            "hunyuanvideo-community/HunyuanVideo", fps=24,
        ),  # fmt: skip
        ArchSpec(
            "hunyuan_i2v", "hunyuan", "HunyuanVideoImageToVideoPipeline", "HunyuanVideoTransformer3DModel",
            "hunyuanvideo-community/HunyuanVideo-I2V", needs_image=True, fps=24,
        ),  # fmt: skip
    )
}


def arch_spec(architecture: str) -> ArchSpec:
    from tunehub.errors import UnsupportedArchitectureError
    from tunehub.registry.architectures import require_generate

    try:
        require_generate(architecture)  # one line: the architecture and what tunehub can do with it
    except UnsupportedArchitectureError as exc:
        raise InferenceError(str(exc)) from None
    spec = ARCH_SPECS.get(architecture)
    if spec is None:
        raise InferenceError(f"architecture '{architecture}': the registry marks it generate=True but tunehub.inference has no pipeline spec for it")
    return spec


# ------------------------------------------------------------------ base repos


def base_repo_source(cfg: Config, architecture: str) -> str:
    """``[base_repos]`` entry for the architecture, else the official diffusers repo."""
    return cfg.base_repos.get(architecture) or arch_spec(architecture).base_repo


# The base repo's own transformer weights are never needed: the finetune replaces them.
_SKIP_PATTERNS = [
    "transformer/*.safetensors", "transformer/*.bin", "transformer/*.index.json",
    "transformer_2/*", "*.md", ".gitattributes", "*.png", "*.jpg", "*.mp4", "*.gif",
]  # fmt: skip


def fetch_base_repo(cfg: Config, architecture: str, progress: Progress | None = None) -> Path:
    """A local folder in diffusers layout: the configured folder, or a snapshot of the
    repo fetched with huggingface_hub from ``cfg.endpoint`` (so ``HF_ENDPOINT`` and
    ``tunehub hub serve`` work), without the repo's own transformer weights."""
    source = base_repo_source(cfg, architecture)
    folder = Path(source).expanduser()
    if not folder.is_absolute() and (cfg.home / folder).is_dir():
        folder = cfg.home / folder
    if folder.is_dir():
        if not (folder / "model_index.json").is_file():
            raise ConfigError(f"[base_repos] {architecture} = {source!r}: {folder} has no model_index.json")
        return folder
    if source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise ConfigError(f"[base_repos] {architecture} = {source!r}: no such folder")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if progress:
        progress({"status": "fetching base repo", "repo": source})
    if cfg.endpoint.rstrip("/") != "https://huggingface.co":
        os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
    try:
        path = snapshot_download(source, endpoint=cfg.endpoint, ignore_patterns=_SKIP_PATTERNS)
    except GatedRepoError:
        raise HubAuthError(f"base repo {source} at {cfg.endpoint} is gated: log in and accept its terms") from None
    except RepositoryNotFoundError:
        raise HubNotFoundError(
            f"base repo {source} not found at {cfg.endpoint} (or it is private: log in); "
            f"set [base_repos] {architecture} in tunehub.toml to a repo id or a local folder"
        ) from None
    except RevisionNotFoundError:
        raise HubNotFoundError(f"base repo {source}: revision not found at {cfg.endpoint}") from None
    except LocalEntryNotFoundError:
        raise OfflineError(f"base repo {source} is not in the local cache and the Hub cannot be reached") from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise HubAuthError(f"base repo {source} at {cfg.endpoint}: access denied ({status}); log in") from None
        raise HubError(f"base repo {source} at {cfg.endpoint}: {status or ''} {type(exc).__name__}") from None
    return Path(path)


def shipped_transformer_config(architecture: str) -> dict[str, Any]:
    """The transformer config tunehub ships for an architecture's real model size."""
    import json

    return json.loads((CONFIGS_DIR / architecture / "transformer" / "config.json").read_text(encoding="utf-8"))


def transformer_config(base_folder: Path, architecture: str) -> tuple[dict[str, Any], Path]:
    """The base repo's ``transformer/config.json`` when it has one, else the config
    tunehub ships for the real model size."""
    from tunehub.inference.transformer import read_config

    own = base_folder / "transformer" / "config.json"
    path = own if own.is_file() else CONFIGS_DIR / architecture / "transformer" / "config.json"
    return read_config(path), path


# ------------------------------------------------------------------ building


@dataclass
class BuiltPipeline:
    pipe: Any
    spec: ArchSpec
    dtype: str
    device: str
    offload: str
    base_folder: Path
    transformer_config: Path
    transformer_files: list[Path]
    int8_kernels: dict[str, int] = field(default_factory=dict)
    load_seconds: float = 0.0
    attention: str = "sdpa"  # the self-attention in use (fp8 falls back to sdpa with a note)
    notes: list[str] = field(default_factory=list)
    transformer2_files: list[Path] = field(default_factory=list)  # the low-noise expert (URLs2)
    # called with the index of the step about to run (LoRA strengths that change per step)
    before_step: list[Callable[[int], None]] = field(default_factory=list)
    # filled by denoise(): the steps each transformer ran ("transformer", "transformer_2")
    expert_steps: dict[str, list[int]] = field(default_factory=dict)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_finetune_transformer(
    base_folder: Path,
    architecture: str,
    transformer_files: list[Path],
    dtype: str,
    device: str,
    int8_kernel: str = "auto",
    progress: Progress | None = None,
) -> tuple[Any, Path]:
    """The finetune's transformer alone (what a multi-GPU rank without text encoder or VAE
    holds): the base repo's config (or the shipped one) + the original-layout files.
    int8 layers start with the exact ``dequant`` kernel (or quanto's QLinear); call
    ``set_int8_kernel`` once the model sits where it runs. Returns (model, config path)."""
    from tunehub.inference.transformer import load_transformer

    spec = arch_spec(architecture)
    config, config_path = transformer_config(base_folder, architecture)
    model_class = config.get("_class_name") or spec.transformer
    if progress:
        progress({"status": "loading transformer", "files": [str(p) for p in transformer_files]})
    initial_kernel = "quanto" if int8_kernel == "quanto" else "dequant"
    transformer = load_transformer(model_class, config, transformer_files, dtype, device, initial_kernel)
    return transformer, config_path


@contextlib.contextmanager
def _quiet_diffusers_loading() -> Iterator[None]:
    """No "Loading pipeline components" bars or accelerate notes: tunehub reports progress itself."""
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    try:
        yield
    finally:
        diffusers_logging.enable_progress_bar()
        diffusers_logging.set_verbosity(verbosity)


def build_pipeline(
    cfg: Config,
    architecture: str,
    transformer_files: list[Path],
    dtype: str = "bf16",
    device: str | None = None,
    offload: str = "none",
    int8_kernel: str = "auto",
    vae_tiling: bool = True,
    compile_blocks: bool = False,
    progress: Progress | None = None,
    attention: str = "sdpa",
    transformer2_files: list[Path] | None = None,
    with_image: bool = False,
    prepare_transformers: Callable[[Any, Any], None] | None = None,
) -> BuiltPipeline:
    """A ready diffusers pipeline: base repo components + transformer from ``transformer_files``
    (original layout: main file first, then modules such as VACE's) and, for the two-expert
    Wan 2.2 models, the low-noise ``transformer_2`` from ``transformer2_files``.

    ``with_image``: the architecture's image pipeline (ti2v 5B: one model, text or image to
    video). ``prepare_transformers(pipe, transformers)`` runs once the pipeline exists and
    before placement, kernels and compilation (LoRAs are applied there)."""
    import diffusers
    import torch

    from tunehub.inference.int8_linear import int8_layers
    from tunehub.inference.transformer import DTYPES

    spec = arch_spec(architecture)
    if offload not in OFFLOAD_MODES:
        raise ConfigError(f"offload must be one of {', '.join(OFFLOAD_MODES)}, got {offload!r}")
    if int8_kernel not in INT8_KERNELS:
        raise ConfigError(f"int8 kernel must be one of {', '.join(INT8_KERNELS)}, got {int8_kernel!r}")
    if attention not in ATTENTIONS:
        raise ConfigError(f"attention must be one of {', '.join(ATTENTIONS)}, got {attention!r}")
    device = default_device() if device in (None, "", "auto") else device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InferenceError("--device cuda asked but no CUDA device is available; use --device cpu")
    started = time.perf_counter()
    base_folder = fetch_base_repo(cfg, architecture, progress)
    # Without offload the transformer's tensors go straight to the device; with offload
    # it starts on the CPU, where the hooks expect every model.
    load_device = device if offload == "none" else "cpu"
    transformer, config_path = load_finetune_transformer(
        base_folder, architecture, transformer_files, dtype, load_device, int8_kernel, progress,
    )  # fmt: skip
    extra: dict[str, Any] = {}
    if spec.two_experts:
        if not transformer2_files:
            raise InferenceError(f"architecture '{architecture}' has two experts: the low-noise transformer (URLs2) is missing")
        extra["transformer_2"], _ = load_finetune_transformer(
            base_folder, architecture, transformer2_files, dtype, load_device, int8_kernel, progress,
        )  # fmt: skip
    elif transformer2_files:
        raise InferenceError(f"architecture '{architecture}' has one transformer; the definition lists URLs2")
    torch_dtype = DTYPES[dtype]
    component_dtypes: dict[str, Any] = {"default": torch_dtype}
    if spec.family == "wan":
        # Wan's VAE and CLIP image encoder are run in float32, as diffusers' examples do.
        component_dtypes.update(vae=torch.float32, image_encoder=torch.float32)
    if progress:
        progress({"status": "loading components", "base_repo": str(base_folder)})
    pipeline_class = getattr(diffusers, spec.image_pipeline if with_image and spec.image_pipeline else spec.pipeline)
    _ftfy_fallback(pipeline_class)
    try:
        with warnings.catch_warnings(), _quiet_diffusers_loading():
            # diffusers 0.42 renames torch_dtype to dtype; older ones only know torch_dtype
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            pipe = pipeline_class.from_pretrained(
                str(base_folder), transformer=transformer, torch_dtype=component_dtypes, **extra
            )
    except (OSError, ValueError, TypeError) as exc:
        raise InferenceError(f"base repo {base_folder} cannot build {spec.pipeline}: {exc}") from None
    pipe.set_progress_bar_config(disable=True)
    if vae_tiling and hasattr(pipe.vae, "enable_tiling"):
        pipe.vae.enable_tiling()
    transformers = [transformer, *extra.values()]
    if prepare_transformers is not None:
        prepare_transformers(pipe, transformers)
    place(pipe, device, offload)
    kernels: dict[str, int] = {}
    for model in transformers:
        if int8_kernel == "quanto":
            counts = {"quanto": sum(1 for m in model.modules() if type(m).__name__ == "QLinear")}
        elif any(True for _ in int8_layers(model)):
            from tunehub.inference.int8_linear import set_int8_kernel

            counts = set_int8_kernel(model, int8_kernel, device)
        else:
            counts = {}
        for kernel, count in counts.items():
            kernels[kernel] = kernels.get(kernel, 0) + count
    used_attention, notes = "sdpa", list[str]()
    for model in transformers:  # both experts get the same attention
        used_attention, model_notes = choose_attention(model, attention, device, progress)
        notes += [note for note in model_notes if note not in notes]
    if compile_blocks:
        from tunehub.inference.transformer import compile_transformer_blocks

        for model in transformers:
            compile_transformer_blocks(model)
    return BuiltPipeline(
        pipe=pipe,
        spec=spec,
        dtype=dtype,
        device=device,
        offload=offload,
        base_folder=base_folder,
        transformer_config=config_path,
        transformer_files=list(transformer_files),
        int8_kernels=kernels,
        load_seconds=time.perf_counter() - started,
        attention=used_attention,
        notes=notes,
        transformer2_files=list(transformer2_files or []),
    )


def choose_attention(transformer: Any, attention: str, device: str, progress: Progress | None = None) -> tuple[str, list[str]]:
    """Install ``attention`` in the transformer (before compiling it); where ``fp8`` cannot
    run, ``sdpa`` stays and a one-line note goes to ``progress``. (attention used, notes)
    ``sdpa`` too: on a GPU its q/k norms and rotation run fused."""
    from tunehub.inference.attention import set_attention

    used, note = set_attention(transformer, attention, device)
    if note and progress:
        progress({"status": "note", "message": note})
    return used, [note] if note else []


def _ftfy_fallback(pipeline_class: Any) -> None:
    """diffusers' Wan I2V pipeline calls ``ftfy.fix_text`` without checking that ftfy is
    installed (its t2v sibling checks and skips). Without ftfy, give that module the same
    skip so the prompt is cleaned the way WanPipeline cleans it."""
    import importlib
    import types

    try:
        import ftfy  # noqa: F401
    except ImportError:
        module = importlib.import_module(pipeline_class.__module__)
        if not hasattr(module, "ftfy"):
            module.ftfy = types.SimpleNamespace(fix_text=lambda text: text)  # type: ignore[attr-defined]


def place(pipe: Any, device: str, offload: str) -> None:
    """Move the pipeline to ``device`` whole (``none``), one model at a time (``model``),
    or that plus the transformer's blocks streamed from the CPU (``group``); see
    :mod:`tunehub.inference.offload` (pure torch, no accelerate needed)."""
    if offload == "none":
        pipe.to(device)
        return
    from tunehub.inference.offload import enable_offload

    enable_offload(pipe, device, offload)


# ------------------------------------------------------------------ running


def set_flow_shift(pipe: Any, flow_shift: float) -> None:
    """Put the definition's flow shift into the scheduler (Wan's UniPC: ``flow_shift``;
    flow-match Euler: ``shift``)."""
    config = pipe.scheduler.config
    if "flow_shift" in config:
        pipe.scheduler = type(pipe.scheduler).from_config(config, flow_shift=flow_shift)
    elif "shift" in config:
        pipe.scheduler = type(pipe.scheduler).from_config(config, shift=flow_shift)


@dataclass
class Inputs:
    """Conditioning files given by the caller."""

    image: Path | None = None
    video: Path | None = None
    mask: Path | None = None


def pipeline_frames(built: BuiltPipeline, frames: int) -> int:
    """Frames to ask the pipeline for so that ``frames`` come out: HunyuanVideo I2V with
    latent concatenation decodes 4 extra leading frames and drops them."""
    transformer = built.pipe.transformer
    if getattr(transformer.config, "image_condition_type", None) == "latent_concat" and built.spec.needs_image:
        return frames + 4
    return frames


def pipeline_inputs(built: BuiltPipeline, values: Effective, inputs: Inputs, phases: Any = None) -> dict[str, Any]:
    """The keyword arguments of the pipeline call for these settings (``phases``: a
    :class:`tunehub.inference.phases.PhasePlan`, for the second guidance scale)."""
    import torch

    from tunehub.inference.video import load_frames, load_image

    spec = built.spec
    size = (values.width, values.height)
    kwargs: dict[str, Any] = dict(
        prompt=values.prompt,
        height=values.height,
        width=values.width,
        num_frames=pipeline_frames(built, values.frames),
        num_inference_steps=values.steps,
        # A CPU generator gives the same noise whatever the device: same seed, same video.
        generator=torch.Generator(device="cpu").manual_seed(values.seed),
        output_type="np",
    )
    if spec.family == "wan":
        kwargs.update(negative_prompt=values.negative_prompt or None, guidance_scale=values.guidance_scale)
        if phases is not None and phases.boundary_ratio is not None:
            kwargs.update(guidance_scale=phases.guidance_scale, guidance_scale_2=phases.guidance_scale_2)
    else:
        # HunyuanVideo is guidance-distilled: the pipeline's guidance_scale is WanGP's
        # embedded_guidance_scale; WanGP's guidance_scale > 1 means true CFG.
        kwargs.update(guidance_scale=values.embedded_guidance_scale or 6.0)
        if values.guidance_scale > 1.0:
            kwargs.update(true_cfg_scale=values.guidance_scale, negative_prompt=values.negative_prompt or " ")
    if spec.needs_image:
        if inputs.image is None:
            raise ConfigError(f"architecture '{spec.id}' needs a start image (--image PATH)")
        kwargs["image"] = load_image(inputs.image, size)
    elif inputs.image is not None and spec.image_pipeline:
        kwargs["image"] = load_image(inputs.image, size)
    elif inputs.image is not None:
        raise ConfigError(f"architecture '{spec.id}' takes no start image (--image is for i2v models)")
    if spec.vace:
        if inputs.video is not None:
            kwargs["video"] = load_frames(inputs.video, size, values.frames)
        if inputs.mask is not None:
            kwargs["mask"] = load_frames(inputs.mask, size, values.frames, mode="L")
    elif inputs.video is not None or inputs.mask is not None:
        raise ConfigError(f"architecture '{spec.id}' takes no control video or mask (VACE models do)")
    return kwargs


def denoise(built: BuiltPipeline, kwargs: dict[str, Any], progress: Progress | None = None) -> Any:
    """Run the pipeline call; ``progress`` gets one event per denoising step. Returns the
    frames (F, H, W, 3) floats in [0, 1]."""
    import torch

    total = int(kwargs.get("num_inference_steps", 0))
    started = time.perf_counter()
    current = {"step": 0}
    built.expert_steps = {}
    hooks = []
    seen: set[int] = set()
    for name in ("transformer", "transformer_2"):
        model = getattr(built.pipe, name, None)
        if model is None or id(model) in seen:
            continue
        seen.add(id(model))

        def record(module: Any, args: Any, _name: str = name) -> None:
            steps = built.expert_steps.setdefault(_name, [])
            if not steps or steps[-1] != current["step"]:
                steps.append(current["step"])

        hooks.append(model.register_forward_pre_hook(record))
    for hook in built.before_step:
        hook(0)

    def on_step_end(pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        current["step"] = step + 1
        for hook in built.before_step:
            hook(step + 1)
        if progress:
            progress(
                {
                    "status": "denoising",
                    "completed": step + 1,
                    "total": total,
                    "elapsed": round(time.perf_counter() - started, 3),
                }
            )
        return callback_kwargs

    with torch.inference_mode():
        try:
            output = built.pipe(**kwargs, callback_on_step_end=on_step_end)
        except torch.cuda.OutOfMemoryError:
            raise InferenceError(
                "out of GPU memory: try --offload group (or model), a smaller --resolution or fewer --frames"
            ) from None
        finally:
            for handle in hooks:
                handle.remove()
    frames = output.frames[0]
    import numpy as np

    if not np.isfinite(np.asarray(frames)).all():
        raise InferenceError(
            "the model produced NaN or infinite values; check that the weights match the "
            "architecture and try another dtype (--dtype) or int8 kernel"
        )
    if progress:
        progress({"status": "decoded", "frames": int(len(frames))})
    return frames
