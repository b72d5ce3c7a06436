"""The weight-file naming convention: what a name says, and what quantizing it is called."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tunehub.registry.urls import base_name

__all__ = ["VariantInfo", "parse_variant_name", "quantized_filename", "base_name"]

# gguf quantization types as they appear in file names: q4_k_m, q6_k, q8_0, iq3_xxs, bf16 gguf ...
_GGUF_TYPE = re.compile(r"(?<![a-z0-9])(i?q[1-8](?:_[a-z0-9]+)*)(?![a-z0-9])")
# nunchaku's SVDQuant files: svdq-int4_r32-..., ..._r128_fp4, ..._r256_int4
_NUNCHAKU = re.compile(r"svdq|_r\d+_(?:fp4|int4)|(?:fp4|int4)_r\d+")


@dataclass(frozen=True)
class VariantInfo:
    """What a file name tells.

    ``dtype``: "bf16"/"fp16"/None, read as WanGP's dtype filter reads it (case-sensitive,
    lower or upper case). ``quantization``: "int8"/"fp8"/None, the tokens WanGP's pick looks
    for. ``kind``: what the file *is*, for people: "16-bit", "int8", "fp8", "fp8 scaled",
    "nvfp4", "gguf", "int4 (nunchaku)", "fp4 (nunchaku)", "nf4", "fp32".
    """

    dtype: str | None
    quantization: str | None
    kind: str = "16-bit"
    detail: str = ""  # gguf: the quantization type (q4_k_m ...)

    @property
    def quantized(self) -> bool:
        """Anything but a 16/32-bit file: no advice to quantize it."""
        return self.kind not in ("16-bit", "fp32")

    @property
    def label(self) -> str:
        kind = f"{self.kind} {self.detail}" if self.detail else self.kind
        return f"{kind} {self.dtype}" if self.dtype and self.kind not in ("gguf",) else kind


def _kind(lowered: str) -> tuple[str, str]:
    if lowered.endswith(".gguf"):
        match = _GGUF_TYPE.search(lowered[: -len(".gguf")])
        return "gguf", match.group(1) if match else ""
    if "nvfp4" in lowered:
        return "nvfp4", ""
    if _NUNCHAKU.search(lowered):
        return ("int4 (nunchaku)" if "int4" in lowered else "fp4 (nunchaku)"), ""
    if "int8" in lowered:
        return "int8", ""
    if "fp8" in lowered:
        return ("fp8 scaled" if "scaled" in lowered else "fp8"), ""
    if "nf4" in lowered:
        return "nf4", ""
    if "int4" in lowered:
        return "int4", ""
    if "fp4" in lowered:
        return "fp4", ""
    match = _GGUF_TYPE.search(lowered)
    if match and "gguf" in lowered:
        return "gguf", match.group(1)
    if "fp32" in lowered:
        return "fp32", ""
    return "16-bit", ""


def parse_variant_name(name: str) -> VariantInfo:
    """Read dtype, WanGP's quantization token and the file's kind from a file name.

    Quantization tokens are found case-insensitively (WanGP lower-cases for them); the dtype
    case-sensitively in lower or upper case (WanGP's dtype filter). ``mbf16`` counts as ``bf16``.
    """
    file_name = base_name(name)
    lowered = file_name.lower()
    quantization = "int8" if "int8" in lowered else "fp8" if "fp8" in lowered else None
    dtype = None
    for candidate in ("bf16", "fp16"):
        if candidate in file_name or candidate.upper() in file_name:
            dtype = candidate
            break
    kind, detail = _kind(lowered)
    return VariantInfo(dtype, quantization, kind, detail)


def quantized_filename(name: str, dtype: str) -> str:
    """The int8 file name WanGP's --save-quantized writes for the 16-bit file ``name``.

    WanGP's rule, quirks included: for bf16 every ``fp16`` and every ``FP16`` becomes ``bf16``;
    for fp16 every ``bf16`` becomes ``fp16`` and every ``BF16`` becomes ``bf16``. Then every
    occurrence of the first of ``_mfp16``, ``_fp16``, ``_mbf16``, ``_bf16`` found becomes
    ``_quanto_<token>_int8``; with none, ``_quanto_int8`` goes before the extension.
    """
    if dtype not in ("bf16", "fp16"):
        raise ValueError(f"dtype must be 'bf16' or 'fp16', got {dtype!r}")
    file_name = base_name(name)
    if dtype == "bf16":
        file_name = file_name.replace("fp16", "bf16").replace("FP16", "bf16")
    else:
        file_name = file_name.replace("bf16", "fp16").replace("BF16", "bf16")
    for token in ("mfp16", "fp16", "mbf16", "bf16"):
        if f"_{token}" in file_name:
            file_name = file_name.replace(f"_{token}", f"_quanto_{token}_int8")
            break
    if "quanto" in file_name:
        return file_name
    stem, dot, ext = file_name.rpartition(".")
    if not dot:
        return f"{file_name}_quanto_int8"
    return f"{stem}_quanto_int8.{ext}"
