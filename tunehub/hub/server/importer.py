"""``tunehub hub import``: put a local folder or a huggingface_hub cache repo into the server as one commit.

Goes straight to the store (no HTTP), so a LAN mirror can be seeded from files already
on a disk. Files are streamed into the blob store (hashed on the way, never held whole);
the commit is one transaction, as for uploads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tunehub.errors import ServerError
from tunehub.hub.server.problems import ApiProblem
from tunehub.hub.server.storage import AddFile, HubStore
from tunehub.hub.server.validation import (
    InvalidInput,
    check_path,
    check_repo_id,
    check_repo_type,
    git_blob_sha1,
    lfs_pointer,
    wants_lfs,
)

# Bookkeeping folders of git and of huggingface_hub's local_dir downloads: never content.
SKIPPED_DIRS = {".git", ".cache"}


@dataclass
class ImportResult:
    repo_id: str
    repo_type: str
    revision: str
    commit: str
    files: int
    bytes: int
    source: Path
    created_repo: bool


def source_folder(path: Path, revision: str | None = None) -> Path:
    """The folder whose files are imported: ``path`` itself, or a snapshot of a cache repo folder."""
    path = path.expanduser()
    if not path.is_dir():
        raise ServerError(f"{path} is not a folder.")
    snapshots = path / "snapshots"
    if snapshots.is_dir() and (path / "refs").is_dir() or path.name.startswith(("models--", "datasets--", "spaces--")):
        wanted = revision or "main"
        ref_file = path / "refs" / wanted
        if ref_file.is_file():
            commit = ref_file.read_text(encoding="utf-8").strip()
        elif (snapshots / wanted).is_dir():
            commit = wanted
        else:
            raise ServerError(f"{path} is a huggingface_hub cache folder without revision {wanted!r} (see {path / 'refs'}).")
        folder = snapshots / commit
        if not folder.is_dir():
            raise ServerError(f"{path}: refs/{wanted} points at {commit}, but {folder} is missing.")
        return folder
    return path


def collect_files(folder: Path) -> list[tuple[str, Path]]:
    """(path in repo, file on disk) for every file under ``folder``, symlinks followed (cache snapshots)."""
    found: list[tuple[str, Path]] = []
    for current, dirs, names in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for name in sorted(names):
            full = Path(current) / name
            relative = full.relative_to(folder).as_posix()
            try:
                check_path(relative)
            except InvalidInput as exc:
                raise ServerError(f"Cannot import {full}: {exc}") from exc
            if not full.is_file():
                raise ServerError(f"Cannot import {full}: not a regular file (or a broken link).")
            found.append((relative, full))
    return found


def import_folder(
    root: str | os.PathLike[str],
    source: str | os.PathLike[str],
    repo_id: str,
    *,
    repo_type: str = "model",
    revision: str = "main",
    source_revision: str | None = None,
    private: bool = False,
    message: str | None = None,
    author: str | None = None,
    link: bool = False,
    progress: Callable[[str, int], None] | None = None,
) -> ImportResult:
    """Add every file of ``source`` to ``repo_id`` on branch ``revision`` in one commit.

    ``link``: hard-link files into the blob store instead of copying (same filesystem; the
    sources must never be edited in place afterwards, as huggingface_hub cache blobs are not).
    """
    try:
        repo_type = check_repo_type(repo_type)
        namespace, _ = check_repo_id(repo_id)
    except InvalidInput as exc:
        raise ServerError(str(exc)) from exc
    folder = source_folder(Path(source), source_revision)
    files = collect_files(folder)
    if not files:
        raise ServerError(f"{folder} has no files to import.")
    store = HubStore(root)
    operations: list[AddFile] = []
    total = 0
    try:
        for relative, full in files:
            with open(full, "rb") as handle:
                sample = handle.read(512)
            sha256, size = store.link_file(full) if link else store.put_file(full)
            lfs = wants_lfs(relative, size, sample)
            if lfs:
                git_oid = git_blob_sha1(lfs_pointer(sha256, size))
            else:
                git_oid = git_blob_sha1(store.blob_path(sha256).read_bytes())  # small: regular files only
            operations.append(AddFile(relative, sha256, size, lfs, git_oid))
            total += size
            if progress:
                progress(relative, size)
        repo, created = store.create_repo(repo_type, repo_id, private=private)
        refs = store.refs(repo)
        if revision not in refs:
            # A new branch starts from main, as create_branch does.
            store.create_branch(repo, revision, refs["main"])
        for op in operations:
            if op.lfs:
                store.grant_lfs(repo, op.sha256)
        title = message or f"Import {len(operations)} file(s) from {folder.name}"
        sha = store.commit(
            repo,
            revision,
            operations,
            parent_commit=None,
            title=title,
            message=f"Imported from {folder}",
            author=author or namespace,
        )
    except ApiProblem as problem:
        raise ServerError(f"Import into {repo_id} failed: {problem.message}") from problem
    finally:
        store.close()
    return ImportResult(repo.repo_id, repo_type, revision, sha, len(operations), total, folder, created)
