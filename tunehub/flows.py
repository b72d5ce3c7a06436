"""Flows that compose the parts: above hub and quant, used by the CLI and the daemon's jobs.

``tunehub.hub`` downloads and ``tunehub.quant`` quantizes; neither imports the other.
"Pull, then quantize if the definition asks for it (``auto_quantize``)" lives here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunehub.config import Config

__all__ = ["pull_definition", "auto_quantize"]


def auto_quantize(
    cfg: Config, registry: Any, definition_id: str, dtype: str, progress: Any = None
) -> tuple[list[Path], str | None]:
    """``auto_quantize``: the user wants int8, only a 16-bit file exists: make it here.

    Returns the int8 files and a note when quantization is not installed (a pull must
    not fail for that: the 16-bit file it fetched is usable).
    """
    try:
        from tunehub.quant.flow import quantize_definition

        paths = quantize_definition(cfg, registry, definition_id, dtype=dtype, progress=progress)
    except ImportError as exc:  # torch / optimum-quanto not installed
        return [], f"auto_quantize is set but quantization is not available ({exc}); install tunehub[quant]"
    return list(paths), None


def pull_definition(
    cfg: Config,
    registry: Any,
    definition_id: str,
    *,
    quantize: bool = True,
    progress: Any = None,
    clear_removed_mark: bool = True,
    **pull_options: Any,
) -> Any:
    """:func:`tunehub.hub.pull.pull`, then ``auto_quantize`` when wanted and needed.

    The user's pull of a definition lifts its "removed by you" mark (``tunehub rm``); the
    daemon's own pulls pass ``clear_removed_mark=False``.
    """
    from tunehub.hub.pull import pull

    if clear_removed_mark:
        from tunehub.disk.remove import clear_removed

        clear_removed(cfg, definition_id)

    result = pull(cfg, registry, definition_id, progress=progress, **pull_options)
    if not quantize:
        return result
    resolution = registry.resolve(
        definition_id, quantization=pull_options.get("quantization"), dtype=pull_options.get("dtype")
    )
    if resolution.needs_quantization and resolution.auto_quantize:
        result.quantized, note = auto_quantize(cfg, registry, definition_id, resolution.dtype, progress)
        if note:
            result.notes.append(note)
    return result
