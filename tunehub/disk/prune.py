"""``tunehub prune``: files in the weights folders that no definition names.

Candidates are only what tunehub can tell is a model file or one of its by-products:

* a weight file (``.safetensors``, ``.gguf``, ``.pth``, ``.pt``, ``.bin``, ``.ckpt``, ``.sft``)
  whose name no definition mentions (valid or not, hidden or not, any key of its model);
* its sidecar (``NAME_map.json`` or ``NAME.json`` beside an orphan ``NAME.<ext>``), unless named;
* a partial download (``.NAME.tunehub-part`` and its ``.json`` record) untouched for a day;
* the previous version an update kept (``.NAME.tunehub-previous``), and a new version an
  interrupted update never swapped in (``.NAME.tunehub-new``), untouched for a day.

Never a file in a read-only folder, outside the weights folders, below a symlinked folder,
or inside a component folder of another tool (a folder holding ``config.json``, as a
diffusers or transformers model folder does).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunehub.config import Config
from tunehub.disk.files import deletable, is_weight_name, mentioned_names, safe_unlink, walk_files

__all__ = ["Orphan", "find_orphans", "delete_orphans", "PARTIAL_MAX_AGE_S", "PREVIOUS_SUFFIX"]

PARTIAL_MAX_AGE_S = 86400.0
PREVIOUS_SUFFIX = ".tunehub-previous"
NEW_SUFFIX = ".tunehub-new"  # tunehub.disk.update's verified new version, before the swap
_SIDECARS = ("_map.json", ".json")


@dataclass(frozen=True)
class Orphan:
    path: Path
    size: int
    why: str

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "size": self.size, "why": self.why}


def _named(registry: Any) -> set[str]:
    names: set[str] = set()
    for definition in registry.definitions.values():
        names |= mentioned_names(definition)
    return names


def _component_folder(folder: Path, root: Path) -> bool:
    """A model folder of another tool (diffusers/transformers layout): left alone as a whole."""
    current = folder
    while current != root and root in current.parents:
        if (current / "config.json").is_file() or (current / "model_index.json").is_file():
            return True
        current = current.parent
    return False


def find_orphans(cfg: Config, registry: Any, now: float | None = None) -> list[Orphan]:
    """The prune candidates, sorted by path."""
    from tunehub.hub.download import PART_SUFFIX, RECORD_SUFFIX

    now = time.time() if now is None else now
    named = _named(registry)
    found: dict[str, Orphan] = {}
    weights_seen: dict[Path, set[str]] = {}
    for folder in cfg.weights_dirs:
        if not folder.is_dir():
            continue
        root = Path(os.path.abspath(folder))
        for path, info in walk_files(root):
            name = path.name
            if deletable(cfg, path)[0] is None or _component_folder(path.parent, root):
                continue
            key = os.path.abspath(path)
            if name.startswith(".") and (name.endswith(PART_SUFFIX) or name.endswith(RECORD_SUFFIX)):
                if now - info.st_mtime > PARTIAL_MAX_AGE_S:
                    days = (now - info.st_mtime) / 86400
                    found[key] = Orphan(path, info.st_size, f"partial download untouched for {days:.0f} day(s)")
                continue
            if name.startswith(".") and name.endswith(NEW_SUFFIX) and now - info.st_mtime > PARTIAL_MAX_AGE_S:
                found[key] = Orphan(path, info.st_size, f"update of {name[1:-len(NEW_SUFFIX)]} never put in place")
                continue
            if name.startswith(".") and name.endswith(PREVIOUS_SUFFIX):
                found[key] = Orphan(path, info.st_size, f"previous version of {name[1:-len(PREVIOUS_SUFFIX)]} (kept by an update)")
                continue
            if name.startswith("."):
                continue
            weights_seen.setdefault(path.parent, set()).add(name)
            if is_weight_name(name) and name not in named:
                found[key] = Orphan(path, info.st_size, "no definition names it")
    for parent, names in weights_seen.items():
        for name in names:
            if name in named or is_weight_name(name):
                continue
            for suffix in _SIDECARS:
                if not name.endswith(suffix):
                    continue
                stem = name[: -len(suffix)]
                owners = [n for n in names if is_weight_name(n) and n.rsplit(".", 1)[0] == stem]
                if owners and all(os.path.abspath(parent / n) in found for n in owners):
                    path = parent / name
                    found[os.path.abspath(path)] = Orphan(path, os.lstat(path).st_size, f"sidecar of {owners[0]}")
                    break
    return sorted(found.values(), key=lambda o: str(o.path))


def delete_orphans(cfg: Config, orphans: list[Orphan], on_deleted: Callable[[Orphan], None] | None = None) -> int:
    """Delete the given orphans (each checked again); returns the bytes freed."""
    from tunehub.disk.hashcache import HashCache

    freed = 0
    with HashCache(cfg.state_dir) as cache:
        for orphan in orphans:
            if not os.path.lexists(orphan.path):
                continue
            freed += safe_unlink(cfg, orphan.path)
            cache.forget(orphan.path)
            if on_deleted is not None:
                on_deleted(orphan)
    return freed
