"""Generation from a definition through diffusers pipelines.

``generate(cfg, registry, id, *, image=, video=, mask=, out=, device=, offload=,
quantization=, dtype=, int8_kernel=, vae_tiling=, progress=, **settings) -> GenerateResult``
is the entry point; ``settings`` are WanGP keys (``prompt``, ``resolution``,
``video_length``, ``num_inference_steps``, ``guidance_scale``, ``flow_shift``, ``seed``...).

``progress(event)`` receives dicts, in this order:
``{"status": "fetching base repo", "repo"}`` (only when fetched from a Hub),
``{"status": "loading transformer", "files"}``, ``{"status": "loading components", "base_repo"}``,
one ``{"status": "denoising", "completed", "total", "elapsed"}`` per step,
``{"status": "decoded", "frames"}``, ``{"status": "done", "video", "settings"}``.

Modules: ``pipeline`` (architecture -> pipeline; :func:`build_pipeline`,
:func:`pipeline_inputs` and :func:`denoise` are separate so a multi-process driver can
reuse them), ``transformer`` (original-layout file -> diffusers model, 16-bit or int8),
``convert`` (the key plan derived from diffusers' converter), ``int8_linear`` (kernels),
``offload``, ``settings``, ``video``. Imports are lazy: importing this package does not
import torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GenerateResult", "generate"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tunehub.inference import generation as _generation

        return getattr(_generation, name)
    raise AttributeError(f"module 'tunehub.inference' has no attribute {name!r}")
