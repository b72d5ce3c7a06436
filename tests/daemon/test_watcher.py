"""The folder watcher with real watchdog (inotify) events, in-process."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from tunehub.daemon.watcher import Batch, FolderWatcher, WatchedFolder


class Collector:
    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.cond = threading.Condition()

    def __call__(self, batch: Batch) -> None:
        with self.cond:
            self.batches.append(batch)
            self.cond.notify_all()

    def paths(self) -> set[Path]:
        with self.cond:
            return {p for b in self.batches for p in b.definitions}

    def wait_for(self, wanted: set[Path], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not wanted <= {p for b in self.batches for p in b.definitions}:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"missing {wanted - self.paths()}"
                self.cond.wait(remaining)


def test_bursts_are_coalesced_and_temp_names_ignored(tmp_path: Path) -> None:
    folder = tmp_path / "finetunes"
    folder.mkdir()
    collector = Collector()
    watcher = FolderWatcher([WatchedFolder(folder, "definitions")], collector)
    watcher.start()
    try:
        wanted = set()
        for index in range(200):
            path = folder / f"t2v_{index:03d}.json"
            tmp = folder / f".t2v_{index:03d}.json.tunehub-tmp-1-abcd"
            tmp.write_text("{}")
            os.replace(tmp, path)  # save-by-rename
            wanted.add(path)
        (folder / "notes.txt").write_text("not a definition")
        collector.wait_for(wanted)
        time.sleep(0.3)
        assert collector.paths() == wanted  # no temp names, no other files
        assert len(collector.batches) < 20  # 200 files (600 events) in a few batches, not 200
    finally:
        watcher.stop()


def test_rescan_finds_what_events_missed(tmp_path: Path) -> None:
    folder = tmp_path / "finetunes"
    folder.mkdir()
    kept, changed, removed = (folder / f"{n}.json" for n in ("kept", "changed", "removed"))
    for path in (kept, changed, removed):
        path.write_text("{}")
    collector = Collector()
    watcher = FolderWatcher([WatchedFolder(folder, "definitions")], collector)
    watcher.prime()  # not started: no events at all, only the rescan can see changes
    changed.write_text('{"model": {}}')
    removed.unlink()
    added = folder / "added.json"
    added.write_text("{}")
    batch = watcher.rescan()
    assert batch.definitions == {changed, removed, added}
    assert watcher.rescan().definitions == set()  # nothing new the second time
