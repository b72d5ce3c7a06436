"""Which files each definition names, where they are on disk, and what may be deleted.

"Which files" comes from the registry's own answers (``Registry.resolve``: every variant
of every role, each ``preload_URLs`` entry, references followed; ``Registry.locate_source``:
where the file is), so the disk commands agree with ``tunehub resolve`` and ``pull`` on
every lookup rule the registry has. A definition that cannot be resolved (invalid) still
protects every file name it mentions.

Deleting follows three rules, checked by :func:`deletable` for each path:

* only inside a weights folder (``weights_dirs``), never inside a read-only one
  (``readonly_weights_dirs``, or a folder this user cannot write);
* the folder holding the file is resolved (``realpath``): a symlinked folder that leads out
  of the weights folders is refused;
* the file itself is never followed: a symlink is removed as a link, its target stays.
"""

from __future__ import annotations

import os
import stat as stat_module
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunehub.config import Config

__all__ = [
    "WEIGHT_SUFFIXES",
    "NamedFile",
    "named_files",
    "present_files",
    "mentioned_names",
    "visible_ids",
    "deletable",
    "replaceable",
    "safe_unlink",
    "is_weight_name",
    "variant_of",
    "walk_files",
    "human_size",
]

WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".pth", ".pt", ".bin", ".ckpt", ".sft")
VARIANTS = ("all", "int8", "16-bit")


def human_size(size: int | None) -> str:
    """Decimal units, as `hf cache`, `ollama list` and `docker system df` print them."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"  # pragma: no cover


def is_weight_name(name: str) -> bool:
    return name.lower().endswith(WEIGHT_SUFFIXES)


def variant_of(role: str, filename: str) -> str:
    """``int8`` (int8 or fp8 file), ``16-bit`` (a 16-bit transformer or module), or ``shared``
    (a preload file: VAE, text encoder, map) for ``rm --variant``."""
    if role == "preload":
        return "shared"
    from tunehub.registry.naming import parse_variant_name

    return "int8" if parse_variant_name(filename).quantization else "16-bit"


@dataclass(frozen=True)
class NamedFile:
    """One file a definition names, and where it is (or would be placed)."""

    definition_id: str
    role: str
    source: str
    filename: str
    path: Path
    present: bool

    @property
    def variant(self) -> str:
        return variant_of(self.role, self.filename)


def named_files(registry: Any, definition_id: str) -> list[NamedFile]:
    """Every file the definition lists (all variants), located as ``resolve`` locates them."""
    from tunehub.registry.urls import local_name

    definition = registry.get(definition_id)
    resolution = registry.resolve(definition_id)
    seen: set[str] = set()
    found: list[NamedFile] = []
    for choice in resolution.all_files():
        for source in choice.candidates or [choice.source]:
            if source in seen:
                continue
            seen.add(source)
            if source == choice.source:  # where resolve found it (LoRAs: in their LoRA folder)
                path, present = choice.path, choice.present
            else:
                path, present = registry.locate_source(source, definition.origin)
            found.append(NamedFile(definition_id, choice.role, source, local_name(source), Path(path), present))
    return found


def present_files(registry: Any, ids: list[str] | None = None) -> dict[str, tuple[NamedFile, list[str]]]:
    """abspath -> (the file, the definitions naming it) for every file of ``ids`` on disk
    (default: every visible definition)."""
    found: dict[str, tuple[NamedFile, list[str]]] = {}
    for definition_id in ids or visible_ids(registry):
        for item in named_files(registry, definition_id):
            if not item.present:
                continue
            key = os.path.abspath(item.path)
            if key in found:
                found[key][1].append(definition_id)
            else:
                found[key] = (item, [definition_id])
    return found


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def mentioned_names(definition: Any) -> set[str]:
    """Base names of every weight-like string anywhere in a definition's model (valid or not):
    what ``prune`` must never call unused (``text_encoder_URLs``, ``loras``, ... included)."""
    from tunehub.registry.urls import local_name

    names = set()
    for text in _strings(definition.model):
        name = local_name(text)
        if is_weight_name(name) or name.lower().endswith(".json"):
            names.add(name)
    return names


def visible_ids(registry: Any) -> list[str]:
    """Valid, visible definitions: the ones whose files ``rm`` keeps and ``du`` lists."""
    return sorted(d.id for d in registry.filter(include_hidden=False) if d.valid)


def _real(path: Path) -> str:
    return os.path.realpath(path)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def readonly_roots(cfg: Config) -> list[str]:
    return [_real(folder) for folder in cfg.readonly_weights_dirs]


def deletable(cfg: Config, path: Path) -> tuple[Path | None, str]:
    """Where ``path`` may be deleted (its real folder + its own name) or None, and why not."""
    path = Path(os.path.abspath(path))
    try:
        info = os.lstat(path)
    except OSError:
        return None, "not on disk"
    if stat_module.S_ISDIR(info.st_mode):
        return None, "a folder, not a file"
    parent = _real(path.parent)
    target = Path(parent) / path.name
    if any(_inside(parent, root) for root in readonly_roots(cfg)):
        return None, "in a read-only folder (readonly_weights_dirs)"
    for folder in cfg.weights_dirs:
        root = _real(folder)
        if _inside(parent, root):
            if not os.access(parent, os.W_OK):
                return None, f"{parent} is not writable"
            return target, ""
    if _inside(parent, _real(cfg.loras_root)) or any(_inside(parent, _real(p)) for p in cfg.lora_dirs.values()):
        return None, "a LoRA: WanGP offers it for every model of its family; delete it yourself if unwanted"
    return None, "outside the weights folders"


def replaceable(cfg: Config, path: Path) -> bool:
    """May an update put a new version at ``path``: a deletable place, or a LoRA folder (where a pull puts LoRAs)."""
    if deletable(cfg, path)[0] is not None:
        return True
    parent = _real(Path(os.path.abspath(path)).parent)
    if any(_inside(parent, root) for root in readonly_roots(cfg)):
        return False
    lora_roots = [cfg.loras_root, *cfg.lora_dirs.values()]
    return any(_inside(parent, _real(root)) for root in lora_roots) and os.access(parent, os.W_OK)


def safe_unlink(cfg: Config, path: Path) -> int:
    """Delete one file under the rules above; returns the bytes freed (0 if other links remain)."""
    target, why = deletable(cfg, path)
    if target is None:
        from tunehub.errors import TunehubError

        raise TunehubError(f"refusing to delete {path}: {why}")
    info = os.lstat(target)
    os.unlink(target)  # never follows a symlink: the link goes, its target stays
    if stat_module.S_ISLNK(info.st_mode) or info.st_nlink > 1:
        return 0
    return info.st_size


def walk_files(folder: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """Every file under ``folder`` (lstat), symlinked folders not entered."""
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            try:
                yield path, os.lstat(path)
            except OSError:
                continue


def unique_paths(paths: Iterable[Path]) -> list[Path]:
    seen: dict[str, Path] = {}
    for path in paths:
        seen.setdefault(os.path.abspath(path), path)
    return list(seen.values())
