"""``tunehub publish``: upload a definition's local files in one commit, then point it at them.

1. Every local entry of ``URLs``, ``URLs2`` ..., ``modules``, ``preload_URLs``,
   ``text_encoder_URLs`` and ``loras`` (from the family's LoRA folder) is located and hashed (sha256; a file recorded as verified is not hashed again).
2. The repo is read once (``model_info(files_metadata=True)``): a file whose sha256 is
   already at the same path is not sent at all; everything else goes into one
   ``create_commit`` (the Hub's LFS dedupe skips bytes it already holds under another
   name). The repo is created if missing. Nothing to change: no commit.
3. The definition file is rewritten through :func:`tunehub.registry.writer.record_change`
   (a definition in WanGP's defaults/ gets an override in finetunes/ instead): each
   local entry becomes ``{endpoint}/{repo}/resolve/{revision}/{filename}``; key order,
   style and unknown keys are kept, and an edit the user made meanwhile is re-read and kept.
4. ``include_definition``: the rewritten definition also goes into the same commit as
   ``finetunes/ID.json``, the shared registry other daemons subscribe to.

The token comes from huggingface_hub (``HF_TOKEN`` or the stored login) and appears in no
output, error or file.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunehub.config import Config
from tunehub.errors import DefinitionError, HubAuthError, HubError, HubNotFoundError
from tunehub.hub.download import ProgressCallback, offline_mode, redact
from tunehub.hub.pull import VerifiedRecords, hash_file
from tunehub.registry.urls import hub_resolve_url, is_url
from tunehub.registry.validate import url_keys
from tunehub.registry.writer import record_change
from tunehub.safeio import DefinitionDocument, dump_json_like

__all__ = ["PublishResult", "PublishedFile", "publish", "local_entries", "rewrite_entries"]

PUBLIC_HUB = "https://huggingface.co"


@dataclass
class PublishedFile:
    source: str  # the entry as written
    path: Path | None  # the local file
    path_in_repo: str
    size: int
    sha256: str | None
    status: str  # upload | already there | same bytes in repo | definition
    url: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "path": str(self.path) if self.path else None,
            "path_in_repo": self.path_in_repo,
            "size": self.size,
            "sha256": self.sha256,
            "status": self.status,
            "url": self.url,
        }


@dataclass
class PublishResult:
    id: str
    repo: str
    revision: str
    dry_run: bool
    files: list[PublishedFile] = field(default_factory=list)
    commit_url: str | None = None
    commit_oid: str | None = None
    repo_created: bool = False
    definition_path: Path | None = None
    definition: dict[str, Any] | None = None  # the definition file's content as (it would be) rewritten
    definition_text: str | None = None  # the same, as the file's text
    rewritten: bool = False  # the definition file was changed
    override: bool = False  # the change went into an override in finetunes/ (the definition is read-only)

    @property
    def bytes_uploaded(self) -> int:
        return sum(item.size for item in self.files if item.status in ("upload", "definition"))

    @property
    def committed(self) -> bool:
        return self.commit_oid is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "repo": self.repo,
            "revision": self.revision,
            "dry_run": self.dry_run,
            "files": [item.to_json() for item in self.files],
            "bytes_uploaded": self.bytes_uploaded,
            "commit_url": self.commit_url,
            "commit_oid": self.commit_oid,
            "repo_created": self.repo_created,
            "definition_path": str(self.definition_path) if self.definition_path else None,
            "definition": self.definition,
            "rewritten": self.rewritten,
            "override": self.override,
        }


# --- which entries are local, and rewriting them ------------------------------------


def _iter_model_entries(model: dict[str, Any], loras: bool = True) -> Iterator[str]:
    for key in (*url_keys(model), *(("loras",) if loras else ())):
        value = model.get(key)
        if isinstance(value, list):  # a string is a reference to another definition
            yield from (entry for entry in value if isinstance(entry, str))
    modules = model.get("modules")
    if isinstance(modules, list):
        for item in modules:
            if isinstance(item, list):
                yield from (entry for entry in item if isinstance(entry, str))
            elif isinstance(item, dict):
                for sub in ("URLs", "URLs2"):
                    files = item.get(sub)
                    yield from ([files] if isinstance(files, str) else [f for f in files or [] if isinstance(f, str)])


def local_entries(model: dict[str, Any], loras: bool = True) -> list[str]:
    """The entries of a ``model`` subtree that are local paths, in order, without repeats."""
    seen: list[str] = []
    for entry in _iter_model_entries(model, loras):
        if not is_url(entry) and entry not in seen:
            seen.append(entry)
    return seen


def local_lora_entries(model: dict[str, Any]) -> list[str]:
    value = model.get("loras")
    return [e for e in value if isinstance(e, str) and not is_url(e)] if isinstance(value, list) else []


def rewrite_entries(data: dict[str, Any], merged_model: dict[str, Any], mapping: dict[str, str]) -> bool:
    """Replace local entries by URLs in a definition file's data, in place; True if it changed.

    A list that this file does not set itself (it comes from an earlier merged file) is
    copied from the merged definition before rewriting, so the override takes effect.
    """
    model = data.get("model")
    if not isinstance(model, dict):
        model = {}
    changed = False

    def swap(items: list[Any]) -> list[Any]:
        nonlocal changed
        out = []
        for entry in items:
            if isinstance(entry, str) and entry in mapping:
                out.append(mapping[entry])
                changed = True
            else:
                out.append(entry)
        return out

    def swap_module(item: Any) -> Any:
        if isinstance(item, list):
            return swap(item)
        if isinstance(item, dict):  # {"URLs": [...], "URLs2": [...]}; a string there is one file
            return {
                k: swap(v) if isinstance(v, list) else swap([v])[0] if k in ("URLs", "URLs2") else v
                for k, v in item.items()
            }
        return item

    for key in (*url_keys({**merged_model, **model}), "loras", "modules"):
        value = model.get(key, merged_model.get(key))
        if not isinstance(value, list):
            continue
        if key == "modules":
            new_value = [swap_module(item) for item in value]
        else:
            new_value = swap(value)
        if new_value != value:
            model[key] = new_value
    if changed and "model" not in data:
        data["model"] = model
    return changed


def _git_blob_sha1(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@contextlib.contextmanager
def _xet_off(endpoint: str) -> Iterator[None]:
    """Plain LFS for any endpoint that is not huggingface.co (hub-protocol.md: keep Xet off)."""
    from huggingface_hub import constants

    if endpoint.rstrip("/") == PUBLIC_HUB:
        yield
        return
    previous = constants.HF_HUB_DISABLE_XET
    constants.HF_HUB_DISABLE_XET = True
    try:
        yield
    finally:
        constants.HF_HUB_DISABLE_XET = previous


def _map_hub_error(exc: Exception, repo: str, action: str) -> Exception:
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(exc, (HubError, DefinitionError)):
        return exc
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, GatedRepoError) or status in (401, 403):
        return HubAuthError(
            f"{action} {repo}: not allowed ({status or 'gated'}); log in with a write token "
            "(`hf auth login` or HF_TOKEN) that can write to this namespace"
        )
    if isinstance(exc, RevisionNotFoundError):
        return HubNotFoundError(f"{action} {repo}: the revision does not exist")
    if isinstance(exc, RepositoryNotFoundError) or status == 404:
        return HubNotFoundError(f"{action} {repo}: not found (404)")
    if isinstance(exc, HfHubHTTPError):
        return HubError(redact(f"{action} {repo}: {exc}"))
    return HubError(redact(f"{action} {repo}: {type(exc).__name__}: {exc}"))


def _remote_files(api: Any, repo: str, revision: str) -> tuple[dict[str, dict[str, Any]], bool]:
    """``path -> {sha256, blob}`` of the repo at ``revision``, and whether the repo exists."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = api.model_info(repo, revision=revision, files_metadata=True)
    except RevisionNotFoundError:
        return {}, True
    except RepositoryNotFoundError:
        return {}, False
    except Exception as exc:
        raise _map_hub_error(exc, repo, "reading") from None
    files: dict[str, dict[str, Any]] = {}
    for sibling in info.siblings or []:
        lfs = getattr(sibling, "lfs", None)
        sha = getattr(lfs, "sha256", None) if lfs is not None else None
        files[sibling.rfilename] = {"sha256": sha, "blob": getattr(sibling, "blob_id", None)}
    return files, True


