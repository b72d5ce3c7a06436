"""One daemon per home: an ``flock`` on ``<home>/.tunehub/daemon.lock``.

The kernel drops the lock when the holder dies (even by SIGKILL), so a stale lock
never blocks a restart. The file holds the holder's pid and start time so that a
second daemon can say who holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from tunehub.errors import DaemonLockedError

__all__ = ["HomeLock", "read_holder"]


def read_holder(lock_path: Path) -> dict[str, object]:
    """What the lock file says about its holder (may be empty or stale)."""
    try:
        return json.loads(lock_path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}


class HomeLock:
    """Exclusive lock of one home; :meth:`acquire` raises if another process has it."""

    def __init__(self, lock_path: Path) -> None:
        self.path = lock_path
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_holder(self.path)
            who = f"process {holder.get('pid')}" if holder.get("pid") else "another process"
            raise DaemonLockedError(
                f"another tunehub daemon ({who}) already runs for this home; lock file {self.path}"
            ) from None
        # Written in place (not renamed): the lock lives on this inode.
        payload = json.dumps({"pid": os.getpid(), "started": time.time()}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, payload, 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> HomeLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
