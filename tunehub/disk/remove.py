"""``tunehub rm ID`` (and the TUI's delete): remove a definition's files that nothing else needs.

:func:`plan_removal` says what would go, what stays and why ("also used by t2v_fusionix",
"outside the weights folders"); :func:`removal_lines` is the warning both the CLI and the
TUI show; :func:`execute_removal` marks the definition "removed by you" in the home's
hash cache database first (so a daemon with ``pull = "all"`` does not fetch the files again the moment
they disappear), then deletes under the rules of :func:`tunehub.disk.files.deletable`.
The mark stays until ``tunehub pull ID`` (any pull of that definition) clears it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunehub.config import Config
from tunehub.disk.files import (
    VARIANTS,
    deletable,
    human_size,
    mentioned_names,
    named_files,
    safe_unlink,
)
from tunehub.errors import ConfigError

__all__ = [
    "RemovalPlan",
    "plan_removal",
    "removal_lines",
    "execute_removal",
    "removed_marks",
    "clear_removed",
]


@dataclass
class RemovalPlan:
    definition_id: str
    variant: str = "all"
    delete: list[tuple[Path, int]] = field(default_factory=list)  # (path, bytes its removal frees)
    kept: dict[Path, list[str]] = field(default_factory=dict)  # path -> the other definitions using it
    refused: list[tuple[Path, str]] = field(default_factory=list)  # path, why it is not touched

    @property
    def bytes_freed(self) -> int:
        return sum(size for _, size in self.delete)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.definition_id, "variant": self.variant,
            "delete": [{"path": str(p), "frees": s} for p, s in self.delete],
            "kept": [{"path": str(p), "used_by": users} for p, users in self.kept.items()],
            "refused": [{"path": str(p), "why": why} for p, why in self.refused],
            "bytes_freed": self.bytes_freed,
        }


def _short(path: Path, home: Path | None) -> str:
    if home is not None:
        with contextlib.suppress(ValueError):
            return str(path.relative_to(home))
    return str(path)


def removal_lines(plan: RemovalPlan, home: Path | None = None) -> list[str]:
    """The warning shown before deleting: what goes, what stays and why (CLI and TUI alike)."""
    lines = []
    for path, size in plan.delete:
        note = "" if size else "  (other hard links keep its bytes)"
        lines.append(f"  delete {_short(path, home)}  {human_size(size)}{note}")
    for path, users in plan.kept.items():
        more = f" and {len(users) - 3} more" if len(users) > 3 else ""
        lines.append(f"  keep   {_short(path, home)}  (also used by {', '.join(users[:3])}{more})")
    for path, why in plan.refused:
        lines.append(f"  keep   {_short(path, home)}  ({why})")
    return lines


def _users_by_path(registry: Any, definition_id: str) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Other visible definitions' located files (abspath -> ids) and, for the ones that cannot be
    resolved, the base names they mention (name -> ids)."""
    by_path: dict[str, set[str]] = {}
    by_name: dict[str, set[str]] = {}
    for other in registry.filter(include_hidden=False):
        if other.id == definition_id:
            continue
        try:
            files = named_files(registry, other.id) if other.valid else None
        except Exception:  # cannot be resolved: protect every name it mentions
            files = None
        if files is None:
            for name in mentioned_names(other):
                by_name.setdefault(name, set()).add(other.id)
            continue
        for item in files:
            if item.present:
                by_path.setdefault(os.path.abspath(item.path), set()).add(other.id)
    return by_path, by_name


def plan_removal(cfg: Config, registry: Any, definition_id: str, variant: str = "all") -> RemovalPlan:
    """What ``tunehub rm ID --variant V`` deletes, keeps and refuses; nothing is changed."""
    from tunehub.hub.download import part_paths

    if variant not in VARIANTS:
        raise ConfigError(f"--variant must be one of {', '.join(VARIANTS)}; got {variant!r}")
    plan = RemovalPlan(definition_id, variant)
    files = [f for f in named_files(registry, definition_id) if variant == "all" or f.variant == variant]
    by_path, by_name = _users_by_path(registry, definition_id)
    candidates: dict[str, Path] = {}
    for item in files:
        if item.present:
            key = os.path.abspath(item.path)
            users = sorted(by_path.get(key, set()) | by_name.get(item.filename, set()))
            if users:
                plan.kept[item.path] = users
                continue
            candidates.setdefault(key, item.path)
        if variant == "all" or not item.present:
            for partial in part_paths(item.path):  # a download of it that never finished
                if partial.exists():
                    candidates.setdefault(os.path.abspath(partial), partial)
    inodes: dict[tuple[int, int], list[Path]] = {}
    for path in candidates.values():
        target, why = deletable(cfg, path)
        if target is None:
            plan.refused.append((path, why))
            continue
        info = os.lstat(target)
        inodes.setdefault((info.st_dev, info.st_ino), []).append(path)
    for (_dev, _ino), paths in inodes.items():
        info = os.lstat(paths[0])
        # the bytes go only when every name of the inode goes (a symlink frees nothing)
        frees = info.st_size if not os.path.islink(paths[0]) and info.st_nlink <= len(paths) else 0
        for index, path in enumerate(paths):
            plan.delete.append((path, frees if index == 0 else 0))
    plan.delete.sort(key=lambda entry: (-entry[1], str(entry[0])))
    return plan


# --- the "removed by you" mark ------------------------------------------------------------


def _cache_if_any(cfg: Config) -> Any:
    from tunehub.disk.hashcache import FILE_NAME, HashCache

    return HashCache(cfg.state_dir) if (cfg.state_dir / FILE_NAME).exists() else None


def removed_marks(cfg: Config) -> dict[str, dict[str, Any]]:
    """Definitions marked "removed by you": id -> {variant, at, files}."""
    cache = _cache_if_any(cfg)
    if cache is None:
        return {}
    with cache:
        return cache.removed()


def clear_removed(cfg: Config, definition_id: str) -> bool:
    """Drop the mark (``tunehub pull ID``); True if there was one."""
    cache = _cache_if_any(cfg)
    if cache is None:
        return False
    with cache:
        return cache.clear_removed(definition_id)


def execute_removal(cfg: Config, plan: RemovalPlan) -> int:
    """Mark the definition removed, then delete the planned files; returns the bytes freed.

    The mark is written first: a daemon that sees the files go already knows not to fetch them.
    (A pull the daemon is running for this definition is the caller's to cancel:
    :func:`tunehub.daemon.client.cancel_pulls`.)
    """
    from tunehub.disk.hashcache import HashCache

    freed = 0
    with HashCache(cfg.state_dir) as cache:
        cache.mark_removed(plan.definition_id, plan.variant, [str(p) for p, _ in plan.delete])
        for path, _size in plan.delete:
            if not os.path.lexists(path):
                continue
            freed += safe_unlink(cfg, path)
            cache.forget(path)
    return freed
