"""The transfer engine: parallel ranged downloads, verified, resumable across processes.

What it guarantees:

* nothing exists under the final name unless it is complete and verified (sha256 of a
  Hub LFS file, git blob sha1 of a small Hub file, size and ETag for any other URL);
* bytes go to ``.NAME.tunehub-part`` beside the target, with a small JSON progress record
  ``.NAME.tunehub-part.json`` rewritten every 4 MiB or 0.5 s (whichever comes first)
  *without* forcing it to disk: a SIGKILL loses nothing that was written, so a killed
  pull continues within a few MiB of where it stopped. Every few seconds the data is
  fdatasynced and the record says so (``durable``): after a power cut, the final sha256
  check catches a torn tail, which is then fetched again from that durable point;
* several byte ranges are fetched at once on keep-alive connections, and sha256 follows
  the contiguous prefix while later ranges still arrive, so the file is not read again
  at the end (only the part that a previous run fetched is re-hashed on resume);
* 429 and 5xx are retried with exponential backoff honouring ``Retry-After``; dropped
  connections resume at the last byte written; a connection that sends nothing for
  ``timeout`` seconds, or trickles (under 1 KiB/s over twice that), is closed and
  retried, and after ``max_retries`` the error says what happened; 401/403/404 become clear errors;
* ``cancel`` (a threading.Event, set by Ctrl-C or a cancelled job) stops every
  connection within a fraction of a second, keeping the partial and its record;
* ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` / ``NO_PROXY`` are honoured (CONNECT
  tunnels for https) and so are the CA bundle settings ``REQUESTS_CA_BUNDLE``,
  ``CURL_CA_BUNDLE``, ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``, as huggingface_hub does.

Metadata and tokens come from huggingface_hub (``get_hf_file_metadata``,
``build_hf_headers``); only the byte transfer is done here, with ``http.client`` and
``readinto`` into a reused buffer (the fewest copies Python allows). The token is sent
only to the Hub endpoint's own origin, never to a redirect target elsewhere.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

from tunehub.errors import (
    DiskFullError,
    HubAuthError,
    HubError,
    HubNotFoundError,
    IntegrityError,
    Interrupted,
    OfflineError,
)
from tunehub.safeio import fsync_dir, temp_path_for

__all__ = [
    "PART_SUFFIX",
    "RECORD_SUFFIX",
    "LOCK_SUFFIX",
    "DownloadResult",
    "RemoteFile",
    "download_file",
    "hash_file",
    "offline_mode",
    "part_paths",
    "probe",
    "redact",
]

PART_SUFFIX = ".tunehub-part"
RECORD_SUFFIX = ".tunehub-part.json"
LOCK_SUFFIX = ".tunehub-lock"
RECORD_VERSION = 1
RETRY_STATUSES = (408, 429, 500, 502, 503, 504)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_CHUNK = 1 << 20  # readinto buffer per connection
_HASH_CHUNK = 4 << 20
_RECORD_INTERVAL_S = 0.5
_RECORD_EVERY_BYTES = 4 << 20  # a record costs ~0.1 ms (no fsync): cheap enough to lose at most this on a kill
_DURABLE_INTERVAL_S = 3.0  # fdatasync of the data, and the record that says how far it is on disk
_PROGRESS_INTERVAL_S = 0.2
STALL_MIN_BYTES_PER_S = 1024  # slower than this over a whole timeout: the connection is taken as stalled

ProgressCallback = Callable[[dict[str, Any]], None]


def offline_mode() -> bool:
    """huggingface_hub's offline switch, also when HF_HUB_OFFLINE is set after its import."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    if value is not None:
        return value.strip().upper() in {"1", "ON", "YES", "TRUE"}
    return bool(constants.is_offline_mode())


def redact(text: str) -> str:
    """Remove anything that looks like a token (and the current token itself) from ``text``."""
    from huggingface_hub.utils import get_token

    with contextlib.suppress(Exception):
        token = get_token()
        if token:
            text = text.replace(token, "***")
    return re.sub(r"(Bearer\s+)\S+", r"\1***", text)


def part_paths(dest: Path) -> tuple[Path, Path]:
    """The partial data file and its progress record for a final path."""
    return (
        dest.with_name(f".{dest.name}{PART_SUFFIX}"),
        dest.with_name(f".{dest.name}{RECORD_SUFFIX}"),
    )


@dataclass
class RemoteFile:
    """What the server says about a file before any byte is fetched."""

    url: str  # as asked
    location: str  # where the bytes are fetched (after redirects)
    size: int
    etag: str | None = None
    sha256: str | None = None  # known content hash (LFS oid or caller's)
    git_sha1: str | None = None  # git blob sha1 (small files on a Hub)
    commit: str | None = None
    accept_ranges: bool = True
    hub: bool = False  # metadata came from a Hub (etag is the content hash, not the GET's ETag)
    auth_headers: dict[str, str] = field(default_factory=dict, repr=False)

    def identity(self) -> dict[str, Any]:
        """What must be unchanged for a partial download to be resumed."""
        return {"size": self.size, "etag": self.etag, "sha256": self.sha256, "git_sha1": self.git_sha1}


