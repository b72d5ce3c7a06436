"""``tunehub du``: the bytes each definition's files take, split into its own and shared ones.

A file is identified by (device, inode): two names of one hard-linked file, or one file
named by several definitions (a VAE, a text encoder, a base model), are counted once in
every total. A file is *shared* when another visible definition names it (or another name
of the same inode). Symlinks count as what they are on disk (``du -sb`` counts the link,
not its target). Totals per weights folder come with the free space left there.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunehub.config import Config
from tunehub.disk.files import NamedFile, named_files, visible_ids

__all__ = ["FileUsage", "DefinitionUsage", "FolderUsage", "DiskUsage", "disk_usage"]


@dataclass
class FileUsage:
    path: Path
    size: int
    role: str
    users: list[str]  # every visible definition naming these bytes, sorted

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "size": self.size, "role": self.role, "used_by": self.users}


@dataclass
class DefinitionUsage:
    id: str
    files: list[FileUsage] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # file names not on disk

    @property
    def own_bytes(self) -> int:
        return sum(f.size for f in self.files if len(f.users) <= 1)

    @property
    def shared_bytes(self) -> int:
        return sum(f.size for f in self.files if len(f.users) > 1)

    @property
    def total_bytes(self) -> int:
        return self.own_bytes + self.shared_bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "bytes": self.total_bytes, "own_bytes": self.own_bytes,
            "shared_bytes": self.shared_bytes, "files": [f.to_json() for f in self.files], "missing": self.missing,
        }


@dataclass
class FolderUsage:
    path: Path
    bytes: int = 0
    files: int = 0
    free: int | None = None
    readonly: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "bytes": self.bytes, "files": self.files, "free": self.free,
                "readonly": self.readonly}


@dataclass
class DiskUsage:
    definitions: list[DefinitionUsage]
    folders: list[FolderUsage]
    total_bytes: int  # every named file on disk, each inode once
    total_files: int
    orphan_bytes: int = 0
    orphan_files: int = 0
    outside_bytes: int = 0  # named files outside every weights folder (absolute local paths)
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "definitions": [d.to_json() for d in self.definitions],
            "folders": [f.to_json() for f in self.folders],
            "total_bytes": self.total_bytes, "total_files": self.total_files,
            "orphan_bytes": self.orphan_bytes, "orphan_files": self.orphan_files,
            "outside_bytes": self.outside_bytes, "problems": self.problems,
        }


def _folder_of(path: Path, folders: list[FolderUsage]) -> FolderUsage | None:
    parent = os.path.realpath(path.parent)
    best = None
    for folder in folders:
        root = os.path.realpath(folder.path)
        if (parent == root or parent.startswith(root + os.sep)) and (best is None or len(root) > len(str(best.path))):
            best = folder
    return best


def _free(path: Path) -> int | None:
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def disk_usage(cfg: Config, registry: Any, ids: list[str] | None = None, *, orphans: bool = True) -> DiskUsage:
    """What ``tunehub du [ID...]`` prints: sharing is always judged against every visible definition."""
    everyone = visible_ids(registry)
    problems: list[str] = []
    per_definition: dict[str, list[NamedFile]] = {}
    for definition_id in everyone:
        try:
            per_definition[definition_id] = named_files(registry, definition_id)
        except Exception as exc:  # a definition that cannot resolve names nothing here
            problems.append(f"{definition_id}: {exc}")
    for definition_id in ids or []:
        if definition_id not in per_definition:
            registry.get(definition_id)  # UnknownDefinitionError for a typo
            try:
                per_definition[definition_id] = named_files(registry, definition_id)
            except Exception as exc:
                problems.append(f"{definition_id}: {exc}")
    inode_users: dict[tuple[int, int], set[str]] = {}
    inode_size: dict[tuple[int, int], int] = {}
    inode_path: dict[tuple[int, int], Path] = {}
    located: dict[str, list[tuple[NamedFile, tuple[int, int]]]] = {}
    for definition_id, files in per_definition.items():
        entries = []
        for item in files:
            if not item.present:
                continue
            try:
                info = os.lstat(item.path)
            except OSError:
                continue
            key = (info.st_dev, info.st_ino)
            inode_users.setdefault(key, set()).add(definition_id)
            inode_size[key] = info.st_size
            inode_path.setdefault(key, item.path)
            entries.append((item, key))
        located[definition_id] = entries
    readonly = {os.path.realpath(p) for p in cfg.readonly_weights_dirs}
    roots = [*cfg.weights_dirs, *([cfg.loras_root] if cfg.loras_root.is_dir() else [])]
    folders = [FolderUsage(Path(p), free=_free(Path(p)), readonly=os.path.realpath(p) in readonly) for p in roots]
    outside = 0
    for key, path in inode_path.items():
        folder = _folder_of(path, folders)
        if folder is not None:
            folder.bytes += inode_size[key]
            folder.files += 1
        else:
            outside += inode_size[key]
    shown = ids or everyone
    definitions = []
    for definition_id in shown:
        usage = DefinitionUsage(definition_id)
        seen: set[tuple[int, int]] = set()
        for item, key in located.get(definition_id, []):
            if key in seen:
                continue
            seen.add(key)
            usage.files.append(FileUsage(item.path, inode_size[key], item.role, sorted(inode_users[key])))
        usage.missing = [item.filename for item in per_definition.get(definition_id, []) if not item.present]
        usage.files.sort(key=lambda f: -f.size)
        definitions.append(usage)
    definitions.sort(key=lambda d: (-d.total_bytes, d.id))
    result = DiskUsage(definitions, folders, sum(inode_size.values()), len(inode_size), problems=problems,
                       outside_bytes=outside)
    if orphans:
        from tunehub.disk.prune import find_orphans

        found = find_orphans(cfg, registry)
        result.orphan_files = len(found)
        result.orphan_bytes = sum(o.size for o in found)
    return result
