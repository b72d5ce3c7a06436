"""Original Wan / HunyuanVideo key layout -> diffusers layout, derived from diffusers itself.

diffusers' single-file loading converts a checkpoint with a per-class function
(``SINGLE_FILE_LOADABLE_CLASSES[cls]["checkpoint_mapping_fn"]``) that renames keys and
splits or reorders fused tensors along dim 0. Rather than keep a second hand-written
mapping, we run that very function once on *probes*: 1-D float64 tensors whose values
encode (source key, source row). What comes out says, for every diffusers key, which
original key it takes and which rows. The plan is then applied to the real tensors one
at a time (read lazily from the safetensors file), to 16-bit weights as to quanto's int8
``_data``/``_scale`` pairs, which a plain conversion cannot split (its scalar
``input_scale`` buffers break ``chunk``).

One quirk of diffusers is handled here: the HunyuanVideo converter splits the fused
``single_blocks.N.linear1`` with a hard-coded hidden size of 3072 (the real model's). For
other sizes (tiny test models) the probe is padded so the split lands where it should.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

from tunehub.errors import InferenceError

KEY_STRIDE = 1 << 24  # probe value = key index * KEY_STRIDE + row
_PAD = -1.0
_HUNYUAN_DIFFUSERS_HIDDEN = 3072
_LINEAR1 = re.compile(r"(^|\.)single_blocks\.\d+\.linear1\.(weight|bias)$")


@dataclass(frozen=True)
class Piece:
    """Where one diffusers tensor comes from: ``source`` key, rows ``start:stop`` or an
    explicit ``index`` (None for the whole tensor)."""

    source: str
    start: int | None = None
    stop: int | None = None
    index: tuple[int, ...] | None = None

    def take(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.index is not None:
            return tensor.index_select(0, torch.tensor(self.index, dtype=torch.long))
        if self.start is not None:
            return tensor[self.start : self.stop]
        return tensor


def mapping_function(model_class: str) -> Any:
    """diffusers' own checkpoint converter for a transformer class name."""
    from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES

    entry = SINGLE_FILE_LOADABLE_CLASSES.get(model_class)
    if entry is None:
        raise InferenceError(f"diffusers has no single-file conversion for {model_class}")
    return entry["checkpoint_mapping_fn"]


def _probe(index: int, rows: int, key: str, hunyuan_hidden: int | None) -> torch.Tensor:
    values = torch.arange(rows, dtype=torch.float64) + float(index * KEY_STRIDE)
    if hunyuan_hidden is None or hunyuan_hidden == _HUNYUAN_DIFFUSERS_HIDDEN or not _LINEAR1.search(key):
        return values
    if hunyuan_hidden > _HUNYUAN_DIFFUSERS_HIDDEN:
        raise InferenceError(f"{key}: hidden size {hunyuan_hidden} is larger than diffusers' converter allows")
    # q, k, v (hidden rows each) padded to 3072, then the mlp rows: diffusers' split sizes.
    pad = torch.full((_HUNYUAN_DIFFUSERS_HIDDEN - hunyuan_hidden,), _PAD, dtype=torch.float64)
    parts = []
    for part in range(3):
        parts += [values[part * hunyuan_hidden : (part + 1) * hunyuan_hidden], pad]
    parts.append(values[3 * hunyuan_hidden :])
    return torch.cat(parts)


