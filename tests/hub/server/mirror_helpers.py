"""An upstream `tunehub hub serve`, a proxy in front of it that can slow or alter file bodies,
and a mirror (`tunehub hub serve --upstream`) behind both, for the mirror tests and benchmark."""

from __future__ import annotations

import hashlib
import http.client
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from tests.fixtures.hub_server import HubServer
from tunehub.hub.server.metrics import parse_metrics

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def metrics(server_url: str) -> dict[str, float]:
    with _DIRECT.open(f"{server_url}/metrics", timeout=30) as answer:
        return parse_metrics(answer.read().decode())


def file_bytes_served(server_url: str) -> int:
    """Body bytes of resolve answers a server has sent: the upstream's ground truth."""
    return int(metrics(server_url).get('tunehub_hub_bytes_served_total{kind="file"}', 0))


class BodyProxy:
    """Forwards every request to ``upstream``; resolve bodies can be throttled or get one byte flipped.

    ``transfers`` records (path, bytes sent, monotonic end time) of each forwarded resolve body.
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.host, self.port_upstream = parts.hostname, parts.port
        self.rate_bytes_per_s = 0.0
        self.flip_once: set[str] = set()  # file names: the next body of each gets one byte flipped
        self.lock = threading.Lock()
        self.transfers: list[tuple[str, int, float]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def forward(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn = http.client.HTTPConnection(proxy.host, proxy.port_upstream, timeout=60)
                try:
                    conn.request(method, self.path, body=body, headers=headers)
                    answer = conn.getresponse()
                    self.send_response(answer.status)
                    for key, value in answer.getheaders():
                        if key.lower() not in ("connection", "transfer-encoding", "keep-alive", "date", "server"):
                            self.send_header(key, value)
                    declared = answer.getheader("Content-Length")
                    if declared is None:
                        data = answer.read()
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                        return
                    self.end_headers()
                    if method == "HEAD":
                        return
                    is_file = "/resolve/" in self.path
                    name = self.path.rsplit("/", 1)[-1]
                    with proxy.lock:
                        flip = is_file and name in proxy.flip_once
                        proxy.flip_once.discard(name)
                    flip_at = int(declared) // 2
                    started = time.monotonic()
                    sent = 0
                    while chunk := answer.read(256 * 1024):
                        if flip and sent <= flip_at < sent + len(chunk):
                            index = flip_at - sent
                            chunk = chunk[:index] + bytes([chunk[index] ^ 0x01]) + chunk[index + 1 :]
                        try:
                            self.wfile.write(chunk)
                        except OSError:
                            return
                        sent += len(chunk)
                        if is_file and proxy.rate_bytes_per_s:
                            ahead = sent / proxy.rate_bytes_per_s - (time.monotonic() - started)
                            if ahead > 0:
                                time.sleep(ahead)
                    if is_file:
                        with proxy.lock:
                            proxy.transfers.append((self.path, sent, time.monotonic()))
                finally:
                    conn.close()

            def do_GET(self) -> None:  # noqa: N802
                self.forward("GET")

            def do_HEAD(self) -> None:  # noqa: N802
                self.forward("HEAD")

            def do_POST(self) -> None:  # noqa: N802
                self.forward("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_mirror(
    root: Path, upstream_url: str, token_file: Path | None, *, ttl: str = "600", extra: list[str] | None = None
) -> HubServer:
    args = ["--upstream", upstream_url, "--upstream-ttl", ttl, "--access-log"]
    if token_file is not None:
        args += ["--upstream-token-file", str(token_file)]
    return HubServer(root, extra_args=args + list(extra or [])).start()


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
