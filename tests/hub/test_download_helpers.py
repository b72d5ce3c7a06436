"""A small range-capable HTTP file server with fault injection, for the transfer engine's tests.

It stands for "any http(s) server" (non-Hub URLs) and lets a test make the network fail
in the ways the engine must survive: 429/503 with Retry-After, connections dropped in the
middle of a body, bytes altered in flight, slow bodies. It is a real server on loopback;
the engine under test talks to it with real sockets.
"""

from __future__ import annotations

import hashlib
import http.client
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class Faults:
    fail_statuses: list[int] = field(default_factory=list)  # answered to the next GETs, in order
    retry_after: str | None = None
    drop_after: list[int] = field(default_factory=list)  # next GET bodies cut after N bytes
    alter: bool = False  # flip a byte in every body
    delay_per_mb: float = 0.0  # seconds of sleep per MiB sent
    stall_after: list[int] = field(default_factory=list)  # next GET bodies go silent after N bytes
    trickle_after: list[int] = field(default_factory=list)  # next GET bodies send 1 byte / 0.3 s after N bytes


class RangeServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.etags: dict[str, str] = {}
        self.faults = Faults()
        self.redirects: dict[str, str] = {}  # GET path -> Location (HEAD is answered normally)
        self.lock = threading.Lock()
        self.bytes_sent = 0
        self.requests: list[tuple[str, str, dict[str, str], float]] = []
        self.closing = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _file(self) -> bytes | None:
                return server.files.get(self.path.split("?")[0])

            def do_HEAD(self) -> None:
                server.requests.append(("HEAD", self.path, dict(self.headers), time.monotonic()))
                data = self._file()
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", f'"{server.etags[self.path]}"')
                self.end_headers()

            def do_GET(self) -> None:
                server.requests.append(("GET", self.path, dict(self.headers), time.monotonic()))
                with server.lock:
                    status = server.faults.fail_statuses.pop(0) if server.faults.fail_statuses else None
                    drop = server.faults.drop_after.pop(0) if server.faults.drop_after else None
                    stall = server.faults.stall_after.pop(0) if server.faults.stall_after else None
                    trickle = server.faults.trickle_after.pop(0) if server.faults.trickle_after else None
                target = server.redirects.get(self.path)
                if target is not None:
                    self.send_response(302)
                    self.send_header("Location", target)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if status is not None:
                    self.send_response(status)
                    if server.faults.retry_after is not None:
                        self.send_header("Retry-After", server.faults.retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = self._file()
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start, end = 0, len(data) - 1
                ranged = "Range" in self.headers
                if ranged:
                    spec = self.headers["Range"].split("=", 1)[1]
                    a, b = spec.split("-")
                    start, end = int(a), (int(b) if b else len(data) - 1)
                    if_range = self.headers.get("If-Range")
                    if if_range and if_range.strip('"') != server.etags[self.path]:
                        ranged, start, end = False, 0, len(data) - 1
                body = data[start : end + 1]
                if server.faults.alter and body:
                    body = bytes([body[0] ^ 0xFF]) + body[1:]
                self.send_response(206 if ranged else 200)
                if ranged:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", f'"{server.etags[self.path]}"')
                self.end_headers()
                limit = len(body) if drop is None else min(drop, len(body))
                slow_from = stall if stall is not None else trickle
                if slow_from is not None:
                    limit = min(limit, slow_from)
                step = 256 * 1024
                sent = 0
                while sent < limit:
                    piece = body[sent : min(limit, sent + step)]
                    try:
                        self.wfile.write(piece)
                    except OSError:
                        return
                    sent += len(piece)
                    with server.lock:
                        server.bytes_sent += len(piece)
                    if server.faults.delay_per_mb:
                        time.sleep(server.faults.delay_per_mb * len(piece) / (1 << 20))
                if slow_from is not None:
                    self.wfile.flush()
                    deadline = time.monotonic() + 60
                    while sent < len(body) and time.monotonic() < deadline and not server.closing.is_set():
                        if trickle is not None:
                            try:
                                self.wfile.write(body[sent : sent + 1])
                                self.wfile.flush()
                            except OSError:
                                return
                            sent += 1
                        server.closing.wait(0.3)
                    self.close_connection = True
                    return
                if drop is not None:
                    self.close_connection = True
                    self.wfile.flush()
                    self.connection.shutdown(2)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add(self, path: str, data: bytes) -> str:
        self.files[path] = data
        self.etags[path] = hashlib.md5(data).hexdigest()
        return self.url + path

    def gets(self) -> list[tuple[str, str, dict[str, str], float]]:
        return [r for r in self.requests if r[0] == "GET"]

    def close(self) -> None:
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def range_server():
    server = RangeServer()
    yield server
    server.close()


class FaultProxy:
    """A forwarding proxy in front of a real server (``tunehub hub serve``) that injects faults.

    GETs can be answered with 429/503 + Retry-After, bodies can be slowed to a byte rate
    (so that a test can kill a client half-way), and every forwarded body byte is counted.
    ``flip_once``: file names whose next body gets one byte flipped (in its middle);
    ``transfers``: (path, bytes, monotonic end time) of each forwarded resolve body.
    """

    def __init__(self, upstream: str) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname, parts.port
        self.faults = Faults()
        self.rate_bytes_per_s: float = 0.0
        self.lock = threading.Lock()
        self.bytes_sent = 0
        self.active = 0  # requests being forwarded right now
        self.requests: list[tuple[str, str, dict[str, str], float]] = []
        self.flip_once: set[str] = set()
        self.transfers: list[tuple[str, int, float]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self, method: str) -> None:
                proxy.requests.append((method, self.path, dict(self.headers), time.monotonic()))
                if method == "GET":
                    with proxy.lock:
                        status = proxy.faults.fail_statuses.pop(0) if proxy.faults.fail_statuses else None
                    if status is not None:
                        self.send_response(status)
                        if proxy.faults.retry_after is not None:
                            self.send_header("Retry-After", proxy.faults.retry_after)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
                try:
                    conn.request(method, self.path, body=body, headers=headers)
                    answer = conn.getresponse()
                    self.send_response(answer.status)
                    for key, value in answer.getheaders():
                        if key.lower() not in ("connection", "transfer-encoding", "keep-alive", "date", "server"):
                            self.send_header(key, value)
                    data_length = answer.getheader("Content-Length")
                    if data_length is None:
                        data = answer.read()
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                        return
                    self.end_headers()
                    if method == "HEAD":
                        return
                    started = time.monotonic()
                    sent = 0
                    name = self.path.split("?", 1)[0].rsplit("/", 1)[-1]
                    with proxy.lock:
                        flip_at = int(data_length) // 2 if name in proxy.flip_once else -1
                        proxy.flip_once.discard(name)
                    while True:
                        chunk = answer.read(256 * 1024)
                        if not chunk:
                            break
                        if sent <= flip_at < sent + len(chunk):
                            index = flip_at - sent
                            chunk = chunk[:index] + bytes([chunk[index] ^ 0x01]) + chunk[index + 1 :]
                        try:
                            self.wfile.write(chunk)
                        except OSError:
                            return
                        sent += len(chunk)
                        with proxy.lock:
                            proxy.bytes_sent += len(chunk)
                        if proxy.rate_bytes_per_s:
                            ahead = sent / proxy.rate_bytes_per_s - (time.monotonic() - started)
                            if ahead > 0:
                                time.sleep(ahead)
                    if "/resolve/" in self.path:
                        with proxy.lock:
                            proxy.transfers.append((self.path, sent, time.monotonic()))
                finally:
                    conn.close()

            def _counted(self, method: str) -> None:
                with proxy.lock:
                    proxy.active += 1
                try:
                    self._forward(method)
                finally:
                    with proxy.lock:
                        proxy.active -= 1

            def do_GET(self) -> None:
                self._counted("GET")

            def do_HEAD(self) -> None:
                self._counted("HEAD")

            def do_POST(self) -> None:
                self._counted("POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until no request is being forwarded (a killed client's streams have ended)."""
        deadline = time.monotonic() + timeout
        while self.active and time.monotonic() < deadline:
            time.sleep(0.02)

    def gets(self) -> list[tuple[str, str, dict[str, str], float]]:
        return [r for r in self.requests if r[0] == "GET"]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
