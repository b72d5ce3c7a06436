"""Poll subscribed remote repos (``[[remote]]``) for new and changed definitions.

One request per remote per interval when nothing changed: ``repo_info`` of the
revision with file metadata answers the commit sha *and* every file's blob id, so an
unchanged sha ends the check, and a changed one says exactly which definition files
to fetch. Fetched files are validated (a remote definition may not name absolute
paths or ``..``) before they are stored in ``<home>/remote/<ns>--<name>/``; the local
overlay (see :mod:`tunehub.daemon.overlay`) is re-applied. Errors back off
exponentially with jitter and honour ``Retry-After``; an unreachable remote keeps
what was fetched before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunehub.config import Config
from tunehub.daemon.events import EventBus
from tunehub.daemon.journal import Journal
from tunehub.daemon.logs import redact
from tunehub.daemon.overlay import rebase
from tunehub.daemon.policy import RemoteSpec
from tunehub.errors import ConcurrentEditError, IntegrityError
from tunehub.safeio import DefinitionDocument, atomic_write_bytes, dump_json_like

__all__ = ["RemotePoller", "CheckResult", "validate_remote_definition"]

logger = logging.getLogger("tunehub.daemon")

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+ -]*\.json$")
_URL_KEYS = ("URLs", "URLs2", "preload_URLs")
PENDING_SUFFIX = ".tunehub-remote"  # the remote's new version beside a working file that does not parse


def git_blob_sha1(raw: bytes) -> str:
    """The git blob id of ``raw``: what the Hub returns for a regular (non-LFS) file."""
    return hashlib.sha1(b"blob %d\0" % len(raw) + raw).hexdigest()


@dataclass
class CheckResult:
    repo: str
    changed: bool = False
    ok: bool = True
    requests: int = 0
    written: list[Path] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    error: str | None = None
    first_fetch: bool = False


def _bad_path(entry: str) -> bool:
    from tunehub.hub.urls import is_url

    if is_url(entry):
        return False
    posix = entry.replace("\\", "/")
    return posix.startswith("/") or bool(re.match(r"^[A-Za-z]:", posix)) or ".." in posix.split("/")


def validate_remote_definition(name: str, raw: bytes, max_bytes: int = 1 << 20) -> tuple[dict[str, Any] | None, str | None]:
    """Parse and check a fetched definition; returns (data, None) or (None, why refused)."""
    if not _SAFE_NAME.match(name):
        return None, f"file name {name!r} is not a plain definition name"
    from tunehub.registry.reading import parse_definition_bytes

    data, problem = parse_definition_bytes(raw, max_bytes)
    if problem is not None:
        return None, problem
    if not isinstance(data, dict):
        return None, "the top level must be a JSON object"
    model = data.get("model")
    if not isinstance(model, dict):
        return None, "key 'model' must be an object"
    for key in _URL_KEYS:
        value = model.get(key)
        entries = value if isinstance(value, list) else []
        for entry in entries:
            if isinstance(entry, str) and _bad_path(entry):
                return None, f"model.{key}: '{entry}' is an absolute path or uses '..' (refused in a remote definition)"
    modules = model.get("modules")
    if isinstance(modules, list):
        for item in modules:
            for entry in item if isinstance(item, list) else []:
                if isinstance(entry, str) and _bad_path(entry):
                    return None, f"model.modules: '{entry}' is an absolute path or uses '..' (refused in a remote definition)"
    return data, None


def _status_of(exc: BaseException) -> tuple[int | None, float | None]:
    """HTTP status and Retry-After (s) of a huggingface_hub error, if it carries a response."""
    response = getattr(exc, "response", None)
    if response is None:
        return None, None
    status = getattr(response, "status_code", None)
    retry_after: float | None = None
    headers = getattr(response, "headers", None) or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    if value:
        try:
            retry_after = float(value)
        except ValueError:
            retry_after = None
    return status, retry_after


class RemotePoller:
    """Checks each remote when due, on its own thread; ``check(spec)`` runs one check now."""

    def __init__(
        self,
        cfg: Config,
        remotes: list[RemoteSpec],
        journal: Journal,
        events: EventBus,
        on_change: Callable[[CheckResult], None],
    ) -> None:
        self.cfg = cfg
        self.remotes = list(remotes)
        self.journal = journal
        self.events = events
        self.on_change = on_change
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._due: dict[str, float] = {}
        self._checking = threading.Lock()

    # --- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        now = time.time()
        for spec in self.remotes:
            stored = self.journal.remote(spec.repo).get("next_check")
            # After a restart, a remote in backoff keeps its wait; others are checked now.
            self._due[spec.repo] = stored if stored and stored > now and self.journal.remote(spec.repo)["failures"] else now
        self._thread = threading.Thread(target=self._run, name="poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def set_remotes(self, remotes: list[RemoteSpec], cfg: Config) -> None:
        self.cfg = cfg
        self.remotes = list(remotes)
        now = time.time()
        for spec in self.remotes:
            self._due.setdefault(spec.repo, now)
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            now = time.time()
            due_specs = [s for s in self.remotes if self._due.get(s.repo, now) <= now]
            for spec in due_specs:
                if self._stopping.is_set():
                    return
                self.check(spec)
            upcoming = [self._due.get(s.repo, now) for s in self.remotes]
            wait = min(upcoming) - time.time() if upcoming else 60.0
            self._wake.wait(timeout=max(0.05, min(wait, 60.0)))
            self._wake.clear()

    # --- one check -----------------------------------------------------------------
    def check(self, spec: RemoteSpec) -> CheckResult:
        with self._checking:
            result = self._check(spec)
        if result.changed:
            self.on_change(result)
        return result

    def _api(self) -> Any:
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.cfg.endpoint)

    def _check(self, spec: RemoteSpec) -> CheckResult:
        result = CheckResult(spec.repo)
        state = self.journal.remote(spec.repo)
        now = time.time()
        try:
            api = self._api()
            result.requests += 1
            self.journal.update_remote(spec.repo, requests=int(state.get("requests") or 0) + 1, last_check=now)
            info = api.repo_info(spec.repo, revision=spec.revision, repo_type=spec.repo_type, files_metadata=True, timeout=30)
            sha = info.sha
            siblings = list(info.siblings or [])
            if sha == state.get("sha") and self._working_complete(spec):
                self._ok(spec, sha, now)
                return result
            result.first_fetch = state.get("sha") is None
            self._sync_files(api, spec, sha, siblings, result)
            self._ok(spec, sha, now)
            result.changed = bool(result.written or result.removed or result.refused)
            self.events.publish(
                "remote.changed", repo=spec.repo, sha=sha, written=[p.name for p in result.written],
                removed=result.removed, refused=result.refused,
            )
        except Exception as exc:  # every failure of a check is reported and backed off, never fatal
            self._failed(spec, exc, now, result)
        return result

    def _ok(self, spec: RemoteSpec, sha: str | None, now: float) -> None:
        next_check = now + spec.interval
        self._due[spec.repo] = next_check
        previous = self.journal.remote(spec.repo)
        self.journal.update_remote(
            spec.repo, sha=sha, state="ok", last_ok=now, failures=0, last_error=None, next_check=next_check
        )
        if previous.get("state") != "ok":
            self.events.publish("remote.ok", repo=spec.repo, sha=sha)

    def _failed(self, spec: RemoteSpec, exc: BaseException, now: float, result: CheckResult) -> None:
        status, retry_after = _status_of(exc)
        failures = int(self.journal.remote(spec.repo).get("failures") or 0) + 1
        if isinstance(exc, IntegrityError):
            state = "backoff"
            message = str(exc)
        elif status is None:
            state = "unreachable"
            message = f"cannot reach {self.cfg.endpoint}: {type(exc).__name__}: {exc}"
        elif status == 429 or status >= 500:
            state = "backoff"
            message = f"HTTP {status} from {self.cfg.endpoint} for {spec.repo}"
        else:
            state = "error"
            message = f"HTTP {status} for {spec.repo}@{spec.revision}: {str(exc).splitlines()[0] if str(exc) else ''}"
        message = redact(message)
        base = min(spec.interval, 30.0)
        cap = max(spec.interval, 900.0)
        delay = min(cap, base * 2 ** (failures - 1)) * random.uniform(0.75, 1.25)
        if retry_after is not None:
            delay = max(delay, retry_after)
        if state == "error":
            delay = max(delay, spec.interval)  # a 404/401 will not fix itself faster than the interval
        next_check = now + delay
        self._due[spec.repo] = next_check
        self.journal.update_remote(
            spec.repo, state=state, failures=failures, last_error=message, next_check=next_check
        )
        result.ok = False
        result.error = message
        self.events.publish(
            "remote.error", repo=spec.repo, state=state, status=status, failures=failures,
            retry_in=round(delay, 2), retry_after=retry_after, error=message,
        )
        logger.warning(
            message, extra={"event": "remote.error", "fields": {"repo": spec.repo, "state": state, "retry_in": round(delay, 2)}}
        )

    # --- files ---------------------------------------------------------------------
    def folder(self, spec: RemoteSpec) -> Path:
        return self.cfg.remote_dir / spec.key

    def base_folder(self, spec: RemoteSpec) -> Path:
        return self.cfg.state_dir / "remote-base" / spec.key

    def _working_complete(self, spec: RemoteSpec) -> bool:
        for entry in self.journal.remote_files(spec.repo).values():
            if entry["state"] == "present" and not (self.folder(spec) / entry["name"]).is_file():
                return False
            if entry["state"] == "conflict":
                return False  # try again: the user may have fixed the edit
        return True

    def _wanted(self, spec: RemoteSpec, siblings: list[Any]) -> dict[str, tuple[str, str | None]]:
        prefix = f"{spec.path}/" if spec.path else ""
        wanted: dict[str, tuple[str, str | None]] = {}
        for sibling in siblings:
            path = sibling.rfilename
            if not path.endswith(".json") or not path.startswith(prefix):
                continue
            name = path.rsplit("/", 1)[-1]
            if name.startswith("."):
                continue
            wanted[path] = (name, getattr(sibling, "blob_id", None))
        return wanted

    def _sync_files(self, api: Any, spec: RemoteSpec, sha: str, siblings: list[Any], result: CheckResult) -> None:
        known = self.journal.remote_files(spec.repo)
        wanted = self._wanted(spec, siblings)
        names_taken: dict[str, str] = {}
        for path, (name, blob_id) in sorted(wanted.items()):
            if name in names_taken:
                problem = f"same file name as {names_taken[name]} (definitions are identified by file name)"
                self.journal.set_remote_file(spec.repo, path, name, blob_id, "refused", problem)
                result.refused.append(path)
                continue
            names_taken[name] = path
            entry = known.get(path)
            working = self.folder(spec) / name
            if entry and entry["blob_id"] == blob_id and blob_id and entry["state"] == "present" and working.is_file():
                continue
            if entry and entry["blob_id"] == blob_id and blob_id and entry["state"] == "refused":
                continue
            raw = self._download(api, spec, path, sha)
            result.requests += 1
            if blob_id and git_blob_sha1(raw) != blob_id:
                # a byte changed in transit or in the cache: fetch once more, bypassing the cache
                raw = self._download(api, spec, path, sha, force=True)
                result.requests += 1
                if git_blob_sha1(raw) != blob_id:
                    raise IntegrityError(
                        f"{spec.repo}: {path}: the fetched bytes do not match the Hub's blob id {blob_id} "
                        f"(got {git_blob_sha1(raw)}); not stored, fetched again at the next check"
                    )
            data, problem = validate_remote_definition(name, raw, self.cfg.max_definition_bytes)
            if data is None:
                self.journal.set_remote_file(spec.repo, path, name, blob_id, "refused", problem)
                result.refused.append(path)
                self.events.publish("remote.definition_refused", repo=spec.repo, file=path, problem=problem)
                logger.warning(
                    f"{spec.repo}: {path}: refused: {problem}",
                    extra={"event": "remote.refused", "fields": {"repo": spec.repo, "file": path}},
                )
                continue
            # Recorded before the file lands, so the watcher never sees it first and takes a
            # definition of a first fetch (the baseline) for a new one.
            self.journal.mark_seen([Path(name).stem], baseline=result.first_fetch)
            conflict = self._store(spec, name, raw, data)
            if conflict is not None:
                self.journal.set_remote_file(spec.repo, path, name, blob_id, "conflict", conflict)
                self.events.publish("remote.definition_conflict", repo=spec.repo, file=path, problem=conflict)
                logger.warning(
                    f"{spec.repo}: {path}: {conflict}",
                    extra={"event": "remote.conflict", "fields": {"repo": spec.repo, "file": path}},
                )
                continue
            self.journal.set_remote_file(spec.repo, path, name, blob_id, "present")
            result.written.append(working)
        for path, entry in known.items():
            if path not in wanted and entry["state"] != "gone":
                # Marked, not deleted: the working file and its weights stay.
                self.journal.set_remote_file(spec.repo, path, entry["name"], entry["blob_id"], "gone", "removed from the remote")
                result.removed.append(entry["name"])
                self.events.publish("remote.definition_removed", repo=spec.repo, file=path)

    def _download(self, api: Any, spec: RemoteSpec, path: str, sha: str, force: bool = False) -> bytes:
        from huggingface_hub import hf_hub_download

        local = hf_hub_download(
            spec.repo, path, revision=sha, repo_type=spec.repo_type, endpoint=self.cfg.endpoint,
            cache_dir=str(self.cfg.state_dir / "remote-cache"), force_download=force,
        )
        return Path(local).read_bytes()

    def _store(self, spec: RemoteSpec, name: str, raw: bytes, new_base: dict[str, Any]) -> str | None:
        """Write the pristine copy and the working file, re-applying this machine's overlay.

        Returns None, or why the working file was left alone: a file that does not parse is
        the user's half-finished edit, never overwritten. The remote's new version then waits
        beside it (``ID.json.tunehub-remote``) and the base stays old, so once the edit parses
        the next check rebases the user's changes onto it as usual.
        """
        base_path = self.base_folder(spec) / name
        working_path = self.folder(spec) / name
        old_base: dict[str, Any] | None = None
        if base_path.is_file():
            try:
                old_base = json.loads(base_path.read_text(encoding="utf-8-sig"))
            except ValueError:
                old_base = None
        for _attempt in range(5):
            doc: DefinitionDocument | None = None
            try:
                doc = DefinitionDocument.read(working_path)
            except FileNotFoundError:
                doc = None
            except Exception as exc:  # noqa: BLE001 - whatever makes it unreadable, it is the user's
                waiting = working_path.with_name(name + PENDING_SUFFIX)
                atomic_write_bytes(waiting, raw)
                reason = str(exc).replace(f"{working_path}: ", "") or type(exc).__name__
                return (
                    f"conflict: fix your edit: {working_path} does not parse ({reason}); it was left as it is, and "
                    f"the remote's new version waits in {waiting.name} until it parses"
                )
            merged = rebase(old_base, doc.data if doc else None, new_base)
            text = raw.decode("utf-8-sig") if merged == new_base else dump_json_like(merged, raw.decode("utf-8-sig"))
            try:
                if doc is None:
                    atomic_write_bytes(working_path, text.encode("utf-8"))
                else:
                    doc.write_text(text, merged)  # a save landing meanwhile is kept: re-read, re-merge
                break
            except ConcurrentEditError:
                continue
        else:
            raise ConcurrentEditError(f"{working_path} kept changing while the daemon updated it from {spec.repo}")
        atomic_write_bytes(base_path, raw)
        with contextlib.suppress(FileNotFoundError):
            working_path.with_name(name + PENDING_SUFFIX).unlink()
        return None

    def recheck_conflicts(self) -> None:
        """A working file changed: remotes with an edit in conflict are checked now (it may parse again)."""
        now = time.time()
        woken = False
        for spec in self.remotes:
            if any(entry["state"] == "conflict" for entry in self.journal.remote_files(spec.repo).values()):
                self._due[spec.repo] = now
                woken = True
        if woken:
            self._wake.set()
