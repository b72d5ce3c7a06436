"""A small forward proxy on loopback: CONNECT tunnels (https) and absolute-form requests (http),
counting what it carries, as a company proxy would see a client's traffic."""

from __future__ import annotations

import http.client
import select
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit


class ForwardProxy:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tunnels: list[str] = []  # host:port of each CONNECT
        self.forwarded: list[tuple[str, str]] = []  # (method, absolute URL) of plain-http requests
        self.tunnelled_bytes = 0  # server -> client bytes inside CONNECT tunnels
        self.forwarded_bytes = 0  # body bytes of plain-http answers
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_CONNECT(self) -> None:
                host, _, port = self.path.rpartition(":")
                with proxy.lock:
                    proxy.tunnels.append(self.path)
                upstream = socket.create_connection((host, int(port)), timeout=30)
                self.send_response(200, "Connection established")
                self.end_headers()
                client = self.connection
                try:
                    while True:
                        ready, _, _ = select.select([client, upstream], [], [], 30)
                        if not ready:
                            return
                        for source in ready:
                            data = source.recv(1 << 16)
                            if not data:
                                return
                            (upstream if source is client else client).sendall(data)
                            if source is upstream:
                                with proxy.lock:
                                    proxy.tunnelled_bytes += len(data)
                except OSError:
                    return
                finally:
                    upstream.close()
                    self.close_connection = True

            def _forward(self) -> None:
                target = urlsplit(self.path)
                with proxy.lock:
                    proxy.forwarded.append((self.command, self.path))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("proxy-connection", "proxy-authorization", "connection")}
                conn = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=60)
                try:
                    path = target.path + (f"?{target.query}" if target.query else "")
                    conn.request(self.command, path or "/", body=body, headers=headers)
                    answer = conn.getresponse()
                    data = answer.read()
                    self.send_response(answer.status)
                    for key, value in answer.getheaders():
                        if key.lower() not in ("connection", "transfer-encoding", "content-length", "keep-alive"):
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data) if self.command != "HEAD" else answer.getheader("Content-Length") or 0))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                        with proxy.lock:
                            proxy.forwarded_bytes += len(data)
                finally:
                    conn.close()

            do_GET = do_HEAD = do_POST = _forward

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (and its key), made with the openssl command."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key