@dataclass
class DownloadResult:
    path: Path
    size: int
    sha256: str
    bytes_transferred: int  # fetched over the network in this call
    resumed_from: int  # bytes already there from a previous run
    remote: RemoteFile | None = None


def hash_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """sha256 of a file, read in large blocks (hashlib releases the GIL on them)."""
    digest = hashlib.sha256()
    buffer = bytearray(8 << 20)
    view = memoryview(buffer)
    done = 0
    with open(path, "rb", buffering=0) as handle:
        while True:
            got = handle.readinto(buffer)
            if not got:
                break
            digest.update(view[:got])
            done += got
            if progress is not None:
                progress(done)
    return digest.hexdigest()


# --- metadata ------------------------------------------------------------------


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


def _is_hub_url(url: str, endpoint: str | None) -> bool:
    if not endpoint:
        return False
    return _origin(url) == _origin(endpoint) and "/resolve/" in urlsplit(url).path


def _normalize_etag(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"') or None


def _hub_error(exc: Exception, url: str, context: str) -> HubError:
    """Map a huggingface_hub error to ours, with a message naming the URL and what to do."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{url}{context}"
    if isinstance(exc, OfflineModeIsEnabled):
        return OfflineError(f"offline mode (HF_HUB_OFFLINE) is on and {where} is not present locally")
    if isinstance(exc, GatedRepoError):
        return HubAuthError(
            f"access to {where} is restricted: accept the repo's terms on its page and log in "
            "(`hf auth login` or HF_TOKEN)"
        )
    if isinstance(exc, (EntryNotFoundError, RevisionNotFoundError)):
        return HubNotFoundError(f"not found (404): {where}")
    if isinstance(exc, RepositoryNotFoundError):
        return HubNotFoundError(
            f"not found (404): {where}; the repo does not exist, or it is private and you are "
            "not logged in (`hf auth login` or HF_TOKEN)"
        )
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, HfHubHTTPError) and status in (401, 403):
        return HubAuthError(
            f"{status} for {where}: log in (`hf auth login` or HF_TOKEN) with a token that can "
            "read it, and accept the repo's terms if it is gated"
        )
    if status == 404:
        return HubNotFoundError(f"not found (404): {where}")
    if status in RETRY_STATUSES:
        return HubError(f"HTTP {status} from the Hub for {where}: the server is busy or down; try again later")
    first_line = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return HubError(redact(f"cannot fetch {where}: {first_line}"))


def _status_error(status: int, url: str, context: str, reason: str = "") -> HubError:
    where = f"{url}{context}"
    if status in (401, 403):
        return HubAuthError(
            f"{status} for {where}: log in (`hf auth login` or HF_TOKEN) with a token that can "
            "read it, and accept the repo's terms if it is gated"
        )
    if status == 404:
        return HubNotFoundError(f"not found (404): {where}")
    if status == 416:
        return HubError(f"{where}: the server refused the byte range (416); the file changed or shrank")
    return HubError(f"HTTP {status} {reason} for {where}".replace("  ", " "))


def _auth_headers(endpoint: str | None, token: str | bool | None) -> dict[str, str]:
    from huggingface_hub.utils import build_hf_headers

    headers = dict(build_hf_headers(token=token, library_name="tunehub"))
    headers.pop("accept-encoding", None)
    return headers


_CA_ENV = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")
_ssl_contexts: dict[tuple[str | None, ...], ssl.SSLContext] = {}


def ca_bundle_from_env() -> tuple[str | None, str | None]:
    """(cafile, capath) from the settings Python HTTP clients honour; (None, None) for the system store."""
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE")
    capath = os.environ.get("SSL_CERT_DIR") or None
    if bundle and os.path.isdir(bundle):
        return None, bundle
    return bundle or None, capath


def share_ca_bundle_with_hub_client() -> None:
    """huggingface_hub's HTTP client reads SSL_CERT_FILE only: hand it the bundle named otherwise."""
    cafile, _ = ca_bundle_from_env()
    if cafile and not os.environ.get("SSL_CERT_FILE"):
        os.environ["SSL_CERT_FILE"] = cafile


def ssl_context() -> ssl.SSLContext:
    key = tuple(os.environ.get(name) for name in _CA_ENV)
    context = _ssl_contexts.get(key)
    if context is None:
        cafile, capath = ca_bundle_from_env()
        try:
            context = ssl.create_default_context(cafile=cafile, capath=capath)
        except (OSError, ssl.SSLError) as exc:
            named = ", ".join(f"{name}={os.environ[name]}" for name in _CA_ENV if os.environ.get(name))
            raise HubError(f"cannot load the CA bundle ({named}): {exc}") from None
        _ssl_contexts[key] = context
    return context


def proxy_for(url: str) -> str | None:
    """The proxy URL the environment names for ``url`` (None: connect directly), as requests/httpx decide."""
    proxies = urllib.request.getproxies_environment()
    parts = urlsplit(url)
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy:
        return None
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    if urllib.request.proxy_bypass_environment(netloc, proxies):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _connect(url: str, timeout: float) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise HubError(f"unsupported URL scheme in {url} (only http and https)")
    proxy = proxy_for(url)
    if proxy is None:
        if parts.scheme == "https":
            return http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=timeout, context=ssl_context())
        return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    via = urlsplit(proxy)
    if via.scheme != "http":
        raise HubError(f"proxy {via.scheme}://{via.hostname}:{via.port}: only http:// proxies are supported for downloads")
    proxy_headers: dict[str, str] = {}
    if via.username:
        credentials = f"{unquote(via.username)}:{unquote(via.password or '')}".encode()
        proxy_headers["Proxy-Authorization"] = "Basic " + base64.b64encode(credentials).decode()
    if parts.scheme == "https":  # a CONNECT tunnel, TLS end to end with the server
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            via.hostname or "", via.port or 80, timeout=timeout, context=ssl_context()
        )
        conn.set_tunnel(parts.hostname or "", parts.port or 443, headers=proxy_headers)
        return conn
    conn = http.client.HTTPConnection(via.hostname or "", via.port or 80, timeout=timeout)
    conn.tunehub_absolute_form = True  # type: ignore[attr-defined]  # plain http: the proxy gets the whole URL
    conn.tunehub_proxy_headers = proxy_headers  # type: ignore[attr-defined]
    return conn


