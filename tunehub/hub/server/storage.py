"""Storage of the Hub server: content-addressed blobs on disk, everything else in SQLite.

Layout under the root folder::

    hub.db                  users, tokens, organisations, repos, commits, files, refs (WAL)
    secret.key              HMAC key that signs LFS upload URLs
    blobs/sha256/ab/<sha>   file contents, named by their sha256: the same bytes are stored once
    tmp/                    uploads in progress; emptied at every start
    writers.lock            held (shared) by every process that adds blobs: the server, `hub import`
    serve.lock              held by the one server on this root

A commit is one SQLite transaction that inserts the commit, its full file list and
moves the branch; blobs are renamed into place (fsynced) before that transaction, so
a kill at any moment leaves either the previous head or the new one. Blobs no commit
references (an upload interrupted before its commit, a deleted repo) are collected at
server start, only when no other writer holds ``writers.lock``: a blob that a running
import has linked but not yet committed looks exactly like garbage, whatever its age.

The root is created 0700 and every file in it 0600 (blobs hard-linked by ``import
--link`` keep their source's mode; the root's 0700 keeps other accounts out of them).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
import shutil
import sqlite3
import string
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from tunehub.errors import ServerError
from tunehub.hub.server import problems
from tunehub.hub.server.problems import ApiProblem
from tunehub.hub.server.validation import (
    DEFAULT_GITATTRIBUTES,
    InvalidInput,
    check_path,
    check_repo_id,
    check_repo_type,
    check_user_name,
    git_blob_sha1,
    is_commit_sha,
    lfs_pointer,
)
from tunehub.safeio import fsync_dir

SCHEMA_VERSION = 1
HASH_CHUNK = 8 * 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users(name TEXT PRIMARY KEY COLLATE NOCASE, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS orgs(name TEXT PRIMARY KEY COLLATE NOCASE, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS org_members(
    org TEXT NOT NULL COLLATE NOCASE, user TEXT NOT NULL COLLATE NOCASE, PRIMARY KEY(org, user));
CREATE TABLE IF NOT EXISTS tokens(
    id INTEGER PRIMARY KEY, user TEXT NOT NULL COLLATE NOCASE, token_hash TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL, name TEXT NOT NULL, created REAL NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS repos(
    id INTEGER PRIMARY KEY, type TEXT NOT NULL, namespace TEXT NOT NULL COLLATE NOCASE,
    name TEXT NOT NULL COLLATE NOCASE, private INTEGER NOT NULL, created REAL NOT NULL,
    UNIQUE(type, namespace, name));
CREATE TABLE IF NOT EXISTS commits(
    sha TEXT PRIMARY KEY, repo_id INTEGER NOT NULL, parent TEXT, title TEXT NOT NULL,
    message TEXT NOT NULL, author TEXT NOT NULL, date REAL NOT NULL, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS commits_by_repo ON commits(repo_id, seq);
CREATE TABLE IF NOT EXISTS commit_files(
    commit_sha TEXT NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    git_oid TEXT NOT NULL, lfs INTEGER NOT NULL, PRIMARY KEY(commit_sha, path)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS commit_files_by_blob ON commit_files(sha256);
CREATE TABLE IF NOT EXISTS refs(
    repo_id INTEGER NOT NULL, name TEXT NOT NULL, commit_sha TEXT NOT NULL, PRIMARY KEY(repo_id, name));
CREATE TABLE IF NOT EXISTS tags(
    repo_id INTEGER NOT NULL, name TEXT NOT NULL, commit_sha TEXT NOT NULL, PRIMARY KEY(repo_id, name));
CREATE TABLE IF NOT EXISTS repo_lfs(
    repo_id INTEGER NOT NULL, oid TEXT NOT NULL, PRIMARY KEY(repo_id, oid)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS repo_lfs_by_oid ON repo_lfs(oid);
"""


@dataclass(frozen=True)
class Principal:
    """Who sent a request, from a valid token."""

    user: str
    role: str  # "read" | "write"
    token_name: str
    token_id: int = 0


@dataclass(frozen=True)
class Repo:
    id: int
    type: str
    namespace: str
    name: str
    private: bool
    created: float

    @property
    def repo_id(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class FileEntry:
    path: str
    sha256: str
    size: int
    git_oid: str  # git blob sha1 of the content (regular) or of the LFS pointer (LFS)
    lfs: bool

    @property
    def etag(self) -> str:
        # What the Hub sends as ETag: sha256 for LFS files, the git blob id otherwise.
        return self.sha256 if self.lfs else self.git_oid

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.sha256, self.size))


@dataclass(frozen=True)
class Commit:
    sha: str
    repo_id: int
    parent: str | None
    title: str
    message: str
    author: str
    date: float


