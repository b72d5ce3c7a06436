"""Input rules of the Hub server: repo ids, paths in repos, revisions, hashes.

Everything a client sends is checked here before it reaches storage, with the
Hub's own limits, so that a hostile name can never become a path on disk or a
SQL pattern.
"""

from __future__ import annotations

import hashlib
import re

REPO_TYPES = ("model", "dataset", "space")
# URL segment of each repo type in /api/{segment}/... and in resolve URLs.
API_SEGMENT = {"model": "models", "dataset": "datasets", "space": "spaces"}
RESOLVE_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}

MAX_REPO_ID_LENGTH = 96
MAX_PATH_LENGTH = 1024
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,41}$")
_HEX40_RE = re.compile(r"^[0-9a-f]{40}$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
_BRANCH_RE = re.compile(r"^[A-Za-z0-9._/-]{1,255}$")

# Files whose extension the Hub's default .gitattributes stores in LFS.
LFS_EXTENSIONS = frozenset(
    """7z arrow bin bz2 ckpt ftz gguf gz h5 joblib mlmodel model msgpack npy npz onnx ot
    parquet pb pickle pkl pt pth rar safetensors tar tflite tgz wasm xz zip zst tfevents
    mp4 webm png jpg jpeg gif wav mp3 flac""".split()
)
# Above this size a file always goes to LFS (the client sends regular files inline, base64).
LFS_MIN_SIZE = 5 * 1024 * 1024

DEFAULT_GITATTRIBUTES = "".join(
    f"*.{ext} filter=lfs diff=lfs merge=lfs -text\n" for ext in sorted(LFS_EXTENSIONS)
)


class InvalidInput(ValueError):
    """A name, path or value sent by a client breaks the rules (answered with 400)."""


def check_repo_id(repo_id: str) -> tuple[str, str]:
    """Split ``namespace/name`` after checking it as the Hub does; raise InvalidInput."""
    if not isinstance(repo_id, str) or len(repo_id) > MAX_REPO_ID_LENGTH:
        raise InvalidInput(f"Invalid repo id {repo_id!r}: at most {MAX_REPO_ID_LENGTH} characters.")
    parts = repo_id.split("/")
    if len(parts) != 2:
        raise InvalidInput(f"Invalid repo id {repo_id!r}: expected 'namespace/name'.")
    namespace, name = parts
    for part in parts:
        if not _NAME_RE.match(part) or ".." in part or part.endswith(".git"):
            raise InvalidInput(
                f"Invalid repo id {repo_id!r}: use letters, digits, '-', '_' and '.' "
                "('--' and '..' forbidden, no '.git' ending)."
            )
    if "--" in namespace or "--" in name:
        raise InvalidInput(f"Invalid repo id {repo_id!r}: '--' is not allowed.")
    return namespace, name


def check_user_name(name: str) -> str:
    """User and organisation names: letters, digits and '-', at most 42 characters."""
    if not isinstance(name, str) or not _USER_RE.match(name) or "--" in name:
        raise InvalidInput(f"Invalid user or organisation name {name!r}: letters, digits and single '-' only.")
    return name


def check_repo_type(repo_type: str | None) -> str:
    repo_type = repo_type or "model"
    if repo_type not in REPO_TYPES:
        raise InvalidInput(f"Invalid repo type {repo_type!r}: one of {', '.join(REPO_TYPES)}.")
    return repo_type


def check_path(path: str, *, allow_empty: bool = False) -> str:
    """A file or folder path inside a repo: relative, '/'-separated, no '..', no backslash, no NUL."""
    if not isinstance(path, str):
        raise InvalidInput("A path in the repo must be a string.")
    if path == "" and allow_empty:
        return path
    if not path or len(path) > MAX_PATH_LENGTH:
        raise InvalidInput(f"Invalid path {path[:100]!r}: empty or longer than {MAX_PATH_LENGTH} characters.")
    if path.startswith("/") or "\\" in path or "\x00" in path:
        raise InvalidInput(f"Invalid path {path[:100]!r}: no leading '/', backslash or NUL allowed.")
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidInput(f"Invalid path {path[:100]!r}: empty, '.' or '..' segment.")
    if any(ord(ch) < 32 for ch in path):
        raise InvalidInput(f"Invalid path {path[:100]!r}: control characters are not allowed.")
    if path == ".git" or path.startswith(".git/"):
        raise InvalidInput(f"Invalid path {path!r}: '.git' is reserved.")
    return path


def check_branch_name(name: str) -> str:
    if (
        not _BRANCH_RE.match(name)
        or ".." in name
        or name.startswith(("/", "-", "."))
        or name.endswith(("/", ".lock", "."))
        or "//" in name
        or is_commit_sha(name)
    ):
        raise InvalidInput(f"Invalid branch name {name!r}.")
    return name


MAX_REVISION_LENGTH = 255


def check_revision(revision: object) -> str:
    """A revision named in a URL or a body (branch, tag or sha): a string without control characters.

    Whether it exists is the store's question; this keeps NUL, newlines and the like out of
    queries, answers and headers.
    """
    if not isinstance(revision, str) or not revision or len(revision) > MAX_REVISION_LENGTH:
        raise InvalidInput(f"Invalid revision {str(revision)[:80]!r}: 1 to {MAX_REVISION_LENGTH} characters expected.")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in revision):
        raise InvalidInput(f"Invalid revision {revision[:80]!r}: control characters are not allowed.")
    return revision


def check_sha256(oid: object) -> str:
    if not isinstance(oid, str) or not _HEX64_RE.match(oid):
        raise InvalidInput(f"Invalid sha256 oid {str(oid)[:80]!r}: 64 lowercase hex digits expected.")
    return oid


def check_size(size: object) -> int:
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidInput(f"Invalid size {size!r}: a non-negative integer expected.")
    return size


def is_commit_sha(value: str) -> bool:
    return bool(_HEX40_RE.match(value))


def git_blob_sha1(data: bytes) -> str:
    """Git's object id of a blob: what the Hub reports for regular (non-LFS) files."""
    digest = hashlib.sha1(b"blob %d\x00" % len(data))
    digest.update(data)
    return digest.hexdigest()


def lfs_pointer(oid: str, size: int) -> bytes:
    """The git-lfs pointer file that stands for an LFS file in the git tree."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


def wants_lfs(path: str, size: int, sample: bytes) -> bool:
    """The preupload decision: LFS for big files, binary samples and usual weight extensions."""
    if size == 0:
        return False
    if size > LFS_MIN_SIZE or b"\x00" in sample:
        return True
    base = path.rsplit("/", 1)[-1]
    return "." in base and base.rsplit(".", 1)[-1].lower() in LFS_EXTENSIONS
