"""``tunehub outdated`` and ``tunehub pull --update ID|--all``: follow the Hub when its files change.

A file is outdated when the Hub's version at the URL's revision (``main`` unless the URL
pins a commit) is not the one on disk: for each repo revision one ``repo_info`` request
with file metadata answers every file's sha256 (LFS) or git blob id at once; when that API
is refused, one metadata request (HEAD, ETag = sha256) per file. The local side is the
sha256 recorded when the file was pulled, else the hash cache's (read once).

An update fetches the new version beside the old one (``.NAME.tunehub-new``, verified,
resumable), then swaps it in: the old one stays as ``.NAME.tunehub-previous`` (a hard link,
so the name never disappears) until the new one is in place, and is removed when asked
(``remove_old``) unless ``keep_previous`` says to keep the last version until the next
update is verified. Files shared by several definitions are updated once.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunehub.config import Config
from tunehub.disk.files import present_files
from tunehub.disk.hashcache import HashCache
from tunehub.disk.prune import NEW_SUFFIX, PREVIOUS_SUFFIX

__all__ = ["Outdated", "OutdatedReport", "check_outdated", "UpdateResult", "update", "keep_previous_setting",
           "NEW_SUFFIX", "previous_path"]

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
ProgressCallback = Callable[[dict[str, Any]], None]


@dataclass
class Outdated:
    path: Path
    source: str
    users: list[str]
    repo_id: str
    repo_type: str
    revision: str
    path_in_repo: str
    endpoint: str
    token: bool | None
    local_sha256: str | None
    remote_sha256: str | None  # LFS files
    remote_git_sha1: str | None  # small files
    remote_size: int | None
    commit: str | None
    status: str = "changed"  # changed | gone (the file is no longer in the repo)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "source": self.source, "used_by": self.users, "repo": self.repo_id,
            "revision": self.revision, "file": self.path_in_repo, "local_sha256": self.local_sha256,
            "remote_sha256": self.remote_sha256, "remote_git_sha1": self.remote_git_sha1,
            "remote_size": self.remote_size, "commit": self.commit, "status": self.status,
        }


@dataclass
class OutdatedReport:
    files: list[Outdated] = field(default_factory=list)
    checked: int = 0
    requests: int = 0
    problems: list[str] = field(default_factory=list)

    def by_definition(self) -> dict[str, list[Outdated]]:
        grouped: dict[str, list[Outdated]] = {}
        for item in self.files:
            for user in item.users:
                grouped.setdefault(user, []).append(item)
        return grouped

    def to_json(self) -> dict[str, Any]:
        return {"files": [f.to_json() for f in self.files], "checked": self.checked, "requests": self.requests,
                "problems": self.problems}


def previous_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{PREVIOUS_SUFFIX}")


def keep_previous_setting(cfg: Config) -> int:
    value = cfg.daemon.get("keep_previous", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _repo_files(endpoint: str, token: bool | None, repo_id: str, repo_type: str, revision: str
                ) -> tuple[str | None, dict[str, tuple[str | None, str | None, int | None]]]:
    """The revision's commit and, per file, (sha256 if LFS, git blob id, size): one request."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=None if token is None else False)
    info = api.repo_info(repo_id, revision=revision, repo_type=repo_type, files_metadata=True, timeout=30)
    files = {}
    for sibling in info.siblings or []:
        lfs = getattr(sibling, "lfs", None)
        sha = getattr(lfs, "sha256", None) if lfs is not None else None
        if sha is None and isinstance(lfs, dict):
            sha = lfs.get("sha256")
        files[sibling.rfilename] = (sha, getattr(sibling, "blob_id", None), getattr(sibling, "size", None))
    return info.sha, files


def check_outdated(cfg: Config, registry: Any, ids: list[str] | None = None, *, hash_unknown: bool = True
                   ) -> OutdatedReport:
    """Which present Hub files of ``ids`` (default: every visible definition) changed upstream.

    A file tunehub did not place and has never hashed is hashed once (then cached), unless
    ``hash_unknown`` is False (the daemon's background check): then only a size change counts.
    """
    from tunehub.disk.verify import git_blob_sha1
    from tunehub.hub.pull import fetch_target
    from tunehub.registry.urls import parse_hub_url

    report = OutdatedReport()
    groups: dict[tuple[str, str, str, str, bool | None], list[tuple[Any, list[str], str]]] = {}
    for _key, (item, users) in sorted(present_files(registry, ids).items()):
        url, endpoint, token = fetch_target(cfg, item.source)
        hub = parse_hub_url(url) if endpoint else None
        if hub is None or _COMMIT.match(hub.revision):
            continue  # not a Hub file, or pinned to a commit: it cannot change
        groups.setdefault((hub.endpoint, hub.repo_type, hub.repo_id, hub.revision, token), []).append(
            (item, users, hub.path))
    with HashCache(cfg.state_dir) as cache:
        for (endpoint, repo_type, repo_id, revision, token), entries in groups.items():
            try:
                report.requests += 1
                commit, files = _repo_files(endpoint, token, repo_id, repo_type, revision)
            except Exception as exc:  # noqa: BLE001 - fall back to one metadata request per file
                commit, files = None, None
                fallback_error = exc
            for item, users, path_in_repo in entries:
                report.checked += 1
                if files is None:
                    try:
                        remote = _probe(cfg, item.source)
                        report.requests += 1
                    except Exception as exc:  # noqa: BLE001 - reported, the rest still checked
                        report.problems.append(f"{item.filename}: cannot ask {endpoint}: {exc} ({fallback_error})")
                        continue
                    entry: tuple[str | None, str | None, int | None] | None = (remote.sha256, remote.git_sha1, remote.size)
                    file_commit = remote.commit
                else:
                    entry = files.get(path_in_repo)
                    file_commit = commit
                found = Outdated(item.path, item.source, users, repo_id, repo_type, revision, path_in_repo, endpoint,
                                 token, None, None, None, None, file_commit)
                if entry is None:
                    found.status = "gone"
                    report.files.append(found)
                    continue
                found.remote_sha256, found.remote_git_sha1, found.remote_size = entry
                origin = cache.origin(item.path)
                if found.remote_sha256:
                    known = origin.sha256 if origin else cache.lookup(item.path)
                    if known is None and not hash_unknown:
                        changed = found.remote_size is not None and found.remote_size != os.path.getsize(item.path)
                        if changed:
                            report.files.append(found)
                        continue
                    found.local_sha256 = known or cache.sha256(item.path)
                    changed = found.local_sha256 != found.remote_sha256
                else:
                    changed = bool(found.remote_git_sha1) and git_blob_sha1(item.path) != found.remote_git_sha1
                    found.local_sha256 = origin.sha256 if origin else None
                if changed:
                    report.files.append(found)
    return report


