"""The daemon's local HTTP API on ``<home>/.tunehub/daemon.sock`` (mode 0600).

Standard-library HTTP over a Unix socket, one thread per request (long polls wait
without blocking others). Routes::

    GET    /health                 {"ok": true, "pid", "version", "uptime"}
    GET    /status                 definitions + sync state, jobs, remotes, disk
    GET    /events?since=N&timeout=S   long poll, increasing ids
    GET    /jobs                   the journal's jobs
    POST   /jobs                   {"kind", "definition_id", "params"} -> the job
    DELETE /jobs/{id}              cancel

Only the owner can connect (file mode), so there is no token on this socket.
"""

from __future__ import annotations

import json
import os
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from tunehub.daemon.unixsock import short_address
from tunehub.errors import DaemonError, TunehubError

__all__ = ["ApiServer", "DaemonApp", "ApiError"]

MAX_BODY = 1024 * 1024
MAX_LONG_POLL = 60.0


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class DaemonApp(Protocol):
    def api_health(self) -> dict[str, Any]: ...
    def api_status(self) -> dict[str, Any]: ...
    def api_events(self, since: int, timeout: float) -> dict[str, Any]: ...
    def api_jobs(self) -> dict[str, Any]: ...
    def api_submit(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def api_cancel(self, job_id: int) -> dict[str, Any]: ...


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = False
    app: DaemonApp


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "tunehub-daemon"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # requests are not worth a log line each; errors are logged by the daemon

    def address_string(self) -> str:
        return "unix"

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, ensure_ascii=False, default=str).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        segments = [s for s in parts.path.split("/") if s]
        app = self.server.app
        try:
            if method == "GET" and segments == ["health"]:
                self._send(200, app.api_health())
            elif method == "GET" and segments == ["status"]:
                self._send(200, app.api_status())
            elif method == "GET" and segments == ["events"]:
                since = _int_param(query, "since", 0)
                timeout = min(max(_float_param(query, "timeout", 0.0), 0.0), MAX_LONG_POLL)
                self._send(200, app.api_events(since, timeout))
            elif method == "GET" and segments == ["jobs"]:
                self._send(200, app.api_jobs())
            elif method == "POST" and segments == ["jobs"]:
                self._send(201, app.api_submit(self._json_body()))
            elif method == "DELETE" and len(segments) == 2 and segments[0] == "jobs":
                if not segments[1].isdigit():
                    raise ApiError(400, f"job id must be a number, got {segments[1]!r}")
                self._send(200, app.api_cancel(int(segments[1])))
            else:
                raise ApiError(404, f"no route {method} {parts.path}")
        except ApiError as exc:
            self._send(exc.status, {"error": exc.message})
        except TunehubError as exc:
            self._send(400, {"error": str(exc)})
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # a bug must answer 500, not kill the server thread silently
            self._send(500, {"error": f"internal error: {type(exc).__name__}: {exc}"})

    def _json_body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ApiError(413, "request body too large")
        raw = self.rfile.read(length) if length else b"{}"
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise ApiError(400, "request body must be JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        return body

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_DELETE(self) -> None:
        self._route("DELETE")


def _int_param(query: dict[str, list[str]], name: str, default: int) -> int:
    values = query.get(name)
    if not values:
        return default
    try:
        return int(float(values[0]))
    except ValueError:
        raise ApiError(400, f"query parameter {name} must be a number, got {values[0]!r}") from None


def _float_param(query: dict[str, list[str]], name: str, default: float) -> float:
    values = query.get(name)
    if not values:
        return default
    try:
        return float(values[0])
    except ValueError:
        raise ApiError(400, f"query parameter {name} must be a number, got {values[0]!r}") from None


class ApiServer:
    """Binds the socket (mode 0600) and serves on a background thread."""

    def __init__(self, socket_path: Path, app: DaemonApp) -> None:
        self.socket_path = socket_path
        self.app = app
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        # We hold the home lock, so a socket file left here is a dead daemon's.
        try:
            self.socket_path.unlink()
        except FileNotFoundError:
            pass
        old_umask = os.umask(0o177)
        try:
            with short_address(self.socket_path) as address:
                server = _Server(address, _Handler, bind_and_activate=True)
        except OSError as exc:
            raise DaemonError(f"cannot listen on {self.socket_path}: {exc.strerror or exc}") from None
        finally:
            os.umask(old_umask)
        os.chmod(self.socket_path, 0o600)
        server.app = self.app
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 1.0}, name="api", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        try:
            self.socket_path.unlink()
        except FileNotFoundError:
            pass