@dataclass(frozen=True)
class TokenRecord:
    id: int
    user: str
    role: str
    name: str
    created: float
    revoked: bool


@dataclass(frozen=True)
class AddFile:
    """An addition in a commit: the blob is already in the store."""

    path: str
    sha256: str
    size: int
    lfs: bool
    git_oid: str


@dataclass(frozen=True)
class DeleteFile:
    path: str
    folder: bool = False


def _owner_alive(temp_name: str) -> bool:
    """True if a temp file name ``kind-PID-hex`` belongs to another live process."""
    parts = temp_name.split("-")
    if len(parts) < 3 or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def _private_dir(path: Path) -> None:
    """mkdir -p with mode 0700 for what it creates (the umask may only narrow it)."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)


def _open_private(path: Path, flags: int = os.O_RDWR | os.O_CREAT) -> int:
    """Open (creating 0600 if new) and return the file descriptor."""
    return os.open(path, flags, PRIVATE_FILE_MODE)


try:
    import fcntl as _fcntl

    _LOCK_SH, _LOCK_EX, _LOCK_NB = _fcntl.LOCK_SH, _fcntl.LOCK_EX, _fcntl.LOCK_NB
except ImportError:  # pragma: no cover - Windows: no locks
    _fcntl = None  # type: ignore[assignment]
    _LOCK_SH, _LOCK_EX, _LOCK_NB = 1, 2, 4


def _flock(handle: Any, mode: int) -> bool:
    """flock ``handle``; False when a non-blocking request would have to wait. No-op without fcntl."""
    if _fcntl is None:  # pragma: no cover
        return True
    try:
        _fcntl.flock(handle.fileno(), mode)
    except BlockingIOError:
        return False
    return True


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    alphabet = string.ascii_letters + string.digits
    return "hf_" + "".join(secrets.choice(alphabet) for _ in range(34))


class BlobWriter:
    """Streams bytes into a temp file under ``tmp/`` while hashing them; ``commit()`` moves them into place."""

    def __init__(self, store: HubStore) -> None:
        self._store = store
        self.tmp_path = store.tmp_dir / f"upload-{os.getpid()}-{secrets.token_hex(8)}"
        fd = _open_private(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        self._handle: BinaryIO | None = os.fdopen(fd, "wb")
        self._sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert self._handle is not None
        self._handle.write(data)
        self._sha256.update(data)
        self.size += len(data)

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    def commit(self, expected_sha256: str | None = None, expected_size: int | None = None) -> str:
        """Check the bytes against what was declared and store them; return their sha256."""
        assert self._handle is not None
        oid = self.sha256
        if expected_size is not None and self.size != expected_size:
            self.abort()
            raise problems.bad_request(f"Size mismatch: declared {expected_size} bytes, received {self.size}.")
        if expected_sha256 is not None and oid != expected_sha256:
            self.abort()
            raise problems.bad_request(f"sha256 mismatch: declared {expected_sha256}, received {oid}.")
        final = self._store.blob_path(oid)
        if final.exists():
            self.abort()
            self._store.touch_blob(oid)
            return oid
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        self._handle = None
        _private_dir(final.parent)
        os.replace(self.tmp_path, final)
        fsync_dir(final.parent)
        return oid

    def close_unsynced(self) -> None:
        """Close the temp file without fsync; :meth:`HubStore.commit_writers` makes it durable later."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def abort(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        with contextlib.suppress(FileNotFoundError):
            self.tmp_path.unlink()


