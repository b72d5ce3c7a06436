"""The upstream mirror: a storage backend of the Hub server, not a second server.

``tunehub hub serve --upstream https://huggingface.co`` makes every repo the server does
not hold itself a window on the upstream Hub:

- *Metadata*: a revision asked for is looked up upstream with huggingface_hub's client
  and the hub's own upstream token (never a client's), and stored as an ordinary commit
  (see :mod:`mirror_store`); the server's read endpoints then answer from the store. A
  commit sha is immutable: asked once. A branch or tag is re-checked at most every
  ``ttl`` seconds. With the upstream unreachable the cached revision is served with an
  ``X-Mirror-Upstream`` header saying so; what is not cached gets a 504 naming the upstream.
- *Bytes*: a blob either is local or is being fetched once (:class:`Fetch`): one upstream
  transfer per blob, hashed while it streams into a temp file, and every reader (the
  first client, concurrent ones, ranged ones) streams from that same growing file. The
  last byte of a file is only handed out once the whole file matched the upstream's
  sha256 (LFS) or git blob sha1 (regular files), so no client ever completes a wrong
  file: a mismatch cuts every transfer and discards the bytes; the next read fetches again.
- *Access*: mirrored public repos need a LAN token (or ``public_read``); a private or
  gated upstream repo is mirrored only if the hub's upstream token can read it, and then
  only LAN tokens granted that repo (``tunehub hub grant``) see it. Writes are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import http.client
import logging
import mmap
import os
import queue
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import anyio
from starlette.types import Receive, Scope, Send

from tunehub.hub.server import problems
from tunehub.hub.server.app import DOWNLOAD_CHUNK, SENDFILE_CHUNK, BlobResponse, error_response
from tunehub.hub.server.connections import SENDFILE_STATE_KEY, FileRange
from tunehub.hub.server.mirror_store import MirrorStore, UpstreamFile, is_pending
from tunehub.hub.server.problems import ApiProblem
from tunehub.hub.server.storage import FileEntry, HubStore, Principal, Repo
from tunehub.hub.server.validation import (
    API_SEGMENT,
    RESOLVE_PREFIX,
    InvalidInput,
    check_repo_id,
    is_commit_sha,
)
from tunehub.safeio import fsync_dir

log = logging.getLogger("tunehub.hub.server.mirror")

DEFAULT_TTL_S = 600.0
SEGMENT_TYPE = {segment: repo_type for repo_type, segment in API_SEGMENT.items()}
NOTIFY_EVERY = 1024 * 1024  # wake waiting readers after this many new bytes
MAX_PARALLEL_FETCHES = 16
READ_BLOCK = 1024 * 1024  # bytes read from the upstream per call
HASH_BUFFERS = 4  # blocks received ahead of the hashing thread at most
FILE_TIMEOUT_S = 60.0  # connect, and each read of a file transfer
READ_MARK_FLUSH_S = 5.0
PREPARE_THREADS = 16  # metadata look-ups (and waits for them) at once
UPSTREAM_HEADER = "X-Mirror-Upstream"
CACHE_HEADER = "X-Mirror-Cache"


@dataclass
class MirrorSettings:
    upstream: str
    token: str | None = None  # the hub's own token for the upstream (from upstream_token_file)
    token_file: str | None = None
    ttl: float = DEFAULT_TTL_S
    public_read: bool = False  # mirrored public repos readable without a LAN token


class UpstreamUnreachable(Exception):
    """The upstream did not answer (connection, timeout, 5xx)."""


def _transport_errors() -> tuple[type[BaseException], ...]:
    """What huggingface_hub's HTTP library (httpx2 in client 2.x, httpx before) raises when nobody answers."""
    errors: list[type[BaseException]] = [OSError]
    for name in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError):
            errors.append(__import__(name).TransportError)
    return tuple(errors)


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