def _probe(cfg: Config, source: str) -> Any:
    from tunehub.hub.download import probe
    from tunehub.hub.pull import fetch_target

    url, endpoint, token = fetch_target(cfg, source)
    return probe(url, endpoint=endpoint, token=token)


@dataclass
class UpdateResult:
    updated: list[tuple[Outdated, str]] = field(default_factory=list)  # (file, new sha256)
    previous: list[tuple[Path, int]] = field(default_factory=list)  # old versions still on disk
    removed_old: list[Path] = field(default_factory=list)
    skipped: list[tuple[Outdated, str]] = field(default_factory=list)
    bytes_transferred: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "updated": [{**o.to_json(), "sha256": sha} for o, sha in self.updated],
            "previous": [{"path": str(p), "size": s} for p, s in self.previous],
            "removed_old": [str(p) for p in self.removed_old],
            "skipped": [{"path": str(o.path), "why": why} for o, why in self.skipped],
            "bytes_transferred": self.bytes_transferred,
        }


def _swap_in(new_path: Path, dest: Path) -> Path | None:
    """The verified new file takes ``dest``'s name; the old one becomes the previous version."""
    from tunehub.safeio import fsync_dir

    previous = previous_path(dest)
    with contextlib.suppress(FileNotFoundError):
        previous.unlink()  # the version before last: the new one is verified now
    kept: Path | None = previous
    try:
        os.link(dest, previous)  # the old bytes keep a name; ``dest`` never disappears
    except FileNotFoundError:
        kept = None
    except OSError:
        os.replace(dest, previous)
    os.replace(new_path, dest)
    fsync_dir(dest.parent)
    return kept


RemoveOld = bool | Callable[[list[tuple[Path, int]]], bool]


def update(cfg: Config, registry: Any, ids: list[str] | None = None, *, remove_old: RemoveOld = False,
           keep_previous: int | None = None, progress: ProgressCallback | None = None,
           report: OutdatedReport | None = None) -> UpdateResult:
    """Fetch the new version of every outdated file of ``ids`` (default: every visible definition).

    ``remove_old``: remove the old versions once every new one is in place (or a callable asked
    with their paths and sizes); ignored when ``keep_previous`` (default ``[daemon] keep_previous``).
    """
    from tunehub.disk.files import replaceable
    from tunehub.disk.reuse import reuse_candidates
    from tunehub.hub.download import download_file, probe
    from tunehub.hub.pull import place_link
    from tunehub.registry.urls import hub_resolve_url

    keep = keep_previous_setting(cfg) if keep_previous is None else keep_previous
    report = report or check_outdated(cfg, registry, ids)
    result = UpdateResult()
    with HashCache(cfg.state_dir) as cache:
        for item in report.files:
            if item.status != "changed":
                result.skipped.append((item, "no longer in the repo"))
                continue
            if not replaceable(cfg, item.path):
                result.skipped.append((item, "in a read-only folder or outside the weights folders"))
                continue
            revision = item.commit or item.revision
            url = hub_resolve_url(item.endpoint, item.repo_id, revision, item.path_in_repo, item.repo_type)
            new_path = item.path.with_name(f".{item.path.name}{NEW_SUFFIX}")
            remote = probe(url, endpoint=item.endpoint, token=item.token, context=f" (update of {item.path.name})")
            sha = None
            if remote.sha256:
                for candidate in reuse_candidates(cfg, cache, remote.sha256, remote.size, item.path):
                    if cache.sha256(candidate) == remote.sha256:
                        place_link(candidate, new_path, cfg.link_mode)
                        sha = remote.sha256
                        break
            if sha is None:
                fetched = download_file(url, new_path, remote=remote, progress=progress, label=item.path.name)
                sha = fetched.sha256
                result.bytes_transferred += fetched.bytes_transferred
            old = _swap_in(new_path, item.path)
            cache.placed(item.path, sha, item.source, remote.commit)
            result.updated.append((item, sha))
            if old is not None:
                result.previous.append((old, os.lstat(old).st_size))
        if result.previous and not keep:
            wanted = remove_old(result.previous) if callable(remove_old) else remove_old
            if wanted:
                for path, _size in result.previous:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                    cache.forget(path)
                    result.removed_old.append(path)
    return result
