"""The base architectures a finetune can derive from (definitions.md, "Architectures")."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Architecture:
    id: str
    label: str
    family: str  # "wan" or "hunyuan": decides key layout, dtype rules, pipeline family
    pipeline: str  # diffusers pipeline class name
    bf16_only: bool


ARCHITECTURES: dict[str, Architecture] = {
    arch.id: arch
    for arch in (
        Architecture("t2v", "Wan 2.1 text-to-video 14B", "wan", "WanPipeline", False),
        Architecture("t2v_1.3B", "Wan 2.1 text-to-video 1.3B", "wan", "WanPipeline", False),
        Architecture("i2v", "Wan 2.1 image-to-video 480p 14B", "wan", "WanImageToVideoPipeline", False),
        Architecture("i2v_720p", "Wan 2.1 image-to-video 720p 14B", "wan", "WanImageToVideoPipeline", False),
        Architecture("vace_14B", "Wan 2.1 VACE 14B", "wan", "WanVACEPipeline", False),
        Architecture("vace_1.3B", "Wan 2.1 VACE 1.3B", "wan", "WanVACEPipeline", False),
        Architecture("t2v_2_2", "Wan 2.2 text-to-video A14B (two experts)", "wan", "WanPipeline", False),
        Architecture("i2v_2_2", "Wan 2.2 image-to-video A14B (two experts)", "wan", "WanImageToVideoPipeline", False),
        Architecture("ti2v_2_2", "Wan 2.2 text/image-to-video 5B", "wan", "WanPipeline", False),
        Architecture("hunyuan", "HunyuanVideo text-to-video", "hunyuan", "HunyuanVideoPipeline", True),
        Architecture(
            "hunyuan_i2v", "HunyuanVideo image-to-video", "hunyuan", "HunyuanVideoImageToVideoPipeline", True
        ),
    )
}

# Ids of LTX Video models in WanGP: named so that the error can say why they are refused.
LTX_IDS = frozenset({"ltxv", "ltxv_13B", "ltxv_13B_distilled", "ltxv_distilled", "ltx_video"})


def is_ltx(architecture: str) -> bool:
    return architecture in LTX_IDS or architecture.lower().startswith("ltx")