class _SameOriginAuthRedirect(urllib.request.HTTPRedirectHandler):
    """Follow redirects; carry the (unredirected) Authorization header only to the same origin."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        token = req.unredirected_hdrs.get("Authorization")
        if new is not None and token and _origin(newurl) == _origin(req.full_url):
            new.add_unredirected_header("Authorization", token)
        return new


def _short(exc: object) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


class Upstream:
    """The upstream Hub, through huggingface_hub's client, with the hub's token only."""

    def __init__(self, settings: MirrorSettings) -> None:
        from huggingface_hub import HfApi

        self.url = settings.upstream.rstrip("/")
        self._token = settings.token
        self.api = HfApi(endpoint=self.url, token=settings.token or False, library_name="tunehub-mirror")
        # File bytes go through the standard library: big readinto() calls cost a fraction of
        # the CPU of a chunk iterator, and the mirror's throughput is bounded by that CPU.
        # Proxies come from the environment; redirects are followed (the Hub sends LFS files
        # to a CDN) and the token goes only to the upstream's own origin.
        self._opener = urllib.request.build_opener(_SameOriginAuthRedirect())

    def open_file(self, url: str, what: str) -> http.client.HTTPResponse:
        """GET a file: the open 200 answer; ApiProblem for a 4xx, UpstreamUnreachable otherwise."""
        request = urllib.request.Request(url, headers=self.headers())
        if self._token:
            request.add_unredirected_header("Authorization", f"Bearer {self._token}")
        try:
            return self._opener.open(request, timeout=FILE_TIMEOUT_S)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code >= 500 or exc.code in (408, 429):
                raise UpstreamUnreachable(f"HTTP {exc.code} for {what}") from exc
            raise ApiProblem(502, "UpstreamError", f"The upstream {self.url} answered {exc.code} for {what}.") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise UpstreamUnreachable(_short(getattr(exc, "reason", exc))) from exc

    def headers(self) -> dict[str, str]:
        from huggingface_hub.utils import build_hf_headers

        headers = build_hf_headers(token=False, library_name="tunehub-mirror")  # the token: see open_file
        headers["Accept-Encoding"] = "identity"
        return headers

    def file_url(self, repo_type: str, repo_id: str, commit: str, path: str) -> str:
        return f"{self.url}/{RESOLVE_PREFIX[repo_type]}{repo_id}/resolve/{commit}/{quote(path)}"

    def revision(self, repo_type: str, repo_id: str, revision: str) -> Any:
        """The upstream's repo info at ``revision`` with file metadata; UpstreamUnreachable or Hub errors."""
        from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

        try:
            return self.api.repo_info(repo_id, repo_type=repo_type, revision=revision, files_metadata=True, timeout=30)
        except (RepositoryNotFoundError, RevisionNotFoundError):
            raise
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status >= 500 or status in (408, 429):
                raise UpstreamUnreachable(f"HTTP {status}") from exc
            raise
        except _transport_errors() as exc:
            raise UpstreamUnreachable(_short(exc)) from exc

    def can_read_gated(self, repo_type: str, repo_id: str) -> bool:
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

        try:
            self.api.auth_check(repo_id, repo_type=repo_type)
        except (GatedRepoError, RepositoryNotFoundError):
            return False
        return True

    def close(self) -> None:
        self._opener.close()


