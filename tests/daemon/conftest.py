"""Helpers for the daemon tests: a real daemon subprocess, and a fault-injecting HTTP proxy."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tunehub.daemon.client import DaemonClient


class DaemonProcess:
    """``python -m tunehub --home HOME daemon`` as a subprocess."""

    def __init__(self, home: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        self.home = home
        self.env = dict(env or os.environ)
        self.env.pop("TUNEHUB_HOME", None)
        self.env["PYTHONUNBUFFERED"] = "1"
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None
        self.stderr_path = home / "daemon-stderr.log"
        self.client = DaemonClient(home, timeout=15)

    def start(self, wait: bool = True) -> DaemonProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        stderr = open(self.stderr_path, "ab")
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tunehub", "--home", str(self.home), "daemon", *self.args],
                stdout=subprocess.DEVNULL, stderr=stderr, env=self.env, cwd=self.home,
            )
        finally:
            stderr.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited with {self.process.returncode}:\n{self.stderr_text()}")
            try:
                if self.client.health()["ok"]:
                    return
            except Exception:
                pass
            time.sleep(0.05)
        raise AssertionError(f"daemon not ready after {timeout}s:\n{self.stderr_text()}")

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-6000:]
        except FileNotFoundError:
            return ""

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def wait_for(self, predicate: Any, timeout: float = 30.0, what: str = "condition") -> Any:
        """Poll /status until ``predicate(status)`` is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.client.status()
            value = predicate(status)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; last status: {status}\nstderr:\n{self.stderr_text()}")


def definition_in(status: dict[str, Any], definition_id: str) -> dict[str, Any] | None:
    for entry in status["definitions"]:
        if entry["id"] == definition_id:
            return entry
    return None


@pytest.fixture
def daemon_factory() -> Iterator[Any]:
    started: list[DaemonProcess] = []

    def make(home: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = (), wait: bool = True) -> DaemonProcess:
        proc = DaemonProcess(home, env, args)
        started.append(proc)
        return proc.start(wait=wait)

    yield make
    for proc in started:
        proc.stop()


class FaultProxy:
    """A real HTTP proxy in front of a Hub server that can fail, throttle and count requests.

    ``faults`` is a list of ``(path_substring, status, headers)`` consumed in order by
    the first matching request each; ``throttle`` (bytes/s) slows GET bodies of
    ``/resolve/`` answers. ``requests`` records ``(method, path, range)`` of each request.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        parts = urlsplit(self.upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.faults: list[tuple[str, int, dict[str, str]]] = []
        self.throttle: float | None = None
        # (path_substring, old, new, times): replace bytes in GET bodies, as a faulty link would
        self.corrupt: list[list[Any]] = []
        self.requests: list[tuple[str, str, str | None]] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                with proxy.lock:
                    proxy.requests.append((self.command, self.path, self.headers.get("Range")))
                    fault = next((f for f in proxy.faults if f[0] in self.path), None)
                    if fault is not None:
                        proxy.faults.remove(fault)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if fault is not None:
                    payload = b'{"error": "injected"}'
                    self.send_response(fault[1])
                    for key, value in fault[2].items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":  # a HEAD answer has no body: one would break keep-alive
                        self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                headers["Host"] = f"{proxy.upstream_host}:{proxy.upstream_port}"
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() in ("transfer-encoding", "connection", "content-length"):
                        continue
                    self.send_header(key, value.replace(proxy.upstream, proxy.url))
                data_length = answer.getheader("Content-Length")
                flip = None
                if self.command == "GET":
                    with proxy.lock:
                        flip = next((c for c in proxy.corrupt if c[0] in self.path and c[3] > 0), None)
                        if flip is not None:
                            flip[3] -= 1
                if flip is not None and data_length is not None:
                    data = answer.read().replace(flip[1], flip[2], 1)
                    data_length = None  # sent below from memory, same length
                    answer = _Buffered(data)
                slow = proxy.throttle and self.command == "GET" and "/resolve/" in self.path
                if data_length is not None:
                    self.send_header("Content-Length", data_length)
                    self.end_headers()
                    remaining = int(data_length)
                    chunk = 64 * 1024
                    try:
                        while remaining > 0:
                            block = answer.read(min(chunk, remaining))
                            if not block:
                                break
                            self.wfile.write(block)
                            remaining -= len(block)
                            if slow:
                                time.sleep(len(block) / proxy.throttle)  # type: ignore[operator]
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                else:
                    data = answer.read()
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                conn.close()

            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def count(self, substring: str, method: str | None = None) -> int:
        with self.lock:
            return sum(1 for m, p, _ in self.requests if substring in p and (method is None or m == method))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Buffered:
    """A response body already read (and altered) by the proxy."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, *_: Any) -> bytes:
        data, self.data = self.data, b""
        return data


@pytest.fixture
def fault_proxy(hub_server: Any) -> Iterator[FaultProxy]:
    proxy = FaultProxy(hub_server.url)
    yield proxy
    proxy.close()
