"""Crash-safe file writes, in one place for the whole project.

Every file tunehub creates or rewrites goes through here: the bytes are written
under a temporary name in the same folder, fsynced, renamed over the final name
and the folder fsynced, so a crash at any moment leaves the old file or the new
one, never a torn one. Definitions get a JSON rewriter that keeps the user's key
order, indentation style, non-ASCII text and unknown keys, and that refuses to
overwrite a file that changed since it was read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tunehub.errors import ConcurrentEditError, DefinitionError

TEMP_MARKER = ".tunehub-tmp-"

__all__ = [
    "TEMP_MARKER",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_writer",
    "fsync_dir",
    "temp_path_for",
    "is_temp_name",
    "DefinitionDocument",
    "update_definition",
    "dump_json_like",
]


def fsync_dir(folder: Path) -> None:
    """Make a rename or unlink inside ``folder`` durable."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems (and Windows) cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_path_for(path: Path) -> Path:
    """A unique temporary name beside ``path`` (same folder, so rename is atomic)."""
    return path.with_name(f".{path.name}{TEMP_MARKER}{os.getpid()}-{secrets.token_hex(4)}")


def is_temp_name(name: str) -> bool:
    """True for names made by :func:`temp_path_for` (leftovers to clean after a crash)."""
    return TEMP_MARKER in name


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on clean exit fsync and rename it into place.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(final)
    kwargs: dict[str, Any] = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
    handle = open(tmp, mode, **kwargs)
    try:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        with contextlib.suppress(OSError):  # closing flushes again: on a full disk that fails too
            handle.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    with atomic_writer(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Replace ``path`` with UTF-8 ``text`` atomically and durably."""
    atomic_write_bytes(path, text.encode("utf-8"))


# --- definition JSON -------------------------------------------------------------

_INDENT_RE = re.compile(r"^\{\s*\n([ \t]+)\S", re.MULTILINE)


def _detect_indent(text: str) -> str | int | None:
    """The indentation of the first nested line: a tab, N spaces, or None (compact)."""
    match = _INDENT_RE.search(text)
    if not match:
        return None
    unit = match.group(1)
    if unit.startswith("\t"):
        return "\t"
    return len(unit)


def dump_json_like(data: Any, original_text: str | None) -> str:
    """Serialise ``data`` in the style of ``original_text``.

    Keeps the indentation unit (tabs, 2 or 4 spaces, or a one-line file), the
    final newline, and non-ASCII characters as they are (no \\u escapes).
    """
    indent: str | int | None = 4
    trailing_newline = True
    if original_text is not None:
        indent = _detect_indent(original_text)
        if indent is None and "\n" in original_text.strip():
            indent = 4
        trailing_newline = original_text.endswith("\n")
    text = json.dumps(data, indent=indent, ensure_ascii=False)
    return text + ("\n" if trailing_newline else "")


@dataclass
class DefinitionDocument:
    """A definition file as read, remembered so that a rewrite can tell if it changed."""

    path: Path
    text: str
    data: dict[str, Any]
    digest: str

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> DefinitionDocument:
        file_path = Path(path)
        raw = file_path.read_bytes()
        text = raw.decode("utf-8-sig")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DefinitionError(
                f"{file_path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from None
        if not isinstance(data, dict):
            raise DefinitionError(f"{file_path}: the top level must be a JSON object")
        return cls(file_path, text, data, hashlib.sha256(raw).hexdigest())

    def changed_on_disk(self) -> bool:
        try:
            current = self.path.read_bytes()
        except FileNotFoundError:
            return True
        return hashlib.sha256(current).hexdigest() != self.digest

    def write(self, new_data: dict[str, Any]) -> DefinitionDocument:
        """Write ``new_data`` in this file's style; refuse if the file changed since it was read."""
        if self.changed_on_disk():
            raise ConcurrentEditError(
                f"{self.path} changed on disk since it was read; re-read it and apply the change again"
            )
        text = dump_json_like(new_data, self.text)
        atomic_write_text(self.path, text)
        encoded = text.encode("utf-8")
        return DefinitionDocument(self.path, text, new_data, hashlib.sha256(encoded).hexdigest())


def update_definition(
    path: str | os.PathLike[str],
    mutate: Callable[[dict[str, Any]], bool | None],
    attempts: int = 5,
) -> DefinitionDocument:
    """Re-read ``path``, apply ``mutate`` to its data and write it back safely.

    ``mutate`` changes the dict in place; returning ``False`` means "nothing to
    change" and skips the write. When the user edits the file between our read and
    our write, the edit is kept: the file is read again and ``mutate`` re-applied.
    """
    last_error: ConcurrentEditError | None = None
    for _ in range(attempts):
        doc = DefinitionDocument.read(path)
        data = json.loads(doc.text)  # a private copy: mutate must not touch doc.data
        if mutate(data) is False:
            return doc
        try:
            return doc.write(data)
        except ConcurrentEditError as exc:
            last_error = exc
    assert last_error is not None
    raise last_error