class Counters:
    """Mirror figures for /metrics, added to from the event loop and from fetch threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.upstream_bytes = 0
        self.upstream_fetches = 0
        self.upstream_fetch_failures = 0
        self.verify_failures = 0
        self.metadata_checks = 0

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)


class _PipelinedHash:
    """sha256 (and git's blob sha1) of a transfer, in a thread of its own, over the receiver's buffers.

    The receiving thread reads and writes block k+1 while this one hashes block k (hashlib and
    the I/O calls release the GIL): with two cores free a transfer runs at the speed of the
    slower half (sha256 alone: 0.75 CPU s/GB here) instead of at the sum of both. The buffers
    are page-aligned (anonymous mmap), not bytearrays (malloc's, 16 bytes past a page): the
    kernel's copies into them and on into the page cache cost about half (2.3-3.0 against
    1.6-1.8 CPU s/GB for receive + write + sha256, measured on the 2-core VM).
    """

    def __init__(self, git_header: bytes | None, buffers: int = HASH_BUFFERS) -> None:
        self._sha256 = hashlib.sha256()
        self._git_sha1 = hashlib.sha1(git_header) if git_header is not None else None
        self._free: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
        self._full: queue.SimpleQueue[tuple[memoryview, memoryview] | None] = queue.SimpleQueue()
        for _ in range(buffers):
            self._free.put(memoryview(mmap.mmap(-1, READ_BLOCK)))
        self._error: BaseException | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="mirror-hash", daemon=True)
        self._thread.start()

    def buffer(self) -> memoryview:
        """A whole free buffer (waits while all of them are queued for hashing)."""
        return self._free.get()

    def hand_on(self, piece: memoryview, whole: memoryview) -> None:
        """Hash ``piece`` (bytes received into ``whole``), then give ``whole`` back."""
        self._full.put((piece, whole))

    def _run(self) -> None:
        while (item := self._full.get()) is not None:
            piece, whole = item
            try:
                self._sha256.update(piece)
                if self._git_sha1 is not None:
                    self._git_sha1.update(piece)
            except BaseException as exc:  # noqa: BLE001 - raised by finish()
                self._error = exc
            self._free.put(whole)

    def finish(self) -> tuple[str, str | None]:
        """(sha256, git sha1 or None) of everything handed on."""
        self.close()
        if self._error is not None:
            raise self._error
        return self._sha256.hexdigest(), self._git_sha1.hexdigest() if self._git_sha1 is not None else None

    def close(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._full.put(None)
            self._thread.join()


class Fetch:
    """One upstream transfer of one blob into a temp file that readers stream from as it grows."""

    def __init__(self, mirror: Mirror, key: str, repo: Repo, commit: str, entry: FileEntry) -> None:
        self.mirror = mirror
        self.key = key
        self.repo = repo
        self.commit = commit
        self.entry = entry
        self.size = entry.size
        self.tmp_path = mirror.store.tmp_dir / f"mirror-{os.getpid()}-{secrets.token_hex(8)}"
        open(self.tmp_path, "wb").close()
        self.final_path: str | None = None
        self.written = 0
        self.state = "starting"  # -> streaming -> verified -> done, or failed
        self.problem: ApiProblem | None = None
        self._lock = threading.Lock()
        self._listeners: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self.finished = threading.Event()

    # --- readers' side --------------------------------------------------------------

    def readable_end(self) -> int:
        """Bytes a reader may have now: the last byte waits for the verdict on the whole file."""
        if self.state in ("verified", "done"):
            return self.size
        return min(self.written, max(self.size - 1, 0))

    def open_for_reading(self) -> int:
        with self._lock:
            return os.open(self.final_path if self.final_path else self.tmp_path, os.O_RDONLY)

    async def wait(self, ready: Callable[[], bool]) -> None:
        """Wait until ``ready()`` or the fetch failed."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        listener = (loop, event)
        self._listeners.add(listener)
        try:
            while not ready() and self.state != "failed":
                await event.wait()
                event.clear()
        finally:
            self._listeners.discard(listener)

    def _notify(self) -> None:
        for loop, event in list(self._listeners):
            with contextlib.suppress(RuntimeError):  # that loop is closed
                loop.call_soon_threadsafe(event.set)

    # --- the transfer (a worker thread) ---------------------------------------------------

    def run(self) -> None:
        try:
            with self.mirror.fetch_slots:
                self._transfer()
        except ApiProblem as problem:
            self._fail(problem)
        except UpstreamUnreachable as exc:
            self.mirror.mark_down(str(exc))
            self._fail(self.mirror.unreachable_problem(f"{self.repo.repo_id}/{self.entry.path}", str(exc)))
        except OSError as exc:  # the mirror's own disk
            log.error("mirror fetch of %s/%s: %s", self.repo.repo_id, self.entry.path, exc)
            status = 507 if exc.errno == errno.ENOSPC else 500
            self._fail(ApiProblem(status, "MirrorStorage", f"The mirror cannot store {self.entry.path}: {exc.strerror or exc}."))
        except Exception as exc:  # noqa: BLE001 - the readers must hear of it
            log.exception("mirror fetch of %s/%s failed", self.repo.repo_id, self.entry.path)
            self._fail(ApiProblem(502, "UpstreamError", f"Fetching {self.entry.path} from the upstream failed: {_short(exc)}"))
        finally:
            self.mirror.fetch_done(self)
            self.finished.set()

    def _fail(self, problem: ApiProblem) -> None:
        self.mirror.counters.add("upstream_fetch_failures")
        self.problem = problem
        self.state = "failed"
        with contextlib.suppress(FileNotFoundError):
            self.tmp_path.unlink()
        self._notify()

    def _transfer(self) -> None:
        upstream = self.mirror.upstream
        url = upstream.file_url(self.repo.type, self.repo.repo_id, self.commit, self.entry.path)
        what = f"{self.repo.repo_id}/{self.entry.path}"
        answer = upstream.open_file(url, what)
        with contextlib.closing(answer):
            declared = answer.getheader("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) != self.size:
                raise ApiProblem(
                    502, "UpstreamError", f"The upstream sends {declared} bytes for {what}, its listing said {self.size}."
                )
            self.mirror.mark_up()
            self.mirror.counters.add("upstream_fetches")
            self.state = "streaming"
            self._notify()
            hashes = _PipelinedHash(None if self.entry.lfs else f"blob {self.size}\0".encode())
            last_notified = 0
            try:
                with open(self.tmp_path, "wb", buffering=0) as handle:
                    while self.written < self.size:
                        whole = hashes.buffer()
                        try:
                            count = answer.readinto(whole[: min(READ_BLOCK, self.size - self.written)])
                        except (OSError, http.client.HTTPException) as exc:
                            raise UpstreamUnreachable(f"the transfer of {what} broke: {_short(exc)}") from exc
                        if not count:
                            break
                        piece = whole[:count]
                        done = 0
                        while done < count:  # a raw file's write() may write less than asked
                            done += handle.write(piece[done:]) or 0
                        hashes.hand_on(piece, whole)
                        self.mirror.counters.add("upstream_bytes", count)
                        self.written += count
                        if self.written - last_notified >= NOTIFY_EVERY:
                            last_notified = self.written
                            self._notify()
                    if self.written != self.size:
                        raise UpstreamUnreachable(f"the transfer of {what} ended after {self.written} of {self.size} bytes")
                    sha256, git_sha1 = hashes.finish()
                    self._verify(sha256, git_sha1, what)
                    self.state = "verified"  # readers may have the last byte now
                    self._notify()
                    os.fsync(handle.fileno())
            finally:
                hashes.close()
        self._store(sha256)

    def _verify(self, got_sha256: str, got_git: str | None, what: str) -> None:
        expected = self.entry.sha256 if self.entry.lfs or not is_pending(self.entry.sha256) else None
        wrong = (expected is not None and got_sha256 != expected) or (
            got_git is not None and got_git != self.entry.git_oid
        )
        if wrong:
            self.mirror.counters.add("verify_failures")
            listed = expected or f"git {self.entry.git_oid}"
            log.warning("mirror: %s from the upstream does not match its listed hash: discarded", what)
            raise ApiProblem(
                502,
                "UpstreamIntegrity",
                f"The upstream sent bytes for {what} that do not match its listed hash ({listed}): discarded; try again.",
            )

    def _store(self, sha256: str) -> None:
        store = self.mirror.store
        final = store.blob_path(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if final.exists():
                self.tmp_path.unlink()
            else:
                os.replace(self.tmp_path, final)
            self.final_path = str(final)
        fsync_dir(final.parent)
        self.mirror.mirror_store.record_blob(sha256, self.size, None if self.entry.lfs else self.entry.git_oid)
        self.state = "done"
        self._notify()


class FetchResponse:
    """A file answered from a :class:`Fetch` in progress: each chunk as soon as it is there."""

    def __init__(self, fetch: Fetch, start: int, end: int, status: int, headers: dict[str, str]) -> None:
        self.fetch = fetch
        self.start = start
        self.end = end  # exclusive
        self.status = status
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fetch = self.fetch
        await fetch.wait(lambda: fetch.state != "starting")
        if fetch.state == "failed":
            assert fetch.problem is not None
            await error_response(fetch.problem)(scope, receive, send)
            return
        raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status, "headers": raw_headers})
        if self.start >= self.end:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        disconnected = asyncio.Event()

        async def watch_disconnect() -> None:
            while True:
                if (await receive())["type"] == "http.disconnect":
                    disconnected.set()
                    fetch._notify()
                    return

        watcher = asyncio.ensure_future(watch_disconnect())
        use_sendfile = bool(scope.get("state", {}).get(SENDFILE_STATE_KEY))
        fd = await anyio.to_thread.run_sync(fetch.open_for_reading)
        try:
            offset = self.start
            while offset < self.end and not disconnected.is_set():
                # Send what has arrived, in pieces of at least NOTIFY_EVERY: a slow upstream still
                # gives a first byte early, and a range waits only for its own bytes (the last
                # byte of the file waits for the verdict on the whole file).
                wanted = min(self.end, offset + NOTIFY_EVERY)
                await fetch.wait(lambda: fetch.readable_end() >= wanted or disconnected.is_set())
                if disconnected.is_set():
                    return
                if fetch.state == "failed":
                    # The response stays short: the client sees a cut transfer, never a wrong file.
                    assert fetch.problem is not None
                    log.warning("mirror: cut a client's transfer of %s at byte %d: %s",
                                fetch.entry.path, offset, fetch.problem.message)
                    return
                if use_sendfile:
                    # Everything that has arrived, in one range the kernel sends from the page cache.
                    until = min(self.end, fetch.readable_end(), offset + SENDFILE_CHUNK)
                    body: Any = FileRange(fd, offset, until - offset)
                else:
                    until = min(self.end, fetch.readable_end(), offset + DOWNLOAD_CHUNK)
                    body = await anyio.to_thread.run_sync(os.pread, fd, until - offset, offset)
                    if not body:
                        return
                offset += len(body)
                await send({"type": "http.response.body", "body": body, "more_body": offset < self.end})
        finally:
            watcher.cancel()
            os.close(fd)


class Mirror:
    """The mirror backend of one server (or of one `tunehub hub mirror prefetch` run)."""

    def __init__(self, store: HubStore, settings: MirrorSettings, *, serving: bool = True) -> None:
        self.store = store
        self.settings = settings
        self.mirror_store = MirrorStore(store)
        self.upstream = Upstream(settings)
        self.counters = Counters()
        self.fetch_slots = threading.BoundedSemaphore(MAX_PARALLEL_FETCHES)
        self._fetches: dict[str, Fetch] = {}
        self._fetch_lock = threading.Lock()
        self._revision_locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._down_since: float | None = None
        self._down_reason = ""
        self._last_failure = 0.0
        self._seen_up = False  # the first answer is written to the state for `hub status`
        self._reads: dict[str, tuple[float, int]] = {}
        self._repo_hits: dict[int, int] = {}
        self._reads_lock = threading.Lock()
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        self.prepare_limiter: Any = None  # an anyio.CapacityLimiter, made in the server's event loop
        self._serving = serving  # only the server records the upstream's state for `hub status`
        if serving:
            self.mirror_store.set_state(
                "upstream",
                {"url": self.upstream.url, "token_file": settings.token_file, "ttl": settings.ttl, "up": None,
                 "since": time.time(), "reason": "", "pid": os.getpid()},
            )

    # --- lifecycle ------------------------------------------------------------------

    def start_background(self) -> None:
        """Start the thread that writes read marks (LRU order, hits) every few seconds."""

        def flush_loop() -> None:
            while not self._stop.wait(READ_MARK_FLUSH_S):
                self.flush_reads()

        self._flusher = threading.Thread(target=flush_loop, name="mirror-read-marks", daemon=True)
        self._flusher.start()

    def close(self) -> None:
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(10)
        self.flush_reads()
        self.upstream.close()

    # --- upstream state ---------------------------------------------------------------

    @property
    def upstream_up(self) -> bool:
        return self._down_since is None

    def mark_down(self, reason: str) -> None:
        self._last_failure = time.monotonic()
        if self._down_since is None:
            self._down_since = time.time()
            self._down_reason = reason
            log.warning("upstream %s unreachable: %s", self.upstream.url, reason)
            self._save_state()

    def mark_up(self) -> None:
        if self._down_since is not None:
            log.warning("upstream %s reachable again", self.upstream.url)
            self._down_since = None
            self._down_reason = ""
            self._save_state()
        elif not self._seen_up:
            self._save_state()
        self._seen_up = True

    def _save_state(self) -> None:
        if not self._serving:
            return
        state = self.mirror_store.state("upstream") or {}
        state.update(
            up=self._down_since is None,
            since=self._down_since or time.time(),
            reason=self._down_reason,
            checked=time.time(),
        )
        with contextlib.suppress(Exception):  # status bookkeeping must never fail a request
            self.mirror_store.set_state("upstream", state)

    def unreachable_problem(self, what: str, reason: str) -> ApiProblem:
        return ApiProblem(
            504,
            "UpstreamUnreachable",
            f"The upstream Hub {self.upstream.url} cannot be reached ({reason}) and {what} is not cached on this mirror.",
        )

    def _in_backoff(self) -> bool:
        # After a failure, ask again only after a while: each request would wait for a timeout.
        return self._down_since is not None and time.monotonic() - self._last_failure < min(self.settings.ttl, 30.0)

    # --- access -----------------------------------------------------------------------

    def read_rule(self, principal: Principal | None, repo: Repo) -> bool | None:
        """May ``principal`` read the mirrored ``repo``? None if ``repo`` is not a mirror."""
        mirrored = self.mirror_store.mirrored(repo)
        if mirrored is None:
            return None
        _, restricted = mirrored
        if restricted:
            return principal is not None and self.mirror_store.is_granted(principal.token_id, repo)
        return principal is not None or self.settings.public_read

    def refuse_writes(self, repo: Repo) -> None:
        mirrored = self.mirror_store.mirrored(repo)
        if mirrored is not None:
            raise problems.forbidden(
                f"{repo.repo_id} is a read-only mirror of {mirrored[0]}/{RESOLVE_PREFIX[repo.type]}{repo.repo_id}: "
                "push to the upstream Hub, not to this mirror."
            )

    # --- metadata ------------------------------------------------------------------------

    def _revision_lock(self, key: tuple[str, str, str]) -> threading.Lock:
        with self._locks_lock:
            lock = self._revision_locks.get(key)
            if lock is None:
                lock = self._revision_locks[key] = threading.Lock()
            return lock

    def _fresh(self, repo: Repo, revision: str) -> bool:
        if is_commit_sha(revision) and self.mirror_store.has_commit(repo, revision):
            return True  # a commit never changes
        checked = self.mirror_store.checked_at(repo, revision)
        return (
            checked is not None
            and time.time() - checked < self.settings.ttl
            and self.store.resolve_revision(repo, revision) is not None
        )

    def prepare(self, principal: Principal | None, repo_type: str, repo_id: str, revision: str) -> dict[str, str]:
        """Make ``repo_id@revision`` current in the store if it is (or may be) a mirrored repo.

        Returns headers for the answer (the upstream-unreachable note); raises ApiProblem for
        a 404 the upstream gave or a 504 when nothing is cached. Local repos are left alone.
        """
        try:
            check_repo_id(repo_id)
        except InvalidInput:
            return {}
        repo = self.store.get_repo(repo_type, repo_id)
        if repo is not None and self.mirror_store.mirrored(repo) is None:
            return {}  # this server's own repo
        if principal is None and not self.settings.public_read:
            return {}  # anonymous clients never make the mirror ask the upstream
        if repo is not None and self._fresh(repo, revision):
            return self._stale_headers(repo, revision)
        with self._revision_lock((repo_type, repo_id.lower(), revision)):
            repo = self.store.get_repo(repo_type, repo_id)
            if repo is not None and self._fresh(repo, revision):
                return {}
            if self._in_backoff():
                return self._serve_cached(repo, repo_id, revision, self._down_reason)
            try:
                self._check_upstream(repo_type, repo_id, revision)
            except UpstreamUnreachable as exc:
                self.mark_down(str(exc))
                return self._serve_cached(repo, repo_id, revision, str(exc))
        return {}

    def _stale_headers(self, repo: Repo, revision: str) -> dict[str, str]:
        if self._down_since is None or is_commit_sha(revision):
            return {}
        return self._note(repo, revision)

    def _note(self, repo: Repo, revision: str) -> dict[str, str]:
        sha = self.store.resolve_revision(repo, revision) or "?"
        return {UPSTREAM_HEADER: f"unreachable ({self.upstream.url}); serving cached revision {sha}"}

    def _serve_cached(self, repo: Repo | None, repo_id: str, revision: str, reason: str) -> dict[str, str]:
        if repo is not None and self.store.resolve_revision(repo, revision) is not None:
            return self._note(repo, revision)
        raise self.unreachable_problem(f"{repo_id}@{revision}", reason)

    def _check_upstream(self, repo_type: str, repo_id: str, revision: str) -> None:
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

        self.counters.add("metadata_checks")
        try:
            info = self.upstream.revision(repo_type, repo_id, revision)
        except RevisionNotFoundError as exc:
            self.mark_up()
            raise problems.revision_not_found(repo_id, revision) from exc
        except RepositoryNotFoundError as exc:  # includes GatedRepoError, and private without access
            self.mark_up()
            raise problems.repo_not_found(repo_id) from exc
        self.mark_up()
        gated = bool(getattr(info, "gated", False))
        if gated and not self.upstream.can_read_gated(repo_type, repo_id):
            raise ApiProblem(
                404,
                "RepoNotFound",
                f"Repository {repo_id} is gated on {self.upstream.url} and this mirror's upstream token has no access to it.",
            )
        restricted = gated or bool(getattr(info, "private", False))
        files = []
        for sibling in info.siblings or []:
            if sibling.blob_id is None or sibling.size is None:
                raise ApiProblem(502, "UpstreamError", f"The upstream lists {sibling.rfilename} without size or blob id.")
            lfs = sibling.lfs
            files.append(UpstreamFile(sibling.rfilename, int(sibling.size), sibling.blob_id, lfs.sha256 if lfs else None))
        modified = getattr(info, "last_modified", None)
        date = modified.timestamp() if modified is not None else time.time()
        repo = self.mirror_store.ensure_repo(repo_type, repo_id, self.upstream.url, restricted)
        self.mirror_store.record_revision(repo, revision, info.sha, date, files, f"Mirrored from {self.upstream.url}")

    # --- bytes ------------------------------------------------------------------------------

    def is_mirrored(self, repo: Repo) -> bool:
        return self.mirror_store.mirrored(repo) is not None

    def local_blob(self, entry: FileEntry) -> str | None:
        """The sha256 of ``entry``'s blob if it is on disk."""
        key = entry.sha256
        if is_pending(key):
            return self.mirror_store.fetched_sha256(entry.git_oid, entry.size)
        return key if self.store.has_blob(key) else None

    def fetch(self, repo: Repo, commit: str, entry: FileEntry) -> Fetch | None:
        """The transfer of ``entry``'s blob: the one in flight, or a new one. None once it is local."""
        with self._fetch_lock:
            running = self._fetches.get(entry.sha256)
            if running is not None and running.state != "failed":
                return running
            if self.local_blob(entry) is not None:
                return None
            if self._in_backoff():
                raise self.unreachable_problem(f"{repo.repo_id}/{entry.path}", self._down_reason)
            fetch = Fetch(self, entry.sha256, repo, commit, entry)
            self._fetches[entry.sha256] = fetch
        threading.Thread(target=fetch.run, name=f"mirror-fetch-{entry.sha256[:12]}", daemon=True).start()
        return fetch

    def fetch_done(self, fetch: Fetch) -> None:
        with self._fetch_lock:
            if self._fetches.get(fetch.key) is fetch:
                del self._fetches[fetch.key]

    @property
    def inflight(self) -> int:
        return len(self._fetches)

    def serve_file(
        self, repo: Repo, commit: str, entry: FileEntry, start: int, end: int, status: int, headers: dict[str, str]
    ) -> Any:
        """The answer to a GET of a mirrored file: from disk (hit) or from its transfer (miss)."""
        local = self.local_blob(entry)
        fetch = None if local is not None else self.fetch(repo, commit, entry)
        if fetch is None:
            local = local or self.local_blob(entry)
            assert local is not None
            self.counters.add("hits")
            self._mark_read(local, repo)
            headers[CACHE_HEADER] = "hit"
            return BlobResponse(str(self.store.blob_path(local)), start, end, status, headers, False)
        self.counters.add("misses")
        headers[CACHE_HEADER] = "miss"
        return FetchResponse(fetch, start, end, status, headers)

    def _mark_read(self, sha256: str, repo: Repo) -> None:
        with self._reads_lock:
            _, hits = self._reads.get(sha256, (0.0, 0))
            self._reads[sha256] = (time.time(), hits + 1)
            self._repo_hits[repo.id] = self._repo_hits.get(repo.id, 0) + 1

    def flush_reads(self) -> None:
        with self._reads_lock:
            reads, self._reads = self._reads, {}
            repo_hits, self._repo_hits = self._repo_hits, {}
        try:
            self.mirror_store.record_reads(reads, repo_hits)
        except Exception:  # noqa: BLE001 - marks only order eviction; never fail on them
            log.exception("mirror: could not record read marks")

    # --- prefetch (CLI) ------------------------------------------------------------------------

    def prefetch(
        self, repo_type: str, repo_id: str, revision: str, patterns: list[str], progress: Callable[[str], None]
    ) -> tuple[int, int, int]:
        """Fetch every file of ``repo_id@revision`` matching ``patterns``; (files, fetched bytes, already cached)."""
        import fnmatch

        self._check_upstream(repo_type, repo_id, revision)
        repo = self.store.get_repo(repo_type, repo_id)
        assert repo is not None
        commit = self.store.resolve_revision(repo, revision)
        assert commit is not None
        wanted = [
            entry
            for entry in self.store.files(commit)
            if not patterns or any(fnmatch.fnmatch(entry.path, pattern) for pattern in patterns)
        ]
        fetched_bytes = 0
        cached = 0
        for entry in wanted:
            fetch = self.fetch(repo, commit, entry)
            if fetch is None:
                cached += 1
                continue
            fetch.finished.wait()
            if fetch.state == "failed":
                assert fetch.problem is not None
                raise fetch.problem
            fetched_bytes += entry.size
            progress(f"fetched {entry.path} ({entry.size} bytes)")
        return len(wanted), fetched_bytes, cached


# --- which requests touch a repo, for the dispatch hook ----------------------------------------


def repo_of_request(method: str, segments: list[str]) -> tuple[str, str, str] | None:
    """(repo type, repo id, revision) of a read request on a repo, from the raw path segments."""
    if segments[:1] == ["api"]:
        seg = segments[1:]
        if len(seg) < 3 or seg[0] not in SEGMENT_TYPE:
            return None
        repo_type = SEGMENT_TYPE[seg[0]]
        repo_id = f"{unquote(seg[1])}/{unquote(seg[2])}"
        rest = seg[3:]
        if not rest and method == "GET":
            return repo_type, repo_id, "main"
        action = rest[0] if rest else ""
        if action in ("revision", "tree", "commits") and len(rest) >= 2 and method == "GET":
            return repo_type, repo_id, unquote(rest[1])
        if action == "paths-info" and len(rest) == 2 and method == "POST":
            return repo_type, repo_id, unquote(rest[1])
        if action == "refs" and len(rest) == 1 and method == "GET":
            return repo_type, repo_id, "main"
        return None
    repo_type = "model"
    seg = segments
    if seg[:1] in (["datasets"], ["spaces"]):
        repo_type = SEGMENT_TYPE[seg[0]]
        seg = seg[1:]
    if len(seg) >= 5 and seg[2] == "resolve" and method in ("GET", "HEAD"):
        return repo_type, f"{unquote(seg[0])}/{unquote(seg[1])}", unquote(seg[3])
    return None


async def prepare_request(mirror: Mirror, principal: Principal | None, method: str, segments: list[str]) -> dict[str, str]:
    """The dispatch hook: bring the repo's revision up to date (in a worker thread) before answering."""
    target = repo_of_request(method, segments)
    if target is None:
        return {}
    # Their own threads: requests waiting on a slow upstream must not take the worker threads
    # that every file answer reads its chunks with.
    if mirror.prepare_limiter is None:
        mirror.prepare_limiter = anyio.CapacityLimiter(PREPARE_THREADS)
    return await anyio.to_thread.run_sync(lambda: mirror.prepare(principal, *target), limiter=mirror.prepare_limiter)


__all__ = ["Mirror", "MirrorSettings", "Fetch", "FetchResponse", "prepare_request", "repo_of_request", "DEFAULT_TTL_S"]