# Bytes between two upload progress events: fine enough for a bar, few enough for the daemon's feed.
UPLOAD_PROGRESS_BYTES = 1024 * 1024


class _CountingReader:
    """A file being uploaded that reports how far the upload has read it (its position, so a
    retry that seeks back is shown going back rather than counted twice)."""

    def __init__(self, file: Any, total: int, report: Any) -> None:
        self._file = file
        self._total = total
        self._report = report
        self._last = 0

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        position = min(self._file.tell(), self._total)
        if abs(position - self._last) >= UPLOAD_PROGRESS_BYTES or (position == self._total and position != self._last):
            self._last = position
            self._report(position)
        return data

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(UPLOAD_PROGRESS_BYTES // 16):
            yield chunk

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def _counting_operation_class(base: Any, report: Any) -> Any:
    """``base`` (CommitOperationAdd) whose upload reads are reported as ``report(path_in_repo,
    bytes_read)``: huggingface_hub opens the file for the LFS upload with ``as_file(with_tqdm=True)``
    (its own bar, off here), and only there; the hashing reads do not go through it."""

    class CountingAdd(base):  # type: ignore[misc, valid-type]
        @contextlib.contextmanager
        def as_file(self, with_tqdm: bool = False) -> Iterator[Any]:
            with super().as_file() as file:
                if not with_tqdm or not isinstance(self.path_or_fileobj, (str, Path)):
                    yield file
                    return
                total = Path(self.path_or_fileobj).stat().st_size
                yield _CountingReader(file, total, lambda done: report(self.path_in_repo, total, done))

    return CountingAdd


def _operation(operation_class: Any, path_in_repo: str, payload: bytes | Path, known: dict[str, str]) -> Any:
    """A CommitOperationAdd that reuses the sha256 we already have instead of reading the file again."""
    if isinstance(payload, bytes):
        return operation_class(path_in_repo=path_in_repo, path_or_fileobj=payload)
    operation = operation_class(path_in_repo=path_in_repo, path_or_fileobj=str(payload))
    sha = known.get(str(payload))
    if sha is not None:
        with contextlib.suppress(AttributeError):  # older clients hash eagerly: nothing to save
            if not operation.upload_info.is_hashed:
                operation.upload_info.sha256 = bytes.fromhex(sha)
    return operation


@contextlib.contextmanager
def _hub_progress_bars_off() -> Iterator[None]:
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    already_off = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not already_off:
            enable_progress_bars()


def publish(
    cfg: Config,
    registry: Any,
    id: str,
    repo: str,
    private: bool = False,
    revision: str = "main",
    include_definition: bool = False,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
    loras: bool = True,
) -> PublishResult:
    """Upload ``id``'s local files to ``repo`` in one commit and rewrite them into URLs."""
    from huggingface_hub import CommitOperationAdd, HfApi

    definition_id = id
    if offline_mode():
        raise HubError("offline mode (HF_HUB_OFFLINE=1) is on: publishing needs the Hub; unset it")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise DefinitionError(f"--repo must be NAMESPACE/NAME, got '{repo}'")
    definition = registry.get(definition_id)
    definition_path = definition.path
    result = PublishResult(definition_id, repo, revision, dry_run, definition_path=definition_path)

    def emit(name: str, total: int | None, completed: int, status: str) -> None:
        if progress is not None:
            progress({"file": name, "total": total, "completed": completed, "status": status})

    # 1. local files, hashed once
    records = VerifiedRecords(cfg.state_dir)
    locals_: list[tuple[str, Path, int, str]] = []
    lora_entries = set(local_lora_entries(definition.model)) if loras else set()
    for entry in local_entries(definition.model, loras=loras):
        if entry in lora_entries:
            path, present = registry.locate_lora(definition, entry)
        else:
            path, present = registry.locate_source(entry, definition.origin)
        if not present:
            folders = ", ".join(str(d) for d in cfg.weights_dirs)
            raise DefinitionError(
                f"{definition_path}: '{entry}' is a local file but it is in no weights folder ({folders})"
            )
        path = Path(path)
        sha = records.lookup(path)
        size = path.stat().st_size
        if sha is None:
            sha = hash_file(path, lambda done, n=path.name, s=size: emit(n, s, done, "hashing"))
            records.add(path, sha, entry)
        locals_.append((entry, path, size, sha))
    names = [Path(entry).name for entry, *_ in locals_]
    duplicates = {name for name in names if names.count(name) > 1}
    if duplicates:
        raise DefinitionError(
            f"{definition_path}: several local entries share the file name(s) {', '.join(sorted(duplicates))}; "
            "the repo is flat, rename them first"
        )

    # 2. what the repo already has
    api = HfApi(endpoint=cfg.endpoint, library_name="tunehub")
    with _xet_off(cfg.endpoint):
        remote, exists = _remote_files(api, repo, revision)
    remote_shas = {meta["sha256"] for meta in remote.values() if meta.get("sha256")}
    mapping: dict[str, str] = {}
    operations: list[Any] = []
    for entry, path, size, sha in locals_:
        filename = path.name
        url = hub_resolve_url(cfg.endpoint, repo, revision, filename)
        mapping[entry] = url
        if remote.get(filename, {}).get("sha256") == sha:
            status = "already there"
        elif sha in remote_shas:
            status = "same bytes in repo"  # committed as a pointer; LFS sends no bytes
        else:
            status = "upload"
        result.files.append(PublishedFile(entry, path, filename, size, sha, status, url))
        if status != "already there":
            operations.append((filename, path))

    # 3. the definition as it will be: the user's file, or the override beside a read-only one
    def mutate(data: dict[str, Any]) -> bool:
        return rewrite_entries(data, data.get("model") or {}, mapping)

    planned = record_change(registry, definition_id, mutate, dry_run=True)
    result.definition_path = planned.path
    result.override = planned.override
    result.definition = planned.data
    result.definition_text = planned.text
    # what subscribers get is the whole definition, merged and rewritten
    shared = copy.deepcopy(definition.data)
    rewrite_entries(shared, shared.get("model") or {}, mapping)
    try:
        style = DefinitionDocument.read(definition_path).text
    except (OSError, DefinitionError):
        style = None
    definition_bytes = dump_json_like(shared, style).encode("utf-8")
    definition_in_repo = f"finetunes/{definition_id}.json"
    if include_definition:
        blob = remote.get(definition_in_repo, {}).get("blob")
        same = blob == _git_blob_sha1(definition_bytes)
        result.files.append(
            PublishedFile(str(definition_path), definition_path, definition_in_repo, len(definition_bytes), None,
                          "already there" if same else "definition",
                          hub_resolve_url(cfg.endpoint, repo, revision, definition_in_repo))
        )
        if not same:
            operations.append((definition_in_repo, definition_bytes))

    if dry_run:
        return result

    # 4. one commit
    if operations:
        with _xet_off(cfg.endpoint):
            if not exists:
                try:
                    api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
                except Exception as exc:
                    raise _map_hub_error(exc, repo, "creating") from None
                result.repo_created = True
            if revision != "main":
                with contextlib.suppress(Exception):
                    api.create_branch(repo, branch=revision, exist_ok=True)
            for path_in_repo, payload in operations:
                size = len(payload) if isinstance(payload, bytes) else Path(payload).stat().st_size
                emit(path_in_repo.rsplit("/", 1)[-1] if isinstance(payload, Path) else path_in_repo, size, 0, "uploading")
            known = {str(path): sha for _entry, path, _size, sha in locals_}
            try:
                with _hub_progress_bars_off():  # our own progress is shown; theirs would draw over it
                    def uploaded_so_far(path_in_repo: str, total: int, done: int) -> None:
                        emit(path_in_repo.rsplit("/", 1)[-1], total, done, "uploading")

                    adding = _counting_operation_class(CommitOperationAdd, uploaded_so_far)
                    commit = api.create_commit(
                        repo,
                        [_operation(adding, p, payload, known) for p, payload in operations],
                        commit_message=f"tunehub publish {definition_id}",
                        commit_description=f"{len(operations)} file(s) for the finetune definition '{definition_id}'.",
                        revision=revision,
                    )
            except Exception as exc:
                raise _map_hub_error(exc, repo, "uploading to") from None
        result.commit_url = getattr(commit, "commit_url", None)
        result.commit_oid = getattr(commit, "oid", None)
        for path_in_repo, payload in operations:
            size = len(payload) if isinstance(payload, bytes) else Path(payload).stat().st_size
            emit(path_in_repo.rsplit("/", 1)[-1] if isinstance(payload, Path) else path_in_repo, size, size, "uploaded")

    # 5. rewrite the local definition (or write its override), keeping what the user changed meanwhile
    if mapping:
        change = record_change(registry, definition_id, mutate)
        result.rewritten = change.written
        result.override = change.override
        result.definition_path = change.path
        result.definition = change.data
        result.definition_text = change.text
    return result
