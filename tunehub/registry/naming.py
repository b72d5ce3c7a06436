"""The weight-file naming convention: what a name says, and what quantizing it is called."""

from __future__ import annotations

from dataclasses import dataclass

from tunehub.hub.urls import base_name

__all__ = ["VariantInfo", "parse_variant_name", "quantized_filename", "base_name"]


@dataclass(frozen=True)
class VariantInfo:
    """What a file name tells: dtype ("bf16"/"fp16"/None) and quantization ("int8"/"fp8"/None)."""

    dtype: str | None
    quantization: str | None

    @property
    def label(self) -> str:
        quant = self.quantization or "16-bit"
        return f"{quant} {self.dtype}" if self.dtype else quant


def parse_variant_name(name: str) -> VariantInfo:
    """Read dtype and quantization from a file name, as WanGP's selection sees them.

    Quantization is found case-insensitively (WanGP lower-cases for it); the dtype
    case-sensitively in lower or upper case (WanGP's dtype filter). ``mbf16`` counts
    as ``bf16``.
    """
    file_name = base_name(name)
    lowered = file_name.lower()
    quantization = "int8" if "int8" in lowered else "fp8" if "fp8" in lowered else None
    dtype = None
    for candidate in ("bf16", "fp16"):
        if candidate in file_name or candidate.upper() in file_name:
            dtype = candidate
            break
    return VariantInfo(dtype, quantization)


def quantized_filename(name: str, dtype: str) -> str:
    """The int8 file name WanGP's --save-quantized writes for the 16-bit file ``name``.

    First swap fp16<->bf16 to match ``dtype``; then replace the first of ``_mfp16``,
    ``_fp16``, ``_mbf16``, ``_bf16`` found by ``_quanto_<token>_int8``; with none,
    insert ``_quanto_int8`` before the extension.
    """
    if dtype not in ("bf16", "fp16"):
        raise ValueError(f"dtype must be 'bf16' or 'fp16', got {dtype!r}")
    file_name = base_name(name)
    other = "fp16" if dtype == "bf16" else "bf16"
    file_name = file_name.replace(other, dtype)
    for token in ("_mfp16", "_fp16", "_mbf16", "_bf16"):
        if token in file_name:
            return file_name.replace(token, f"_quanto{token}_int8", 1)
    stem, dot, ext = file_name.rpartition(".")
    if not dot:
        return f"{file_name}_quanto_int8"
    return f"{stem}_quanto_int8.{ext}"
