"""The HTTP side of the Hub server: routing on the raw path, auth, the endpoints of hub-protocol.md.

Built on starlette's Request/Response and served by uvicorn. Routing is done here on
``scope["raw_path"]`` rather than with starlette routes because revisions arrive
percent-encoded (``refs%2Fpr%2F1``) and must stay one segment.

Database work runs in a bounded pool of threads (``storage_threads``), never on the event
loop, and each request's share of it has a deadline (``request_timeout``: a 503 with
Retry-After past it), so one heavy request cannot stall the others. Malformed input is a
400 with a JSON body and one log line; a client hanging up mid-request is one log line.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import functools
import hashlib
import hmac
import html
import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import anyio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from tunehub.errors import ServerError
from tunehub.hub.server import problems
from tunehub.hub.server.connections import FLOW_STATE_KEY, SENDFILE_STATE_KEY, FileRange
from tunehub.hub.server.problems import ApiProblem
from tunehub.hub.server.storage import (
    AddFile,
    BlobWriter,
    DeleteFile,
    FileEntry,
    HubStore,
    Principal,
    Repo,
)
from tunehub.hub.server.validation import (
    API_SEGMENT,
    RESOLVE_PREFIX,
    InvalidInput,
    check_branch_name,
    check_path,
    check_repo_id,
    check_revision,
    check_sha256,
    check_size,
    git_blob_sha1,
    lfs_pointer,
    wants_lfs,
)

log = logging.getLogger("tunehub.hub.server")
access_log = logging.getLogger("tunehub.hub.server.access")

SEGMENT_TYPE = {segment: repo_type for repo_type, segment in API_SEGMENT.items()}
UPLOAD_URL_LIFETIME_S = 3600
# Reads big enough to amortise Python's per-chunk cost on loopback, small enough that a
# connection holds little: one chunk in the socket's buffer, and no read ahead while the
# client is not reading.
DOWNLOAD_CHUNK = 1024 * 1024
# A file range the kernel sends (sendfile) holds no memory here: bigger pieces, fewer Python steps.
SENDFILE_CHUNK = 8 * 1024 * 1024
# Upload bytes are hashed and written in a worker thread once this much has arrived.
UPLOAD_FLUSH = 4 * 1024 * 1024
# The Hub answers more than 1,000 paths in one paths-info call with 413 "too many parameters";
# huggingface_hub sends at most that many (and 256 files per preupload call).
MAX_PATHS_PER_REQUEST = 1000
# Host header values used in links: a host name, IPv4 or [IPv6], and an optional port.
_HOST_RE = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?$"
)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]+")
LOGIN_WINDOW_S = 60.0
T = TypeVar("T")


def normalise_public_url(url: str) -> str:
    """``--public-url``: an absolute http(s) URL without query; returned without its trailing '/'."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ServerError(f"--public-url {url!r}: an http:// or https:// URL like https://hub.example.lan expected.")
    return url.strip().rstrip("/")


@dataclass
class ServerSettings:
    """Limits and knobs of one server instance."""

    page_size: int = 1000  # tree entries and model listings per page
    commits_page_size: int = 50
    max_json_body: int = 10 * 1024 * 1024
    max_commit_body: int = 1024 * 1024 * 1024
    # Regular (inline, base64) files are at most 5 MiB (preupload sends bigger ones to LFS).
    max_commit_line: int = 16 * 1024 * 1024
    access_log: bool = False  # one line per request on stderr: client, user, method, path, status, bytes, time
    public_url: str | None = None  # links in answers start with this instead of the request's Host
    request_timeout: float = 30.0  # deadline of one request's storage work: 503 + Retry-After past it
    login_failures: int = 20  # failed token checks per client address and minute, then 429
    retry_after: int = 5
    storage_threads: int = 8
    max_paths_per_request: int = MAX_PATHS_PER_REQUEST


@dataclass
class Ctx:
    """One request being answered."""

    request: Request
    principal: Principal | None
    segments: list[str]  # raw path split on '/', still percent-encoded
    link_base: str = ""  # scheme://host[:port] that links in answers start with (see HubApp.link_base)

    @property
    def base_url(self) -> str:
        return self.link_base or str(self.request.base_url).rstrip("/")


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def error_response(problem: ApiProblem, *, head: bool = False) -> Response:
    # Header values must be one latin-1 line without control characters; the JSON body keeps the full message.
    header_message = _CONTROL_RE.sub(" ", problem.message).encode("latin-1", "replace").decode("latin-1")
    headers = {"X-Error-Code": problem.code, "X-Error-Message": header_message[:1000], **problem.headers}
    if head:
        return Response(status_code=problem.status, headers=headers)
    return JSONResponse({"error": problem.message}, status_code=problem.status, headers=headers)


class BlobResponse:
    """Sends a blob (or one byte range of it) in large chunks read in a worker thread."""

    def __init__(self, path: str, start: int, end: int, status: int, headers: dict[str, str], head: bool) -> None:
        self.path = path
        self.start = start
        self.end = end  # exclusive
        self.status = status
        self.headers = headers
        self.head = head

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status, "headers": raw_headers})
        if self.head or self.start >= self.end:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        disconnected = asyncio.Event()

        async def watch_disconnect() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    disconnected.set()
                    return

        watcher = asyncio.ensure_future(watch_disconnect())
        # uvicorn's flow control of this connection (LimitedH11Protocol puts it in the state).
        state = scope.get("state", {})
        flow = state.get(FLOW_STATE_KEY)
        fd = await anyio.to_thread.run_sync(os.open, self.path, os.O_RDONLY)
        if state.get(SENDFILE_STATE_KEY):
            # The connection sends file ranges from the page cache (sendfile): no bytes pass through here.
            try:
                offset = self.start
                while offset < self.end and not disconnected.is_set():
                    count = min(SENDFILE_CHUNK, self.end - offset)
                    offset += count
                    body = FileRange(fd, offset - count, count)
                    await send({"type": "http.response.body", "body": body, "more_body": offset < self.end})
            finally:
                watcher.cancel()
                os.close(fd)
            return
        pending: asyncio.Future[bytes] | None = None
        try:
            offset = self.start
            pending = asyncio.ensure_future(
                anyio.to_thread.run_sync(os.pread, fd, min(DOWNLOAD_CHUNK, self.end - offset), offset)
            )
            while offset < self.end and not disconnected.is_set():
                chunk = await pending
                pending = None
                if not chunk:
                    raise OSError(f"blob {self.path} is shorter than expected")
                offset += len(chunk)
                more = offset < self.end
                await send({"type": "http.response.body", "body": chunk, "more_body": more})
                del chunk  # the transport holds its own copy of what the socket has not taken
                if more:
                    if flow is not None and flow.write_paused:
                        # Backpressure: the socket is full; read on only once the client takes bytes
                        # (the protocol's send timeout drops a client that never does).
                        await flow.drain()
                    # Read the next chunk while the socket drains this one.
                    pending = asyncio.ensure_future(
                        anyio.to_thread.run_sync(os.pread, fd, min(DOWNLOAD_CHUNK, self.end - offset), offset)
                    )
        finally:
            watcher.cancel()
            if pending is not None:
                # The read in flight must finish before its file descriptor is closed.
                try:
                    await asyncio.shield(pending)
                except BaseException:  # noqa: BLE001 - its bytes are not needed any more
                    pass
            os.close(fd)


