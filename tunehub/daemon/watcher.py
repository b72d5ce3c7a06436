"""Folder watching with watchdog: coalesced batches, a rescan backstop, re-watch.

File events are collected into a pending set and handed over in one batch once the
folder has been quiet for a moment (``QUIET`` s, at most ``MAX_BATCH_DELAY`` s after
the first event): an editor's save-by-rename or 500 files copied at once become one
batch, and a single drop is handed over in tens of milliseconds. A full rescan
compares (mtime, size) of every file against what was seen, for events the kernel
dropped (inotify queue overflow, network filesystems). A watched folder that
disappears is noticed by :meth:`FolderWatcher.check_folders` (called every second)
and watched again, with a rescan, when it comes back.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunehub.safeio import is_temp_name

__all__ = ["FolderWatcher", "WatchedFolder", "Batch"]

QUIET = 0.02
MAX_BATCH_DELAY = 0.1
WEIGHT_SUFFIXES = (".safetensors", ".sft", ".bin", ".pt", ".pth", ".gguf", ".ckpt")

logger = logging.getLogger("tunehub.daemon")


@dataclass(frozen=True)
class WatchedFolder:
    path: Path
    kind: str  # "definitions" | "weights"
    recursive: bool = False


@dataclass
class Batch:
    definitions: set[Path]
    weights: set[Path]
    reason: str = "events"


def is_definition_name(name: str) -> bool:
    return name.endswith(".json") and not name.startswith(".") and not is_temp_name(name)


def is_weight_name(name: str) -> bool:
    return name.lower().endswith(WEIGHT_SUFFIXES) and not name.startswith(".") and not is_temp_name(name)


class FolderWatcher:
    """Watches folders and calls ``on_batch(Batch)`` from its own thread."""

    def __init__(self, folders: list[WatchedFolder], on_batch: Callable[[Batch], None]) -> None:
        self._on_batch = on_batch
        self._folders: list[WatchedFolder] = []
        self._lock = threading.Lock()
        self._pending_definitions: set[Path] = set()
        self._pending_weights: set[Path] = set()
        self._first_pending: float | None = None
        self._last_event = 0.0
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._observer: Any = None
        self._watches: dict[Path, Any] = {}
        self._known: dict[Path, tuple[int, int]] = {}
        self._thread: threading.Thread | None = None
        self.set_folders(folders, initial=True)

    # --- folder set ----------------------------------------------------------------
    def set_folders(self, folders: list[WatchedFolder], initial: bool = False) -> None:
        """Change the watched folders (on SIGHUP); new ones are scanned."""
        unique: dict[Path, WatchedFolder] = {}
        for folder in folders:
            unique.setdefault(folder.path, folder)
        with self._lock:
            old = {f.path for f in self._folders}
            self._folders = list(unique.values())
        if self._observer is not None:
            for path in old - set(unique):
                self._unwatch(path)
            self.check_folders()
        if not initial:
            self.rescan(reason="folders changed")

    def _folder_for(self, path: Path) -> WatchedFolder | None:
        for folder in self._folders:
            if path.parent == folder.path or (folder.recursive and folder.path in path.parents):
                return folder
        return None

    # --- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        from watchdog.observers import Observer

        self._observer = Observer()
        self._observer.start()
        self.check_folders()
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wakeup.set()
        if self._observer is not None:
            try:
                self._observer.stop()
                self._observer.join(timeout=3)
            except Exception:  # a watch that died with its folder may refuse to stop cleanly
                pass
        if self._thread is not None:
            self._thread.join(timeout=3)

    def check_folders(self) -> None:
        """Watch folders that (re)appeared, drop watches of folders that disappeared."""
        if self._observer is None:
            return
        for folder in list(self._folders):
            exists = folder.path.is_dir()
            watched = folder.path in self._watches
            if exists and watched:
                emitter_alive = self._emitter_alive(self._watches[folder.path])
                if emitter_alive:
                    continue
                # Deleted and recreated between two checks: the old watch died with the old folder.
                self._unwatch(folder.path)
                watched = False
            if exists and not watched:
                try:
                    self._watches[folder.path] = self._observer.schedule(
                        _Handler(self), str(folder.path), recursive=folder.recursive
                    )
                except OSError as exc:
                    logger.warning("cannot watch %s: %s", folder.path, exc, extra={"event": "watch.error"})
                    continue
                self.rescan(folder.path, reason="folder watched")
            elif not exists and watched:
                self._unwatch(folder.path)
                self.rescan(folder.path, reason="folder disappeared")

    def _emitter_alive(self, watch: Any) -> bool:
        emitter = getattr(self._observer, "_emitter_for_watch", {}).get(watch)
        return emitter is None or emitter.is_alive()

    def _unwatch(self, path: Path) -> None:
        watch = self._watches.pop(path, None)
        if watch is None or self._observer is None:
            return
        try:
            self._observer.unschedule(watch)
        except Exception:  # already gone with its folder
            pass

    # --- events -------------------------------------------------------------------
    def notice(self, path_text: str, is_directory: bool = False) -> None:
        """A raw path from watchdog: queue it if it is ours."""
        if not path_text:
            return
        path = Path(path_text)
        folder = self._folder_for(path)
        if folder is None:
            if any(f.path == path for f in self._folders):
                self._wakeup.set()  # the folder itself: check_folders handles it
            return
        name = path.name
        with self._lock:
            if folder.kind == "definitions" and is_definition_name(name):
                self._pending_definitions.add(path)
            elif folder.kind == "weights" and is_weight_name(name):
                self._pending_weights.add(path)
            elif folder.kind == "definitions" and folder.recursive and is_directory:
                # A sub-folder of a recursive tree (a remote's folder) came or went.
                self._pending_definitions.update(self._known_under(path))
                self._pending_definitions.update(self._scan_dir(path))
            else:
                return
            now = time.monotonic()
            if self._first_pending is None:
                self._first_pending = now
            self._last_event = now
        self._wakeup.set()

    def _known_under(self, folder: Path) -> list[Path]:
        return [p for p in self._known if folder in p.parents]

    def _scan_dir(self, folder: Path) -> list[Path]:
        try:
            return [folder / e for e in os.listdir(folder) if is_definition_name(e)]
        except OSError:
            return []

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wakeup.wait(timeout=1.0)
            self._wakeup.clear()
            while not self._stopping.is_set():
                with self._lock:
                    if self._first_pending is None:
                        break
                    now = time.monotonic()
                    quiet_for = now - self._last_event
                    waited = now - self._first_pending
                    if quiet_for < QUIET and waited < MAX_BATCH_DELAY:
                        delay = min(QUIET - quiet_for, MAX_BATCH_DELAY - waited)
                    else:
                        batch = Batch(set(self._pending_definitions), set(self._pending_weights))
                        self._pending_definitions.clear()
                        self._pending_weights.clear()
                        self._first_pending = None
                        delay = 0.0
                if delay > 0:
                    time.sleep(delay)
                    continue
                self._deliver(batch)

    def _deliver(self, batch: Batch) -> None:
        for path in batch.definitions:
            try:
                st = path.stat()
                self._known[path] = (st.st_mtime_ns, st.st_size)
            except OSError:
                self._known.pop(path, None)
        try:
            self._on_batch(batch)
        except Exception:
            logger.exception("watch batch failed", extra={"event": "watch.error"})

    # --- rescan backstop ---------------------------------------------------------
    def rescan(self, only: Path | None = None, reason: str = "rescan") -> Batch:
        """Compare every file with what was last seen; deliver the differences."""
        current: dict[Path, tuple[int, int]] = {}
        weights: set[Path] = set()
        for folder in list(self._folders):
            if only is not None and folder.path != only:
                continue
            if folder.kind == "definitions":
                current.update(_list_definitions(folder))
            else:
                weights.update(_list_weights(folder))
        if only is not None:
            known = {p: v for p, v in self._known.items() if p.parent == only or only in p.parents}
        else:
            known = dict(self._known)
        changed = {p for p, v in current.items() if known.get(p) != v}
        removed = set(known) - set(current)
        batch = Batch(changed | removed, set(), reason=reason)
        if reason != "initial":
            batch.weights = weights if only is None else set()
        if batch.definitions or batch.weights or reason in ("folder disappeared", "folder watched"):
            self._deliver(batch)
        return batch

    def prime(self) -> None:
        """Record what is on disk now without delivering it (the registry just loaded it)."""
        for folder in self._folders:
            if folder.kind == "definitions":
                self._known.update(_list_definitions(folder))


def _list_definitions(folder: WatchedFolder) -> dict[Path, tuple[int, int]]:
    found: dict[Path, tuple[int, int]] = {}
    if not folder.path.is_dir():
        return found
    walker = os.walk(folder.path) if folder.recursive else [(str(folder.path), [], os.listdir(folder.path))]
    for root, _dirs, names in walker:
        for name in names:
            if not is_definition_name(name):
                continue
            path = Path(root) / name
            try:
                st = path.stat()
            except OSError:
                continue
            found[path] = (st.st_mtime_ns, st.st_size)
    return found


def _list_weights(folder: WatchedFolder) -> set[Path]:
    try:
        return {folder.path / n for n in os.listdir(folder.path) if is_weight_name(n)}
    except OSError:
        return set()


class _Handler:
    """watchdog's handler protocol: ``dispatch(event)``; we only need the paths."""

    def __init__(self, watcher: FolderWatcher) -> None:
        self._watcher = watcher

    def dispatch(self, event: Any) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        if event.event_type == "modified" and event.is_directory:
            return
        self._watcher.notice(os.fsdecode(event.src_path), event.is_directory)
        dest = getattr(event, "dest_path", "")
        if dest:
            self._watcher.notice(os.fsdecode(dest), event.is_directory)