class HubStore:
    """The server's state under ``root``. Safe to use from several threads and processes."""

    def __init__(self, root: str | os.PathLike[str], *, busy_timeout: float = 30.0) -> None:
        self.root = Path(root).resolve()
        # How long a write waits for another process's write transaction before giving up.
        self.busy_timeout = busy_timeout
        try:
            _private_dir(self.root)
            self._make_root_private()
            _private_dir(self.blob_dir)
            _private_dir(self.tmp_dir)
            if not self.db_path.exists():
                os.close(_open_private(self.db_path))  # SQLite gives its -wal and -shm files the same mode
        except OSError as exc:
            raise ServerError(f"Cannot create the Hub server root {self.root}: {exc}") from exc
        self._local = threading.local()
        self._init_schema()

    def _make_root_private(self) -> None:
        """Private repos live in here: other local accounts must not even list it (roots made before were 0755)."""
        info = self.root.stat()
        if hasattr(os, "getuid") and info.st_mode & 0o077 and info.st_uid == os.getuid():
            os.chmod(self.root, PRIVATE_DIR_MODE)

    # --- paths and connections ---------------------------------------------------

    @property
    def db_path(self) -> Path:
        return self.root / "hub.db"

    @property
    def blob_dir(self) -> Path:
        return self.root / "blobs" / "sha256"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def blob_path(self, sha256: str) -> Path:
        return self.blob_dir / sha256[:2] / sha256

    def has_blob(self, sha256: str) -> bool:
        return self.blob_path(sha256).is_file()

    def touch_blob(self, sha256: str) -> None:
        # Keeps a reused blob out of the start-time collection of old unreferenced blobs.
        with contextlib.suppress(OSError):
            os.utime(self.blob_path(sha256))

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    self.db_path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA foreign_keys=ON")
            except sqlite3.DatabaseError as exc:
                raise ServerError(f"Cannot open the Hub server database {self.db_path}: {exc}") from exc
            self._local.conn = conn
        return conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: writers queue instead of failing)."""
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    def _init_schema(self) -> None:
        conn = self._connect()
        try:
            conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ServerError(f"The Hub server database {self.db_path} is unusable: {exc}") from exc
        with self._write() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise ServerError(
                    f"{self.db_path} was written by a newer tunehub (schema {row[0]}); upgrade tunehub."
                )

    def lock_for_serving(self) -> Any:
        """Hold an exclusive lock on the root while serving: two servers on one root would
        clean each other's uploads. Returns the open lock file (keep it open)."""
        handle = os.fdopen(_open_private(self.root / "serve.lock"), "r+")
        if not _flock(handle, _LOCK_EX | _LOCK_NB):
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ServerError(f"{self.root} is already being served by {holder}; stop it first.")
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        return handle

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # --- start-up housekeeping -----------------------------------------------------

    @property
    def writers_lock_path(self) -> Path:
        return self.root / "writers.lock"

    def writer_lease(self) -> Any:
        """Hold this (keep the returned file open) while adding blobs that are not committed yet.

        A shared lock on ``writers.lock``: any number of writers at once (the server, several
        imports); the start-up clean-up collects unreferenced blobs only when it can take the
        lock exclusively, i.e. when no writer is alive. Waits while a clean-up is running.
        """
        handle = os.fdopen(_open_private(self.writers_lock_path), "r+")
        try:
            _flock(handle, _LOCK_SH)
        except BaseException:
            handle.close()
            raise
        return handle

    def clean_leftovers(self) -> dict[str, int]:
        """Remove interrupted uploads, and blobs nothing references when no writer is alive. Run at server start.

        Returns counts: ``tmp`` and ``blobs`` removed, ``writers`` 1 if a live writer (say a
        `tunehub hub import`) held the store, so that blobs were left for a later start.
        """
        with os.fdopen(_open_private(self.writers_lock_path), "r+") as lock:
            alone = _flock(lock, _LOCK_EX | _LOCK_NB)
            removed_tmp = self._clean_tmp()
            removed_blobs = self._collect_unreferenced_blobs() if alone else 0
        return {"tmp": removed_tmp, "blobs": removed_blobs, "writers": 0 if alone else 1}

    def _clean_tmp(self) -> int:
        removed_tmp = 0
        for entry in self.tmp_dir.iterdir():
            if _owner_alive(entry.name):
                continue  # e.g. a `tunehub hub import` running beside the server
            with contextlib.suppress(OSError):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
                removed_tmp += 1
        return removed_tmp

    def _collect_unreferenced_blobs(self) -> int:
        conn = self._connect()
        removed_blobs = 0
        for prefix_dir in self.blob_dir.iterdir():
            if not prefix_dir.is_dir():
                continue
            for blob in prefix_dir.iterdir():
                oid = blob.name
                referenced = conn.execute(
                    "SELECT 1 FROM commit_files WHERE sha256=? UNION ALL SELECT 1 FROM repo_lfs WHERE oid=? LIMIT 1",
                    (oid, oid),
                ).fetchone()
                if referenced is None:
                    with contextlib.suppress(OSError):
                        blob.unlink()
                        removed_blobs += 1
        return removed_blobs

    def signing_key(self) -> bytes:
        """The HMAC key for upload URLs, created once (0600) and kept across restarts."""
        path = self.root / "secret.key"
        try:
            return base64.b64decode(path.read_bytes())
        except FileNotFoundError:
            pass
        key = secrets.token_bytes(32)
        tmp = self.tmp_dir / f"secret-{os.getpid()}-{secrets.token_hex(4)}"
        fd = _open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        with os.fdopen(fd, "wb") as handle:
            handle.write(base64.b64encode(key))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)  # fails if another process created it first: use theirs
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        fsync_dir(self.root)
        return base64.b64decode(path.read_bytes())

    # --- users, organisations, tokens ------------------------------------------------

    def add_user(self, name: str) -> None:
        check_user_name(name)
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM orgs WHERE name=?", (name,)).fetchone():
                raise ServerError(f"{name!r} is already an organisation name.")
            conn.execute("INSERT OR IGNORE INTO users VALUES(?, ?)", (name, time.time()))

    def add_token(self, user: str, *, write: bool, name: str | None = None) -> str:
        """Create a token for ``user`` (created if new); the token itself is returned once, stored hashed."""
        self.add_user(user)
        token = new_token()
        role = "write" if write else "read"
        with self._write() as conn:
            conn.execute(
                "INSERT INTO tokens(user, token_hash, role, name, created) VALUES(?,?,?,?,?)",
                (user, hash_token(token), role, name or f"{user}-{role}", time.time()),
            )
        return token

    def list_tokens(self, user: str | None = None) -> list[TokenRecord]:
        query = "SELECT id, user, role, name, created, revoked FROM tokens"
        args: tuple[str, ...] = ()
        if user:
            query += " WHERE user=?"
            args = (user,)
        rows = self._connect().execute(query + " ORDER BY id", args).fetchall()
        return [TokenRecord(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in rows]

    def revoke_token(self, token_id: int) -> bool:
        with self._write() as conn:
            cursor = conn.execute("UPDATE tokens SET revoked=1 WHERE id=? AND revoked=0", (token_id,))
            return cursor.rowcount > 0

    def authenticate(self, token: str) -> Principal | None:
        row = (
            self._connect()
            .execute("SELECT user, role, name, id FROM tokens WHERE token_hash=? AND revoked=0", (hash_token(token),))
            .fetchone()
        )
        return Principal(row[0], row[1], row[2], row[3]) if row else None

    def active_token(self, token_id: int) -> Principal | None:
        """The holder of token ``token_id`` if it is still valid (not revoked, user not removed)."""
        row = (
            self._connect()
            .execute("SELECT user, role, name, id FROM tokens WHERE id=? AND revoked=0", (token_id,))
            .fetchone()
        )
        return Principal(row[0], row[1], row[2], row[3]) if row else None

    def remove_user(self, name: str, *, with_repos: bool = False) -> int:
        """Delete a user: their tokens (so they stop working at once), memberships and, if asked, repos.

        Refuses while repos in their namespace remain, unless ``with_repos``; returns how many
        repos were deleted.
        """
        check_user_name(name)
        conn = self._connect()
        if not conn.execute("SELECT 1 FROM users WHERE name=?", (name,)).fetchone():
            raise ServerError(f"No user {name!r} (see `tunehub hub token list`).")
        owned = [
            self._repo_from_row(row)
            for row in conn.execute(
                "SELECT id, type, namespace, name, private, created FROM repos WHERE namespace=? ORDER BY name", (name,)
            )
        ]
        if owned and not with_repos:
            shown = ", ".join(repo.repo_id for repo in owned[:5]) + (" ..." if len(owned) > 5 else "")
            raise ServerError(
                f"{name} still owns {len(owned)} repo(s): {shown}. Delete them first, or pass --with-repos."
            )
        for repo in owned:
            self.delete_repo(repo)
        with self._write() as conn:
            conn.execute("DELETE FROM tokens WHERE user=?", (name,))
            conn.execute("DELETE FROM org_members WHERE user=?", (name,))
            conn.execute("DELETE FROM users WHERE name=?", (name,))
        return len(owned)

    def remove_org_member(self, org: str, member: str) -> None:
        check_user_name(org)
        check_user_name(member)
        with self._write() as conn:
            if not conn.execute("SELECT 1 FROM orgs WHERE name=?", (org,)).fetchone():
                raise ServerError(f"No organisation {org!r}.")
            cursor = conn.execute("DELETE FROM org_members WHERE org=? AND user=?", (org, member))
            if cursor.rowcount == 0:
                raise ServerError(f"{member} is not a member of {org}.")

    def add_org_member(self, org: str, member: str) -> None:
        check_user_name(org)
        check_user_name(member)
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM users WHERE name=?", (org,)).fetchone():
                raise ServerError(f"{org!r} is already a user name; pick another organisation name.")
            conn.execute("INSERT OR IGNORE INTO users VALUES(?, ?)", (member, time.time()))
            conn.execute("INSERT OR IGNORE INTO orgs VALUES(?, ?)", (org, time.time()))
            conn.execute("INSERT OR IGNORE INTO org_members VALUES(?, ?)", (org, member))

    def orgs_of(self, user: str) -> list[str]:
        rows = self._connect().execute("SELECT org FROM org_members WHERE user=? ORDER BY org", (user,)).fetchall()
        return [r[0] for r in rows]

    def is_org(self, name: str) -> bool:
        return self._connect().execute("SELECT 1 FROM orgs WHERE name=?", (name,)).fetchone() is not None

    def may_act_for(self, user: str, namespace: str) -> bool:
        """True if ``user`` is ``namespace`` or a member of the organisation ``namespace``."""
        if user.lower() == namespace.lower():
            return True
        row = (
            self._connect()
            .execute("SELECT 1 FROM org_members WHERE org=? AND user=?", (namespace, user))
            .fetchone()
        )
        return row is not None

    # --- repos ---------------------------------------------------------------------

    def _repo_from_row(self, row: tuple) -> Repo:
        return Repo(row[0], row[1], row[2], row[3], bool(row[4]), row[5])

    def get_repo(self, repo_type: str, repo_id: str) -> Repo | None:
        try:
            namespace, name = check_repo_id(repo_id)
        except InvalidInput:
            return None
        row = (
            self._connect()
            .execute(
                "SELECT id, type, namespace, name, private, created FROM repos WHERE type=? AND namespace=? AND name=?",
                (repo_type, namespace, name),
            )
            .fetchone()
        )
        return self._repo_from_row(row) if row else None

    def list_repos(self, repo_type: str) -> list[Repo]:
        rows = (
            self._connect()
            .execute(
                "SELECT id, type, namespace, name, private, created FROM repos WHERE type=? ORDER BY namespace, name",
                (repo_type,),
            )
            .fetchall()
        )
        return [self._repo_from_row(r) for r in rows]

    def create_repo(self, repo_type: str, repo_id: str, *, private: bool, author: str = "system") -> tuple[Repo, bool]:
        """Create a repo with the Hub's initial commit (a .gitattributes); return (repo, created)."""
        repo_type = check_repo_type(repo_type)
        namespace, name = check_repo_id(repo_id)
        existing = self.get_repo(repo_type, repo_id)
        if existing:
            return existing, False
        content = DEFAULT_GITATTRIBUTES.encode()
        sha256 = self.put_bytes(content)
        with self._write() as conn:
            row = conn.execute(
                "SELECT id, type, namespace, name, private, created FROM repos WHERE type=? AND namespace=? AND name=?",
                (repo_type, namespace, name),
            ).fetchone()
            if row:
                return self._repo_from_row(row), False
            now = time.time()
            cursor = conn.execute(
                "INSERT INTO repos(type, namespace, name, private, created) VALUES(?,?,?,?,?)",
                (repo_type, namespace, name, int(private), now),
            )
            repo = Repo(int(cursor.lastrowid or 0), repo_type, namespace, name, private, now)
            addition = AddFile(".gitattributes", sha256, len(content), False, git_blob_sha1(content))
            self._commit_in(conn, repo, "main", [addition], None, "initial commit", "", "system", allow_new_branch=True)
        return repo, True

    def delete_repo(self, repo: Repo) -> None:
        with self._write() as conn:
            shas = [r[0] for r in conn.execute("SELECT sha FROM commits WHERE repo_id=?", (repo.id,))]
            conn.executemany("DELETE FROM commit_files WHERE commit_sha=?", [(s,) for s in shas])
            conn.execute("DELETE FROM commits WHERE repo_id=?", (repo.id,))
            conn.execute("DELETE FROM refs WHERE repo_id=?", (repo.id,))
            conn.execute("DELETE FROM tags WHERE repo_id=?", (repo.id,))
            conn.execute("DELETE FROM repo_lfs WHERE repo_id=?", (repo.id,))
            conn.execute("DELETE FROM repos WHERE id=?", (repo.id,))

    def set_private(self, repo: Repo, private: bool) -> None:
        with self._write() as conn:
            conn.execute("UPDATE repos SET private=? WHERE id=?", (int(private), repo.id))

    # --- revisions, commits, files -----------------------------------------------

    def refs(self, repo: Repo) -> dict[str, str]:
        rows = self._connect().execute("SELECT name, commit_sha FROM refs WHERE repo_id=? ORDER BY name", (repo.id,))
        return {name: sha for name, sha in rows}

    def tags(self, repo: Repo) -> dict[str, str]:
        rows = self._connect().execute("SELECT name, commit_sha FROM tags WHERE repo_id=? ORDER BY name", (repo.id,))
        return {name: sha for name, sha in rows}

    def create_tag(self, repo: Repo, tag: str, commit_sha: str) -> None:
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM tags WHERE repo_id=? AND name=?", (repo.id, tag)).fetchone():
                raise ApiProblem(409, "Conflict", f"Tag {tag} already exists in {repo.repo_id}.")
            conn.execute("INSERT INTO tags VALUES(?,?,?)", (repo.id, tag, commit_sha))

    def delete_tag(self, repo: Repo, tag: str) -> None:
        with self._write() as conn:
            if conn.execute("DELETE FROM tags WHERE repo_id=? AND name=?", (repo.id, tag)).rowcount == 0:
                raise problems.revision_not_found(repo.repo_id, tag)

    def resolve_revision(self, repo: Repo, revision: str) -> str | None:
        """A branch, a tag or a full commit sha of this repo -> commit sha, else None."""
        conn = self._connect()
        row = conn.execute("SELECT commit_sha FROM refs WHERE repo_id=? AND name=?", (repo.id, revision)).fetchone()
        if row:
            return str(row[0])
        row = conn.execute("SELECT commit_sha FROM tags WHERE repo_id=? AND name=?", (repo.id, revision)).fetchone()
        if row:
            return str(row[0])
        if is_commit_sha(revision):
            row = conn.execute("SELECT sha FROM commits WHERE sha=? AND repo_id=?", (revision, repo.id)).fetchone()
            if row:
                return str(row[0])
        return None

    def get_commit(self, sha: str) -> Commit | None:
        row = (
            self._connect()
            .execute("SELECT sha, repo_id, parent, title, message, author, date FROM commits WHERE sha=?", (sha,))
            .fetchone()
        )
        return Commit(*row) if row else None

    def history(self, head: str, offset: int = 0, limit: int = 50) -> list[Commit]:
        """Commits reachable from ``head`` by parent links, newest first."""
        rows = self._connect().execute(
            """WITH RECURSIVE chain(sha, depth) AS (
                   SELECT ?, 0
                   UNION ALL SELECT commits.parent, chain.depth + 1 FROM commits JOIN chain ON commits.sha = chain.sha
                   WHERE commits.parent IS NOT NULL)
               SELECT c.sha, c.repo_id, c.parent, c.title, c.message, c.author, c.date
               FROM chain JOIN commits c ON c.sha = chain.sha ORDER BY chain.depth LIMIT ? OFFSET ?""",
            (head, limit, offset),
        )
        return [Commit(*row) for row in rows]

    def get_file(self, commit_sha: str, path: str) -> FileEntry | None:
        row = (
            self._connect()
            .execute(
                "SELECT path, sha256, size, git_oid, lfs FROM commit_files WHERE commit_sha=? AND path=?",
                (commit_sha, path),
            )
            .fetchone()
        )
        return FileEntry(row[0], row[1], row[2], row[3], bool(row[4])) if row else None

    def missing_blobs(self, commit_sha: str) -> list[str]:
        """Paths of the commit whose content is not in the blob store (should always be empty)."""
        return [entry.path for entry in self.files(commit_sha) if not self.has_blob(entry.sha256)]

    def files_at(self, commit_sha: str, paths: list[str]) -> dict[str, FileEntry]:
        """The entries of ``paths`` that exist in the commit, by path."""
        found: dict[str, FileEntry] = {}
        conn = self._connect()
        for start in range(0, len(paths), 500):  # stay under SQLite's bound-parameter limit
            batch = paths[start : start + 500]
            marks = ",".join("?" * len(batch))
            rows = conn.execute(
                f"SELECT path, sha256, size, git_oid, lfs FROM commit_files WHERE commit_sha=? AND path IN ({marks})",
                (commit_sha, *batch),
            )
            for r in rows:
                found[r[0]] = FileEntry(r[0], r[1], r[2], r[3], bool(r[4]))
        return found

    def files(self, commit_sha: str, prefix: str = "") -> list[FileEntry]:
        """Files of a commit, sorted by path; only those under folder ``prefix`` if given."""
        query = "SELECT path, sha256, size, git_oid, lfs FROM commit_files WHERE commit_sha=?"
        args: tuple = (commit_sha,)
        if prefix:
            # Range scan instead of LIKE: no wildcard escaping, uses the primary key.
            query += " AND path >= ? AND path < ?"
            args = (commit_sha, prefix + "/", prefix + "0")  # '0' is the character after '/'
        rows = self._connect().execute(query + " ORDER BY path", args)
        return [FileEntry(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows]

    def is_folder(self, commit_sha: str, path: str) -> bool:
        row = (
            self._connect()
            .execute(
                "SELECT 1 FROM commit_files WHERE commit_sha=? AND path >= ? AND path < ? LIMIT 1",
                (commit_sha, path + "/", path + "0"),
            )
            .fetchone()
        )
        return row is not None

    def repo_has_lfs(self, repo: Repo, oid: str) -> bool:
        """True if this repo may reference the blob: uploaded to it, or already in one of its commits."""
        conn = self._connect()
        if conn.execute("SELECT 1 FROM repo_lfs WHERE repo_id=? AND oid=?", (repo.id, oid)).fetchone():
            return self.has_blob(oid)
        row = conn.execute(
            "SELECT 1 FROM commit_files f JOIN commits c ON c.sha = f.commit_sha WHERE f.sha256=? AND c.repo_id=? LIMIT 1",
            (oid, repo.id),
        ).fetchone()
        return row is not None and self.has_blob(oid)

    def repos_with_blob(self, oid: str) -> list[Repo]:
        """Repos with a commit that references the blob (for cross-repo LFS copies)."""
        rows = self._connect().execute(
            """SELECT DISTINCT r.id, r.type, r.namespace, r.name, r.private, r.created
               FROM commit_files f JOIN commits c ON c.sha = f.commit_sha JOIN repos r ON r.id = c.repo_id
               WHERE f.sha256=?""",
            (oid,),
        )
        return [self._repo_from_row(row) for row in rows]

    def grant_lfs(self, repo: Repo, oid: str) -> None:
        with self._write() as conn:
            conn.execute("INSERT OR IGNORE INTO repo_lfs VALUES(?, ?)", (repo.id, oid))

    def put_bytes(self, data: bytes) -> str:
        """Store small content (a regular file of a commit); return its sha256."""
        writer = BlobWriter(self)
        try:
            writer.write(data)
            return writer.commit()
        except BaseException:
            writer.abort()
            raise

    def commit_writers(self, writers: list[BlobWriter], workers: int = 16) -> list[str]:
        """Store many small closed temp files at once; return their sha256s.

        One fsync per file is unavoidable, but issued from several threads the filesystem
        journal groups them, so a commit of hundreds of small files costs a few journal
        flushes instead of hundreds. Files are synced before they are renamed into place
        and the folders after, so a crash never leaves a torn blob under a final name.
        """
        from concurrent.futures import ThreadPoolExecutor

        def sync_path(path: Path) -> None:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

        oids = [writer.sha256 for writer in writers]
        fresh = [w for w, oid in zip(writers, oids) if not self.blob_path(oid).exists()]
        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(sync_path, [w.tmp_path for w in fresh]))
                folders = set()
                for writer in fresh:
                    final = self.blob_path(writer.sha256)
                    _private_dir(final.parent)
                    os.replace(writer.tmp_path, final)
                    folders.add(final.parent)
                list(pool.map(fsync_dir, sorted(folders)))
        finally:
            for writer in writers:
                writer.abort()  # removes whatever temp file is left (duplicates, or all after an error)
        for oid in oids:
            self.touch_blob(oid)
        return oids

    def link_file(self, source: Path) -> tuple[str, int]:
        """Hard-link a local file into the blob store after hashing it; copy if linking fails.

        For seeding from a huggingface_hub cache, whose blobs are never rewritten in place:
        the mirror then costs no extra disk space. The source must not be edited afterwards.
        """
        real = Path(os.path.realpath(source))
        digest = hashlib.sha256()
        size = 0
        with open(real, "rb") as handle:
            before = os.fstat(handle.fileno())
            while chunk := handle.read(HASH_CHUNK):
                digest.update(chunk)
                size += len(chunk)
        oid = digest.hexdigest()
        final = self.blob_path(oid)
        if final.exists():
            self.touch_blob(oid)
            return oid, size
        after = os.stat(real)
        if (after.st_mtime_ns, after.st_size) != (before.st_mtime_ns, before.st_size):
            raise ServerError(f"{source} changed while it was being imported; try again.")
        tmp = self.tmp_dir / f"link-{os.getpid()}-{secrets.token_hex(8)}"
        try:
            os.link(real, tmp)
        except OSError:  # another filesystem, or links not allowed: copy instead
            return self.put_file(real)
        _private_dir(final.parent)
        os.replace(tmp, final)
        fsync_dir(final.parent)
        return oid, size

    def put_file(self, source: Path) -> tuple[str, int]:
        """Copy a local file into the blob store, streaming; return (sha256, size)."""
        writer = BlobWriter(self)
        try:
            with open(source, "rb") as handle:
                while chunk := handle.read(HASH_CHUNK):
                    writer.write(chunk)
            return writer.commit(), writer.size
        except BaseException:
            writer.abort()
            raise

    def commit(
        self,
        repo: Repo,
        branch: str,
        operations: Iterable[object],
        *,
        parent_commit: str | None,
        title: str,
        message: str,
        author: str,
        allow_new_branch: bool = False,
    ) -> str:
        """Apply ``operations`` (AddFile / DeleteFile, blobs already stored) on ``branch``; return the commit sha."""
        with self._write() as conn:
            return self._commit_in(
                conn, repo, branch, list(operations), parent_commit, title, message, author, allow_new_branch
            )

    def _commit_in(
        self,
        conn: sqlite3.Connection,
        repo: Repo,
        branch: str,
        operations: list[object],
        parent_commit: str | None,
        title: str,
        message: str,
        author: str,
        allow_new_branch: bool = False,
    ) -> str:
        row = conn.execute("SELECT commit_sha FROM refs WHERE repo_id=? AND name=?", (repo.id, branch)).fetchone()
        head = row[0] if row else None
        if head is None and not allow_new_branch:
            raise problems.revision_not_found(repo.repo_id, branch)
        if parent_commit is not None and parent_commit != head:
            raise ApiProblem(
                412,
                "PreconditionFailed",
                f"A commit has happened since {parent_commit}: {branch} is now at {head}. Pull and retry.",
            )
        now = time.time()
        seq_row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM commits WHERE repo_id=?", (repo.id,)).fetchone()
        digest = hashlib.sha1(f"{repo.id}\n{head}\n{now!r}\n{secrets.token_hex(16)}\n{title}".encode())
        sha = digest.hexdigest()
        conn.execute(
            "INSERT INTO commits VALUES(?,?,?,?,?,?,?,?)",
            (sha, repo.id, head, title, message, author, now, int(seq_row[0]) + 1),
        )
        if head is not None:
            conn.execute(
                "INSERT INTO commit_files SELECT ?, path, sha256, size, git_oid, lfs FROM commit_files WHERE commit_sha=?",
                (sha, head),
            )
        for op in operations:
            if isinstance(op, DeleteFile):
                path = check_path(op.path.rstrip("/")) if op.folder else check_path(op.path)
                if op.folder:
                    cursor = conn.execute(
                        "DELETE FROM commit_files WHERE commit_sha=? AND path >= ? AND path < ?",
                        (sha, path + "/", path + "0"),
                    )
                else:
                    cursor = conn.execute("DELETE FROM commit_files WHERE commit_sha=? AND path=?", (sha, path))
                if cursor.rowcount == 0:
                    raise problems.entry_not_found(repo.repo_id, branch, path)
            elif isinstance(op, AddFile):
                path = check_path(op.path)
                self._check_no_file_folder_clash(conn, sha, path)
                conn.execute(
                    "INSERT OR REPLACE INTO commit_files VALUES(?,?,?,?,?,?)",
                    (sha, path, op.sha256, op.size, op.git_oid, int(op.lfs)),
                )
            else:  # pragma: no cover - programming error
                raise TypeError(f"unknown commit operation {op!r}")
        conn.execute("INSERT OR REPLACE INTO refs VALUES(?,?,?)", (repo.id, branch, sha))
        return sha

    @staticmethod
    def _check_no_file_folder_clash(conn: sqlite3.Connection, sha: str, path: str) -> None:
        parts = path.split("/")
        parents = ["/".join(parts[:i]) for i in range(1, len(parts))]
        for parent in parents:
            if conn.execute("SELECT 1 FROM commit_files WHERE commit_sha=? AND path=?", (sha, parent)).fetchone():
                raise problems.bad_request(f"Cannot add {path}: {parent} is a file.")
        clash = conn.execute(
            "SELECT 1 FROM commit_files WHERE commit_sha=? AND path >= ? AND path < ? LIMIT 1",
            (sha, path + "/", path + "0"),
        ).fetchone()
        if clash:
            raise problems.bad_request(f"Cannot add {path}: it is a folder.")

    def create_branch(self, repo: Repo, branch: str, from_commit: str) -> None:
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM refs WHERE repo_id=? AND name=?", (repo.id, branch)).fetchone():
                raise ApiProblem(409, "Conflict", f"Branch {branch} already exists in {repo.repo_id}.")
            conn.execute("INSERT INTO refs VALUES(?,?,?)", (repo.id, branch, from_commit))

    def delete_branch(self, repo: Repo, branch: str) -> None:
        if branch == "main":
            raise problems.bad_request("The main branch cannot be deleted.")
        with self._write() as conn:
            cursor = conn.execute("DELETE FROM refs WHERE repo_id=? AND name=?", (repo.id, branch))
            if cursor.rowcount == 0:
                raise problems.revision_not_found(repo.repo_id, branch)

    def last_modified(self, repo: Repo, commit_sha: str) -> float:
        commit = self.get_commit(commit_sha)
        return commit.date if commit else repo.created
