"""The daemon's journal: jobs, events, remotes and seen definitions in SQLite (WAL).

``<home>/.tunehub/state.db``. Every state change of a job is one committed
transaction, so after a kill -9 or a power cut the daemon knows which jobs were
queued, which were running (they are re-queued: a download resumes from its partial,
a quantization restarts, a publish asks the remote first) and which failed.
One connection is shared by the daemon's threads behind a lock; the CLI opens its own
read-only connection, which WAL allows while the daemon writes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["Journal", "JOB_STATES", "ACTIVE_STATES"]

JOB_STATES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE_STATES = ("queued", "running")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    definition_id TEXT NOT NULL,
    params TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 5,
    last_error TEXT,
    fingerprint TEXT,
    origin TEXT NOT NULL DEFAULT 'reconcile',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    started REAL,
    finished REAL,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    progress TEXT,
    result TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_definition ON jobs(definition_id, kind);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS remotes (
    repo TEXT PRIMARY KEY,
    sha TEXT,
    state TEXT NOT NULL DEFAULT 'new',
    last_check REAL,
    last_ok REAL,
    failures INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    next_check REAL,
    requests INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS remote_files (
    repo TEXT NOT NULL,
    path TEXT NOT NULL,
    name TEXT NOT NULL,
    blob_id TEXT,
    state TEXT NOT NULL,
    problem TEXT,
    PRIMARY KEY (repo, path)
);
CREATE TABLE IF NOT EXISTS seen (
    definition_id TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    baseline INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT
);
"""

_JOB_COLUMNS = (
    "id", "kind", "definition_id", "params", "state", "attempts", "max_attempts", "last_error",
    "fingerprint", "origin", "created", "updated", "started", "finished", "next_attempt_at",
    "progress", "result",
)


def _job_row(row: sqlite3.Row | tuple[Any, ...]) -> dict[str, Any]:
    job = dict(zip(_JOB_COLUMNS, row))
    for key in ("params", "progress", "result"):
        job[key] = json.loads(job[key]) if job[key] else ({} if key == "params" else None)
    return job


