"""``tunehub hub import``: put a local folder or a huggingface_hub cache repo into the server as one commit.

Goes straight to the store (no HTTP), so a LAN mirror can be seeded from files already
on a disk. Files are streamed into the blob store (hashed on the way, never held whole);
the commit is one transaction, as for uploads. The import holds the store's writer lease
from its first blob to its check that every committed path has its blob, so a server
starting meanwhile leaves the blobs it has not committed yet alone.

Only what lies inside the source is imported: a symbolic link is followed only if it
resolves inside the source (for a huggingface_hub cache folder, inside that cache repo
folder, where its snapshots point), and for a plain folder only with ``follow_symlinks``.
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
    check_branch_name,
    check_path,
    check_repo_id,
    check_repo_type,
    git_blob_sha1,
    is_commit_sha,
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


def is_cache_repo_folder(path: Path) -> bool:
    return (path / "snapshots").is_dir() and (path / "refs").is_dir() or path.name.startswith(
        ("models--", "datasets--", "spaces--")
    )


def _check_source_revision(revision: str) -> str:
    """A ref or commit name of a cache folder: it becomes a path under refs/ and snapshots/."""
    if is_commit_sha(revision):
        return revision
    try:
        return check_branch_name(revision)
    except InvalidInput as exc:
        raise ServerError(f"Invalid source revision {revision!r}: a branch, tag or 40-hex commit name expected.") from exc


def source_folder(path: Path, revision: str | None = None) -> Path:
    """The folder whose files are imported: ``path`` itself, or a snapshot of a cache repo folder."""
    path = path.expanduser()
    if not path.is_dir():
        raise ServerError(f"{path} is not a folder.")
    snapshots = path / "snapshots"
    if is_cache_repo_folder(path):
        wanted = _check_source_revision(revision or "main")
        ref_file = path / "refs" / wanted
        if ref_file.is_file():
            commit = ref_file.read_text(encoding="utf-8", errors="replace").strip()
            if not is_commit_sha(commit):
                raise ServerError(
                    f"{ref_file} (refs/{wanted}) holds {commit[:80]!r}, not a commit sha: refusing to follow it."
                )
        elif (snapshots / wanted).is_dir():
            commit = wanted
        else:
            raise ServerError(f"{path} is a huggingface_hub cache folder without revision {wanted!r} (see {path / 'refs'}).")
        folder = snapshots / commit
        if not folder.is_dir() or folder.is_symlink():
            raise ServerError(f"{path}: refs/{wanted} points at {commit}, but {folder} is missing.")
        return folder
    return path


def _inside(path: str, boundary: str) -> bool:
    return path == boundary or path.startswith(boundary.rstrip(os.sep) + os.sep)


def collect_files(
    folder: Path, *, boundary: Path | None = None, follow_symlinks: bool = False
) -> list[tuple[str, Path]]:
    """(path in repo, real file on disk) for every file under ``folder``.

    A symbolic link (to a file or a folder) is refused unless ``follow_symlinks``, and even
    then unless it resolves inside ``boundary`` (default: ``folder``).
    """
    limit = os.path.realpath(boundary or folder)
    found: list[tuple[str, Path]] = []
    seen_dirs: set[str] = set()

    def resolved(full: Path, kind: str) -> str:
        if not full.is_symlink():
            return os.path.realpath(full)
        target = os.path.realpath(full)
        if not _inside(target, limit):
            raise ServerError(f"Cannot import {full}: it is a link to {target}, outside {limit}.")
        if not follow_symlinks:
            raise ServerError(
                f"Cannot import {full}: it is a symbolic link (to a {kind}); pass --follow-symlinks to import what "
                f"it points to (only links that stay inside {limit} are followed)."
            )
        return target

    for current, dirs, names in os.walk(folder, followlinks=follow_symlinks):
        real_current = os.path.realpath(current)
        if not _inside(real_current, limit) or real_current in seen_dirs:
            raise ServerError(f"Cannot import {current}: it leads outside {limit} or back into itself.")
        seen_dirs.add(real_current)
        kept = []
        for name in sorted(dirs):
            if name in SKIPPED_DIRS:
                continue
            resolved(Path(current) / name, "folder")
            kept.append(name)
        dirs[:] = kept
        for name in sorted(names):
            full = Path(current) / name
            relative = full.relative_to(folder).as_posix()
            try:
                check_path(relative)
            except InvalidInput as exc:
                raise ServerError(f"Cannot import {full}: {exc}") from exc
            real = Path(resolved(full, "file"))
            if not real.is_file():
                raise ServerError(f"Cannot import {full}: not a regular file (or a broken link).")
            found.append((relative, real))
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
    follow_symlinks: bool | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> ImportResult:
    """Add every file of ``source`` to ``repo_id`` on branch ``revision`` in one commit.

    ``link``: hard-link files into the blob store instead of copying (same filesystem; the
    sources must never be edited in place afterwards, as huggingface_hub cache blobs are not).
    ``follow_symlinks``: follow links that stay inside the source; default: yes for a
    huggingface_hub cache folder (its snapshots are links into its blobs), no otherwise.
    """
    try:
        repo_type = check_repo_type(repo_type)
        namespace, _ = check_repo_id(repo_id)
        check_branch_name(revision)
    except InvalidInput as exc:
        raise ServerError(str(exc)) from exc
    given = Path(source).expanduser()
    folder = source_folder(given, source_revision)
    cache = folder != given
    if follow_symlinks is None:
        follow_symlinks = cache
    files = collect_files(folder, boundary=given if cache else folder, follow_symlinks=follow_symlinks)
    if not files:
        raise ServerError(f"{folder} has no files to import.")
    store = HubStore(root)
    lease = store.writer_lease()  # from the first blob linked until the commit is checked
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
        missing = store.missing_blobs(sha)
        if missing:
            raise ServerError(
                f"Import into {repo_id} committed {sha}, but {len(missing)} file(s) have no content in the store "
                f"(first: {missing[0]}): run the import again."
            )
    except ApiProblem as problem:
        raise ServerError(f"Import into {repo_id} failed: {problem.message}") from problem
    finally:
        lease.close()
        store.close()
    return ImportResult(repo.repo_id, repo_type, revision, sha, len(operations), total, folder, created)
