"""Which layers get quantized: the one table, per architecture family and key layout.

WanGP quantizes the linear layers of the transformer blocks (the "tower") and keeps
everything else (embeddings, heads, norms, modulation tables, biases) as it was. A
file's keys tell its layout; each layout lists the block prefixes and the linear
modules inside a block. A tensor is quantized when it is ``<module>.weight`` of such
a module and is a 2-D floating tensor.

No torch here: the plan is made from the safetensors header alone.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tunehub.errors import QuantizationError

__all__ = [
    "FAMILY_LAYOUTS",
    "Layout",
    "LAYOUTS",
    "detect_layout",
    "layout_for_architecture",
    "select_layers",
    "layer_selector",
]


@dataclass(frozen=True)
class Layout:
    """A key layout: where its transformer blocks are and which of their modules are linear."""

    id: str
    family: str  # "wan" or "hunyuan"
    label: str
    # A key belongs to this layout when it matches this (used to detect the layout).
    marker: str
    # Module names (key without ".weight") of the linear layers that get quantized.
    linear_modules: str

    def is_quantized_module(self, module_name: str) -> bool:
        return re.fullmatch(self.linear_modules, module_name) is not None


_WAN_ATTN = r"(q|k|v|o|k_img|v_img)"
_WAN_DIFFUSERS_ATTN = r"(to_q|to_k|to_v|to_out\.0|add_k_proj|add_v_proj)"
_HUNYUAN_DOUBLE = (
    r"(img_mod\.linear|img_attn_qkv|img_attn_proj|img_mlp\.fc1|img_mlp\.fc2"
    r"|txt_mod\.linear|txt_attn_qkv|txt_attn_proj|txt_mlp\.fc1|txt_mlp\.fc2)"
)
_HUNYUAN_DIFFUSERS_DOUBLE = (
    r"(norm1\.linear|norm1_context\.linear|attn\.(to_q|to_k|to_v|add_q_proj|add_k_proj|add_v_proj"
    r"|to_out\.0|to_add_out)|ff\.net\.0\.proj|ff\.net\.2|ff_context\.net\.0\.proj|ff_context\.net\.2)"
)
_HUNYUAN_DIFFUSERS_SINGLE = r"(norm\.linear|attn\.(to_q|to_k|to_v)|proj_mlp|proj_out)"

# Order matters for detection: the first layout with a matching key wins.
LAYOUTS: tuple[Layout, ...] = (
    Layout(
        id="wan",
        family="wan",
        label="Wan 2.1 / 2.2 (14B experts, 5B), original layout (blocks.N.self_attn.q, ...)",
        marker=r"(vace_)?blocks\.\d+\.(self_attn|cross_attn|ffn\.0)\..*",
        linear_modules=(
            rf"(vace_)?blocks\.\d+\.((self_attn|cross_attn)\.{_WAN_ATTN}|ffn\.(0|2)|before_proj|after_proj)"
        ),
    ),
    Layout(
        id="wan_diffusers",
        family="wan",
        label="Wan 2.1 / 2.2, diffusers layout (blocks.N.attn1.to_q, ...)",
        marker=r"(vace_)?blocks\.\d+\.(attn1|attn2|ffn\.net)\..*",
        linear_modules=(
            rf"(vace_)?blocks\.\d+\.((attn1|attn2)\.{_WAN_DIFFUSERS_ATTN}|ffn\.net\.(0\.proj|2)|proj_in|proj_out)"
        ),
    ),
    Layout(
        id="hunyuan",
        family="hunyuan",
        label="HunyuanVideo, original layout (double_blocks.N / single_blocks.N)",
        marker=r"(double_blocks|single_blocks)\.\d+\..*",
        linear_modules=(
            rf"double_blocks\.\d+\.{_HUNYUAN_DOUBLE}|single_blocks\.\d+\.(linear1|linear2|modulation\.linear)"
        ),
    ),
    Layout(
        id="hunyuan_diffusers",
        family="hunyuan",
        label="HunyuanVideo, diffusers layout (transformer_blocks.N / single_transformer_blocks.N)",
        marker=r"(transformer_blocks|single_transformer_blocks)\.\d+\..*",
        linear_modules=(
            rf"transformer_blocks\.\d+\.{_HUNYUAN_DIFFUSERS_DOUBLE}"
            rf"|single_transformer_blocks\.\d+\.{_HUNYUAN_DIFFUSERS_SINGLE}"
        ),
    ),
)

LAYOUTS_BY_ID = {layout.id: layout for layout in LAYOUTS}

# The layer plan per architecture family (the registry's table says which architectures
# tunehub quantizes: tunehub.registry.architectures, ``quantize``). Wan 2.2 keeps Wan 2.1's
# block structure: the A14B high- and low-noise experts are t2v-shaped (i2v_2_2 without the
# CLIP image branch, k_img/v_img), the 5B has 30 blocks of width 3072; so the "wan" plan
# names exactly their block linears (tests/quant/test_wan_2_2.py checks it against the
# diffusers models, and byte for byte against optimum-quanto). VACE modules (vace_blocks.N,
# before_proj / after_proj) are in the same plan.
FAMILY_LAYOUTS: dict[str, str] = {"wan2.1": "wan", "wan2.2": "wan", "hunyuan": "hunyuan"}


def layout_for_architecture(architecture: str) -> Layout | None:
    """The layer plan for an architecture's original-layout files (None: not quantized by tunehub)."""
    from tunehub.registry.architectures import architecture as architecture_row

    row = architecture_row(architecture)
    layout_id = FAMILY_LAYOUTS.get(row.family) if row.quantize else None
    return LAYOUTS_BY_ID[layout_id] if layout_id else None


