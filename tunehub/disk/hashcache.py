"""The sha256 of files on disk, cached by (device, inode, size, mtime), and what each file was fetched as.

``<home>/.tunehub/hashes.db`` (SQLite, WAL), three tables:

* ``hashes``: ``(dev, ino) -> size, mtime_ns, sha256``. A file whose inode, size and mtime
  are unchanged since it was hashed has the recorded sha256: every "is this the Hub's
  file" question (pull, verify, outdated, reuse) asks here first, so a second look at a
  200 GB folder costs one ``stat`` per file. Hard links share one entry.
* ``paths``: ``path -> (dev, ino)``, so the same bytes can be found by hash (reuse).
* ``origins``: ``path -> sha256, source URL, commit`` recorded when tunehub placed the file
  (download, link, update): what ``verify`` checks the bytes against even after they changed.
* ``removed``: definitions the user removed with ``tunehub rm`` (not fetched again by the
  daemon until ``tunehub pull ID``).

It is a cache: deleting the file costs a re-hash, never a wrong answer. Writers from several
processes (the daemon, a CLI pull) share it through SQLite's locking.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HashCache", "Origin", "FILE_NAME"]

FILE_NAME = "hashes.db"
LEGACY_JSON = "verified.json"  # the earlier path-keyed record; imported once

_SCHEMA = """
CREATE TABLE IF NOT EXISTS hashes (
    dev INTEGER NOT NULL, ino INTEGER NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL, hashed_at REAL NOT NULL, PRIMARY KEY (dev, ino)
);
CREATE INDEX IF NOT EXISTS hashes_sha256 ON hashes(sha256);
CREATE TABLE IF NOT EXISTS paths (path TEXT PRIMARY KEY, dev INTEGER NOT NULL, ino INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS paths_inode ON paths(dev, ino);
CREATE TABLE IF NOT EXISTS origins (
    path TEXT PRIMARY KEY, sha256 TEXT NOT NULL, source TEXT, commit_hash TEXT, size INTEGER, recorded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS removed (
    definition_id TEXT PRIMARY KEY, variant TEXT NOT NULL, at REAL NOT NULL, files TEXT NOT NULL DEFAULT '[]'
);
"""


@dataclass(frozen=True)
class Origin:
    """What tunehub placed at a path: the sha256 the Hub announced, from where, at which commit."""

    path: str
    sha256: str
    source: str | None
    commit: str | None
    size: int | None
    recorded_at: float


def _key(path: Path) -> os.stat_result | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    import stat as stat_module

    return stat if stat_module.S_ISREG(stat.st_mode) else None


class HashCache:
    """Thread-safe access to ``hashes.db`` of one home's state folder."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / FILE_NAME
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30, isolation_level=None)
        with contextlib.suppress(sqlite3.OperationalError):  # another process may hold it a moment
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._import_legacy()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> HashCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- content hashes ---------------------------------------------------------------

    def lookup(self, path: str | os.PathLike[str]) -> str | None:
        """The cached sha256 of ``path`` if the file is unchanged since it was hashed."""
        stat = _key(Path(path))
        if stat is None:
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT sha256 FROM hashes WHERE dev=? AND ino=? AND size=? AND mtime_ns=?",
                (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns),
            ).fetchone()
        if row is not None:
            self._remember_path(Path(path), stat)
        return row[0] if row else None

    def record(self, path: str | os.PathLike[str], sha256: str, stat: os.stat_result | None = None) -> None:
        """Record that ``path`` (as it is now, or as ``stat`` saw it) has ``sha256``."""
        path = Path(path)
        stat = stat or _key(path)
        if stat is None:
            return
        with self._transaction() as db:
            db.execute(
                "INSERT INTO hashes(dev, ino, size, mtime_ns, sha256, hashed_at) VALUES(?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(dev, ino) DO UPDATE SET size=excluded.size, mtime_ns=excluded.mtime_ns,"
                " sha256=excluded.sha256, hashed_at=excluded.hashed_at",
                (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, sha256, time.time()),
            )
            db.execute(
                "INSERT OR REPLACE INTO paths(path, dev, ino) VALUES(?, ?, ?)",
                (str(path.absolute()), stat.st_dev, stat.st_ino),
            )

    def _remember_path(self, path: Path, stat: os.stat_result) -> None:
        """Another name of known bytes (a hard link): findable by hash from now on; written only if new."""
        key = str(path.absolute())
        with self._lock:
            row = self._db.execute("SELECT dev, ino FROM paths WHERE path=?", (key,)).fetchone()
            if row != (stat.st_dev, stat.st_ino):
                self._db.execute("INSERT OR REPLACE INTO paths(path, dev, ino) VALUES(?, ?, ?)",
                                 (key, stat.st_dev, stat.st_ino))

    def sha256(self, path: str | os.PathLike[str], progress: Callable[[int], None] | None = None,
               *, rehash: bool = False) -> str:
        """The sha256 of ``path``: from the cache when the file is unchanged, else read and recorded."""
        from tunehub.hub.download import hash_file

        path = Path(path)
        if not rehash:
            cached = self.lookup(path)
            if cached is not None:
                return cached
        before = os.stat(path)
        digest = hash_file(path, progress)
        after = os.stat(path)
        # a file that changed while it was read is not recorded (the hash may be of neither version)
        if (before.st_size, before.st_mtime_ns, before.st_ino) == (after.st_size, after.st_mtime_ns, after.st_ino):
            self.record(path, digest, after)
        return digest

    def find(self, sha256: str) -> list[Path]:
        """Paths whose current bytes are known (by the cache) to have ``sha256``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT p.path, h.dev, h.ino, h.size, h.mtime_ns FROM hashes h JOIN paths p"
                " ON p.dev=h.dev AND p.ino=h.ino WHERE h.sha256=?",
                (sha256,),
            ).fetchall()
        found = []
        for path, dev, ino, size, mtime_ns in rows:
            stat = _key(Path(path))
            if stat is not None and (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns) == (dev, ino, size, mtime_ns):
                found.append(Path(path))
        return found

    def forget(self, path: str | os.PathLike[str]) -> None:
        """Drop what is known about a path (after deleting it)."""
        key = str(Path(path).absolute())
        with self._transaction() as db:
            db.execute("DELETE FROM paths WHERE path=?", (key,))
            db.execute("DELETE FROM origins WHERE path=?", (key,))

    # --- origins -----------------------------------------------------------------

    def set_origin(self, path: str | os.PathLike[str], sha256: str, source: str | None,
                   commit: str | None = None, size: int | None = None) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO origins(path, sha256, source, commit_hash, size, recorded_at)"
                " VALUES(?, ?, ?, ?, ?, ?)",
                (str(Path(path).absolute()), sha256, source, commit, size, time.time()),
            )

    def origin(self, path: str | os.PathLike[str]) -> Origin | None:
        with self._lock:
            row = self._db.execute(
                "SELECT path, sha256, source, commit_hash, size, recorded_at FROM origins WHERE path=?",
                (str(Path(path).absolute()),),
            ).fetchone()
        return Origin(*row) if row else None

    def placed(self, path: str | os.PathLike[str], sha256: str, source: str | None,
               commit: str | None = None) -> None:
        """tunehub put these verified bytes at ``path``: record the hash and where they came from."""
        self.record(path, sha256)
        stat = _key(Path(path))
        self.set_origin(path, sha256, source, commit, stat.st_size if stat else None)

    # --- "removed by you" ------------------------------------------------------------

    def mark_removed(self, definition_id: str, variant: str, files: list[str]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO removed(definition_id, variant, at, files) VALUES(?, ?, ?, ?)",
                (definition_id, variant, time.time(), json.dumps(files)),
            )

    def clear_removed(self, definition_id: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM removed WHERE definition_id=?", (definition_id,)).rowcount > 0

    def removed(self) -> dict[str, dict[str, object]]:
        with self._lock:
            rows = self._db.execute("SELECT definition_id, variant, at, files FROM removed").fetchall()
        return {r[0]: {"variant": r[1], "at": r[2], "files": json.loads(r[3])} for r in rows}

    # --- the earlier JSON record ---------------------------------------------------------

    def _import_legacy(self) -> None:
        legacy = self.state_dir / LEGACY_JSON
        with self._lock:
            done = self._db.execute("SELECT value FROM meta WHERE key='legacy_imported'").fetchone()
        if done is not None or not legacy.is_file():
            return
        entries: dict[str, dict[str, object]] = {}
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(legacy.read_text(encoding="utf-8"))
            if isinstance(data, dict) and isinstance(data.get("files"), dict):
                entries = {k: v for k, v in data["files"].items() if isinstance(v, dict)}
        for key, entry in entries.items():
            stat = _key(Path(key))
            sha = entry.get("sha256")
            if stat is None or not isinstance(sha, str):
                continue
            if (entry.get("size"), entry.get("mtime_ns"), entry.get("ino")) != (stat.st_size, stat.st_mtime_ns, stat.st_ino):
                continue
            self.record(key, sha, stat)
            source = entry.get("source")
            self.set_origin(key, sha, source if isinstance(source, str) else None, None, stat.st_size)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('legacy_imported', ?)", (str(time.time()),))