def conversion_plan(
    model_class: str, shapes: dict[str, tuple[int, ...]], hunyuan_hidden: int | None = None
) -> dict[str, Piece]:
    """For each diffusers key, the original key and rows it is made of.

    ``shapes`` maps original keys to their shapes (only dim 0 matters: every split
    diffusers does is along dim 0). ``hunyuan_hidden`` is the transformer's hidden size
    (heads x head dim) for HunyuanVideo, to undo the hard-coded 3072.
    """
    convert = mapping_function(model_class)
    names = list(shapes)
    probes: dict[str, torch.Tensor] = {}
    for index, name in enumerate(names):
        shape = shapes[name]
        if len(shape) == 0:
            probes[name] = torch.tensor(float(index * KEY_STRIDE), dtype=torch.float64)
        else:
            probes[name] = _probe(index, shape[0], name, hunyuan_hidden)
    converted = convert(probes)
    plan: dict[str, Piece] = {}
    for new_key, probe in converted.items():
        if probe is None:
            continue
        values = probe.reshape(-1)
        values = values[values >= 0].to(torch.long)
        sources = torch.unique(values // KEY_STRIDE)
        if len(sources) != 1:
            raise InferenceError(f"diffusers' conversion mixes several original tensors into {new_key}")
        source = names[int(sources[0])]
        rows = values % KEY_STRIDE
        full = shapes[source][0] if shapes[source] else 1
        if probe.dim() == 0 or (len(rows) == full and torch.equal(rows, torch.arange(full))):
            plan[new_key] = Piece(source)
        elif len(rows) and torch.equal(rows, torch.arange(int(rows[0]), int(rows[0]) + len(rows))):
            plan[new_key] = Piece(source, int(rows[0]), int(rows[0]) + len(rows))
        else:
            plan[new_key] = Piece(source, index=tuple(int(r) for r in rows))
    return plan


QUANT_SUFFIXES = (".weight._data", ".weight._scale", ".input_scale", ".output_scale")


def split_quantized_keys(keys: list[str]) -> tuple[list[str], list[str]]:
    """(names of quantized modules, remaining plain keys) of an int8 file's key list."""
    modules = sorted({key[: -len(".weight._data")] for key in keys if key.endswith(".weight._data")})
    quantized = set(modules)
    plain = []
    for key in keys:
        owner = next((key[: -len(s)] for s in QUANT_SUFFIXES if key.endswith(s)), None)
        if owner is None or owner not in quantized:
            plain.append(key)
    return modules, plain


@dataclass
class QuantizedPlan:
    """The conversion of an int8 file: plain keys as usual, quantized modules renamed."""

    plain: dict[str, Piece]  # diffusers key -> piece of an original plain tensor
    modules: dict[str, tuple[str, Piece]]  # diffusers module -> (original module, rows of its weight)


def quantized_conversion_plan(
    model_class: str, shapes: dict[str, tuple[int, ...]], hunyuan_hidden: int | None = None
) -> QuantizedPlan:
    """Plan for a file holding quanto int8 layers: each quantized module ``m`` is probed as
    a plain ``m.weight`` of the int8 data's shape, so fused layers split the same way."""
    modules, plain_keys = split_quantized_keys(list(shapes))
    probe_shapes = {key: shapes[key] for key in plain_keys}
    weight_of = {}
    for module in modules:
        probe_shapes[f"{module}.weight"] = shapes[f"{module}.weight._data"]
        weight_of[f"{module}.weight"] = module
    plan = conversion_plan(model_class, probe_shapes, hunyuan_hidden)
    result = QuantizedPlan(plain={}, modules={})
    for new_key, piece in plan.items():
        if piece.source in weight_of:
            if not new_key.endswith(".weight"):
                raise InferenceError(f"diffusers renamed quantized weight {piece.source} to {new_key}")
            result.modules[new_key[: -len(".weight")]] = (weight_of[piece.source], piece)
        else:
            result.plain[new_key] = piece
    return result


_WAN_INVERSE = [
    # (diffusers fragment, original fragment), applied in order; the inverse of
    # diffusers' convert_wan_transformer_to_diffusers, checked by the round-trip test.
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("condition_embedder.image_embedder.norm1", "img_emb.proj.0"),
    ("condition_embedder.image_embedder.ff.net.0.proj", "img_emb.proj.1"),
    ("condition_embedder.image_embedder.ff.net.2", "img_emb.proj.3"),
    ("condition_embedder.image_embedder.norm2", "img_emb.proj.4"),
    ("attn2", "cross_attn"),
    ("attn1", "self_attn"),
    (".to_out.0.", ".o."),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    (".add_k_proj.", ".k_img."),
    (".add_v_proj.", ".v_img."),
    (".norm_added_k.", ".norm_k_img."),
    ("ffn.net.0.proj", "ffn.0"),
    ("ffn.net.2", "ffn.2"),
]


def wan_diffusers_to_original(state: dict[str, Any]) -> dict[str, Any]:
    """Wan diffusers key layout -> the original (WanGP) layout, same tensors.

    The inverse of diffusers' ``convert_wan_transformer_to_diffusers`` for the 2.1 models
    (t2v, i2v, VACE), checked by the round-trip tests: used to write test files and the
    benchmark's int8 file, and to export a diffusers-layout finetune to WanGP's layout."""
    out = {}
    for key, tensor in state.items():
        new = key
        for diffusers_part, original_part in _WAN_INVERSE:
            new = new.replace(diffusers_part, original_part)
        if new == "scale_shift_table":
            new = "head.modulation"
        elif new.startswith("proj_out."):
            new = "head.head." + new[len("proj_out.") :]
        elif new.startswith("vace_blocks."):
            new = new.replace(".proj_in.", ".before_proj.").replace(".proj_out.", ".after_proj.")
        if new.startswith(("blocks.", "vace_blocks.")):
            new = new.replace(".scale_shift_table", ".modulation")
            # diffusers swaps Wan's norm2/norm3 (cross-attention norm vs ffn norm)
            new = re.sub(r"\.norm([23])\.", lambda m: ".norm" + ("3" if m.group(1) == "2" else "2") + ".", new)
        out[new] = tensor
    return out