def detect_layout(keys: Iterable[str]) -> Layout | None:
    """The layout whose block keys appear in ``keys``, or None."""
    key_list = list(keys)
    for layout in LAYOUTS:
        marker = re.compile(layout.marker)
        if any(marker.fullmatch(key) for key in key_list):
            return layout
    return None


def _is_float_dtype(safetensors_dtype: str) -> bool:
    return safetensors_dtype in ("BF16", "F16", "F32", "F64")


def layer_selector(patterns: str | Sequence[str] | None, layout: Layout | None):
    """A predicate ``module_name -> bool``: the user's fnmatch patterns, else the layout's table."""
    if patterns:
        pattern_list = [p.strip() for p in ([patterns] if isinstance(patterns, str) else patterns)]
        pattern_list = [p for part in pattern_list for p in part.split(",") if p.strip()]
        return lambda name: any(fnmatch.fnmatchcase(name, pattern) for pattern in pattern_list)
    if layout is None:
        return None
    return layout.is_quantized_module


def select_layers(
    tensors: Sequence[tuple[str, str, Sequence[int]]],
    patterns: str | Sequence[str] | None = None,
    *,
    source: str = "the file",
) -> tuple[list[str], Layout | None]:
    """The module names to quantize among ``(key, dtype, shape)`` entries, and the layout seen.

    With ``patterns`` (fnmatch, comma-separated or a list, matched against module names
    like ``blocks.0.self_attn.q``) the table is not used. Only 2-D floating
    ``<module>.weight`` tensors are ever quantized.
    """
    keys = [key for key, _, _ in tensors]
    layout = detect_layout(keys)
    selector = layer_selector(patterns, layout)
    if selector is None:
        raise QuantizationError(
            f"{source}: cannot tell which layers to quantize: its keys match none of the known layouts "
            f"({', '.join(layout.id for layout in LAYOUTS)}); pass --layers PATTERN "
            f"(for example --layers 'blocks.*')"
        )
    modules = []
    for key, dtype, shape in tensors:
        if not key.endswith(".weight") or len(shape) != 2 or not _is_float_dtype(dtype):
            continue
        module = key[: -len(".weight")]
        if selector(module):
            modules.append(module)
    if not modules:
        what = f"the pattern(s) {patterns!r}" if patterns else f"the {layout.id} layout's block linears"
        raise QuantizationError(f"{source}: no 2-D floating '<module>.weight' tensor matches {what}")
    return modules, layout
