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
    """Where a local path entry of a definition may be, most specific first.

    An absolute path is itself; a relative path with folders is relative to the home
    (WanGP writes ``ckpts/x.safetensors`` relative to its own folder); every entry is
    also looked up by base name in each weights folder, as WanGP does.
    """
    path = Path(source).expanduser()
    candidates: list[Path] = []
    if path.is_absolute():
        candidates.append(path)
    elif len(path.parts) > 1:
        candidates.append(home / path)
    candidates.extend(folder / path.name for folder in weights_dirs)
    return candidates
