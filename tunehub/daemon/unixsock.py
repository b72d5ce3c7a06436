"""AF_UNIX addresses that work for long paths too.

A socket path is limited to about 107 bytes; homes in deep folders (pytest's tmp dirs,
network homes) exceed it. Linux lets a process reach any folder through
``/proc/self/fd/<fd>``, so a long path is bound and connected through an open
descriptor of its folder.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

MAX_SUN_PATH = 100


@contextlib.contextmanager
def short_address(path: Path) -> Iterator[str]:
    raw = str(path)
    if len(raw.encode()) <= MAX_SUN_PATH:
        yield raw
        return
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        yield f"/proc/self/fd/{dir_fd}/{path.name}"
    finally:
        os.close(dir_fd)


def connect(path: Path, timeout: float | None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        with short_address(path) as address:
            sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock
