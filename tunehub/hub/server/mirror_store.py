"""What the mirror keeps beside the Hub server's own tables (same ``hub.db``).

A mirrored revision is stored as an ordinary commit of an ordinary repo (the upstream's
commit sha, its full file list with sizes and hashes), so every read endpoint of the
server answers for it unchanged. What makes it a mirror is recorded here:

    mirror_repos    which repos come from the upstream, restricted (private/gated) or not,
                    last check, hits
    mirror_refs     when each revision name was last checked upstream (the TTL)
    mirror_blobs    blobs fetched from the upstream: size, last read (LRU eviction), hits
    mirror_grants   LAN tokens allowed to read a restricted mirrored repo
    mirror_state    the upstream the server uses and whether it answered last time

A file whose blob is not on disk is fetched on its first read. A regular (non-LFS) file's
sha256 is not known before that (the upstream lists only its git blob sha1): its row in
``commit_files`` holds ``git-<sha1>`` until the fetch has verified the bytes and knows
their sha256.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from tunehub.errors import ServerError
from tunehub.hub.server.storage import HubStore, Repo
from tunehub.hub.server.validation import check_repo_id, check_repo_type, is_commit_sha

PENDING_PREFIX = "git-"  # commit_files.sha256 of a regular file not fetched yet: git-<blob sha1>

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mirror_repos(
    repo_id INTEGER PRIMARY KEY, upstream TEXT NOT NULL, restricted INTEGER NOT NULL,
    created REAL NOT NULL, last_check REAL NOT NULL, hits INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS mirror_refs(
    repo_id INTEGER NOT NULL, name TEXT NOT NULL, checked REAL NOT NULL, PRIMARY KEY(repo_id, name));
CREATE TABLE IF NOT EXISTS mirror_blobs(
    sha256 TEXT PRIMARY KEY, git_oid TEXT, size INTEGER NOT NULL, fetched REAL NOT NULL,
    last_read REAL NOT NULL, hits INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS mirror_blobs_by_git ON mirror_blobs(git_oid);
CREATE TABLE IF NOT EXISTS mirror_grants(
    token_id INTEGER NOT NULL, repo_type TEXT NOT NULL, repo_name TEXT NOT NULL COLLATE NOCASE,
    created REAL NOT NULL, PRIMARY KEY(token_id, repo_type, repo_name));
CREATE TABLE IF NOT EXISTS mirror_state(key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def pending_key(git_oid: str) -> str:
    return PENDING_PREFIX + git_oid


def is_pending(sha256: str) -> bool:
    return sha256.startswith(PENDING_PREFIX)


@dataclass(frozen=True)
class UpstreamFile:
    """One file of an upstream revision, as its metadata lists it."""

    path: str
    size: int
    git_oid: str  # blob sha1 of the content (regular) or of the LFS pointer (LFS)
    lfs_sha256: str | None  # None for a regular file

    @property
    def sha256_or_pending(self) -> str:
        return self.lfs_sha256 if self.lfs_sha256 else pending_key(self.git_oid)


@dataclass(frozen=True)
class MirroredRepo:
    repo: Repo
    upstream: str
    restricted: bool
    last_check: float
    hits: int
    cached_bytes: int
    listed_bytes: int  # of the newest revision seen (main if mirrored)


class MirrorStore:
    """The mirror's rows in the server's database; every method is one short transaction."""

    def __init__(self, store: HubStore) -> None:
        self.store = store
        self.store._connect().executescript(_SCHEMA)

    # --- repos and revisions --------------------------------------------------------

    def mirrored(self, repo: Repo) -> tuple[str, bool] | None:
        """(upstream, restricted) if ``repo`` is a mirror, else None."""
        row = (
            self.store._connect()
            .execute("SELECT upstream, restricted FROM mirror_repos WHERE repo_id=?", (repo.id,))
            .fetchone()
        )
        return (str(row[0]), bool(row[1])) if row else None

    def ensure_repo(self, repo_type: str, repo_id: str, upstream: str, restricted: bool) -> Repo:
        """The local repo that mirrors ``repo_id`` (created without commits if new)."""
        repo_type = check_repo_type(repo_type)
        namespace, name = check_repo_id(repo_id)
        now = time.time()
        with self.store._write() as conn:
            row = conn.execute(
                "SELECT id FROM repos WHERE type=? AND namespace=? AND name=?", (repo_type, namespace, name)
            ).fetchone()
            if row is None:
                cursor = conn.execute(
                    "INSERT INTO repos(type, namespace, name, private, created) VALUES(?,?,?,?,?)",
                    (repo_type, namespace, name, int(restricted), now),
                )
                repo_pk = int(cursor.lastrowid or 0)
                conn.execute(
                    "INSERT INTO mirror_repos(repo_id, upstream, restricted, created, last_check) VALUES(?,?,?,?,?)",
                    (repo_pk, upstream, int(restricted), now, now),
                )
            else:
                repo_pk = int(row[0])
                if conn.execute("SELECT 1 FROM mirror_repos WHERE repo_id=?", (repo_pk,)).fetchone() is None:
                    raise ServerError(f"{repo_id} is a local repo of this server, not a mirror.")
                conn.execute(
                    "UPDATE mirror_repos SET restricted=?, upstream=?, last_check=? WHERE repo_id=?",
                    (int(restricted), upstream, now, repo_pk),
                )
                conn.execute("UPDATE repos SET private=? WHERE id=?", (int(restricted), repo_pk))
        repo = self.store.get_repo(repo_type, repo_id)
        assert repo is not None
        return repo

    def record_revision(
        self, repo: Repo, revision: str, sha: str, date: float, files: list[UpstreamFile], title: str
    ) -> None:
        """Store the upstream commit ``sha`` (if new) and point ``revision`` at it, checked now."""
        now = time.time()
        with self.store._write() as conn:
            if conn.execute("SELECT 1 FROM commits WHERE sha=?", (sha,)).fetchone() is None:
                seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM commits WHERE repo_id=?", (repo.id,)).fetchone()
                conn.execute(
                    "INSERT INTO commits VALUES(?,?,?,?,?,?,?,?)",
                    (sha, repo.id, None, title, "", "upstream", date, int(seq[0]) + 1),
                )
                rows = []
                for entry in files:
                    key = entry.sha256_or_pending
                    if is_pending(key):
                        # Already fetched for another revision or repo: the real sha256 is known.
                        known = conn.execute(
                            "SELECT sha256 FROM mirror_blobs WHERE git_oid=? AND size=?", (entry.git_oid, entry.size)
                        ).fetchone()
                        if known:
                            key = str(known[0])
                    rows.append((sha, entry.path, key, entry.size, entry.git_oid, int(entry.lfs_sha256 is not None)))
                conn.executemany("INSERT OR REPLACE INTO commit_files VALUES(?,?,?,?,?,?)", rows)
            if not is_commit_sha(revision) or revision != sha:
                conn.execute("INSERT OR REPLACE INTO refs VALUES(?,?,?)", (repo.id, revision, sha))
            conn.execute("INSERT OR REPLACE INTO mirror_refs VALUES(?,?,?)", (repo.id, revision, now))
            conn.execute("UPDATE mirror_repos SET last_check=? WHERE repo_id=?", (now, repo.id))

    def checked_at(self, repo: Repo, revision: str) -> float | None:
        row = (
            self.store._connect()
            .execute("SELECT checked FROM mirror_refs WHERE repo_id=? AND name=?", (repo.id, revision))
            .fetchone()
        )
        return float(row[0]) if row else None

    def has_commit(self, repo: Repo, sha: str) -> bool:
        row = self.store._connect().execute("SELECT repo_id FROM commits WHERE sha=?", (sha,)).fetchone()
        return row is not None and int(row[0]) == repo.id

    # --- blobs ------------------------------------------------------------------------

    def fetched_sha256(self, git_oid: str, size: int) -> str | None:
        """The sha256 of a regular file fetched before (by its git blob id), if its blob is on disk."""
        row = (
            self.store._connect()
            .execute("SELECT sha256 FROM mirror_blobs WHERE git_oid=? AND size=?", (git_oid, size))
            .fetchone()
        )
        if row and self.store.has_blob(str(row[0])):
            return str(row[0])
        return None

    def record_blob(self, sha256: str, size: int, git_oid: str | None) -> None:
        """A verified blob is in place: remember it and resolve the pending rows of a regular file."""
        now = time.time()
        with self.store._write() as conn:
            conn.execute(
                """INSERT INTO mirror_blobs(sha256, git_oid, size, fetched, last_read) VALUES(?,?,?,?,?)
                   ON CONFLICT(sha256) DO UPDATE SET fetched=excluded.fetched, last_read=excluded.last_read,
                   git_oid=COALESCE(excluded.git_oid, git_oid)""",
                (sha256, git_oid, size, now, now),
            )
            if git_oid is not None:
                conn.execute(
                    "UPDATE commit_files SET sha256=? WHERE sha256=? AND lfs=0", (sha256, pending_key(git_oid))
                )

    def record_reads(self, blob_reads: dict[str, tuple[float, int]], repo_hits: dict[int, int]) -> None:
        """Flush read marks gathered in memory: blob -> (last read, hits), repo -> hits."""
        if not blob_reads and not repo_hits:
            return
        with self.store._write() as conn:
            conn.executemany(
                "UPDATE mirror_blobs SET last_read=MAX(last_read, ?), hits=hits+? WHERE sha256=?",
                [(last, hits, sha) for sha, (last, hits) in blob_reads.items()],
            )
            conn.executemany(
                "UPDATE mirror_repos SET hits=hits+? WHERE repo_id=?", [(hits, pk) for pk, hits in repo_hits.items()]
            )

    # --- grants -----------------------------------------------------------------------

    def grant(self, token_id: int, repo_type: str, repo_id: str) -> None:
        check_repo_id(repo_id)
        with self.store._write() as conn:
            if conn.execute("SELECT 1 FROM tokens WHERE id=? AND revoked=0", (token_id,)).fetchone() is None:
                raise ServerError(f"No active token with id {token_id} (see `tunehub hub token list`).")
            conn.execute(
                "INSERT OR IGNORE INTO mirror_grants VALUES(?,?,?,?)",
                (token_id, check_repo_type(repo_type), repo_id, time.time()),
            )

    def revoke_grant(self, token_id: int, repo_type: str, repo_id: str) -> bool:
        with self.store._write() as conn:
            cursor = conn.execute(
                "DELETE FROM mirror_grants WHERE token_id=? AND repo_type=? AND repo_name=?",
                (token_id, repo_type, repo_id),
            )
            return cursor.rowcount > 0

    def is_granted(self, token_id: int, repo: Repo) -> bool:
        row = (
            self.store._connect()
            .execute(
                "SELECT 1 FROM mirror_grants WHERE token_id=? AND repo_type=? AND repo_name=?",
                (token_id, repo.type, repo.repo_id),
            )
            .fetchone()
        )
        return row is not None

    def grants(self) -> list[tuple[int, str, str, str]]:
        """(token id, token user, repo type, repo id) of every grant."""
        rows = self.store._connect().execute(
            """SELECT g.token_id, COALESCE(t.user, '?'), g.repo_type, g.repo_name FROM mirror_grants g
               LEFT JOIN tokens t ON t.id = g.token_id ORDER BY g.repo_name, g.token_id"""
        )
        return [(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]

    # --- upstream state ---------------------------------------------------------------

    def set_state(self, key: str, value: dict[str, Any]) -> None:
        with self.store._write() as conn:
            conn.execute("INSERT OR REPLACE INTO mirror_state VALUES(?, ?)", (key, json.dumps(value)))

    def state(self, key: str) -> dict[str, Any] | None:
        row = self.store._connect().execute("SELECT value FROM mirror_state WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    # --- listing and eviction ---------------------------------------------------------

    def list_mirrored(self) -> list[MirroredRepo]:
        conn = self.store._connect()
        rows = conn.execute(
            """SELECT r.id, r.type, r.namespace, r.name, r.private, r.created, m.upstream, m.restricted,
                      m.last_check, m.hits
               FROM mirror_repos m JOIN repos r ON r.id = m.repo_id ORDER BY r.namespace, r.name"""
        ).fetchall()
        found = []
        for row in rows:
            repo = Repo(row[0], row[1], row[2], row[3], bool(row[4]), row[5])
            cached = 0
            for (sha256,) in conn.execute(
                """SELECT DISTINCT f.sha256 FROM commit_files f JOIN commits c ON c.sha = f.commit_sha
                   WHERE c.repo_id=?""",
                (repo.id,),
            ):
                if not is_pending(sha256) and self.store.has_blob(sha256):
                    cached += self.store.blob_path(sha256).stat().st_size
            head = self.store.resolve_revision(repo, "main")
            listed = sum(f.size for f in self.store.files(head)) if head else 0
            found.append(MirroredRepo(repo, row[6], bool(row[7]), row[8], row[9], cached, listed))
        return found

    def mirror_blobs(self, repo: Repo | None = None) -> list[tuple[str, int, float]]:
        """(sha256, size, last read) of fetched blobs on disk that no local repo uses, oldest read first."""
        conn = self.store._connect()
        query = "SELECT b.sha256, b.size, b.last_read FROM mirror_blobs b"
        args: tuple = ()
        if repo is not None:
            query += """ WHERE EXISTS(SELECT 1 FROM commit_files f JOIN commits c ON c.sha = f.commit_sha
                         WHERE f.sha256 = b.sha256 AND c.repo_id = ?)"""
            args = (repo.id,)
        rows = conn.execute(query + " ORDER BY b.last_read", args).fetchall()
        chosen = []
        for sha256, size, last_read in rows:
            if not self.store.has_blob(sha256):
                continue
            used_locally = conn.execute(
                """SELECT 1 FROM commit_files f JOIN commits c ON c.sha = f.commit_sha
                   WHERE f.sha256=? AND c.repo_id NOT IN (SELECT repo_id FROM mirror_repos)
                   UNION ALL SELECT 1 FROM repo_lfs l WHERE l.oid=? LIMIT 1""",
                (sha256, sha256),
            ).fetchone()
            if used_locally is None:
                chosen.append((str(sha256), int(size), float(last_read)))
        return chosen

    def forget_blob(self, sha256: str) -> None:
        """The blob was evicted; its commit rows stay (the next read fetches it again)."""
        with self.store._write() as conn:
            conn.execute("DELETE FROM mirror_blobs WHERE sha256=?", (sha256,))


@dataclass(frozen=True)
class Eviction:
    blobs: int
    bytes: int
    kept_bytes: int  # mirrored bytes still on disk afterwards


def evict(
    mirror_store: MirrorStore,
    *,
    repo: Repo | None = None,
    older_than_s: float | None = None,
    max_size: int | None = None,
    now: float | None = None,
) -> Eviction:
    """Remove fetched blobs: all of ``repo``'s, those last read more than ``older_than_s`` ago,
    then least recently read ones until at most ``max_size`` bytes remain. Blobs a local repo
    uses are never touched; the commits stay, so an evicted file is fetched again when read."""
    now = time.time() if now is None else now
    candidates = mirror_store.mirror_blobs()
    chosen: set[str] = set()
    if repo is not None:
        chosen.update(sha for sha, _, _ in mirror_store.mirror_blobs(repo))
    if older_than_s is not None:
        chosen.update(sha for sha, _, last_read in candidates if now - last_read > older_than_s)
    if max_size is not None:
        remaining = sum(size for sha, size, _ in candidates if sha not in chosen)
        for sha, size, _ in candidates:  # oldest read first
            if remaining <= max_size:
                break
            if sha not in chosen:
                chosen.add(sha)
                remaining -= size
    removed_bytes = 0
    for sha, size, _ in candidates:
        if sha in chosen:
            try:
                mirror_store.store.blob_path(sha).unlink()
            except FileNotFoundError:
                pass
            mirror_store.forget_blob(sha)
            removed_bytes += size
    kept = sum(size for sha, size, _ in candidates if sha not in chosen)
    return Eviction(len(chosen), removed_bytes, kept)


__all__ = ["MirrorStore", "MirroredRepo", "UpstreamFile", "Eviction", "evict", "PENDING_PREFIX", "pending_key", "is_pending"]
