"""WanGP's rule for picking one weight file among a definition's variants.

Reproduced exactly (definitions.md, "Which URL is picked"), including its quirks,
so that a definition written for WanGP picks the same file here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tunehub.registry.naming import base_name

__all__ = ["select_variant", "explain_variant", "Selection"]


@dataclass(frozen=True)
class Selection:
    choice: str | None
    reason: str


def explain_variant(choices: Sequence[str], quantization: str, dtype: str) -> Selection:
    """Pick a file from ``choices`` and say why, in words a user can follow."""
    if not choices:
        return Selection(None, "no file listed")
    if len(choices) == 1:
        return Selection(choices[0], "the only file listed")
    if quantization == "bf16":
        return Selection(choices[0], "16-bit wanted: the first file listed")
    tokens = ["int8", "fp8"] if quantization == "int8" else ["fp8", "int8"]
    candidates = [choice for token in tokens for choice in choices if token in base_name(choice).lower()]
    if not candidates:
        return Selection(
            choices[0], f"{quantization} wanted but no file name contains int8 or fp8: the first file listed"
        )
    matching = [c for c in candidates if dtype in base_name(c) or dtype.upper() in base_name(c)]
    if matching:
        return Selection(
            matching[0], f"{quantization} wanted ({' then '.join(tokens)}), first of them whose name has {dtype}"
        )
    return Selection(
        candidates[0], f"{quantization} wanted ({' then '.join(tokens)}), none has {dtype} in its name: the first"
    )


def select_variant(choices: Sequence[str], quantization: str, dtype: str) -> str | None:
    """WanGP's pick: ``quantization`` in int8/fp8/bf16 (16-bit), ``dtype`` in bf16/fp16."""
    return explain_variant(choices, quantization, dtype).choice
