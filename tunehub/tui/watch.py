"""Watch the definition folders with watchdog and report changed ``.json`` files.

Folders that do not exist yet (no ``finetunes/`` at start, a remote subscribed later)
are picked up when they appear: the home and the remote folder are watched for new
folders too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from tunehub.safeio import is_temp_name

Callback = Callable[[set[Path]], None]


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: DefinitionWatcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        paths = [event.src_path, getattr(event, "dest_path", "")]
        if event.is_directory:
            if event.event_type in ("created", "moved"):
                self.watcher.folder_appeared(Path(str(paths[-1] or paths[0])))
            return
        changed = set()
        for raw in paths:
            if not raw:
                continue
            path = Path(raw if isinstance(raw, str) else raw.decode())
            if path.suffix == ".json" and not is_temp_name(path.name) and not path.name.startswith("."):
                changed.add(path)
        if changed:
            self.watcher.callback(changed)


class DefinitionWatcher:
    """Calls ``callback(paths)`` from watchdog's thread when definition files change."""

    def __init__(self, home: Path, folders: Sequence[Path], remote_dir: Path, callback: Callback) -> None:
        self.home = home
        self.folders = [Path(folder) for folder in folders]
        self.remote_dir = Path(remote_dir)
        self.callback = callback
        self._observer = Observer()
        self._handler = _Handler(self)
        self._watched: set[Path] = set()
        self._lock = threading.Lock()

    def _watch(self, folder: Path, recursive: bool = False) -> None:
        with self._lock:
            if folder in self._watched or not folder.is_dir():
                return
            self._observer.schedule(self._handler, str(folder), recursive=recursive)
            self._watched.add(folder)

    def folder_appeared(self, folder: Path) -> None:
        if folder in self.folders or folder == self.remote_dir or folder.parent == self.remote_dir:
            self._watch(folder)
            # Files may have been written before the watch began.
            existing = {p for p in folder.glob("*.json") if not is_temp_name(p.name)}
            if existing:
                self.callback(existing)

    def start(self) -> None:
        for folder in self.folders:
            self._watch(folder)
        self._watch(self.remote_dir)
        if self.remote_dir.is_dir():
            for child in self.remote_dir.iterdir():
                if child.is_dir() and not child.name.startswith("."):
                    self._watch(child)  # remote/<repo>/ folders
        # New definition folders appear in the home or below folders already watched.
        self._watch(self.home)
        self._observer.daemon = True
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