class Journal:
    """Thread-safe access to ``state.db``."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self._lock = threading.RLock()
        if readonly:
            uri = f"file:{path}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=10)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives a process crash; a power cut may
            # lose the last commits but never corrupts the file.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _execute(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    # --- meta ------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self._execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self._execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value))

    # --- jobs ------------------------------------------------------------------
    def add_job(
        self,
        kind: str,
        definition_id: str,
        params: dict[str, Any] | None = None,
        *,
        fingerprint: str | None = None,
        origin: str = "reconcile",
        max_attempts: int = 5,
    ) -> dict[str, Any]:
        now = time.time()
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO jobs(kind, definition_id, params, state, max_attempts, fingerprint, origin, created, updated)"
                " VALUES(?, ?, ?, 'queued', ?, ?, ?, ?, ?)",
                (kind, definition_id, json.dumps(params or {}), max_attempts, fingerprint, origin, now, now),
            )
            job_id = int(cursor.lastrowid or 0)
        job = self.get_job(job_id)
        assert job is not None
        return job

    def get_job(self, job_id: int) -> dict[str, Any] | None:
        row = self._execute(f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs WHERE id=?", (job_id,)).fetchone()
        return _job_row(row) if row else None

    def jobs(self, states: tuple[str, ...] | None = None, limit: int = 200) -> list[dict[str, Any]]:
        sql = f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs"
        args: tuple[Any, ...] = ()
        if states:
            sql += f" WHERE state IN ({', '.join('?' * len(states))})"
            args = tuple(states)
        sql += " ORDER BY id DESC LIMIT ?"
        rows = self._execute(sql, (*args, limit)).fetchall()
        return [_job_row(row) for row in rows]

    def active_job_for(self, definition_id: str) -> dict[str, Any] | None:
        row = self._execute(
            f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs WHERE definition_id=? AND state IN ('queued', 'running')"
            " ORDER BY id LIMIT 1",
            (definition_id,),
        ).fetchone()
        return _job_row(row) if row else None

    def last_job(self, kind: str, definition_id: str) -> dict[str, Any] | None:
        row = self._execute(
            f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs WHERE definition_id=? AND kind=? ORDER BY id DESC LIMIT 1",
            (definition_id, kind),
        ).fetchone()
        return _job_row(row) if row else None

    def next_runnable(self, kind: str, now: float) -> dict[str, Any] | None:
        """Claim the oldest queued job of ``kind`` whose retry time has come (marks it running)."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs WHERE kind=? AND state='queued' AND next_attempt_at<=?"
                " ORDER BY next_attempt_at, id LIMIT 1",
                (kind, now),
            ).fetchone()
            if not row:
                return None
            job = _job_row(row)
            self._db.execute(
                "UPDATE jobs SET state='running', attempts=attempts+1, started=?, updated=? WHERE id=?",
                (now, now, job["id"]),
            )
        return self.get_job(job["id"])

    def claim_job(self, job_id: int) -> dict[str, Any] | None:
        """Mark one queued job running (``--once`` runs jobs without waiting for their retry time)."""
        now = time.time()
        with self._lock:
            cursor = self._db.execute(
                "UPDATE jobs SET state='running', attempts=attempts+1, started=?, updated=? WHERE id=? AND state='queued'",
                (now, now, job_id),
            )
            if cursor.rowcount != 1:
                return None
        return self.get_job(job_id)

    def next_wakeup(self) -> float | None:
        row = self._execute("SELECT MIN(next_attempt_at) FROM jobs WHERE state='queued'").fetchone()
        return row[0] if row and row[0] is not None else None

    def finish_job(self, job_id: int, state: str, *, error: str | None = None, result: Any = None) -> None:
        now = time.time()
        self._execute(
            "UPDATE jobs SET state=?, last_error=COALESCE(?, last_error), result=?, finished=?, updated=? WHERE id=?",
            (state, error, json.dumps(result) if result is not None else None, now, now, job_id),
        )

    def retry_job(self, job_id: int, error: str, at: float, *, count_attempt: bool = True) -> None:
        """Back to the queue until ``at``; ``count_attempt=False`` gives the attempt back (not the job's fault)."""
        refund = 0 if count_attempt else 1
        self._execute(
            "UPDATE jobs SET state='queued', last_error=?, next_attempt_at=?, attempts=MAX(attempts-?, 0), updated=? WHERE id=?",
            (error, at, refund, time.time(), job_id),
        )

    def set_progress(self, job_id: int, progress: dict[str, Any]) -> None:
        self._execute("UPDATE jobs SET progress=?, updated=? WHERE id=?", (json.dumps(progress), time.time(), job_id))

    def cancel_job(self, job_id: int) -> str | None:
        """Cancel a queued job at once; a running one is only flagged here (returns its state)."""
        with self._lock:
            job = self.get_job(job_id)
            if job is None:
                return None
            if job["state"] == "queued":
                self.finish_job(job_id, "cancelled", error="cancelled by request")
                return "cancelled"
            return job["state"]

    def requeue_interrupted(self) -> list[int]:
        """After a crash: jobs left 'running' go back to the queue (their attempt is not counted)."""
        with self._lock:
            rows = self._db.execute("SELECT id FROM jobs WHERE state='running'").fetchall()
            ids = [row[0] for row in rows]
            self._db.execute(
                "UPDATE jobs SET state='queued', attempts=MAX(attempts-1, 0), next_attempt_at=0,"
                " last_error='interrupted: the daemon stopped while it ran', updated=? WHERE state='running'",
                (time.time(),),
            )
        return ids

    # --- events ------------------------------------------------------------------
    def add_event(self, event_type: str, data: dict[str, Any], at: float) -> int:
        cursor = self._execute("INSERT INTO events(time, type, data) VALUES(?, ?, ?)", (at, event_type, json.dumps(data)))
        return int(cursor.lastrowid or 0)

    def recent_events(self, limit: int) -> list[dict[str, Any]]:
        rows = self._execute("SELECT id, time, type, data FROM events ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [{"id": r[0], "time": r[1], "type": r[2], **json.loads(r[3])} for r in reversed(rows)]

    def trim_events(self, keep: int) -> None:
        self._execute("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?", (keep,))

    def last_event_id(self) -> int:
        row = self._execute("SELECT seq FROM sqlite_sequence WHERE name='events'").fetchone()
        return int(row[0]) if row else 0

    # --- remotes -----------------------------------------------------------------
    def remote(self, repo: str) -> dict[str, Any]:
        row = self._execute(
            "SELECT repo, sha, state, last_check, last_ok, failures, last_error, next_check, requests FROM remotes WHERE repo=?",
            (repo,),
        ).fetchone()
        keys = ("repo", "sha", "state", "last_check", "last_ok", "failures", "last_error", "next_check", "requests")
        if not row:
            return dict.fromkeys(keys) | {"repo": repo, "state": "new", "failures": 0, "requests": 0}
        return dict(zip(keys, row))

    def update_remote(self, repo: str, **fields: Any) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO remotes(repo) VALUES(?)", (repo,))
            if fields:
                assignments = ", ".join(f"{key}=?" for key in fields)
                self._db.execute(f"UPDATE remotes SET {assignments} WHERE repo=?", (*fields.values(), repo))

    def remote_files(self, repo: str) -> dict[str, dict[str, Any]]:
        rows = self._execute("SELECT path, name, blob_id, state, problem FROM remote_files WHERE repo=?", (repo,)).fetchall()
        return {r[0]: {"path": r[0], "name": r[1], "blob_id": r[2], "state": r[3], "problem": r[4]} for r in rows}

    def set_remote_file(self, repo: str, path: str, name: str, blob_id: str | None, state: str, problem: str | None = None) -> None:
        self._execute(
            "INSERT INTO remote_files(repo, path, name, blob_id, state, problem) VALUES(?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(repo, path) DO UPDATE SET name=excluded.name, blob_id=excluded.blob_id,"
            " state=excluded.state, problem=excluded.problem",
            (repo, path, name, blob_id, state, problem),
        )

    # --- seen definitions (for pull = "new") ------------------------------------
    def seen_ids(self) -> dict[str, bool]:
        rows = self._execute("SELECT definition_id, baseline FROM seen").fetchall()
        return {r[0]: bool(r[1]) for r in rows}

    def mark_seen(self, definition_ids: list[str], baseline: bool) -> None:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT OR IGNORE INTO seen(definition_id, first_seen, baseline) VALUES(?, ?, ?)",
                    [(definition_id, now, int(baseline)) for definition_id in definition_ids],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
