"""Generation from a definition through diffusers pipelines.

``generate(cfg, registry, id, **settings) -> GenerateResult`` is the entry point; the
parts (pipeline building, denoising, transformer loading, int8 kernels) live in their
own modules. Imports are lazy: importing this package does not import torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GenerateResult", "generate"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tunehub.inference import generation as _generation

        return getattr(_generation, name)
    raise AttributeError(f"module 'tunehub.inference' has no attribute {name!r}")
