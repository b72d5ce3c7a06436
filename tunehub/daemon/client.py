"""Talk to a running daemon over its Unix socket (used by the CLI and the TUI).

Light on purpose: standard library only, so ``tunehub status`` starts fast.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from pathlib import Path
from typing import Any

from tunehub.daemon import SOCKET_NAME
from tunehub.daemon.unixsock import connect
from tunehub.errors import DaemonError

__all__ = ["DaemonClient", "socket_path_for", "DaemonNotRunningError", "cancel_pulls"]


class DaemonNotRunningError(DaemonError):
    """No daemon answers on this home's socket."""


def socket_path_for(home: str | os.PathLike[str]) -> Path:
    return Path(home).expanduser().resolve() / ".tunehub" / SOCKET_NAME


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: Path, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        self.sock = connect(self._socket_path, self.timeout)


class DaemonClient:
    """``DaemonClient(home)``: methods map one to one on the daemon's routes."""

    def __init__(self, home: str | os.PathLike[str], timeout: float = 10.0) -> None:
        self.home = Path(home).expanduser().resolve()
        self.socket_path = socket_path_for(self.home)
        self.timeout = timeout

    @classmethod
    def is_running(cls, home: str | os.PathLike[str]) -> bool:
        try:
            cls(home, timeout=2.0).health()
        except DaemonError:
            return False
        return True

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        if not self.socket_path.exists():
            raise DaemonNotRunningError(f"no tunehub daemon runs for {self.home} (no socket {self.socket_path})")
        conn = _UnixConnection(self.socket_path, timeout if timeout is not None else self.timeout)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except (ConnectionRefusedError, FileNotFoundError):
            raise DaemonNotRunningError(
                f"no tunehub daemon runs for {self.home} (socket {self.socket_path} refuses connections)"
            ) from None
        except (socket.timeout, TimeoutError):
            raise DaemonError(f"the daemon for {self.home} did not answer {method} {path} in time") from None
        except OSError as exc:
            raise DaemonError(f"cannot talk to the daemon at {self.socket_path}: {exc}") from None
        finally:
            conn.close()
        try:
            data = json.loads(raw or b"null")
        except ValueError:
            raise DaemonError(f"the daemon answered {method} {path} with something that is not JSON") from None
        if response.status >= 400:
            message = data.get("error") if isinstance(data, dict) else None
            raise DaemonError(f"daemon: {message or f'HTTP {response.status}'}")
        return data

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health")

    def status(self) -> dict[str, Any]:
        return self._request("GET", "/status")

    def events(self, since: int = 0, timeout: float = 0.0) -> dict[str, Any]:
        """Events after ``since``; waits up to ``timeout`` s (long poll) when there are none yet."""
        return self._request(
            "GET", f"/events?since={int(since)}&timeout={float(timeout):g}", timeout=max(self.timeout, timeout + 10)
        )

    def jobs(self) -> list[dict[str, Any]]:
        return self._request("GET", "/jobs")["jobs"]

    def submit_job(self, kind: str, definition_id: str, **params: Any) -> dict[str, Any]:
        return self._request("POST", "/jobs", {"kind": kind, "definition_id": definition_id, "params": params})

    def cancel_job(self, job_id: int) -> dict[str, Any]:
        return self._request("DELETE", f"/jobs/{int(job_id)}")


def cancel_pulls(home: str | os.PathLike[str], definition_id: str) -> list[int]:
    """Cancel the running daemon's queued or running pulls of one definition (before ``tunehub rm``)."""
    if not DaemonClient.is_running(home):
        return []
    cancelled = []
    try:
        client = DaemonClient(home)
        for job in client.jobs():
            if job.get("definition_id") == definition_id and job.get("kind") == "pull" \
                    and job.get("state") in ("queued", "running"):
                client.cancel_job(int(job["id"]))
                cancelled.append(int(job["id"]))
    except (DaemonError, OSError):
        pass  # the daemon went away: nothing of it to cancel
    return cancelled
