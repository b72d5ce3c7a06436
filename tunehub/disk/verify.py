"""``tunehub verify [ID...] [--repair]`` and ``tunehub adopt DIR``.

verify re-hashes each present file of the definitions against the sha256 recorded when
tunehub placed it, or, for a file it did not place, the Hub's (one metadata request per
file; small non-LFS files are checked by their git blob sha1). The hash cache answers for
files unchanged since they were last hashed (same inode, size and mtime), so a second
verify reads nothing; ``rehash=True`` reads every byte again (bit rot that kept the mtime).
``repair`` fetches a corrupt file again into its place (verified, atomically).

adopt hashes every weight file below a folder once (a ComfyUI ``models/``, another WanGP
``ckpts/``) into the cache, so later pulls link those files instead of downloading them.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunehub.config import Config
from tunehub.disk.files import is_weight_name, present_files, walk_files
from tunehub.disk.hashcache import HashCache

__all__ = ["Checked", "verify", "repair", "adopt", "AdoptResult", "git_blob_sha1"]

ProgressCallback = Callable[[dict[str, Any]], None]


@dataclass
class Checked:
    path: Path
    source: str
    users: list[str]
    status: str  # ok | corrupt | unverifiable
    expected: str | None = None
    actual: str | None = None
    reference: str = ""  # recorded | hub | hub-git | none
    size: int = 0
    note: str = ""
    read: bool = True  # its bytes were read now (False: the hash cache answered)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "source": self.source, "used_by": self.users, "status": self.status,
            "expected": self.expected, "actual": self.actual, "reference": self.reference, "size": self.size,
            "note": self.note, "read": self.read,
        }


def git_blob_sha1(path: Path) -> str:
    """What a Hub names a small (non-LFS) file by: sha1 of ``blob <size>\\0`` + the bytes."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _hub_reference(cfg: Config, source: str, context: str) -> tuple[str | None, str | None, Any]:
    """(sha256, git sha1, RemoteFile) the Hub announces for a URL entry."""
    from tunehub.hub.download import probe
    from tunehub.hub.pull import fetch_target

    url, endpoint, token = fetch_target(cfg, source)
    remote = probe(url, endpoint=endpoint, token=token, context=context)
    return remote.sha256, remote.git_sha1, remote


def verify(cfg: Config, registry: Any, ids: list[str] | None = None, *, rehash: bool = False,
           fetch: bool = True, progress: ProgressCallback | None = None) -> list[Checked]:
    """Check every present file of ``ids`` (default: every visible definition)."""
    from tunehub.hub.download import offline_mode
    from tunehub.registry.urls import is_url

    fetch = fetch and not offline_mode()
    results = []
    with HashCache(cfg.state_dir) as cache:
        for key, (item, users) in sorted(present_files(registry, ids).items()):
            size = os.stat(item.path).st_size
            checked = Checked(item.path, item.source, users, "unverifiable", size=size)
            origin = cache.origin(item.path)
            git_sha1 = None
            if origin is not None:
                checked.expected, checked.reference = origin.sha256, "recorded"
            elif is_url(item.source) and fetch:
                try:
                    checked.expected, git_sha1, _ = _hub_reference(cfg, item.source, f" (definition '{users[0]}')")
                except Exception as exc:  # reported per file; the others are still checked
                    checked.note = f"cannot ask the Hub: {exc}"
                checked.reference = "hub" if checked.expected else "hub-git" if git_sha1 else "none"
            else:
                checked.reference = "none"
                checked.note = "a local file with no recorded hash" if not is_url(item.source) else "offline"

            def hashing(done: int, name: str = item.filename, total: int = size) -> None:
                if progress is not None:
                    progress({"file": name, "total": total, "completed": done, "status": "hashing"})

            if checked.expected is None and git_sha1 is not None:
                checked.actual = git_blob_sha1(item.path)  # small: read each time
                checked.expected = git_sha1
            else:
                cached = None if rehash else cache.lookup(item.path)
                checked.read = cached is None
                checked.actual = cached or cache.sha256(item.path, hashing, rehash=True)
            if checked.expected is not None:
                checked.status = "ok" if checked.actual == checked.expected else "corrupt"
                if checked.status == "ok" and origin is None and checked.reference == "hub":
                    cache.set_origin(item.path, checked.expected, item.source, None, size)
            if progress is not None:
                progress({"file": item.filename, "total": size, "completed": size, "status": "done"})
            results.append(checked)
    return results


def repair(cfg: Config, items: list[Checked], progress: ProgressCallback | None = None) -> list[tuple[Checked, str]]:
    """Fetch each corrupt URL file again in place; returns (item, outcome) per corrupt item."""
    from tunehub.hub.download import download_file, probe
    from tunehub.hub.pull import fetch_target
    from tunehub.registry.urls import is_url

    outcomes = []
    with HashCache(cfg.state_dir) as cache:
        for item in items:
            if item.status != "corrupt":
                continue
            if not is_url(item.source):
                outcomes.append((item, "not repairable: a local file (no URL to fetch it from)"))
                continue
            url, endpoint, token = fetch_target(cfg, item.source)
            context = f" (definition '{item.users[0]}')"
            remote = probe(url, endpoint=endpoint, token=token, context=context)
            if item.reference == "recorded" and remote.sha256 and remote.sha256 != item.expected:
                outcomes.append((item, "the Hub now has another version: run `tunehub pull --update` instead"))
                continue
            result = download_file(url, item.path, remote=remote, progress=progress, label=item.path.name,
                                   context=context)
            cache.placed(item.path, result.sha256, item.source, remote.commit)
            item.actual, item.status = result.sha256, "ok"
            outcomes.append((item, f"fetched again ({result.bytes_transferred} bytes), verified"))
    return outcomes


@dataclass
class AdoptResult:
    folder: Path
    files: int = 0
    bytes: int = 0
    hashed: int = 0  # files read now (the others were already in the cache)
    seconds: float = 0.0
    paths: list[Path] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "files": self.files, "bytes": self.bytes, "hashed": self.hashed,
                "seconds": round(self.seconds, 3)}


def adopt(cfg: Config, folder: Path, progress: ProgressCallback | None = None) -> AdoptResult:
    """Hash every weight file below ``folder`` into the cache (read-only: nothing is written there)."""
    import stat as stat_module

    from tunehub.errors import ConfigError

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder")
    started = time.monotonic()
    result = AdoptResult(folder)
    with HashCache(cfg.state_dir) as cache:
        for path, info in walk_files(folder):
            if not stat_module.S_ISREG(info.st_mode) or not is_weight_name(path.name) or path.name.startswith("."):
                continue
            result.files += 1
            result.bytes += info.st_size
            result.paths.append(path)
            if cache.lookup(path) is None:
                result.hashed += 1

                def hashing(done: int, name: str = path.name, total: int = info.st_size) -> None:
                    if progress is not None:
                        progress({"file": name, "total": total, "completed": done, "status": "hashing"})

                cache.sha256(path, hashing)
            if progress is not None:
                progress({"file": path.name, "total": info.st_size, "completed": info.st_size, "status": "done"})
    result.seconds = time.monotonic() - started
    return result
