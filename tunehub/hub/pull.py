"""``tunehub pull``: fetch what resolving a definition names, verified, reusing what is on disk.

For each file the resolution picks (``URLs``, ``URLs2``, the module variants, every
``preload_URLs`` entry), in this order of preference:

1. present and recorded as verified (same size, mtime and inode as when it was hashed):
   used as is, not re-hashed;
2. present but never verified: hashed once against the Hub's sha256 and recorded;
3. the same sha256 elsewhere (a file the hash cache knows, ``tunehub adopt`` included, a
   file of the same name and size in a ``readonly_weights_dirs`` folder, a same-size file in
   any weights folder, or a blob of the huggingface_hub cache; :mod:`tunehub.disk.reuse`):
   linked (hardlink, falling back to copy; ``link_mode``) after checking its hash;
4. otherwise downloaded by :mod:`tunehub.hub.download` into the first weights folder.

Verified files are recorded in the hash cache ``<home>/.tunehub/hashes.db``
(:mod:`tunehub.disk.hashcache`; losing it only costs a re-hash). Offline mode
(``HF_HUB_OFFLINE=1``) sends no request: present files succeed, missing ones fail with one
message naming them all.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunehub.config import Config
from tunehub.disk.hashcache import HashCache
from tunehub.errors import (
    DiskFullError,
    IntegrityError,
    Interrupted,
    OfflineError,
    TunehubError,
)
from tunehub.hub.download import (
    ProgressCallback,
    RemoteFile,
    download_file,
    hash_file,
    offline_mode,
    part_paths,
    probe,
)
from tunehub.registry.urls import hub_resolve_url, is_url, parse_hub_url
from tunehub.safeio import fsync_dir, remove_dead_temp_files, temp_path_for

__all__ = ["PullResult", "PulledFile", "VerifiedRecords", "pull", "hf_cache_dir", "hash_file", "place_link"]

PUBLIC_HUB = "https://huggingface.co"
_HASH_BLOCK = 8 << 20


@dataclass
class PulledFile:
    role: str
    source: str
    filename: str
    path: Path
    status: str  # present | verified | linked | downloaded
    size: int | None = None
    sha256: str | None = None
    bytes_transferred: int = 0
    linked_from: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "source": self.source,
            "filename": self.filename,
            "path": str(self.path),
            "status": self.status,
            "size": self.size,
            "sha256": self.sha256,
            "bytes_transferred": self.bytes_transferred,
            "linked_from": str(self.linked_from) if self.linked_from else None,
        }


@dataclass
class PullResult:
    id: str
    files: list[PulledFile] = field(default_factory=list)
    quantized: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def bytes_transferred(self) -> int:
        return sum(item.bytes_transferred for item in self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "files": [item.to_json() for item in self.files],
            "bytes_transferred": self.bytes_transferred,
            "quantized": [str(path) for path in self.quantized],
            "notes": self.notes,
        }


# --- verified-file records ---------------------------------------------------------


class VerifiedRecords(HashCache):
    """The hash cache (:mod:`tunehub.disk.hashcache`) under the names pull and publish use."""

    def find_sha256(self, sha256: str) -> Iterable[Path]:
        return self.find(sha256)

    def add(self, path: Path, sha256: str, source: str | None = None, commit: str | None = None) -> None:
        self.placed(path, sha256, source, commit)


# --- hashing and linking -----------------------------------------------------------


def place_link(source: Path, dest: Path, mode: str) -> str:
    """Make ``dest`` the same bytes as ``source`` atomically; returns how (hardlink|symlink|copy)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(dest)
    how = mode
    try:
        if mode == "hardlink":
            try:
                os.link(source, tmp)
            except OSError:
                how = "copy"
        elif mode == "symlink":
            os.symlink(os.path.realpath(source), tmp)
        if how == "copy":
            with open(source, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, _HASH_BLOCK)
                dst.flush()
                os.fsync(dst.fileno())
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return how


