"""The daemon itself: wiring, the main loop, signals, ``--once``.

Threads: the API server (one per request), the watcher (coalesced file batches), the
poller (remote checks), job workers (bounded per kind). The main thread handles
signals, folder re-watching, the rescan backstop and reconciliation. The registry is
shared behind one lock; jobs work on their own snapshot of it.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import threading
import time
from typing import Any

from tunehub import __version__
from tunehub.config import Config, load_config
from tunehub.daemon import JOURNAL_NAME, LOCK_NAME, SOCKET_NAME
from tunehub.daemon.api import ApiError, ApiServer
from tunehub.daemon.events import EventBus
from tunehub.daemon.journal import Journal
from tunehub.daemon.lock import HomeLock
from tunehub.daemon.logs import redact, setup_logging
from tunehub.daemon.notify import notify, reloading, watchdog_interval
from tunehub.daemon.policy import JOB_KINDS, DaemonSettings, settings_from_config
from tunehub.daemon.reconcile import Plan, fingerprint, plan_definition

__all__ = ["Daemon"]

logger = logging.getLogger("tunehub.daemon")

STOP_BUDGET = 6.0  # seconds given to running jobs at SIGTERM (the whole stop stays under 10 s)
PERIODIC_RECONCILE = 60.0
DONE_LOOP_GUARD = 60.0
KEEP_EVENTS = 20000

_EVENT_LEVELS = {
    "definition.invalid": logging.WARNING,
    "remote.definition_refused": logging.WARNING,
    "remote.definition_conflict": logging.WARNING,
    "downloads.paused": logging.WARNING,
    "job.progress": logging.DEBUG,
}


class Daemon:
    def __init__(
        self, home: str | os.PathLike[str] | None = None, *, log_to_stderr: bool = True, log_format: str | None = None
    ) -> None:
        self.cfg: Config = load_config(home)
        self.settings: DaemonSettings = settings_from_config(self.cfg)
        self.home = self.cfg.home
        self.state_dir = self.cfg.state_dir
        self.log_to_stderr = log_to_stderr
        self.log_format = log_format  # stderr: "text", "json", or None (text on a terminal)
        self.lock = HomeLock(self.state_dir / LOCK_NAME)
        self.started = time.time()
        self.state = "starting"
        self._registry_lock = threading.RLock()
        self.registry: Any = None
        self._plans: dict[str, Plan] = {}
        self._blocked: dict[str, tuple[str, str]] = {}  # id -> (state shown, why)
        self._wake = threading.Event()
        self._stop_requested = False
        self._reload_requested = False
        self._reconcile_at: float | None = None
        self._downloads_paused: str | None = None
        self._outdated: dict[str, list[str]] = {}  # id -> files the Hub changed (tunehub.disk.update)
        self._outdated_versions: dict[str, list[str]] = {}  # id -> "name@sha" of those new versions
        self._update_check_at = 0.0
        self._update_checking = threading.Lock()
        self.journal: Journal | None = None
        self.events: EventBus | None = None
        self.watcher: Any = None
        self.poller: Any = None
        self.runner: Any = None
        self.api: ApiServer | None = None

    # --- setup ---------------------------------------------------------------------
    def _setup(self) -> None:
        self.lock.acquire()
        os.chmod(self.state_dir, 0o700)
        setup_logging(self.state_dir, to_stderr=self.log_to_stderr, stderr_format=self.log_format)
        if "huggingface.co" not in self.cfg.endpoint:
            os.environ.setdefault("HF_HUB_DISABLE_XET", "1")  # plain LFS against other Hub servers
        self.journal = Journal(self.state_dir / JOURNAL_NAME)
        self.events = EventBus(self.journal, on_event=self._log_event)
        requeued = self.journal.requeue_interrupted()
        if requeued:
            self.events.publish("jobs.requeued", jobs=requeued, reason="the daemon stopped while they ran")
        self._remove_dead_temp_files()
        self._load_registry()
        first_run = self.journal.get_meta("initialized") is None
        with self._registry_lock:
            ids = list(self.registry.definitions)
        self.journal.mark_seen(ids, baseline=first_run)
        self.journal.set_meta("initialized", str(time.time()))
        from tunehub.daemon.jobs import JobRunner
        from tunehub.daemon.poller import RemotePoller

        self.runner = JobRunner(
            self.journal, self.events, lambda: (self.cfg, self.settings), self._on_job_finished, self._downloads_allowed,
            registry_source=self._registry_snapshot,
        )
        self.poller = RemotePoller(self.cfg, self.settings.remotes, self.journal, self.events, self._on_remote_change)

    def _remove_dead_temp_files(self) -> None:
        """Temp files of atomic writes whose writer died (a crash mid-write) are garbage."""
        from tunehub.safeio import remove_dead_temp_files

        folders = [*self.cfg.weights_dirs, *self.cfg.user_definition_dirs, self.cfg.remote_dir]
        if self.cfg.remote_dir.is_dir():
            folders.extend(p for p in self.cfg.remote_dir.iterdir() if p.is_dir())
        removed = [str(path) for path in remove_dead_temp_files(folders)]
        if removed and self.events is not None:
            self.events.publish("cleanup.removed", files=removed[:50], count=len(removed), reason="temp files of a writer that died")

    def _load_registry(self) -> None:
        from tunehub.registry import Registry

        registry = Registry.load(self.cfg)
        with self._registry_lock:
            self.registry = registry
        for definition in registry.definitions.values():
            if not definition.valid and definition.origin.value != "builtin":
                self._report_invalid(definition)

    def _registry_snapshot(self) -> Any:
        """What a job works on: the registry as the watcher keeps it, copied (reloads go on meanwhile)."""
        with self._registry_lock:
            return self.registry.snapshot()

    def _watched_folders(self) -> list[Any]:
        from tunehub.daemon.watcher import WatchedFolder

        folders = [WatchedFolder(path, "definitions") for path in self.cfg.user_definition_dirs]
        folders.append(WatchedFolder(self.cfg.remote_dir, "definitions", recursive=True))
        folders.extend(WatchedFolder(path, "weights") for path in self.cfg.weights_dirs)
        return folders

    # --- events and logs -------------------------------------------------------------
    def _log_event(self, event: dict[str, Any]) -> None:
        level = _EVENT_LEVELS.get(event["type"], logging.INFO)
        if event["type"].startswith("job.") and event["type"] not in ("job.queued",):
            level = min(level, logging.DEBUG)  # the job runner logs its own readable lines
        fields = {("event_id" if k == "id" else k): v for k, v in event.items() if k not in ("time", "type")}
        logger.log(level, redact(event["type"]), extra={"event": event["type"], "fields": fields})

    def _report_invalid(self, definition: Any) -> None:
        problems = [str(p) for p in definition.problems]
        if self.events is not None:
            self.events.publish("definition.invalid", definition=definition.id, file=str(definition.path), problems=problems)
        else:
            logger.warning(f"invalid definition {definition.id}: {'; '.join(problems)}", extra={"event": "definition.invalid"})

    # --- watcher and poller callbacks ------------------------------------------------
    def _on_batch(self, batch: Any) -> None:
        assert self.events is not None and self.journal is not None
        changes: list[tuple[str, str, Any]] = []
        need_full_reload = False
        with self._registry_lock:
            for path in sorted(batch.definitions):
                before = path.stem in self.registry.definitions
                if os.path.lexists(path):  # a broken link is reported by the registry, not taken for a removal
                    definition_id = self.registry.reload_file(path)
                    if definition_id is None:
                        if self.cfg.remote_dir in path.parents:
                            need_full_reload = True  # a new remote folder: the registry's folder list changed
                        continue
                    change = "changed" if before else "added"
                else:
                    definition_id = self.registry.remove_file(path)
                    if definition_id is None:
                        continue
                    change = "changed" if definition_id in self.registry.definitions else "removed"
                changes.append((change, definition_id, self.registry.definitions.get(definition_id)))
        if need_full_reload:
            with self._registry_lock:
                known = set(self.registry.definitions)
            self._load_registry()
            with self._registry_lock:
                appeared = [
                    ("added", d.id, d) for d in self.registry.definitions.values() if d.id not in known
                ]
            changes.extend(appeared)
            self.events.publish("registry.reloaded", reason="new remote folder")
        new_ids = [definition_id for change, definition_id, _ in changes if change == "added"]
        if new_ids:
            self.journal.mark_seen(new_ids, baseline=False)
        for change, definition_id, definition in changes:
            if definition is not None and not definition.valid:
                self._report_invalid(definition)
            else:
                self.events.publish(f"definition.{change}", definition=definition_id)
        if batch.weights:
            self.events.publish("weights.changed", files=sorted(p.name for p in batch.weights)[:50], count=len(batch.weights))
        if self.poller is not None and any(self.cfg.remote_dir in path.parents for path in batch.definitions):
            self.poller.recheck_conflicts()  # an edit in conflict may parse now
        if changes or batch.weights or need_full_reload:
            self.request_reconcile()

    def _on_remote_change(self, result: Any) -> None:
        assert self.journal is not None
        ids = [path.stem for path in result.written]
        if ids:
            self.journal.mark_seen(ids, baseline=bool(getattr(result, "first_fetch", False)))
        # Apply now rather than waiting for the watcher, so --once and status see it at once.
        batch_paths = set(result.written)
        from tunehub.daemon.watcher import Batch

        self._on_batch(Batch(batch_paths, set(), reason="remote"))
        self.request_reconcile()

    def _on_job_finished(self, job: dict[str, Any], outcome: str) -> None:
        if job["kind"] == "pull" and self.journal is not None:
            # A pull that ran out of space waits for it (retried without using attempts): say so in
            # /status, as the min_free_gb pause does; the next pull that completes clears it.
            latest = self.journal.get_job(job["id"]) or {}
            error = latest.get("last_error") or ""
            if outcome == "queued" and error.startswith("DiskFullError"):
                self._downloads_paused = f"downloads paused: {error.split(': ', 1)[1]} (retried every 30 s)"
            elif outcome == "done" and self._downloads_paused and self._downloads_paused.endswith("(retried every 30 s)"):
                self._downloads_paused = None

        # Re-read the definition's files now: the job may have rewritten them, and the
        # next reconcile must not plan on the old content.
        if job["kind"] == "pull" and outcome == "done" and (job.get("params") or {}).get("update"):
            self._outdated.pop(job["definition_id"], None)
            self._outdated_versions.pop(job["definition_id"], None)
        with self._registry_lock:
            definition = self.registry.definitions.get(job["definition_id"])
            if definition is not None:
                for path in list(definition.files):
                    self.registry.reload_file(path)
        self.request_reconcile(0.0)

    def _downloads_allowed(self) -> bool:
        if self.settings.min_free_gb <= 0:
            return True  # a disk-full pull's message stays until a pull completes (_on_job_finished)
        folder = self.cfg.download_dir
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        free_gb = shutil.disk_usage(folder).free / 1e9
        if free_gb < self.settings.min_free_gb:
            message = (
                f"downloads paused: {free_gb:.1f} GB free in {self.cfg.download_dir}, "
                f"below min_free_gb = {self.settings.min_free_gb:g}"
            )
            if self._downloads_paused is None and self.events is not None:
                self.events.publish("downloads.paused", reason=message, free_gb=round(free_gb, 2))
            self._downloads_paused = message
            return False
        if self._downloads_paused is not None and self.events is not None:
            self.events.publish("downloads.resumed", free_gb=round(free_gb, 2))
        self._downloads_paused = None
        return True

    # --- reconcile -----------------------------------------------------------------
    def request_reconcile(self, delay: float = 0.05) -> None:
        at = time.monotonic() + delay
        if self._reconcile_at is None or at < self._reconcile_at:
            self._reconcile_at = at
        self._wake.set()

    def reconcile(self) -> dict[str, Plan]:
        assert self.journal is not None and self.events is not None
        seen = self.journal.seen_ids()
        from tunehub.disk.remove import removed_marks

        removed = removed_marks(self.cfg)
        plans: dict[str, Plan] = {}
        with self._registry_lock:
            registry = self.registry
            for definition in list(registry.definitions.values()):
                plans[definition.id] = plan_definition(
                    registry, definition, self.settings, is_new=seen.get(definition.id) is False,
                    quantization=self.cfg.quantization, removed=definition.id in removed,
                    updates=self._outdated.get(definition.id),
                )
        blocked: dict[str, tuple[str, str]] = {}
        queued = 0
        for plan in plans.values():
            if not plan.managed or not plan.needs:
                continue
            if self.journal.active_job_for(plan.id) is not None:
                continue
            kind = plan.needs[0]
            last = self.journal.last_job(kind, plan.id)
            params = dict(plan.params.get(kind, {}))
            if params.get("update"):  # which versions: a newer commit is a new job
                params["versions"] = self._outdated_versions.get(plan.id, [])
            if last is not None and last["fingerprint"] == plan.fingerprint and (last["params"] or {}) == params:
                if last["state"] in ("failed", "cancelled"):
                    blocked[plan.id] = ("failed", f"{kind} job {last['id']} {last['state']}: {last['last_error'] or ''}".strip())
                    continue
                if last["state"] == "done" and time.time() - (last["finished"] or 0) < DONE_LOOP_GUARD:
                    blocked[plan.id] = ("waiting", f"{kind} job {last['id']} finished but {kind} is still needed; will check again")
                    continue
            job = self.journal.add_job(
                kind, plan.id, params, fingerprint=plan.fingerprint,
                max_attempts=self.settings.max_attempts,
            )
            queued += 1
            self.events.publish("job.queued", job=job["id"], kind=kind, definition=plan.id, origin="reconcile")
        self._plans = plans
        self._blocked = blocked
        if queued and self.runner is not None:
            self.runner.wake()
        return plans

    # --- updates (tunehub outdated) ---------------------------------------------------
    def check_updates(self) -> None:
        """Ask the Hub which pulled files changed (one request per repo revision); mark them."""
        from tunehub.disk.update import check_outdated

        if not self._update_checking.acquire(blocking=False):
            return
        try:
            registry = self._registry_snapshot()  # a snapshot, as jobs take: the watcher may edit the shared one
            managed = [d.id for d in registry.definitions.values()
                       if d.valid and d.visible and d.origin.value != "builtin"]
            report = check_outdated(self.cfg, registry, managed, hash_unknown=False)  # no hashing storm in the background
            changed = {key: [f for f in files if f.status == "changed"] for key, files in report.by_definition().items()}
            outdated = {key: sorted({f.path.name for f in files}) for key, files in changed.items() if files}
            self._outdated_versions = {
                key: sorted(f"{f.path.name}@{f.remote_sha256 or f.remote_git_sha1}" for f in files)
                for key, files in changed.items() if files
            }
            for key in sorted(set(outdated) - set(self._outdated)):
                if self.events is not None:
                    self.events.publish("definition.update_available", definition=key, files=outdated[key])
            self._outdated = outdated
            for problem in report.problems:
                logger.warning(redact(problem), extra={"event": "update.check"})
        except Exception:
            logger.exception("update check failed", extra={"event": "update.error"})
        finally:
            self._update_checking.release()
        self.request_reconcile(0.0)

    # --- API -------------------------------------------------------------------------
    def api_health(self) -> dict[str, Any]:
        return {
            "ok": self.state == "running", "state": self.state, "pid": os.getpid(), "version": __version__,
            "home": str(self.home), "uptime": round(time.time() - self.started, 3),
        }

    def _definition_status(self, definition: Any, active: dict[str, dict[str, Any]], remote_files: dict[str, dict[str, Any]]) -> dict[str, Any]:
        plan = self._plans.get(definition.id)
        current = plan is not None and plan.fingerprint == fingerprint(definition.data)
        job = active.get(definition.id)
        upstream = remote_files.get(str(definition.path))
        if upstream is not None and upstream["upstream"] == "conflict":
            state = "conflict"  # the user's edit does not parse; the remote's change waits
        elif not definition.valid:
            state = "invalid"
        elif not definition.visible:
            state = "hidden"
        elif job is not None:
            state = "syncing"
        elif not current:
            state = "checking"
        elif definition.id in self._blocked:
            state = self._blocked[definition.id][0]
        elif plan is not None and plan.needs:
            state = "pending"
        elif plan is not None and current and plan.removed:
            state = "removed"
        elif plan is not None and current and plan.updates:
            state = "update available"
        elif plan is not None and any(not f["present"] for f in plan.files):
            state = "missing"
        else:
            state = "ready"
        entry: dict[str, Any] = {
            "id": definition.id, "name": definition.name, "architecture": definition.architecture,
            "origin": definition.origin.value, "valid": definition.valid, "visible": definition.visible,
            "path": str(definition.path), "state": state,
            "problems": [str(p) for p in definition.problems],
        }
        if plan is not None and current:
            entry["needs"] = plan.needs
            entry["files"] = plan.files
            if plan.note:
                entry["note"] = plan.note
            if plan.updates:
                entry["update_available"] = plan.updates
        if definition.id in self._blocked:
            entry["error"] = self._blocked[definition.id][1]
        if state == "conflict":
            entry["error"] = upstream["problem"]
        if job is not None:
            entry["job"] = {"id": job["id"], "kind": job["kind"], "state": job["state"], "progress": job["progress"]}
        if upstream is not None:
            entry["remote"] = upstream
        return entry

    def api_status(self) -> dict[str, Any]:
        assert self.journal is not None and self.events is not None
        jobs = self.journal.jobs(limit=200)
        active = {}
        for job in jobs:
            if job["state"] in ("queued", "running"):
                active.setdefault(job["definition_id"], job)
        remotes = []
        remote_files: dict[str, dict[str, Any]] = {}
        for spec in self.settings.remotes:
            state = self.journal.remote(spec.repo)
            files = self.journal.remote_files(spec.repo)
            folder = self.cfg.remote_dir / spec.key
            for entry in files.values():
                remote_files[str(folder / entry["name"])] = {
                    "repo": spec.repo, "file": entry["path"], "upstream": entry["state"], "problem": entry["problem"],
                }
            remotes.append({
                "repo": spec.repo, "path": spec.path, "revision": spec.revision, "interval": spec.interval,
                **{k: state.get(k) for k in ("sha", "state", "last_check", "last_ok", "failures", "last_error", "next_check", "requests")},
                "files": sum(1 for f in files.values() if f["state"] == "present"),
                "removed": sorted(f["path"] for f in files.values() if f["state"] == "gone"),
                "refused": [{"file": f["path"], "problem": f["problem"]} for f in files.values() if f["state"] == "refused"],
            })
        with self._registry_lock:
            definitions = [
                self._definition_status(d, active, remote_files) for d in self.registry.definitions.values()
            ]
        definitions.sort(key=lambda d: d["id"])
        counts: dict[str, int] = {}
        for entry in definitions:
            counts[entry["state"]] = counts.get(entry["state"], 0) + 1
        from tunehub.daemon.jobs import capability_status

        return {
            "daemon": self.api_health(),
            "policy": {
                "pull": self.settings.pull, "quantize": self.settings.quantize, "publish": self.settings.publish,
                "min_free_gb": self.settings.min_free_gb,
            },
            "capabilities": capability_status(),
            "downloads_paused": self._downloads_paused,
            "registry_loads": _registry_loads(),
            "counts": counts,
            "definitions": definitions,
            "jobs": jobs,
            "remotes": remotes,
            "last_event_id": self.events.last_id,
        }

    def api_events(self, since: int, timeout: float) -> dict[str, Any]:
        assert self.events is not None
        return self.events.since(since, timeout)

    def api_jobs(self) -> dict[str, Any]:
        assert self.journal is not None
        return {"jobs": self.journal.jobs(limit=500)}

    def api_submit(self, body: dict[str, Any]) -> dict[str, Any]:
        assert self.journal is not None and self.events is not None
        kind = body.get("kind")
        definition_id = body.get("definition_id")
        params = body.get("params") or {}
        if kind not in JOB_KINDS:
            raise ApiError(400, f"'kind' must be one of {', '.join(JOB_KINDS)}; got {kind!r}")
        if not isinstance(definition_id, str) or not definition_id:
            raise ApiError(400, "'definition_id' must be a definition id")
        if not isinstance(params, dict):
            raise ApiError(400, "'params' must be an object")
        with self._registry_lock:
            definition = self.registry.definitions.get(definition_id)
            if definition is None:
                raise ApiError(404, f"unknown definition '{definition_id}'")
            fp = fingerprint(definition.data)
        job = self.journal.add_job(
            kind, definition_id, params, fingerprint=fp, origin="api", max_attempts=self.settings.max_attempts
        )
        self.events.publish("job.queued", job=job["id"], kind=kind, definition=definition_id, origin="api")
        if self.runner is not None:
            self.runner.wake()
        return job

    def api_cancel(self, job_id: int) -> dict[str, Any]:
        assert self.journal is not None and self.events is not None
        state = self.journal.cancel_job(job_id)
        if state is None:
            raise ApiError(404, f"no job {job_id}")
        if state == "cancelled":
            self.events.publish("job.cancelled", job=job_id)
        elif state == "running":
            self.runner.cancel(job_id)
            state = "cancelling"
        return {"id": job_id, "state": state}

    # --- signals -----------------------------------------------------------------------
    def _on_stop_signal(self, signum: int, _frame: Any) -> None:
        self._stop_requested = True
        self._wake.set()

    def _on_hup(self, _signum: int, _frame: Any) -> None:
        self._reload_requested = True
        self._wake.set()

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_hup)

    def reload_config(self) -> None:
        """SIGHUP: re-read tunehub.toml; a bad file is reported and the old settings stay."""
        assert self.events is not None
        reloading()
        try:
            cfg = load_config(self.home)
            settings = settings_from_config(cfg)
        except Exception as exc:
            self.events.publish("config.error", error=redact(str(exc)))
            logger.error(f"configuration not reloaded: {redact(str(exc))}", extra={"event": "config.error"})
            notify("READY=1")
            return
        self.cfg, self.settings = cfg, settings
        self._load_registry()
        if self.watcher is not None:
            self.watcher.set_folders(self._watched_folders())
        if self.poller is not None:
            self.poller.set_remotes(settings.remotes, cfg)
        self.events.publish("config.reloaded", remotes=[r.repo for r in settings.remotes])
        self.request_reconcile()
        notify("READY=1", "STATUS=configuration reloaded")

    # --- run ---------------------------------------------------------------------------
    def run(self) -> int:
        self._setup()
        assert self.events is not None and self.journal is not None
        self._install_signals()
        from tunehub.daemon.watcher import FolderWatcher

        self.watcher = FolderWatcher(self._watched_folders(), self._on_batch)
        self.watcher.prime()
        self.watcher.start()
        self.api = ApiServer(self.state_dir / SOCKET_NAME, self)
        self.api.start()
        self.state = "running"
        self.poller.start()
        self.runner.start()
        self.request_reconcile(0.0)
        self.events.publish("daemon.started", pid=os.getpid(), version=__version__, home=str(self.home))
        notify("READY=1", f"STATUS=watching {len(self.registry.definitions)} definitions", f"MAINPID={os.getpid()}")
        ping_every = watchdog_interval()
        last_ping = last_rescan = last_reconcile = time.monotonic()
        try:
            while not self._stop_requested:
                now = time.monotonic()
                timeout = 1.0
                if self._reconcile_at is not None:
                    timeout = max(0.0, min(timeout, self._reconcile_at - now))
                self._wake.wait(timeout)
                self._wake.clear()
                if self._stop_requested:
                    break
                if self._reload_requested:
                    self._reload_requested = False
                    self.reload_config()
                now = time.monotonic()
                self.watcher.check_folders()
                if now - last_rescan >= self.settings.rescan_interval:
                    last_rescan = now
                    self.watcher.rescan()
                    self.journal.trim_events(KEEP_EVENTS)  # progress events of long transfers add up
                if now - last_reconcile >= PERIODIC_RECONCILE:
                    self.request_reconcile(0.0)
                if self.settings.update != "off" and now >= self._update_check_at:
                    self._update_check_at = now + self.settings.update_interval
                    threading.Thread(target=self.check_updates, name="update-check", daemon=True).start()
                if self._reconcile_at is not None and time.monotonic() >= self._reconcile_at:
                    self._reconcile_at = None
                    last_reconcile = time.monotonic()
                    try:
                        self.reconcile()
                    except Exception:
                        logger.exception("reconcile failed", extra={"event": "reconcile.error"})
                if ping_every and now - last_ping >= ping_every:
                    notify("WATCHDOG=1")
                    last_ping = now
        finally:
            self.shutdown()
        return 0

    def shutdown(self) -> None:
        self.state = "stopping"
        notify("STOPPING=1")
        if self.events is not None:
            self.events.publish("daemon.stopping", pid=os.getpid())
        still_running: list[int] = []
        if self.runner is not None:
            still_running = self.runner.stop(STOP_BUDGET)
        for part in (self.poller, self.watcher):
            if part is not None:
                try:
                    part.stop()
                except Exception:
                    logger.exception("stopping a part failed", extra={"event": "daemon.error"})
        if self.api is not None:
            self.api.stop()
        if self.journal is not None:
            if still_running:
                self.journal.requeue_interrupted()
            if self.events is not None:
                self.events.publish("daemon.stopped", pid=os.getpid(), interrupted=still_running)
                self.events.wake_all()
        self.lock.release()

    # --- once ----------------------------------------------------------------------------
    def run_once(self) -> int:
        """One complete pass: fetch remotes, reconcile, run every needed job; 0 if all is in its desired state."""
        self._setup()
        assert self.journal is not None and self.events is not None
        self.state = "running"
        try:
            remote_failures = []
            for spec in self.settings.remotes:
                result = self.poller.check(spec)
                if not result.ok:
                    remote_failures.append(f"remote {spec.repo}: {result.error}")
            if self.settings.update == "auto":
                self.check_updates()
            attempted: set[int] = set()
            outcomes: dict[int, str] = {}
            for _round in range(50):
                self._load_registry_quietly()
                self.reconcile()
                queued = [j for j in self.journal.jobs(states=("queued",), limit=1000) if j["id"] not in attempted]
                if not queued:
                    break
                for job in sorted(queued, key=lambda j: j["id"]):
                    attempted.add(job["id"])
                    if job["kind"] == "pull" and not self._downloads_allowed():
                        outcomes[job["id"]] = "paused"
                        continue
                    claimed = self.journal.claim_job(job["id"])
                    if claimed is None:
                        continue
                    outcomes[job["id"]] = self.runner.run_job(claimed)
                    self._load_registry_quietly()
            self._load_registry_quietly()
            plans = self.reconcile()
            return self._print_once_summary(plans, remote_failures, outcomes)
        finally:
            self.state = "stopping"
            self.lock.release()

    def _load_registry_quietly(self) -> None:
        from tunehub.registry import Registry

        registry = Registry.load(self.cfg)
        with self._registry_lock:
            self.registry = registry

    def _print_once_summary(self, plans: dict[str, Plan], remote_failures: list[str], outcomes: dict[int, str]) -> int:
        assert self.journal is not None
        problems = list(remote_failures)
        for job_id, outcome in sorted(outcomes.items()):
            if outcome != "done":
                job = self.journal.get_job(job_id) or {}
                problems.append(
                    f"job {job_id} {job.get('kind')} {job.get('definition_id')}: {outcome}"
                    + (f": {job.get('last_error')}" if job.get("last_error") else "")
                )
        for plan in plans.values():
            if plan.managed and plan.needs:
                problems.append(f"{plan.id}: still needs {', '.join(plan.needs)}" + (f" ({self._blocked[plan.id][1]})" if plan.id in self._blocked else ""))
        invalid = [p for p in plans.values() if not p.valid and p.origin != "builtin"]
        done = sum(1 for outcome in outcomes.values() if outcome == "done")
        print(f"tunehub daemon --once: {len(plans)} definitions, {done} job(s) done, {len(problems)} problem(s)")
        for plan in invalid:
            print(f"  skipped (invalid): {plan.id}: {'; '.join(plan.problems)}")
        for problem in problems:
            print(f"  {problem}", file=sys.stdout)
        if self._downloads_paused:
            print(f"  {self._downloads_paused}")
        return 1 if problems else 0


def _registry_loads() -> int:
    from tunehub.registry import Registry

    return Registry.loads