def _request(conn: http.client.HTTPConnection, method: str, url: str, headers: dict[str, str]) -> None:
    """Send a request on ``conn``: origin-form, or absolute-form through a plain-http proxy."""
    if getattr(conn, "tunehub_absolute_form", False):
        conn.request(method, url, headers={**headers, **conn.tunehub_proxy_headers})  # type: ignore[attr-defined]
        return
    conn.request(method, _request_target(url), headers=headers)


def _request_target(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _network_reason(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"the server sent nothing for {timeout:g} s"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"certificate verification failed ({exc.verify_message}); behind a proxy that re-signs TLS, point "
            "REQUESTS_CA_BUNDLE (or SSL_CERT_FILE) at its CA bundle"
        )
    return str(exc) or type(exc).__name__


BACKOFF_BASE_S = 1.0  # first wait after a failure without Retry-After; doubles, capped at 8x


def _retry_delay(attempt: int, retry_after: str | None, base: float = BACKOFF_BASE_S) -> float:
    if retry_after:
        with contextlib.suppress(ValueError):
            return min(max(float(retry_after), 0.0), 300.0)
    return base * min(8.0, 2.0 ** (attempt - 1)) * (0.5 + random.random() / 2)


def _plain_head(url: str, timeout: float, max_retries: int, context: str = "") -> RemoteFile:
    """HEAD a non-Hub URL, following redirects, no credentials sent."""
    location = url
    attempt = 0
    redirects = 0
    while True:
        conn = _connect(location, timeout)
        try:
            _request(conn, "HEAD", location, {"Accept-Encoding": "identity"})
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            attempt += 1
            if attempt > max_retries or isinstance(exc, ssl.SSLCertVerificationError):
                raise HubError(f"cannot reach {url}{context}: {_network_reason(exc, timeout)}") from None
            time.sleep(_retry_delay(attempt, None))
            continue
        conn.close()
        status = response.status
        if status in (301, 302, 303, 307, 308) and response.getheader("Location"):
            redirects += 1
            if redirects > 10:
                raise HubError(f"too many redirects for {url}")
            location = urljoin(location, response.getheader("Location") or "")
            continue
        if status in RETRY_STATUSES and attempt < max_retries:
            attempt += 1
            time.sleep(_retry_delay(attempt, response.getheader("Retry-After")))
            continue
        if status >= 400:
            raise _status_error(status, url, context, response.reason)
        length = response.getheader("Content-Length")
        if length is None:
            raise HubError(f"{url}{context}: the server does not say the file's size (no Content-Length)")
        return RemoteFile(
            url=url,
            location=location,
            size=int(length),
            etag=_normalize_etag(response.getheader("ETag")),
            accept_ranges="bytes" in (response.getheader("Accept-Ranges") or "").lower(),
        )


def probe(
    url: str,
    *,
    endpoint: str | None = None,
    token: str | bool | None = None,
    expected_sha256: str | None = None,
    timeout: float = 30.0,
    max_retries: int = 5,
    context: str = "",
) -> RemoteFile:
    """Ask the server for a file's size, etag and hash without fetching it.

    Hub URLs (same origin as ``endpoint``, ``/resolve/`` path) go through
    huggingface_hub's ``get_hf_file_metadata`` (token, redirects, error mapping);
    anything else gets a plain HEAD with no credentials.
    """
    if offline_mode():
        raise OfflineError(f"offline mode (HF_HUB_OFFLINE) is on and {url}{context} is not present locally")
    if _is_hub_url(url, endpoint):
        share_ca_bundle_with_hub_client()
        from huggingface_hub import get_hf_file_metadata

        try:
            meta = get_hf_file_metadata(url, token=token, endpoint=endpoint, retry_on_errors=True, timeout=timeout)
        except Exception as exc:  # mapped to our tree, message redacted
            raise _hub_error(exc, url, context) from None
        if meta.size is None:
            raise HubError(f"{url}{context}: the Hub did not say the file's size")
        etag = _normalize_etag(meta.etag)
        sha256 = expected_sha256
        git_sha1 = None
        if etag and _HEX64.match(etag):
            sha256 = sha256 or etag
            if expected_sha256 and expected_sha256 != etag:
                raise IntegrityError(
                    f"{url}{context}: the Hub's sha256 {etag} differs from the expected {expected_sha256}"
                )
        elif etag and _HEX40.match(etag):
            git_sha1 = etag
        location = meta.location or url
        same_origin = _origin(location) == _origin(endpoint or url)
        auth = _auth_headers(endpoint, token) if same_origin else {}
        return RemoteFile(
            url=url,
            location=location,
            size=int(meta.size),
            etag=etag,
            sha256=sha256,
            git_sha1=git_sha1,
            commit=meta.commit_hash,
            accept_ranges=True,
            hub=True,
            auth_headers=auth,
        )
    remote = _plain_head(url, timeout, max_retries, context)
    remote.sha256 = expected_sha256
    return remote


# --- the transfer --------------------------------------------------------------


class _Cancelled(Exception):
    pass


@dataclass
class _Stream:
    """One response body being read by a worker: watched for stalls, closed on cancel."""

    conn: http.client.HTTPConnection
    window_start: float
    window_bytes: int = 0
    stalled: bool = False

    def close_socket(self) -> None:
        """Wake a worker blocked in recv (shutdown works across threads; close does not)."""
        sock = getattr(self.conn, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Transfer:
    """One file being fetched: shared state of the part workers, the hasher and the recorder."""

    def __init__(
        self,
        remote: RemoteFile,
        fd: int,
        part_size: int,
        done: list[int],
        *,
        label: str,
        context: str,
        timeout: float,
        max_retries: int,
        progress: ProgressCallback | None,
        record_path: Path,
        backoff_s: float = BACKOFF_BASE_S,
        durable: list[int] | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.backoff_s = backoff_s
        self.remote = remote
        self.fd = fd
        self.part_size = part_size
        self.parts = max(1, -(-remote.size // part_size))
        self.done = done  # bytes written contiguously from each part's start
        self.durable = list(durable if durable is not None else done)  # of which known to be on disk (fdatasync)
        self.label = label
        self.context = context
        self.timeout = timeout
        self.max_retries = max_retries
        self.progress = progress
        self.record_path = record_path
        self.cancel = cancel
        self.lock = threading.Lock()
        self.record_lock = threading.Lock()
        self.wakeup = threading.Condition(self.lock)
        self.next_part = 0
        self.error: BaseException | None = None
        self.transferred = 0
        self.finished_workers = 0
        self.streams: dict[int, _Stream] = {}  # worker thread id -> the body it reads
        self.sha256 = hashlib.sha256()
        self.git_sha1 = hashlib.sha1(f"blob {remote.size}\0".encode()) if remote.git_sha1 else None
        self.hashed = 0

    # part geometry
    def part_range(self, index: int) -> tuple[int, int]:
        start = index * self.part_size
        return start, min(self.remote.size, start + self.part_size)

    def completed(self) -> int:
        return sum(self.done)

    def fail(self, exc: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = exc
            self.wakeup.notify_all()
            streams = list(self.streams.values())
        for stream in streams:  # workers blocked on a silent socket stop now, not at their timeout
            stream.close_socket()

    def take_part(self) -> int | None:
        with self.lock:
            while self.next_part < self.parts:
                index = self.next_part
                self.next_part += 1
                start, end = self.part_range(index)
                if start + self.done[index] < end:
                    return index
            return None

    # workers
    def worker(self) -> None:
        conn: http.client.HTTPConnection | None = None
        buffer = bytearray(_CHUNK)
        view = memoryview(buffer)
        try:
            while self.error is None:
                index = self.take_part()
                if index is None:
                    break
                conn = self.fetch_part(index, conn, view)
        except BaseException as exc:  # handed to the caller's thread
            self.fail(exc)
        finally:
            if conn is not None:
                conn.close()
            with self.lock:
                self.finished_workers += 1
                self.wakeup.notify_all()

    def fetch_part(
        self, index: int, conn: http.client.HTTPConnection | None, view: memoryview
    ) -> http.client.HTTPConnection | None:
        start, end = self.part_range(index)
        attempt = 0
        while True:
            offset = start + self.done[index]
            if offset >= end:
                return conn
            if self.error is not None:
                raise _Cancelled()
            headers = dict(self.remote.auth_headers)
            headers["Accept-Encoding"] = "identity"
            ranged = self.remote.accept_ranges and not (offset == 0 and end == self.remote.size)
            if ranged:
                headers["Range"] = f"bytes={offset}-{end - 1}"
                if self.remote.etag and not self.remote.hub:
                    headers["If-Range"] = f'"{self.remote.etag}"'
            stream: _Stream | None = None
            try:
                if conn is None:
                    conn = _connect(self.remote.location, self.timeout)
                stream = self.watch(conn)
                _request(conn, "GET", self.remote.location, headers)
                response = conn.getresponse()
                status = response.status
                if status in (301, 302, 303, 307, 308) and response.getheader("Location") and attempt < 10:
                    # the bytes moved (a CDN, a signed URL): follow, without credentials off-origin
                    response.read()
                    location = urljoin(self.remote.location, response.getheader("Location") or "")
                    with self.lock:
                        if _origin(location) != _origin(self.remote.location):
                            self.remote.auth_headers = {}
                        self.remote.location = location
                    conn.close()
                    conn = None
                    attempt += 1
                    continue
                if status in RETRY_STATUSES or (status >= 400 and status not in (401, 403, 404, 416)):
                    response.read()
                    if status not in RETRY_STATUSES or attempt >= self.max_retries:
                        raise _status_error(status, self.remote.url, self.context, response.reason)
                    attempt += 1
                    self.pause(_retry_delay(attempt, response.getheader("Retry-After"), self.backoff_s))
                    continue
                if status >= 400:
                    response.read()
                    raise _status_error(status, self.remote.url, self.context, response.reason)
                if ranged and status != 206:
                    response.close()
                    conn.close()
                    conn = None
                    raise HubError(
                        f"{self.remote.url}{self.context}: the server answered {status} to a byte-range "
                        "request (it ignores ranges, or the file changed since it was first seen)"
                    )
                if not ranged and offset != 0:
                    raise HubError(f"{self.remote.url}: cannot resume without range support")
                self.read_body(response, offset, end, index, view, stream)
                if response.will_close:
                    conn.close()
                    conn = None
                attempt = 0
            except (OSError, http.client.HTTPException) as exc:
                if isinstance(exc, HubError):
                    raise
                if conn is not None:
                    conn.close()
                    conn = None
                if self.error is not None:
                    raise _Cancelled() from None
                if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG):
                    raise
                reason = (
                    f"the transfer stalled (under {STALL_MIN_BYTES_PER_S // 1024} KiB/s for {2 * self.timeout:g} s)"
                    if stream is not None and stream.stalled
                    else _network_reason(exc, self.timeout)
                )
                attempt += 1
                if attempt > self.max_retries or isinstance(exc, ssl.SSLCertVerificationError):
                    raise HubError(
                        f"{self.remote.url}{self.context}: {reason} ({attempt} attempt(s)); the partial download "
                        "is kept: run the same command again to resume"
                    ) from None
                self.emit("retrying", error=f"{reason}; retry {attempt} of {self.max_retries}")
                self.pause(_retry_delay(attempt, None, self.backoff_s))
            finally:
                self.unwatch()

    def pause(self, seconds: float) -> None:
        """Sleep before a retry, but wake at once when the transfer is stopped."""
        with self.lock:
            self.wakeup.wait_for(lambda: self.error is not None, timeout=seconds)
        if self.error is not None:
            raise _Cancelled()

    def watch(self, conn: http.client.HTTPConnection) -> _Stream:
        stream = _Stream(conn, time.monotonic())
        with self.lock:
            self.streams[threading.get_ident()] = stream
        if self.error is not None:
            raise _Cancelled()
        return stream

    def unwatch(self) -> None:
        with self.lock:
            self.streams.pop(threading.get_ident(), None)

    def check_stalls(self, now: float) -> None:
        """Close connections that sent less than the minimum rate over a whole timeout window."""
        with self.lock:
            streams = list(self.streams.values())
        window = 2 * self.timeout  # a silent socket hits its read timeout first; this catches trickles
        for stream in streams:
            if now - stream.window_start < window:
                continue
            if stream.window_bytes < STALL_MIN_BYTES_PER_S * window:
                stream.stalled = True
                stream.close_socket()
            stream.window_start, stream.window_bytes = now, 0

    def read_body(
        self, response: http.client.HTTPResponse, offset: int, end: int, index: int, view: memoryview,
        stream: _Stream,
    ) -> None:
        fd = self.fd
        while offset < end:
            if self.error is not None:
                raise _Cancelled()
            want = min(len(view), end - offset)
            got = response.readinto(view[:want])
            if not got:
                raise http.client.IncompleteRead(b"", end - offset)
            written = 0
            while written < got:
                written += os.pwrite(fd, view[written:got], offset + written)
            offset += got
            stream.window_bytes += got
            with self.lock:
                self.done[index] += got
                self.transferred += got
                self.wakeup.notify_all()
        if response.length:  # the server sent more than the range asked
            response.read()

    # hasher: follows the contiguous prefix, reading what the workers just wrote (page cache)
    def hash_until(self, limit: int, buffer: bytearray) -> None:
        view = memoryview(buffer)
        while self.hashed < limit:
            want = min(len(buffer), limit - self.hashed)
            got = os.preadv(self.fd, [view[:want]], self.hashed)
            if got <= 0:
                raise IntegrityError(f"{self.label}: partial file shorter than recorded")
            chunk = view[:got]
            self.sha256.update(chunk)
            if self.git_sha1 is not None:
                self.git_sha1.update(chunk)
            self.hashed += got

    def contiguous(self) -> int:
        """Bytes available from offset 0 with no gap."""
        total = 0
        for index in range(self.parts):
            start, end = self.part_range(index)
            total = start + self.done[index]
            if total < end:
                break
        return total

    def save_record(self, durable: bool = False) -> None:
        """Write the progress record; with ``durable``, fdatasync the data first and say how far it is on disk.

        Without ``durable`` nothing is forced to disk: bytes already written survive a
        SIGKILL in the page cache, and that is what the record claims.
        """
        with self.lock:
            done = list(self.done)  # snapshot first: only bytes already written
        if durable:
            os.fdatasync(self.fd)
            self.durable = done
        record = {
            "version": RECORD_VERSION,
            "url": self.remote.url,
            **self.remote.identity(),
            "part_size": self.part_size,
            "done": done,
            "durable": self.durable,
        }
        with self.record_lock:
            _write_record(self.record_path, json.dumps(record), sync=durable)

    def recorder(self, stop: threading.Event) -> None:
        """Saves the record every 4 MiB or 0.5 s, and a durable one every few seconds, apart from the hasher."""
        last_save = last_durable = time.monotonic()
        saved_bytes = self.transferred
        while not stop.wait(0.02):
            now = time.monotonic()
            if now - last_save < _RECORD_INTERVAL_S and self.transferred - saved_bytes < _RECORD_EVERY_BYTES:
                continue
            durable = now - last_durable >= _DURABLE_INTERVAL_S
            saved_bytes = self.transferred
            try:
                self.save_record(durable=durable)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    continue  # the workers report the full disk; the last good record stays
                self.fail(exc)
                return
            last_save = time.monotonic()
            if durable:
                last_durable = last_save

    def emit(self, status: str, **extra: Any) -> None:
        if self.progress is not None:
            self.progress(
                {"file": self.label, "total": self.remote.size, "completed": self.completed(), "status": status, **extra}
            )

    def run(self, connections: int) -> None:
        workers = [
            threading.Thread(target=self.worker, name=f"tunehub-dl-{i}", daemon=True)
            for i in range(max(1, min(connections, self.parts)))
        ]
        for thread in workers:
            thread.start()
        stop_recorder = threading.Event()
        recorder = threading.Thread(target=self.recorder, args=(stop_recorder,), name="tunehub-dl-record", daemon=True)
        if self.remote.accept_ranges:
            recorder.start()
        buffer = bytearray(_HASH_CHUNK)
        last_progress = time.monotonic()
        try:
            while True:
                with self.lock:
                    while (
                        self.error is None
                        and self.finished_workers < len(workers)
                        and self.contiguous() - self.hashed < _HASH_CHUNK
                        and time.monotonic() - last_progress < _PROGRESS_INTERVAL_S
                    ):
                        self.wakeup.wait(_PROGRESS_INTERVAL_S)
                    error = self.error
                    limit = self.contiguous()
                    all_done = self.finished_workers == len(workers)
                if error is not None:
                    break
                if self.cancel is not None and self.cancel.is_set():
                    self.fail(Interrupted(f"{self.label}: stopped; the partial download is kept"))
                    break
                self.hash_until(limit, buffer)
                now = time.monotonic()
                self.check_stalls(now)
                if now - last_progress >= _PROGRESS_INTERVAL_S:
                    self.emit("downloading")
                    last_progress = now
                if all_done:
                    break
        except BaseException as exc:
            self.fail(exc)
        finally:
            for thread in workers:
                thread.join()
            stop_recorder.set()
            if recorder.is_alive():
                recorder.join()
            if self.remote.accept_ranges and (self.error is not None or self.completed() < self.remote.size):
                with contextlib.suppress(OSError):
                    self.save_record()  # stopped early: keep the exact progress for the next run
        if self.error is not None:
            raise self.error
        self.hash_until(self.remote.size, buffer)


def _write_record(path: Path, text: str, sync: bool) -> None:
    """Replace the record atomically (rename); forced to disk only when ``sync``."""
    tmp = temp_path_for(path)
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    if sync:
        fsync_dir(path.parent)


def _load_record(
    record_path: Path, remote: RemoteFile, part_size: int, data_size: int
) -> tuple[list[int], list[int]] | None:
    """Per-part progress from a previous run and how much of it was fsynced, or None if it cannot be trusted."""
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("version") != RECORD_VERSION:
        return None
    if {key: record.get(key) for key in remote.identity()} != remote.identity():
        return None
    if record.get("part_size") != part_size:
        return None
    done = record.get("done")
    durable = record.get("durable", done)  # records of earlier versions were written after an fdatasync
    parts = max(1, -(-remote.size // part_size))
    if not isinstance(done, list) or len(done) != parts or not isinstance(durable, list) or len(durable) != parts:
        return None
    result = []
    for index, value in enumerate(done):
        start = index * part_size
        length = min(remote.size, start + part_size) - start
        if not isinstance(value, int) or not 0 <= value <= length or start + value > data_size:
            return None
        result.append(value)
    durable_done = [min(value, done[i]) if isinstance(value, int) and value >= 0 else 0 for i, value in enumerate(durable)]
    return result, durable_done


def _check_free_space(folder: Path, needed: int, reserve: int, label: str) -> None:
    free = shutil.disk_usage(folder).free
    if free - needed < reserve:
        raise DiskFullError(
            f"not enough free space in {folder} for {label}: {needed / 1e9:.2f} GB still to fetch, "
            f"{free / 1e9:.2f} GB free" + (f", {reserve / 1e9:.2f} GB to keep free" if reserve else "")
        )


def _default_part_size(size: int, connections: int) -> int:
    # Small enough that the parts in flight stay near the hash frontier (little left to hash
    # when the last byte arrives), large enough that one request per part costs nothing;
    # resume granularity is per byte anyway (see the record).
    return max(1 << 20, min(16 << 20, -(-size // (connections * 4)) if size else 1 << 20))


def download_file(
    url: str,
    dest: str | os.PathLike[str],
    *,
    expected_sha256: str | None = None,
    expected_size: int | None = None,
    progress: ProgressCallback | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
    connections: int = 4,
    part_size: int | None = None,
    max_retries: int = 5,
    backoff_s: float = BACKOFF_BASE_S,
    timeout: float = 30.0,
    reserve_free_bytes: int = 0,
    remote: RemoteFile | None = None,
    label: str | None = None,
    context: str = "",
    cancel: threading.Event | None = None,
) -> DownloadResult:
    """Fetch ``url`` to ``dest``: parallel, resumable, verified, placed atomically.

    ``endpoint``: the Hub whose ``/resolve/`` URLs get huggingface_hub's metadata and token.
    ``context``: appended to error messages (for instance which definition asked for it).
    ``reserve_free_bytes``: free space that must remain after the download.
    ``timeout``: seconds without a byte (or twice that under 1 KiB/s) before a connection is retried.
    ``cancel``: set it to stop (Interrupted is raised; the partial and its record are kept).
    Raises IntegrityError (nothing placed, partial discarded), DiskFullError (partial kept),
    HubAuthError / HubNotFoundError / HubError (partial kept, resumable), OfflineError, Interrupted.
    """
    dest = Path(dest)
    label = label or dest.name
    if remote is None:
        remote = probe(url, endpoint=endpoint, token=token, expected_sha256=expected_sha256, timeout=timeout, context=context)
    if expected_size is not None and expected_size != remote.size:
        raise IntegrityError(f"{url}{context}: the server says {remote.size} bytes, expected {expected_size}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(dest, remote, label, progress, cancel):
        if remote.sha256 and dest.is_file() and dest.stat().st_size == remote.size:
            # another process (the daemon, a second pull) placed it while we waited for the lock
            if hash_file(dest) == remote.sha256:
                return DownloadResult(dest, remote.size, remote.sha256, 0, remote.size, remote)
        try:
            return _fetch(url, dest, remote, label=label, context=context, connections=connections,
                          part_size=part_size, max_retries=max_retries, backoff_s=backoff_s, timeout=timeout,
                          reserve_free_bytes=reserve_free_bytes, progress=progress, cancel=cancel)
        except OSError as exc:
            if exc.errno == errno.EFBIG:
                raise DiskFullError(
                    f"cannot write {label} ({remote.size / 1e9:.2f} GB) in {dest.parent}: the file is larger than "
                    "this filesystem or your file-size limit (`ulimit -f`) allows; the partial download is kept"
                ) from None
            if exc.errno == errno.ENOSPC:
                raise DiskFullError(
                    f"disk full in {dest.parent} while fetching {label}; the partial download is kept "
                    "in place: free some space and run the same command again to resume"
                ) from None
            raise


@contextlib.contextmanager
def _exclusive(
    dest: Path, remote: RemoteFile, label: str, progress: ProgressCallback | None,
    cancel: threading.Event | None = None,
) -> Iterator[None]:
    """One process at a time fetches a given target (a lock file beside it, removed after)."""
    import fcntl

    lock_path = dest.with_name(f".{dest.name}{LOCK_SUFFIX}")
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if progress is not None and not told:
                    progress({"file": label, "total": remote.size, "completed": 0, "status": "waiting"})
                    told = True
                stopped = cancel.wait(0.2) if cancel is not None else time.sleep(0.2)
                if stopped:
                    os.close(fd)
                    raise Interrupted(f"{label}: stopped while waiting for another download of it") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed that lock file as we waited: take the new one
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        os.close(fd)


def _fetch(
    url: str,
    dest: Path,
    remote: RemoteFile,
    *,
    label: str,
    context: str,
    connections: int,
    part_size: int | None,
    max_retries: int,
    backoff_s: float,
    timeout: float,
    reserve_free_bytes: int,
    progress: ProgressCallback | None,
    cancel: threading.Event | None = None,
) -> DownloadResult:
    part_path, record_path = part_paths(dest)
    part_size = part_size or _default_part_size(remote.size, connections)
    if not remote.accept_ranges:
        part_size = max(remote.size, 1)
    loaded: tuple[list[int], list[int]] | None = None
    if part_path.exists() and remote.accept_ranges:
        loaded = _load_record(record_path, remote, part_size, part_path.stat().st_size)
        if loaded is None:
            # a record written with another part size is still usable if we adopt its geometry
            with contextlib.suppress(OSError, ValueError):
                old = json.loads(record_path.read_text(encoding="utf-8"))
                if isinstance(old.get("part_size"), int) and old["part_size"] > 0:
                    loaded = _load_record(record_path, remote, old["part_size"], part_path.stat().st_size)
                    if loaded is not None:
                        part_size = old["part_size"]
    parts = max(1, -(-remote.size // part_size))
    if loaded is None:
        loaded = [0] * parts, [0] * parts
        with contextlib.suppress(FileNotFoundError):
            part_path.unlink()
        with contextlib.suppress(FileNotFoundError):
            record_path.unlink()
    done, durable = loaded
    resumed_from = sum(done)
    _check_free_space(dest.parent, remote.size - resumed_from, reserve_free_bytes, label)
    fd = os.open(part_path, os.O_RDWR | os.O_CREAT, 0o644)
    transferred = 0
    try:
        if os.fstat(fd).st_size != remote.size:
            os.ftruncate(fd, remote.size)
        while True:
            transfer = _Transfer(
                remote, fd, part_size, list(done), label=label, context=context, timeout=timeout,
                max_retries=max_retries, progress=progress, record_path=record_path, backoff_s=backoff_s,
                durable=durable, cancel=cancel,
            )
            transfer.emit("downloading" if sum(done) == 0 else "resuming")
            try:
                transfer.run(connections if remote.accept_ranges else 1)
            finally:
                transferred += transfer.transferred
            transfer.emit("verifying")
            digest = transfer.sha256.hexdigest()
            problem = None
            if remote.sha256 and digest != remote.sha256:
                problem = f"sha256 {digest} does not match the expected {remote.sha256}"
            elif transfer.git_sha1 is not None and transfer.git_sha1.hexdigest() != remote.git_sha1:
                problem = f"git blob sha1 {transfer.git_sha1.hexdigest()} does not match the Hub's {remote.git_sha1}"
            if problem and durable != done:
                # The record claimed bytes never forced to disk (written, then a power cut?):
                # fetch again from the last point known to be on disk, once.
                transfer.emit("retrying", error=f"{problem}; fetching again from the last synced point")
                done = list(durable)
                continue
            break
        if problem:
            os.close(fd)
            fd = -1
            with contextlib.suppress(FileNotFoundError):
                part_path.unlink()
            with contextlib.suppress(FileNotFoundError):
                record_path.unlink()
            raise IntegrityError(f"{label} from {url}{context}: {problem}; the data was discarded")
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(part_path, dest)
        with contextlib.suppress(FileNotFoundError):
            record_path.unlink()
        fsync_dir(dest.parent)
    finally:
        if fd >= 0:
            os.close(fd)
    transfer.emit("done")
    return DownloadResult(
        path=dest,
        size=remote.size,
        sha256=digest,
        bytes_transferred=transferred,
        resumed_from=resumed_from,
        remote=remote,
    )
