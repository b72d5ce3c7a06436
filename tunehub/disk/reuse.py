"""Files with the Hub's bytes already on disk: where a pull looks before downloading.

In order, each checked against the sha256 before it is linked (``link_mode``):

1. any path the hash cache knows has these bytes (earlier pulls, ``tunehub adopt DIR``),
   at no cost;
2. ``extra`` paths the caller found (the huggingface_hub cache's blobs);
3. a file of the same name and size in a read-only folder (``readonly_weights_dirs``:
   a ComfyUI ``models/`` folder, another WanGP install), searched below the folder;
4. a same-size file at the top of a weights folder (hashed once, then cached).

Read-only folders are not hashed wholesale on a pull: ``tunehub adopt DIR`` does that once.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from tunehub.config import Config
from tunehub.disk.hashcache import HashCache

__all__ = ["reuse_candidates"]


def _by_name(folder: Path, name: str, size: int) -> Iterator[Path]:
    for root, _dirs, files in os.walk(folder, followlinks=False):
        if name in files:
            path = Path(root) / name
            with contextlib.suppress(OSError):
                if path.is_file() and path.stat().st_size == size:
                    yield path


def reuse_candidates(cfg: Config, cache: HashCache, sha256: str, size: int, target: Path,
                     extra: Iterable[Path] = ()) -> Iterator[Path]:
    """Paths that may hold the bytes ``target`` needs, cheapest first; none is ``target`` itself."""
    seen: set[str] = {os.path.abspath(target)}

    def fresh(path: Path) -> bool:
        key = os.path.abspath(path)
        if key in seen:
            return False
        seen.add(key)
        return True

    for path in cache.find(sha256):
        if fresh(path):
            yield path
    for path in extra:
        with contextlib.suppress(OSError):
            if path.stat().st_size == size and fresh(path):
                yield path
    for folder in cfg.readonly_weights_dirs:
        for path in _by_name(folder, target.name, size):
            if fresh(path):
                yield path
    for folder in cfg.weights_dirs:
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                if entry.is_file() and not entry.name.startswith(".") and entry.stat().st_size == size:
                    path = Path(entry.path)
                    if fresh(path):
                        yield path