def hf_cache_dir() -> Path:
    """huggingface_hub's cache folder, read now (the library reads it once at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _hf_cache_blobs(sha256: str) -> list[Path]:
    cache = hf_cache_dir()
    if not cache.is_dir():
        return []
    found = []
    with contextlib.suppress(OSError):
        for repo_dir in cache.iterdir():
            blob = repo_dir / "blobs" / sha256
            if blob.is_file():
                found.append(blob)
    return found


# --- the flow ----------------------------------------------------------------------


@dataclass
class _Job:
    role: str
    source: str
    filename: str
    path: Path  # where it is, or where it will be placed
    present: bool
    fetch_url: str | None = None
    endpoint: str | None = None
    token: bool | None = None  # None: the user's token; False: never send it
    remote: RemoteFile | None = None


def _fetch_target(cfg: Config, source: str) -> tuple[str, str | None, bool | None]:
    """The URL to fetch for a definition entry, the Hub endpoint to use, and the token policy.

    Entries written for the public Hub follow ``HF_ENDPOINT`` (a mirror, a local Hub), as
    WanGP's ``hf_hub_download`` does. The user's token goes only to the configured endpoint.
    """
    hub = parse_hub_url(source)
    if hub is None:
        return source, None, False
    if hub.endpoint.rstrip("/") == cfg.endpoint.rstrip("/"):
        return source, cfg.endpoint, None
    if hub.endpoint.rstrip("/") == PUBLIC_HUB:
        return hub_resolve_url(cfg.endpoint, hub.repo_id, hub.revision, hub.path, hub.repo_type), cfg.endpoint, None
    return source, hub.endpoint, False


fetch_target = _fetch_target  # for verify --repair and pull --update (tunehub.disk)


def _jobs(cfg: Config, registry: Any, definition_id: str, quantization: str | None, dtype: str | None,
          all_variants: bool, loras: bool = True) -> tuple[list[_Job], Any]:
    resolution = registry.resolve(definition_id, quantization=quantization, dtype=dtype)
    definition = registry.get(definition_id)
    jobs: list[_Job] = []
    seen: set[str] = set()

    def add(role: str, source: str) -> None:
        from tunehub.registry.urls import local_name

        name = local_name(source)
        if role == "lora":  # LoRAs go to the family's LoRA folder (WanGP's loras/<family>/)
            path, present = registry.locate_lora(definition, source)
        else:
            path, present = registry.locate_source(source, definition.origin)
        if str(path) in seen:
            return
        seen.add(str(path))
        jobs.append(_Job(role, source, name, Path(path), present))

    for choice in resolution.all_files(loras=loras):
        sources = choice.candidates if all_variants and choice.role not in ("preload", "lora") else [choice.source]
        if choice.source in sources:  # the chosen one first
            sources = [choice.source, *[s for s in sources if s != choice.source]]
        for source in sources:
            add(choice.role, source)
    return jobs, resolution


def pull(
    cfg: Config,
    registry: Any,
    id: str,
    quantization: str | None = None,
    dtype: str | None = None,
    all_variants: bool = False,
    progress: ProgressCallback | None = None,
    *,
    connections: int = 4,
    parallel_files: int = 2,
    link_mode: str | None = None,
    loras: bool = True,
    cancel: threading.Event | None = None,
    timeout: float = 30.0,
) -> PullResult:
    """Fetch every file ``registry.resolve(id, ...)`` names into the first weights folder.

    ``progress(event)`` receives ``{file, total, completed, status}`` (status: checking,
    hashing, downloading, resuming, verifying, linked, present, done, failed), from one
    thread at a time. Raises the first error after every other file has been tried.
    ``cancel`` (or Ctrl-C, KeyboardInterrupt in the calling thread) stops every transfer
    within a fraction of a second; partials and their records are kept for the next run.
    ``timeout``: seconds without data (or under 1 KiB/s) before a connection is retried.
    Quantizing afterwards (``auto_quantize``) is :func:`tunehub.flows.pull_definition`'s part.
    """
    definition_id = id
    link_mode = link_mode or cfg.link_mode
    emit_lock = threading.Lock()
    stop = cancel if cancel is not None else threading.Event()

    def emit(event: dict[str, Any]) -> None:
        if stop.is_set():
            raise Interrupted(f"pull of '{definition_id}' stopped; partial downloads are kept")
        if progress is not None:
            with emit_lock:
                progress(event)

    jobs, resolution = _jobs(cfg, registry, definition_id, quantization, dtype, all_variants, loras)
    remove_dead_temp_files(cfg.weights_dirs)  # a killed earlier run's half-written links and copies
    records = VerifiedRecords(cfg.state_dir)
    offline = offline_mode()
    result = PullResult(id=definition_id)
    results: dict[str, PulledFile] = {}
    context = f" (definition '{definition_id}')"

    missing_local = [job for job in jobs if not is_url(job.source) and not job.present]
    if missing_local:
        names = ", ".join(f"{job.source} ({job.role})" for job in missing_local)
        folders = ", ".join(str(d) for d in cfg.weights_dirs)
        raise TunehubError(
            f"definition '{definition_id}' names local file(s) that are in no weights folder ({folders}): {names}"
        )
    for job in jobs:
        if not is_url(job.source):
            results[job.filename] = PulledFile(job.role, job.source, job.filename, job.path, "present",
                                               size=job.path.stat().st_size, sha256=records.lookup(job.path))
            continue
        job.fetch_url, job.endpoint, job.token = _fetch_target(cfg, job.source)
        if job.present:
            recorded = records.lookup(job.path)
            if recorded is not None or offline:
                results[job.filename] = PulledFile(job.role, job.source, job.filename, job.path, "present",
                                                   size=job.path.stat().st_size, sha256=recorded)
                emit({"file": job.filename, "total": job.path.stat().st_size,
                      "completed": job.path.stat().st_size, "status": "present"})
    url_jobs = [job for job in jobs if job.filename not in results]
    if offline and url_jobs:
        names = ", ".join(job.filename for job in url_jobs)
        raise OfflineError(
            f"offline mode (HF_HUB_OFFLINE=1) is on and definition '{definition_id}' needs file(s) that are "
            f"not in any weights folder: {names}; unset HF_HUB_OFFLINE to download them"
        )

    # metadata first (small requests), so the disk check covers everything before any byte moves
    for job in url_jobs:
        emit({"file": job.filename, "total": None, "completed": 0, "status": "checking"})
        job.remote = probe(job.fetch_url or job.source, endpoint=job.endpoint, token=job.token,
                           context=f"{context} for {job.filename}", timeout=timeout)
    to_download = [job for job in url_jobs if not job.present]
    needed = 0
    for job in to_download:
        part, _ = part_paths(job.path)
        already = part.stat().st_size if part.exists() else 0
        needed += max(0, job.remote.size - already) if job.remote else 0
    if to_download:
        folder = to_download[0].path.parent
        folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(folder).free
        if needed > free:
            raise DiskFullError(
                f"not enough free space in {folder} to pull '{definition_id}': "
                f"{_size(needed)} to fetch, {_size(free)} free"
            )

    errors: list[BaseException] = []

    def process(job: _Job) -> None:
        try:
            results[job.filename] = _process_url_job(cfg, job, records, link_mode, emit, connections, context,
                                                     stop, timeout)
        except BaseException as exc:  # reported after the other files are done
            if not stop.is_set() and progress is not None:
                with emit_lock:
                    progress({"file": job.filename, "total": job.remote.size if job.remote else None, "completed": 0,
                              "status": "failed", "error": str(exc)})
            errors.append(exc)

    if url_jobs:
        with ThreadPoolExecutor(max_workers=max(1, parallel_files), thread_name_prefix="tunehub-pull") as pool:
            try:
                list(pool.map(process, url_jobs))
            except BaseException:
                stop.set()  # Ctrl-C: the transfers stop now instead of finishing their files
                raise
    result.files = [results[job.filename] for job in jobs if job.filename in results]
    if stop.is_set():
        raise Interrupted(f"pull of '{definition_id}' stopped; partial downloads are kept: run the same command to resume")
    if errors:
        raise errors[0]
    return result


def _size(count: int) -> str:
    return f"{count / 1e9:.2f} GB" if count >= 100_000_000 else f"{count / 1e6:.1f} MB"


def _process_url_job(
    cfg: Config,
    job: _Job,
    records: VerifiedRecords,
    link_mode: str,
    emit: Callable[[dict[str, Any]], None],
    connections: int,
    context: str,
    cancel: threading.Event | None = None,
    timeout: float = 30.0,
) -> PulledFile:
    remote = job.remote
    assert remote is not None
    expected = remote.sha256
    label = job.filename

    def hashing(total: int) -> Callable[[int], None]:
        return lambda done: emit({"file": label, "total": total, "completed": done, "status": "hashing"})

    if job.present:
        size = job.path.stat().st_size
        if size != remote.size:
            raise IntegrityError(
                f"{job.path} is {size} bytes but {job.fetch_url} is {remote.size}{context}; "
                "move or delete the local file to download the published one"
            )
        if expected:
            digest = records.sha256(job.path, hashing(size))
            if digest != expected:
                raise IntegrityError(
                    f"{job.path} differs from {job.fetch_url}{context} (sha256 {digest}, expected {expected}); "
                    "move or delete the local file to download the published one"
                )
            records.add(job.path, digest, job.source, remote.commit)
        emit({"file": label, "total": size, "completed": size, "status": "present"})
        return PulledFile(job.role, job.source, label, job.path, "verified", size=size, sha256=expected)

    # same bytes already somewhere? (only when the content hash is known)
    if expected:
        for candidate in _link_candidates(cfg, records, expected, remote.size, job.path):
            if records.sha256(candidate, hashing(remote.size)) != expected:
                continue
            how = place_link(candidate, job.path, link_mode)
            records.add(job.path, expected, job.source, remote.commit)
            emit({"file": label, "total": remote.size, "completed": remote.size, "status": "linked"})
            return PulledFile(job.role, job.source, label, job.path, f"linked ({how})", size=remote.size,
                              sha256=expected, linked_from=candidate)

    result = download_file(
        job.fetch_url or job.source,
        job.path,
        remote=remote,
        progress=emit,
        connections=connections,
        label=label,
        context=context,
        cancel=cancel,
        timeout=timeout,
    )
    records.add(job.path, result.sha256, job.source, remote.commit)
    return PulledFile(job.role, job.source, label, job.path, "downloaded", size=result.size, sha256=result.sha256,
                      bytes_transferred=result.bytes_transferred)


def _link_candidates(cfg: Config, records: VerifiedRecords, sha256: str, size: int, target: Path) -> Iterable[Path]:
    from tunehub.disk.reuse import reuse_candidates

    return reuse_candidates(cfg, records, sha256, size, target, extra=_hf_cache_blobs(sha256))

