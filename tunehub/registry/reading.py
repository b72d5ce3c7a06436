"""Reading one definition file so that no file, however broken, stops the registry.

Every way a file named ``ID.json`` in a definition folder can be unusable ends as one
problem for that file, never as an exception: a symbolic link loop or a dangling link,
a directory or a device named ``*.json``, a file over ``max_definition_bytes`` (refused
before any byte is parsed), bytes that are not UTF-8, invalid JSON, and JSON nested so
deep that Python's parser (or any code walking the data afterwards) would hit its
recursion limit.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

from tunehub.registry.model import Problem
from tunehub.registry.validate import json_syntax_problem

__all__ = [
    "DEFAULT_MAX_DEFINITION_BYTES",
    "MAX_NESTING",
    "definition_entries",
    "parse_definition_bytes",
    "read_definition",
]

DEFAULT_MAX_DEFINITION_BYTES = 1 << 20  # WanGP's largest definition is a few KB
MAX_NESTING = 64  # WanGP's definitions nest 4 levels; deeper is not a definition
# O_NONBLOCK: a FIFO named *.json must not block the loader in open()
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def definition_entries(folder: Path) -> list[Path]:
    """The names in ``folder`` that claim to be definitions (``*.json``, not hidden), sorted.

    Nothing is followed or opened here: what each entry really is gets reported by
    :func:`read_definition`, so a broken entry is one problem line, not a silent skip.
    """
    try:
        # iterdir builds each child path from the folder's parsed parts: far cheaper than
        # folder / name for the 10,000 files of a large folder
        entries = [path for path in folder.iterdir() if path.name.endswith(".json") and not path.name.startswith(".")]
    except OSError:
        return []
    entries.sort(key=lambda path: path.name)
    return entries


def _nesting_depth(value: Any, limit: int) -> int:
    """How deeply lists and objects nest (iteratively: deep data must not recurse here)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, (dict, list)):
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children)
    return deepest


class _Unusable(Exception):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def _decode(raw: bytes, max_bytes: int) -> Any:
    """Parsed JSON of a definition's bytes, or _Unusable(key, message)."""
    if len(raw) > max_bytes:
        raise _Unusable("(file)", _too_big(len(raw), max_bytes))
    try:
        # what "utf-8-sig" does, without its Python-level codec wrapper (this runs for every file)
        text = (raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw).decode("utf-8")
    except UnicodeDecodeError:
        raise _Unusable("(file)", "is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Unusable("(json)", json_syntax_problem("", exc).message) from None
    except RecursionError:
        raise _Unusable("(json)", _too_deep()) from None
    # Only data with more than MAX_NESTING brackets can nest that deep: counting them (in C)
    # spares the walk for every ordinary definition (a few dozen brackets at most).
    if raw.count(b"[") + raw.count(b"{") > MAX_NESTING and _nesting_depth(data, MAX_NESTING) > MAX_NESTING:
        raise _Unusable("(json)", _too_deep())
    return data


def parse_definition_bytes(raw: bytes, max_bytes: int = DEFAULT_MAX_DEFINITION_BYTES) -> tuple[Any, str | None]:
    """Decode and parse a definition's bytes (fetched, not on disk): (data, None) or (None, why not)."""
    try:
        return _decode(raw, max_bytes), None
    except _Unusable as exc:
        return None, exc.message


def _too_big(size: int, max_bytes: int) -> str:
    return (
        f"is {size:,} bytes, over max_definition_bytes ({max_bytes:,}); not read. A definition is a few KB: "
        "check that this is the right file, or raise max_definition_bytes in tunehub.toml"
    )


def _too_deep() -> str:
    return f"lists or objects nest deeper than {MAX_NESTING} levels; this is not a definition (not read)"


def _link_problem(path: str) -> str | None:
    """What is wrong with a symbolic link, or None if ``path`` is not a broken one."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symbolic link loop (it points, through other links, back at itself); remove or fix it"
        if exc.errno in (errno.ENOENT, errno.ENOTDIR) and os.path.islink(path):
            target = os.readlink(path)
            return f"is a symbolic link to {target}, which does not exist; remove or fix it"
        return f"cannot be read: {exc.strerror}"
    return None


def read_definition(path: Path | str, max_bytes: int = DEFAULT_MAX_DEFINITION_BYTES) -> tuple[Any, Problem | None]:
    """The parsed content of one definition file, or (None, the one problem that stops it)."""
    file = path if isinstance(path, str) else str(path)  # a str: every use below skips pathlib's __fspath__

    def problem(message: str, key: str = "(file)") -> tuple[None, Problem]:
        return None, Problem(file, key, message)

    try:
        fd = os.open(file, _OPEN_FLAGS)
    except OSError as exc:
        # what a broken link is, asked only when open() failed (one syscall less per good file)
        broken_link = _link_problem(file)
        if broken_link:
            return problem(broken_link)
        if exc.errno == errno.ELOOP:
            return problem("is a symbolic link loop; remove or fix it")
        if exc.errno == errno.EISDIR:
            return problem(_directory_message())
        return problem(f"cannot be read: {exc.strerror}")
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            return problem(_directory_message())
        if not stat.S_ISREG(info.st_mode):
            return problem("is not a regular file (a device, socket or pipe); a definition is a plain JSON file")
        if info.st_size > max_bytes:
            return problem(_too_big(info.st_size, max_bytes))
        chunks = []
        remaining = max_bytes + 1  # the file may grow after fstat: never read past the cap
        want = min(remaining, info.st_size + 1)  # one read for the whole file, as a rule
        while remaining > 0:
            chunk = os.read(fd, want)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
            if len(chunk) < want:  # a short read of a regular file: its end
                break
            want = min(remaining, 1 << 16)
        raw = b"".join(chunks)
    except OSError as exc:
        return problem(f"cannot be read: {exc.strerror}")
    finally:
        os.close(fd)
    try:
        return _decode(raw, max_bytes), None
    except _Unusable as exc:
        return problem(exc.message, exc.key)


def _directory_message() -> str:
    return "is a directory, not a definition file (a definition is a file named ID.json); rename or move it"
