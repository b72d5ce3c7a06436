"""The weights folders: where a file is, or would be placed (flat, by base name, as WanGP)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["locate", "local_path_candidates"]


def locate(filename: str, weights_dirs: Sequence[Path]) -> Path | None:
    """The first weights folder holding ``filename`` (a base name), or None."""
    for folder in weights_dirs:
        candidate = folder / filename
        if os.path.isfile(candidate):
            return candidate
    return None


def local_path_candidates(source: str, home: Path, weights_dirs: Sequence[Path]) -> list[Path]:
    """Where a local path entry of a definition may be, in WanGP's order.

    An absolute path is itself. A relative one is looked for under each weights folder by
    its path relative to it (``sub/x.safetensors`` -> ``ckpts/sub/x.safetensors``), then by
    base name in each weights folder, then as given, relative to the home (WanGP's own
    folder: ``ckpts/x.safetensors`` as written by its --save-quantized).
    """
    path = Path(source).expanduser()
    if path.is_absolute():
        return [path, *(folder / path.name for folder in weights_dirs)]
    candidates: list[Path] = []
    if len(path.parts) > 1:
        candidates.extend(folder / path for folder in weights_dirs)
    candidates.extend(folder / path.name for folder in weights_dirs)
    if len(path.parts) > 1:
        candidates.append(home / path)
    return candidates