def parse_json(data: bytes, what: str) -> Any:
    """JSON from a client: anything malformed (including nesting too deep to parse) is a 400."""
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise problems.bad_request(f"{what} is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise problems.bad_request(f"{what} is nested too deeply.") from exc


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One ``bytes=a-b`` range -> (start, end exclusive); None to send the whole file; ValueError if unsatisfiable."""
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not match:
        return None  # multiple or malformed ranges: a server may ignore Range
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":
        length = int(last)
        if length == 0:
            raise ValueError("empty suffix range")
        return max(0, size - length), size
    start = int(first)
    if last != "" and int(last) < start:
        return None  # "bytes=5-2" is not a valid range: RFC 9110 says ignore the header
    end = size - 1 if last == "" else min(int(last), size - 1)
    if start >= size:
        raise ValueError("range outside the file")
    return start, end + 1


class HubApp:
    """The ASGI application."""

    def __init__(self, store: HubStore, settings: ServerSettings | None = None, mirror: Any = None) -> None:
        self.store = store
        self.settings = settings or ServerSettings()
        self.mirror = mirror  # a mirror.Mirror with `serve --upstream`: repos not held here come from there
        self._signing_key = store.signing_key()
        self._storage_limiter: anyio.CapacityLimiter | None = None  # made on the event loop, at first use
        # Failed token checks by client address: times within the last LOGIN_WINDOW_S.
        self._login_failures: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()

    # --- ASGI entry and routing -------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        head = request.method == "HEAD"
        if self.settings.access_log:
            send = self._logging_send(request, send)
        try:
            response = await self.dispatch(request)
        except ApiProblem as problem:
            response = self.problem_response(request, problem, head)
        except InvalidInput as exc:
            response = self.problem_response(request, problems.bad_request(str(exc)), head)
        except ClientDisconnect:
            # Whatever was half received has been discarded by the handler (temp files aborted).
            log.warning("%s disconnected during %s %s: the partial request was discarded", self.peer(request), request.method, self.shown_path(request))
            return
        except TimeoutError:
            problem = self.busy_problem(f"This request needed more than {self.settings.request_timeout:g} s of storage work")
            response = self.problem_response(request, problem, head)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                problem = self.busy_problem("The database is busy with another writer (an import?)")
                response = self.problem_response(request, problem, head)
            else:
                response = self.internal_error(request, head)
        except Exception:  # noqa: BLE001 - answer 500 and keep serving
            response = self.internal_error(request, head)
        await response(scope, receive, send)

    def internal_error(self, request: Request, head: bool) -> Response:
        log.exception("internal error on %s %s", request.method, self.shown_path(request))
        return error_response(ApiProblem(500, "InternalError", "Internal server error."), head=head)

    def busy_problem(self, what: str) -> ApiProblem:
        retry = self.settings.retry_after
        return ApiProblem(503, "ServiceUnavailable", f"{what}: retry in {retry} s.", headers={"Retry-After": str(retry)})

    @staticmethod
    def peer(request: Request) -> str:
        return request.client.host if request.client else "-"

    @staticmethod
    def shown_path(request: Request) -> str:
        """The path for a log line: never the query (upload signatures), control characters escaped."""
        raw = (request.scope.get("raw_path") or b"").decode("latin-1") or request.scope.get("path", "")
        return _CONTROL_RE.sub(lambda m: m.group(0).encode("unicode_escape").decode(), raw.split("?", 1)[0])[:300]

    def problem_response(self, request: Request, problem: ApiProblem, head: bool) -> Response:
        if problem.status == 400:
            # Malformed input: one line, so that a misbehaving client can be found.
            message = _CONTROL_RE.sub(" ", problem.message)[:300]
            log.warning("400 %s %s from %s: %s", request.method, self.shown_path(request), self.peer(request), message)
        return error_response(problem, head=head)

    # --- storage work off the event loop ----------------------------------------------------

    async def blocking(self, function: Callable[..., T], *args: Any, write: bool = False) -> T:
        """Run ``function(*args)`` in the storage thread pool, within the request deadline.

        Reads past the deadline are abandoned (their thread finishes alone; the client gets a
        503). Writes are not: their deadline is the database's busy timeout, so a write either
        happens before its answer or not at all.
        """
        if self._storage_limiter is None:
            self._storage_limiter = anyio.CapacityLimiter(self.settings.storage_threads)
        call = functools.partial(function, *args)
        if write:
            return await anyio.to_thread.run_sync(call, limiter=self._storage_limiter)
        with anyio.fail_after(self.settings.request_timeout):
            return await anyio.to_thread.run_sync(call, limiter=self._storage_limiter, abandon_on_cancel=True)

    def _logging_send(self, request: Request, send: Send) -> Send:
        """Wrap ``send`` to log one line per answer: never the query (upload signatures) nor headers (tokens)."""
        started = time.monotonic()
        answer: dict[str, Any] = {"status": 0, "bytes": 0}

        async def logging_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                for key, value in message.get("headers", []):
                    if key == b"x-mirror-cache":  # hit / miss of a mirrored file
                        answer["mark"] = " " + value.decode("latin-1")
            elif message["type"] == "http.response.body":
                answer["bytes"] += len(message.get("body", b""))
                if not message.get("more_body", False):
                    user = getattr(request.state, "user", None) or "-"
                    client = request.client.host if request.client else "-"
                    access_log.info(
                        "%s %s %s %s %d %d %.3fs%s",
                        client,
                        user,
                        request.method,
                        request.scope.get("path", "")[:300],
                        answer["status"],
                        answer["bytes"],
                        time.monotonic() - started,
                        answer.get("mark", ""),
                    )
            await send(message)

        return logging_send

    async def authenticate(self, request: Request) -> Principal | None:
        header = request.headers.get("authorization")
        if not header:
            return None
        client = self.peer(request)
        self.check_login_rate(client)
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            self.record_login_failure(client)
            raise problems.invalid_credentials()
        principal = await self.blocking(self.store.authenticate, token.strip())
        if principal is None:
            if self.mirror is not None and self.mirror.settings.public_read and request.method in ("GET", "HEAD"):
                # An open mirror reads a token it does not know (a box's huggingface.co login) as none.
                return None
            self.record_login_failure(client)
            raise problems.invalid_credentials()
        request.state.user = principal.user
        return principal

    def _recent_failures(self, client: str) -> collections.deque[float] | None:
        failures = self._login_failures.get(client)
        if failures is not None:
            cutoff = time.monotonic() - LOGIN_WINDOW_S
            while failures and failures[0] < cutoff:
                failures.popleft()
        return failures

    def check_login_rate(self, client: str) -> None:
        """429 for an address with too many failed token checks in the last minute (token guessing)."""
        failures = self._recent_failures(client)
        if failures is not None and len(failures) >= self.settings.login_failures:
            wait = max(1, int(failures[0] + LOGIN_WINDOW_S - time.monotonic()) + 1)
            raise ApiProblem(
                429,
                "TooManyRequests",
                f"Too many failed logins from {client}: retry in {wait} s.",
                headers={"Retry-After": str(wait)},
            )

    def record_login_failure(self, client: str) -> None:
        failures = self._recent_failures(client)
        if failures is None:
            failures = self._login_failures[client] = collections.deque(maxlen=self.settings.login_failures)
            while len(self._login_failures) > 10_000:  # bounded memory under a spread-out attack
                self._login_failures.popitem(last=False)
        failures.append(time.monotonic())
        self._login_failures.move_to_end(client)

    def link_base(self, request: Request) -> str:
        """scheme://host[:port] for links in answers: --public-url, else a well-formed Host, else our address."""
        if self.settings.public_url:
            return self.settings.public_url
        scheme = request.url.scheme if request.url.scheme in ("http", "https") else "http"
        host = request.headers.get("host", "")
        match = _HOST_RE.match(host) if host else None
        if match and int(match.group("port") or 0) <= 65535:
            return f"{scheme}://{host}"
        server = request.scope.get("server")
        if server:
            name, port = server[0], server[1]
            name = f"[{name}]" if ":" in name else name
            return f"{scheme}://{name}" + (f":{port}" if port else "")
        return f"{scheme}://127.0.0.1"

    async def dispatch(self, request: Request) -> Any:
        raw_path = request.scope.get("raw_path") or request.scope["path"].encode()
        raw = raw_path.decode("latin-1")
        if "?" in raw:
            raw = raw.split("?", 1)[0]
        segments = raw.strip("/").split("/") if raw.strip("/") else []
        method = request.method
        if segments[:1] == ["api"] and segments[1:2] == ["lfs-upload"] and method == "PUT":
            # Signed URL: the client sends no Authorization header here.
            return await self.lfs_upload(Ctx(request, None, segments, self.link_base(request)))
        if segments == ["api", "health"] and method in ("GET", "HEAD"):
            return JSONResponse({"status": "ok"})  # answered on the loop: a liveness check waits for nothing
        ctx = Ctx(request, await self.authenticate(request), segments, self.link_base(request))
        mirror_notes: dict[str, str] = {}
        if self.mirror is not None:
            from tunehub.hub.server.mirror import prepare_request

            mirror_notes = await prepare_request(self.mirror, ctx.principal, method, segments)
        if segments[:1] == ["api"]:
            response = await self.dispatch_api(ctx, method, segments[1:])
        else:
            response = await self.dispatch_repo_urls(ctx, method, segments)
        if mirror_notes:
            response.headers.update(mirror_notes)
        return response

    async def dispatch_api(self, ctx: Ctx, method: str, seg: list[str]) -> Any:
        if seg == ["whoami-v2"] and method == "GET":
            return await self.blocking(self.whoami, ctx)
        if seg == ["validate-yaml"] and method == "POST":
            await self.read_json(ctx)
            return JSONResponse({"errors": [], "warnings": []})
        if seg == ["repos", "create"] and method == "POST":
            return await self.create_repo(ctx)
        if seg == ["repos", "delete"] and method == "DELETE":
            return await self.delete_repo(ctx)
        if seg[:1] == ["lfs-verify"] and len(seg) == 4 and method == "POST":
            return await self.lfs_verify(ctx, SEGMENT_TYPE.get(seg[1], ""), f"{unquote(seg[2])}/{unquote(seg[3])}")
        if len(seg) == 1 and seg[0] in SEGMENT_TYPE and method == "GET":
            return await self.blocking(self.list_repos, ctx, SEGMENT_TYPE[seg[0]])
        if len(seg) >= 3 and seg[0] in SEGMENT_TYPE:
            repo_type = SEGMENT_TYPE[seg[0]]
            repo_id = f"{unquote(seg[1])}/{unquote(seg[2])}"
            rest = seg[3:]
            action = rest[0] if rest else ""
            if not rest and method == "GET":
                return await self.blocking(self.repo_info, ctx, repo_type, repo_id, "main")
            if action == "revision" and len(rest) == 2 and method == "GET":
                return await self.blocking(self.repo_info, ctx, repo_type, repo_id, unquote(rest[1]))
            if action == "tree" and len(rest) >= 2 and method == "GET":
                path = "/".join(unquote(s) for s in rest[2:])
                return await self.blocking(self.tree, ctx, repo_type, repo_id, unquote(rest[1]), path)
            if action == "paths-info" and len(rest) == 2 and method == "POST":
                return await self.paths_info(ctx, repo_type, repo_id, unquote(rest[1]))
            if action == "commits" and len(rest) == 2 and method == "GET":
                return await self.blocking(self.commits, ctx, repo_type, repo_id, unquote(rest[1]))
            if action == "refs" and len(rest) == 1 and method == "GET":
                return await self.blocking(self.list_refs, ctx, repo_type, repo_id)
            if action == "branch" and len(rest) == 2 and method in ("POST", "DELETE"):
                return await self.branch(ctx, repo_type, repo_id, unquote(rest[1]), method)
            if action == "tag" and len(rest) == 2 and method in ("POST", "DELETE"):
                return await self.tag(ctx, repo_type, repo_id, unquote(rest[1]), method)
            if action == "settings" and len(rest) == 1 and method == "PUT":
                return await self.settings_update(ctx, repo_type, repo_id)
            if action in ("xet-write-token", "xet-read-token"):
                raise ApiProblem(
                    400,
                    "XetNotSupported",
                    "This server speaks plain LFS, not Xet: set HF_HUB_DISABLE_XET=1 before importing huggingface_hub.",
                )
            if action == "preupload" and len(rest) == 2 and method == "POST":
                return await self.preupload(ctx, repo_type, repo_id, unquote(rest[1]))
            if action == "commit" and len(rest) == 2 and method == "POST":
                return await self.commit(ctx, repo_type, repo_id, unquote(rest[1]))
        raise ApiProblem(404, "NotFound", f"No such API endpoint: {method} /api/{'/'.join(seg)[:200]}")

    async def dispatch_repo_urls(self, ctx: Ctx, method: str, seg: list[str]) -> Any:
        repo_type = "model"
        if seg[:1] in (["datasets"], ["spaces"]):
            repo_type = SEGMENT_TYPE[seg[0]]
            seg = seg[1:]
        if len(seg) >= 4 and seg[2] == "resolve" and method in ("GET", "HEAD"):
            repo_id = f"{unquote(seg[0])}/{unquote(seg[1])}"
            path = "/".join(unquote(s) for s in seg[4:])
            return await self.blocking(self.resolve, ctx, repo_type, repo_id, unquote(seg[3]), path, method == "HEAD")
        if len(seg) == 6 and seg[1].endswith(".git") and seg[2:] == ["info", "lfs", "objects", "batch"]:
            if method == "POST":
                repo_id = f"{unquote(seg[0])}/{unquote(seg[1])[:-4]}"
                return await self.lfs_batch(ctx, repo_type, repo_id)
        raise ApiProblem(404, "NotFound", f"Nothing at {method} /{'/'.join(seg)[:200]}")

    # --- helpers ------------------------------------------------------------------------

    def readable_repo(self, ctx: Ctx, repo_type: str, repo_id: str) -> Repo:
        check_repo_id(repo_id)
        repo = self.store.get_repo(repo_type, repo_id)
        # With a mirror, public mirrored repos have a read rule of their own (see may_read).
        if repo is None or ((repo.private or self.mirror is not None) and not self.may_read(ctx.principal, repo)):
            raise problems.repo_not_found(repo_id)
        return repo

    def may_read(self, principal: Principal | None, repo: Repo) -> bool:
        if self.mirror is not None and (mirror_rule := self.mirror.read_rule(principal, repo)) is not None:
            return bool(mirror_rule)
        if not repo.private:
            return True
        return principal is not None and self.store.may_act_for(principal.user, repo.namespace)

    def require_write(self, ctx: Ctx, namespace: str) -> Principal:
        principal = ctx.principal
        if principal is None:
            raise problems.unauthorized()
        if principal.role != "write":
            raise problems.forbidden(f"Your token {principal.token_name!r} is read-only: use a write token.")
        if not self.store.may_act_for(principal.user, namespace):
            raise problems.forbidden(f"{principal.user} may not write to the namespace {namespace}.")
        return principal

    def writable_repo(self, ctx: Ctx, repo_type: str, repo_id: str) -> tuple[Repo, Principal]:
        if ctx.principal is None:
            raise problems.unauthorized()
        repo = self.readable_repo(ctx, repo_type, repo_id)
        if self.mirror is not None:
            self.mirror.refuse_writes(repo)
        return repo, self.require_write(ctx, repo.namespace)

    def revision_sha(self, repo: Repo, revision: str) -> str:
        check_revision(revision)
        sha = self.store.resolve_revision(repo, revision)
        if sha is None:
            raise problems.revision_not_found(repo.repo_id, revision)
        return sha

    async def read_body(self, ctx: Ctx, limit: int) -> bytes:
        declared = ctx.request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise ApiProblem(413, "PayloadTooLarge", f"Request body over {limit} bytes.")
        body = bytearray()
        async for chunk in ctx.request.stream():
            body += chunk
            if len(body) > limit:
                raise ApiProblem(413, "PayloadTooLarge", f"Request body over {limit} bytes.")
        return bytes(body)

    async def read_json(self, ctx: Ctx) -> Any:
        body = await self.read_body(ctx, self.settings.max_json_body)
        if not body.strip():
            return {}
        return parse_json(body, "The request body")

    def next_link(self, ctx: Ctx, next_cursor: int) -> dict[str, str]:
        params = [(k, v) for k, v in ctx.request.query_params.multi_items() if k != "cursor"]
        params.append(("cursor", str(next_cursor)))
        # The raw path keeps an encoded revision (feature%2Fx) as one segment.
        raw_path = (ctx.request.scope.get("raw_path") or b"").decode("latin-1") or ctx.request.url.path
        url = f"{ctx.base_url}{raw_path}?{urlencode(params)}"
        return {"Link": f'<{url}>; rel="next"'}

    @staticmethod
    def cursor(ctx: Ctx) -> int:
        value = ctx.request.query_params.get("cursor", "0")
        if not value.isdigit():
            raise problems.bad_request(f"Invalid cursor {value[:40]!r}.")
        return int(value)

    def repo_url(self, ctx: Ctx, repo: Repo) -> str:
        return f"{ctx.base_url}/{RESOLVE_PREFIX[repo.type]}{repo.repo_id}"

    # --- read endpoints --------------------------------------------------------------------

    def whoami(self, ctx: Ctx) -> Response:
        principal = ctx.principal
        if principal is None:
            raise problems.unauthorized("Send a token (Authorization: Bearer ...) to know who you are.")
        orgs = [
            {"type": "org", "name": org, "fullname": org, "roleInOrg": "write"} for org in self.store.orgs_of(principal.user)
        ]
        return JSONResponse(
            {
                "type": "user",
                "id": principal.user,
                "name": principal.user,
                "fullname": principal.user,
                "email": None,
                "emailVerified": False,
                "isPro": False,
                "canPay": False,
                "avatarUrl": "",
                "orgs": orgs,
                "auth": {
                    "type": "access_token",
                    "accessToken": {"displayName": principal.token_name, "role": principal.role},
                },
            }
        )

    def sibling(self, entry: FileEntry, with_blobs: bool) -> dict[str, Any]:
        sibling: dict[str, Any] = {"rfilename": entry.path}
        if with_blobs:
            sibling["size"] = entry.size
            sibling["blobId"] = entry.git_oid
            if entry.lfs:
                sibling["lfs"] = {"sha256": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
        return sibling

    def repo_summary(self, repo: Repo, sha: str, siblings: list[dict[str, Any]] | None) -> dict[str, Any]:
        info: dict[str, Any] = {
            "_id": f"{repo.id:024x}",
            "id": repo.repo_id,
            "author": repo.namespace,
            "sha": sha,
            "lastModified": iso(self.store.last_modified(repo, sha)),
            "createdAt": iso(repo.created),
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
        }
        if repo.type == "model":
            info["modelId"] = repo.repo_id
        if siblings is not None:
            info["siblings"] = siblings
        return info

    def repo_info(self, ctx: Ctx, repo_type: str, repo_id: str, revision: str) -> Response:
        repo = self.readable_repo(ctx, repo_type, repo_id)
        sha = self.revision_sha(repo, revision)
        with_blobs = ctx.request.query_params.get("blobs", "").lower() in ("1", "true")
        files = self.store.files(sha)
        info = self.repo_summary(repo, sha, [self.sibling(f, with_blobs) for f in files])
        if with_blobs:
            info["usedStorage"] = sum(f.size for f in files)
        return JSONResponse(info)

    def list_repos(self, ctx: Ctx, repo_type: str) -> Response:
        params = ctx.request.query_params
        author = params.get("author", "").lower()
        search = params.get("search", "").lower()
        full = params.get("full", "").lower() in ("1", "true")
        expand = params.getlist("expand") + params.getlist("expand[]")
        limit_text = params.get("limit", "")
        page = self.settings.page_size
        if limit_text.isdigit() and int(limit_text) > 0:
            page = min(page, int(limit_text))
        repos = [
            repo
            for repo in self.store.list_repos(repo_type)
            if self.may_read(ctx.principal, repo)
            and (not author or repo.namespace.lower() == author)
            and (not search or search in repo.repo_id.lower())
        ]
        start = self.cursor(ctx)
        chosen = repos[start : start + page]
        items = []
        for repo in chosen:
            sha = self.store.resolve_revision(repo, "main") or ""
            siblings = None
            if full or "siblings" in expand:
                siblings = [self.sibling(f, False) for f in self.store.files(sha)] if sha else []
            items.append(self.repo_summary(repo, sha, siblings))
        headers = self.next_link(ctx, start + page) if start + page < len(repos) else {}
        return JSONResponse(items, headers=headers)

    def tree_entry(self, entry: FileEntry) -> dict[str, Any]:
        item: dict[str, Any] = {"type": "file", "oid": entry.git_oid, "size": entry.size, "path": entry.path}
        if entry.lfs:
            item["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
        return item

    @staticmethod
    def folder_oid(files: list[FileEntry]) -> str:
        digest = hashlib.sha1()
        for entry in files:
            digest.update(f"{entry.path}\0{entry.git_oid}\n".encode())
        return digest.hexdigest()

    def tree_items(self, sha: str, prefix: str, recursive: bool) -> list[dict[str, Any]]:
        files = self.store.files(sha, prefix)
        start = len(prefix) + 1 if prefix else 0
        folders: dict[str, list[FileEntry]] = {}
        direct: list[FileEntry] = []
        for entry in files:
            relative = entry.path[start:]
            parts = relative.split("/")
            if len(parts) == 1:
                direct.append(entry)
            depth = len(parts) - 1 if recursive else min(1, len(parts) - 1)
            for i in range(1, depth + 1):
                folders.setdefault(entry.path[:start] + "/".join(parts[:i]), []).append(entry)
        items: list[tuple[str, dict[str, Any]]] = [
            (path, {"type": "directory", "oid": self.folder_oid(members), "path": path})
            for path, members in folders.items()
        ]
        listed = files if recursive else direct
        items.extend((entry.path, self.tree_entry(entry)) for entry in listed)
        items.sort(key=lambda pair: pair[0])
        return [item for _, item in items]

    def add_last_commits(self, head: str, items: list[dict[str, Any]]) -> None:
        """expand=true: the last commit that changed each file, and a 'safe' scan status.

        Walks the history once for the whole page, asking each older commit only about the
        paths still unchanged there.
        """
        history = self.store.history(head, 0, 10_000)
        paths = [item["path"] for item in items if item["type"] == "file"]
        current = self.store.files_at(head, paths)
        last = {path: history[0] for path in paths}
        unchanged = {path: current[path] for path in paths if path in current}
        for commit in history[1:]:
            if not unchanged:
                break
            older = self.store.files_at(commit.sha, list(unchanged))
            for path, entry in list(unchanged.items()):
                previous = older.get(path)
                if previous is not None and (previous.sha256, previous.lfs) == (entry.sha256, entry.lfs):
                    last[path] = commit
                else:
                    del unchanged[path]
        for item in items:
            if item["type"] == "file":
                commit = last[item["path"]]
                item["lastCommit"] = {"id": commit.sha, "title": commit.title, "date": iso(commit.date)}
                item["securityFileStatus"] = {"status": "safe", "avScan": {}, "pickleImportScan": {}}

    def tree(self, ctx: Ctx, repo_type: str, repo_id: str, revision: str, path: str) -> Response:
        repo = self.readable_repo(ctx, repo_type, repo_id)
        sha = self.revision_sha(repo, revision)
        path = check_path(path.rstrip("/"), allow_empty=True)
        if path and not self.store.is_folder(sha, path):
            raise problems.entry_not_found(repo_id, revision, path)
        params = ctx.request.query_params
        recursive = params.get("recursive", "").lower() in ("1", "true")
        expand = params.get("expand", "").lower() in ("1", "true")
        items = self.tree_items(sha, path, recursive)
        page = self.settings.page_size if not expand else min(self.settings.page_size, 50)
        start = self.cursor(ctx)
        chosen = items[start : start + page]
        if expand:
            self.add_last_commits(sha, chosen)
        headers = self.next_link(ctx, start + page) if start + page < len(items) else {}
        return JSONResponse(chosen, headers=headers)

    async def paths_info(self, ctx: Ctx, repo_type: str, repo_id: str, revision: str) -> Response:
        repo = await self.blocking(self.readable_repo, ctx, repo_type, repo_id)
        sha = await self.blocking(self.revision_sha, repo, revision)
        body = await self.read_body(ctx, self.settings.max_json_body)
        if "json" in ctx.request.headers.get("content-type", ""):
            data = parse_json(body or b"{}", "The request body")
            if not isinstance(data, dict):
                raise problems.bad_request("Expected {'paths': [...], 'expand'?: bool} or a form with paths=...")
            paths = data.get("paths", [])
            expand = bool(data.get("expand"))
        else:
            form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=self.settings.max_paths_per_request + 2)
            paths = form.get("paths", [])
            expand = form.get("expand", ["false"])[0].lower() in ("1", "true")
        if not isinstance(paths, list) or not all(isinstance(path, str) for path in paths):
            raise problems.bad_request("'paths' must be a list of paths.")
        limit = self.settings.max_paths_per_request
        if len(paths) > limit:
            raise ApiProblem(413, "PayloadTooLarge", f"Too many parameters: at most {limit} paths per paths-info request.")
        # Unique paths, first occurrence kept (the answer lists each path once).
        wanted = list(dict.fromkeys(check_path(path.strip("/")) for path in paths))
        return JSONResponse(await self.blocking(self.paths_info_items, sha, wanted, expand))

    def paths_info_items(self, sha: str, paths: list[str], expand: bool) -> list[dict[str, Any]]:
        files = self.store.files_at(sha, paths)
        items: list[dict[str, Any]] = []
        for path in paths:
            entry = files.get(path)
            if entry is not None:
                items.append(self.tree_entry(entry))
            elif self.store.is_folder(sha, path):
                items.append({"type": "directory", "oid": self.folder_oid(self.store.files(sha, path)), "path": path})
        if expand:
            self.add_last_commits(sha, items)
        return items

    def commits(self, ctx: Ctx, repo_type: str, repo_id: str, revision: str) -> Response:
        repo = self.readable_repo(ctx, repo_type, repo_id)
        sha = self.revision_sha(repo, revision)
        params = ctx.request.query_params
        formatted = "formatted" in params.getlist("expand[]") + params.getlist("expand")
        page = self.settings.commits_page_size
        start = self.cursor(ctx)
        chosen = self.store.history(sha, start, page + 1)
        items = []
        for commit in chosen[:page]:
            item: dict[str, Any] = {
                "id": commit.sha,
                "title": commit.title,
                "message": commit.message,
                "date": iso(commit.date),
                "authors": [{"user": commit.author, "avatar": ""}],
            }
            if formatted:
                item["formatted"] = {"title": html.escape(commit.title), "message": html.escape(commit.message)}
            items.append(item)
        headers = self.next_link(ctx, start + page) if len(chosen) > page else {}
        return JSONResponse(items, headers=headers)

    def list_refs(self, ctx: Ctx, repo_type: str, repo_id: str) -> Response:
        repo = self.readable_repo(ctx, repo_type, repo_id)
        branches = [
            {"name": name, "ref": f"refs/heads/{name}", "targetCommit": sha}
            for name, sha in self.store.refs(repo).items()
        ]
        tags = [
            {"name": name, "ref": f"refs/tags/{name}", "targetCommit": sha} for name, sha in self.store.tags(repo).items()
        ]
        return JSONResponse({"branches": branches, "tags": tags, "converts": [], "pullRequests": []})

    def resolve(self, ctx: Ctx, repo_type: str, repo_id: str, revision: str, path: str, head: bool) -> Any:
        repo = self.readable_repo(ctx, repo_type, repo_id)
        sha = self.revision_sha(repo, revision)
        path = check_path(path)
        entry = self.store.get_file(sha, path)
        if entry is None:
            raise problems.entry_not_found(repo_id, revision, path)
        blob = str(self.store.blob_path(entry.sha256))
        headers = {
            "X-Repo-Commit": sha,
            "ETag": f'"{entry.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1])}",
        }
        if entry.lfs:
            headers["X-Linked-Etag"] = f'"{entry.sha256}"'
            headers["X-Linked-Size"] = str(entry.size)
        start, end, status = 0, entry.size, 200
        range_header = ctx.request.headers.get("range")
        if range_header:
            try:
                chosen = parse_range(range_header, entry.size)
            except ValueError:
                headers["Content-Range"] = f"bytes */{entry.size}"
                problem = ApiProblem(416, "RangeNotSatisfiable", f"Range {range_header[:60]} outside 0-{entry.size}.")
                response = error_response(problem, head=head)
                response.headers.update(headers)
                return response
            if chosen is not None:
                start, end, status = chosen[0], chosen[1], 206
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{entry.size}"
        headers["Content-Length"] = str(end - start)
        if self.mirror is not None and not head and self.mirror.is_mirrored(repo):
            return self.mirror.serve_file(repo, sha, entry, start, end, status, headers)
        return BlobResponse(blob, start, end, status, headers, head)

    # --- repo management ------------------------------------------------------------------

    def repo_id_from_body(self, ctx: Ctx, data: Any) -> tuple[str, str]:
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise problems.bad_request("Expected a JSON object with 'name'.")
        repo_type = data.get("type") or "model"
        if not isinstance(repo_type, str) or repo_type not in API_SEGMENT:
            raise problems.bad_request(f"Invalid repo type {str(repo_type)[:40]!r}.")
        name = data["name"]
        organization = data.get("organization")
        if organization is not None and not isinstance(organization, str):
            raise problems.bad_request("'organization' must be a name.")
        if "/" in name:  # some clients send the full id
            namespace, name = name.split("/", 1)
        elif organization:
            namespace = organization
        elif ctx.principal is not None:
            namespace = ctx.principal.user
        else:
            raise problems.unauthorized()
        repo_id = f"{namespace}/{name}"
        check_repo_id(repo_id)
        return repo_type, repo_id

    async def create_repo(self, ctx: Ctx) -> Response:
        data = await self.read_json(ctx)
        if ctx.principal is None:
            raise problems.unauthorized()
        repo_type, repo_id = self.repo_id_from_body(ctx, data)
        namespace = repo_id.split("/")[0]
        await self.blocking(self.require_write, ctx, namespace)
        private = bool(data.get("private")) or data.get("visibility") == "private"
        repo, created = await self.blocking(
            lambda: self.store.create_repo(repo_type, repo_id, private=private), write=True
        )
        url = self.repo_url(ctx, repo)
        if not created:
            return JSONResponse(
                {"error": f"You already created this {repo_type} repo: {repo.repo_id}", "url": url},
                status_code=409,
                headers={"X-Error-Code": "RepoExists", "X-Error-Message": "You already created this repo"},
            )
        return JSONResponse({"url": url, "name": repo.repo_id, "id": f"{repo.id:024x}"})

    async def delete_repo(self, ctx: Ctx) -> Response:
        data = await self.read_json(ctx)
        if ctx.principal is None:
            raise problems.unauthorized()
        repo_type, repo_id = self.repo_id_from_body(ctx, data)
        repo, _ = await self.blocking(self.writable_repo, ctx, repo_type, repo_id)
        await self.blocking(self.store.delete_repo, repo, write=True)
        return JSONResponse({})

    async def settings_update(self, ctx: Ctx, repo_type: str, repo_id: str) -> Response:
        repo, _ = await self.blocking(self.writable_repo, ctx, repo_type, repo_id)
        data = await self.read_json(ctx)
        if not isinstance(data, dict):
            raise problems.bad_request("Expected a JSON object.")
        private = data.get("private")
        if data.get("visibility") in ("private", "public"):
            private = data["visibility"] == "private"
        if private is not None:
            await self.blocking(self.store.set_private, repo, bool(private), write=True)
        return JSONResponse({})

    async def branch(self, ctx: Ctx, repo_type: str, repo_id: str, branch: str, method: str) -> Response:
        repo, _ = await self.blocking(self.writable_repo, ctx, repo_type, repo_id)
        check_revision(branch)
        if method == "DELETE":
            await self.blocking(self.store.delete_branch, repo, branch, write=True)
            return JSONResponse({})
        check_branch_name(branch)
        data = await self.read_json(ctx)
        start = (data.get("startingPoint") if isinstance(data, dict) else None) or "main"
        sha = await self.blocking(self.revision_sha, repo, str(start))
        await self.blocking(self.store.create_branch, repo, branch, sha, write=True)
        return JSONResponse({})

    async def tag(self, ctx: Ctx, repo_type: str, repo_id: str, name: str, method: str) -> Response:
        """POST .../tag/{revision} {tag, message} creates a tag; DELETE .../tag/{tag} removes it."""
        repo, _ = await self.blocking(self.writable_repo, ctx, repo_type, repo_id)
        check_revision(name)
        if method == "DELETE":
            await self.blocking(self.store.delete_tag, repo, name, write=True)
            return JSONResponse({})
        data = await self.read_json(ctx)
        tag = data.get("tag") if isinstance(data, dict) else None
        if not isinstance(tag, str):
            raise problems.bad_request("Expected {'tag': NAME, 'message'?: TEXT}.")
        check_branch_name(tag)
        sha = await self.blocking(self.revision_sha, repo, name)
        await self.blocking(self.store.create_tag, repo, tag, sha, write=True)
        return JSONResponse({})

    # --- uploads ------------------------------------------------------------------------------

    async def preupload(self, ctx: Ctx, repo_type: str, repo_id: str, revision: str) -> Response:
        repo, _ = await self.blocking(self.writable_repo, ctx, repo_type, repo_id)
        sha = await self.blocking(self.revision_sha, repo, revision)
        data = await self.read_json(ctx)
        files = data.get("files") if isinstance(data, dict) else None
        if not isinstance(files, list):
            raise problems.bad_request("Expected {'files': [{path, sample, size}, ...]}.")
        self.check_count(len(files), "files")
        wanted: list[tuple[str, int, bytes]] = []
        for item in files:
            if not isinstance(item, dict):
                raise problems.bad_request("Each entry of 'files' must be an object.")
            path = check_path(item.get("path", ""))
            size = check_size(item.get("size", 0))
            sample_text = item.get("sample") or ""
            if not isinstance(sample_text, str):
                raise problems.bad_request(f"The sample of {path} must be base64 text.")
            try:
                sample = base64.b64decode(sample_text, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise problems.bad_request(f"Invalid base64 sample for {path}.") from exc
            wanted.append((path, size, sample))
        current = await self.blocking(self.store.files_at, sha, [path for path, _, _ in wanted])
        answer = [
            {
                "path": path,
                "uploadMode": "lfs" if wants_lfs(path, size, sample) else "regular",
                "shouldIgnore": False,
                "oid": current[path].etag if path in current else None,
            }
            for path, size, sample in wanted
        ]
        return JSONResponse({"files": answer, "commitOid": sha})

    def check_count(self, count: int, what: str) -> None:
        limit = self.settings.max_paths_per_request
        if count > limit:
            raise ApiProblem(413, "PayloadTooLarge", f"Too many parameters: at most {limit} {what} per request.")

    def upload_signature(self, repo: Repo, oid: str, size: int, expires: int, token_id: int) -> str:
        """HMAC of what the upload URL allows, and of the token that asked: revoking it voids the URL."""
        message = f"{repo.type}\n{repo.repo_id.lower()}\n{oid}\n{size}\n{expires}\n{token_id}".encode()
        return hmac.new(self._signing_key, message, hashlib.sha256).hexdigest()

    async def lfs_batch(self, ctx: Ctx, repo_type: str, repo_id: str) -> Response:
        repo, principal = await self.blocking(self.writable_repo, ctx, repo_type, repo_id)
        data = await self.read_json(ctx)
        if not isinstance(data, dict) or data.get("operation") != "upload":
            raise problems.bad_request("Only the LFS 'upload' operation is served here; download with resolve URLs.")
        objects = data.get("objects")
        if not isinstance(objects, list):
            raise problems.bad_request("Expected 'objects': [{oid, size}, ...].")
        self.check_count(len(objects), "LFS objects")
        return JSONResponse(
            await self.blocking(self.lfs_batch_answer, ctx, repo, principal, objects),
            media_type="application/vnd.git-lfs+json",
        )

    def lfs_batch_answer(self, ctx: Ctx, repo: Repo, principal: Principal, objects: list[Any]) -> dict[str, Any]:
        expires = int(time.time()) + UPLOAD_URL_LIFETIME_S
        segment = API_SEGMENT[repo.type]
        answer = []
        for obj in objects:
            if not isinstance(obj, dict):
                raise problems.bad_request("Each LFS object must be {oid, size}.")
            oid = check_sha256(obj.get("oid"))
            size = check_size(obj.get("size"))
            item: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if self.store.repo_has_lfs(repo, oid) and os.path.getsize(self.store.blob_path(oid)) == size:
                answer.append(item)  # already stored for this repo: no actions, the client skips it
                continue
            signature = self.upload_signature(repo, oid, size, expires, principal.token_id)
            query = urlencode({"size": size, "exp": expires, "tid": principal.token_id, "sig": signature})
            item["actions"] = {
                "upload": {
                    "href": f"{ctx.base_url}/api/lfs-upload/{segment}/{repo.repo_id}/{oid}?{query}",
                    "expires_in": UPLOAD_URL_LIFETIME_S,
                },
                "verify": {"href": f"{ctx.base_url}/api/lfs-verify/{segment}/{repo.repo_id}"},
            }
            answer.append(item)
        return {"transfer": "basic", "objects": answer, "hash_algo": "sha256"}

    def upload_target(self, repo_type: str, repo_id: str, oid: str, size: int, expires: int, token_id: int, signature: str) -> Repo:
        """The repo a signed upload URL is for, after checking its signature and that its token still may write."""
        repo = self.store.get_repo(repo_type, repo_id)
        expected = self.upload_signature(repo, oid, size, expires, token_id) if repo is not None else ""
        if repo is None or not hmac.compare_digest(signature, expected):
            raise problems.forbidden("Upload URL signature is not valid.")
        if expires < time.time():
            raise problems.forbidden("Upload URL expired: ask the LFS batch endpoint for a new one.")
        holder = self.store.active_token(token_id)
        if holder is None or holder.role != "write" or not self.store.may_act_for(holder.user, repo.namespace):
            raise problems.forbidden("The token this upload URL was made for was revoked (or may no longer write here).")
        return repo

    async def lfs_upload(self, ctx: Ctx) -> Response:
        seg = ctx.segments
        if len(seg) != 6 or seg[2] not in SEGMENT_TYPE:
            raise ApiProblem(404, "NotFound", "Unknown upload URL.")
        repo_type = SEGMENT_TYPE[seg[2]]
        repo_id = f"{unquote(seg[3])}/{unquote(seg[4])}"
        oid = check_sha256(seg[5])
        params = ctx.request.query_params
        try:
            size = int(params.get("size", ""))
            expires = int(params.get("exp", ""))
            token_id = int(params.get("tid", ""))
        except ValueError as exc:
            raise problems.forbidden("Upload URL is incomplete: ask the LFS batch endpoint for a new one.") from exc
        repo = await self.blocking(
            self.upload_target, repo_type, repo_id, oid, size, expires, token_id, params.get("sig", "")
        )
        declared = ctx.request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) != size:
            raise problems.bad_request(f"Content-Length {declared} differs from the declared size {size}.")
        writer = await anyio.to_thread.run_sync(BlobWriter, self.store)
        try:
            pending = bytearray()
            received = 0
            async for chunk in ctx.request.stream():
                received += len(chunk)
                if received > size:
                    raise problems.bad_request(f"More than the declared {size} bytes were sent.")
                pending += chunk
                if len(pending) >= UPLOAD_FLUSH:
                    data, pending = pending, bytearray()
                    await anyio.to_thread.run_sync(writer.write, data)
            if pending:
                await anyio.to_thread.run_sync(writer.write, pending)
            await anyio.to_thread.run_sync(writer.commit, oid, size)
        except BaseException:
            await anyio.to_thread.run_sync(writer.abort)
            raise
        await self.blocking(self.store.grant_lfs, repo, oid, write=True)
        return Response(status_code=200)

    async def lfs_verify(self, ctx: Ctx, repo_type: str, repo_id: str) -> Response:
        if not repo_type:
            raise ApiProblem(404, "NotFound", "Unknown verify URL.")
        repo, _ = await self.blocking(self.writable_repo, ctx, repo_type, repo_id)
        data = await self.read_json(ctx)
        if not isinstance(data, dict):
            raise problems.bad_request("Expected {oid, size}.")
        oid = check_sha256(data.get("oid"))
        size = check_size(data.get("size"))
        if not await self.blocking(self.lfs_stored, repo, oid, size):
            raise ApiProblem(404, "EntryNotFound", f"LFS object {oid} ({size} bytes) was not uploaded to {repo_id}.")
        return JSONResponse({"oid": oid, "size": size})

    def lfs_stored(self, repo: Repo, oid: str, size: int) -> bool:
        return self.store.repo_has_lfs(repo, oid) and os.path.getsize(self.store.blob_path(oid)) == size

    async def iter_lines(self, ctx: Ctx) -> AsyncIterator[bytes]:
        """The ndjson body, one line at a time, with the line and total size limits."""
        limit_line = self.settings.max_commit_line
        limit_total = self.settings.max_commit_body
        declared = ctx.request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit_total:
            raise ApiProblem(413, "PayloadTooLarge", f"Commit body over {limit_total} bytes.")
        buffer = bytearray()
        scanned = 0
        total = 0
        async for chunk in ctx.request.stream():
            total += len(chunk)
            if total > limit_total:
                raise ApiProblem(413, "PayloadTooLarge", f"Commit body over {limit_total} bytes.")
            buffer += chunk
            while True:
                newline = buffer.find(b"\n", scanned)
                if newline < 0:
                    scanned = len(buffer)
                    break
                line = bytes(buffer[:newline])
                del buffer[: newline + 1]
                scanned = 0
                if line.strip():
                    yield line
            if len(buffer) > limit_line:
                raise ApiProblem(413, "PayloadTooLarge", f"One commit line is over {limit_line} bytes.")
        if buffer.strip():
            yield bytes(buffer)

    async def commit(self, ctx: Ctx, repo_type: str, repo_id: str, revision: str) -> Response:
        repo, principal = await self.blocking(self.writable_repo, ctx, repo_type, repo_id)
        if ctx.request.query_params.get("create_pr", "").lower() in ("1", "true"):
            raise problems.bad_request("Pull requests are not supported by this server: commit to a branch.")
        check_revision(revision)
        if revision not in await self.blocking(self.store.refs, repo):
            raise problems.revision_not_found(repo_id, revision)
        header: dict[str, Any] | None = None
        operations: list[object] = []
        writers: list[BlobWriter] = []  # regular files, made durable together before the commit
        try:
            return await self._commit_lines(ctx, repo, principal, revision, header, operations, writers)
        finally:
            for writer in writers:
                await anyio.to_thread.run_sync(writer.abort)

    async def _commit_lines(
        self,
        ctx: Ctx,
        repo: Repo,
        principal: Principal,
        revision: str,
        header: dict[str, Any] | None,
        operations: list[object],
        writers: list[BlobWriter],
    ) -> Response:
        async for line in self.iter_lines(ctx):
            item = parse_json(line, "Commit line")
            if not isinstance(item, dict) or not isinstance(item.get("value"), dict):
                raise problems.bad_request("Each commit line must be {key, value}.")
            key, value = item.get("key"), item["value"]
            if key == "header":
                header = value
            elif key == "file":
                operations.append(await self.regular_file(value, writers))
            elif key == "lfsFile":
                operations.append(await self.lfs_file(repo, principal, value))
            elif key in ("deletedFile", "deletedFolder"):
                operations.append(DeleteFile(check_path(str(value.get("path", "")).rstrip("/")), key == "deletedFolder"))
            else:
                raise problems.bad_request(f"Unknown commit operation {str(key)[:40]!r}.")
        if header is None:
            raise problems.bad_request("The commit has no header line (summary, description).")
        title = str(header.get("summary") or "").strip() or "Update files"
        parent = header.get("parentCommit")
        if parent is not None and not isinstance(parent, str):
            raise problems.bad_request("parentCommit must be a commit sha.")
        if writers:
            await anyio.to_thread.run_sync(self.store.commit_writers, writers)
        sha = await self.blocking(
            lambda: self.store.commit(
                repo,
                revision,
                operations,
                parent_commit=parent,
                title=title[:1000],
                message=str(header.get("description") or ""),
                author=principal.user,
            ),
            write=True,
        )
        commit_url = f"{self.repo_url(ctx, repo)}/commit/{sha}"
        return JSONResponse({"success": True, "commitOid": sha, "commitUrl": commit_url, "hookOutput": ""})

    async def regular_file(self, value: dict[str, Any], writers: list[BlobWriter]) -> AddFile:
        path = check_path(str(value.get("path", "")))
        encoding = value.get("encoding", "base64")
        content = value.get("content", "")
        if not isinstance(content, str):
            raise problems.bad_request(f"Content of {path} must be a string.")
        if encoding == "base64":
            try:
                data = base64.b64decode(content, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise problems.bad_request(f"Invalid base64 content for {path}.") from exc
        elif encoding in ("utf-8", "utf8"):
            data = content.encode("utf-8")
        else:
            raise problems.bad_request(f"Unknown encoding {str(encoding)[:20]!r} for {path}.")

        def write() -> str:
            writer = BlobWriter(self.store)
            writers.append(writer)
            writer.write(data)
            writer.close_unsynced()
            return writer.sha256

        sha256 = await anyio.to_thread.run_sync(write)
        return AddFile(path, sha256, len(data), False, git_blob_sha1(data))

    async def lfs_file(self, repo: Repo, principal: Principal, value: dict[str, Any]) -> AddFile:
        path = check_path(str(value.get("path", "")))
        oid = check_sha256(value.get("oid"))
        if value.get("algo", "sha256") != "sha256":
            raise problems.bad_request(f"Only sha256 LFS oids are supported ({path}).")
        declared = value.get("size")
        if declared is not None:
            check_size(declared)
        return await self.blocking(self.lfs_addition, repo, principal, path, oid, declared, write=True)

    def lfs_addition(self, repo: Repo, principal: Principal, path: str, oid: str, declared: int | None) -> AddFile:
        if not self.store.repo_has_lfs(repo, oid):
            # A copy from another repo (CommitOperationCopy with src_repo_id) is allowed when the
            # committer can read a repo holding the object: they could download and re-upload it.
            # Knowing the hash alone is not enough.
            readable = any(self.may_read(principal, other) for other in self.store.repos_with_blob(oid))
            if not readable or not self.store.has_blob(oid):
                raise problems.bad_request(f"LFS object {oid} for {path} was not uploaded to {repo.repo_id}.")
            self.store.grant_lfs(repo, oid)
        size = os.path.getsize(self.store.blob_path(oid))
        if declared is not None and declared != size:
            raise problems.bad_request(f"Size of {path} ({declared}) differs from the stored object ({size}).")
        return AddFile(path, oid, size, True, git_blob_sha1(lfs_pointer(oid, size)))


def create_app(store: HubStore, settings: ServerSettings | None = None, mirror: Any = None) -> HubApp:
    return HubApp(store, settings, mirror)

