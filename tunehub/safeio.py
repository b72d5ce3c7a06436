"""Crash-safe file writes, in one place for the whole project.

Every file tunehub creates or rewrites goes through here: the bytes are written
under a temporary name in the same folder, fsynced, renamed over the final name
and the folder fsynced, so a crash at any moment leaves the old file or the new
one, never a torn one. Definitions get a JSON rewriter that keeps the user's key
order, indentation style, non-ASCII text and unknown keys, and that refuses to
overwrite a file that changed since it was read.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Iterator
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
    "CONFLICT_SUFFIX",
    "exchange_paths",
    "remove_dead_temp_files",
]

CONFLICT_SUFFIX = ".tunehub-conflict"  # tunehub's version of a file whose concurrent user save was kept


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


_RENAME_EXCHANGE = 2
_SYS_RENAMEAT2 = {"x86_64": 316, "aarch64": 276, "riscv64": 276, "ppc64le": 357, "s390x": 347}
_exchange_unavailable = False
_IN_PLACE_GRACE_S = 0.05


def exchange_paths(a: Path, b: Path) -> bool:
    """Swap two names atomically (Linux renameat2 RENAME_EXCHANGE); False where not supported.

    POSIX has no compare-and-rename; swapping instead of replacing keeps the file that was
    replaced, so a writer can see whether someone saved in the moment before its rename.
    """
    global _exchange_unavailable
    if _exchange_unavailable or not sys.platform.startswith("linux"):
        return False
    import ctypes
    import platform

    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd = -100
    args = (at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if hasattr(libc, "renameat2"):
        result = libc.renameat2(ctypes.c_int(args[0]), args[1], ctypes.c_int(args[2]), args[3], ctypes.c_uint(args[4]))
    elif platform.machine() in _SYS_RENAMEAT2:
        result = libc.syscall(_SYS_RENAMEAT2[platform.machine()], args[0], args[1], args[2], args[3], args[4])
    else:
        _exchange_unavailable = True
        return False
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        _exchange_unavailable = code == errno.ENOSYS  # EINVAL: this filesystem only
        return False
    raise OSError(code, os.strerror(code), str(b))


def _sha256_of(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def _replace_if_unchanged(path: Path, data: bytes, read_digest: str) -> None:
    """Put ``data`` at ``path`` unless the file differs from what was read (digest): then keep it.

    The check before the rename leaves a window (write, fsync) in which a user's save
    would be overwritten; the swap closes it: the file displaced by the swap is compared
    with what was read, and a save found there is swapped back into place and reported
    (ConcurrentEditError) for the caller to re-read and re-apply its change.
    """
    tmp = temp_path_for(path)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if _sha256_of(path) != read_digest:
            raise ConcurrentEditError(f"{path} changed on disk since it was read; re-read it and apply the change again")
        if not exchange_paths(tmp, path):
            os.replace(tmp, path)  # no swap on this system: the check above is all there is
            fsync_dir(path.parent)
            return
        displaced_fd = os.open(tmp, os.O_RDONLY)
        try:
            before = os.fstat(displaced_fd)
            displaced = _sha256_of(tmp)
            if displaced == read_digest:
                # An editor that saves in place may have opened the old file just before the
                # swap and write into it now: give such a write a moment, then look again.
                time.sleep(_IN_PLACE_GRACE_S)
                after = os.fstat(displaced_fd)
                if (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size):
                    fsync_dir(path.parent)
                    return
        finally:
            os.close(displaced_fd)
        # A save landed between the check and the swap: put it back. If yet another save
        # replaced ours meanwhile, it is newer than the one displaced: keep that one.
        ours = hashlib.sha256(data).hexdigest()
        if _sha256_of(path) == ours:
            exchange_paths(tmp, path)
        fsync_dir(path.parent)
        raise ConcurrentEditError(
            f"{path} was saved while tunehub rewrote it; your save was kept, re-read it and apply the change again"
        )
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def remove_dead_temp_files(folders: Iterable[Path]) -> list[Path]:
    """Remove temp files (:func:`temp_path_for`) whose writing process is gone; returns them.

    A crash mid-write leaves them behind; a live writer's (this process's too) are left alone.
    """
    removed = []
    for folder in folders:
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if TEMP_MARKER not in name:
                continue
            pid_text = name.split(TEMP_MARKER, 1)[1].split("-", 1)[0]
            if not pid_text.isdigit() or _pid_alive(int(pid_text)):
                continue
            with contextlib.suppress(OSError):
                (Path(folder) / name).unlink()
                removed.append(Path(folder) / name)
    return removed


def write_conflict_copy(path: Path, data: bytes) -> Path:
    """Write tunehub's version of ``path`` beside it, for a change that could not be merged."""
    target = path.with_name(path.name + CONFLICT_SUFFIX)
    atomic_write_bytes(target, data)
    return target


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
        return cls.parse(file_path, file_path.read_bytes())

    @classmethod
    def parse(cls, file_path: Path, raw: bytes) -> DefinitionDocument:
        """The document of ``raw``, the bytes read from ``file_path``."""
        bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
        try:
            text = raw[bom:].decode("utf-8")
        except UnicodeDecodeError as exc:
            where = bom + exc.start  # an offset into the file, BOM included
            raise DefinitionError(
                f"{file_path}: is not UTF-8 text (byte {where} is 0x{raw[where]:02x}); "
                "save it as UTF-8 (JSON files are UTF-8)"
            ) from None
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
        return self.write_text(dump_json_like(new_data, self.text), new_data)

    def write_text(self, text: str, new_data: dict[str, Any] | None = None) -> DefinitionDocument:
        """Replace the file with ``text`` unless it changed since it was read (ConcurrentEditError).

        A save that lands while the new text is being written is detected after the swap
        and kept (see :func:`_replace_if_unchanged`): no save is ever silently lost.
        """
        encoded = text.encode("utf-8")
        _replace_if_unchanged(self.path, encoded, self.digest)
        data = new_data if new_data is not None else json.loads(text)
        return DefinitionDocument(self.path, text, data, hashlib.sha256(encoded).hexdigest())


SAVE_SETTLE_SECONDS = 0.02
SAVE_SETTLE_LIMIT = 1.0


def _read_saved(path: Path) -> DefinitionDocument:
    """Read a definition, waiting out an editor's in-place save (truncate, then write) caught midway.

    An unparsable file is read again after a short pause while its bytes keep changing or it is
    empty (a save in progress); the same unparsable bytes twice is a broken file, reported at once.
    """
    deadline = time.monotonic() + SAVE_SETTLE_LIMIT
    previous: bytes | None = None
    while True:
        current = path.read_bytes()
        try:
            return DefinitionDocument.parse(path, current)
        except DefinitionError:
            if (current and current == previous) or time.monotonic() > deadline:
                raise
            previous = current
            time.sleep(SAVE_SETTLE_SECONDS)


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
    data: dict[str, Any] = {}
    doc: DefinitionDocument | None = None
    for _ in range(attempts):
        doc = _read_saved(Path(path))
        data = json.loads(doc.text)  # a private copy: mutate must not touch doc.data
        if mutate(data) is False:
            return doc
        try:
            return doc.write(data)
        except ConcurrentEditError as exc:
            last_error = exc
    assert last_error is not None and doc is not None
    # The file kept changing: the user's version stays, tunehub's goes beside it.
    conflict = write_conflict_copy(doc.path, dump_json_like(data, doc.text).encode("utf-8"))
    raise ConcurrentEditError(
        f"{doc.path} kept changing while tunehub rewrote it; your version was kept and tunehub's change "
        f"was written to {conflict.name}: merge it by hand (or delete it) and run the job again"
    )
