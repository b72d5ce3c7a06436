"""Job execution: bounded workers per kind, retries with backoff, cancellation.

Executors call the other parts of tunehub (imported lazily so that the daemon starts
without torch): ``tunehub.flows.pull_definition``, ``tunehub.quant.flow.quantize_definition``,
``tunehub.hub.publish.publish`` and ``tunehub.inference.generate``. Each job gets a
fresh registry (a snapshot), so a long download never holds the daemon's registry.
A capability whose module is not installed fails its job with a message saying so;
nothing is faked. Jobs are idempotent: pull skips verified files and resumes partials,
quantize skips an existing output, publish asks the remote what it already has.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import random
import shutil
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tunehub.config import Config
from tunehub.daemon.events import EventBus
from tunehub.daemon.journal import Journal
from tunehub.daemon.logs import redact
from tunehub.daemon.policy import JOB_KINDS, DaemonSettings
from tunehub.errors import (
    ConfigError,
    DaemonError,
    DefinitionError,
    DiskFullError,
    HubAuthError,
    HubNotFoundError,
    QuantizationError,
)

__all__ = ["JobRunner", "JobCancelled", "CapabilityUnavailable", "EXECUTORS"]

logger = logging.getLogger("tunehub.daemon")

PROGRESS_EVERY = 0.5


class JobCancelled(Exception):
    """Raised inside a job (from its progress callback) when it must stop."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CapabilityUnavailable(DaemonError):
    """The part of tunehub a job needs is not installed or not built yet."""


# Errors that a retry will not fix: the job fails at once.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    CapabilityUnavailable,
    DefinitionError,
    ConfigError,
    HubAuthError,
    HubNotFoundError,
    QuantizationError,
)


@dataclass
class JobContext:
    job: dict[str, Any]
    cfg: Config
    settings: DaemonSettings
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str = ""
    on_progress: Callable[[dict[str, Any]], None] | None = None
    registry_source: Callable[[], Any] | None = None  # the daemon's registry, kept current file by file

    def progress(self, event: dict[str, Any]) -> None:
        if self.cancel.is_set():
            raise JobCancelled(self.cancel_reason or "cancelled")
        if self.on_progress is not None:
            self.on_progress(event)

    def registry(self) -> Any:
        if self.registry_source is not None:
            return self.registry_source()  # a snapshot: no folder is read again for a job
        from tunehub.registry import Registry

        return Registry.load(self.cfg)


def _capability(module: str, name: str, what: str) -> Callable[..., Any]:
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise CapabilityUnavailable(f"{what} is not available in this installation ({module} is missing)") from None
        raise CapabilityUnavailable(f"{what} needs {exc.name}, which is not installed: {exc}") from None
    function = getattr(loaded, name, None)
    if function is None:
        raise CapabilityUnavailable(f"{what} is not available in this installation ({module}.{name} is missing)")
    return function


def _summary(value: Any) -> Any:
    """A JSON-friendly summary of an executor's return value."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_summary(v) for v in value][:50]
    if isinstance(value, dict):
        return {str(k): _summary(v) for k, v in list(value.items())[:50]}
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return _summary(to_json())
    if hasattr(value, "__dataclass_fields__"):
        return {k: _summary(getattr(value, k)) for k in value.__dataclass_fields__}
    return str(value)


def run_pull(ctx: JobContext) -> Any:
    pull = _capability("tunehub.flows", "pull_definition", "pulling (tunehub.flows)")
    params = ctx.job["params"]
    if params.get("update"):
        from tunehub.disk.update import update

        # the old version goes once the new one is verified, unless keep_previous keeps it
        return update(ctx.cfg, ctx.registry(), [ctx.job["definition_id"]], remove_old=True,
                      keep_previous=ctx.settings.keep_previous, progress=ctx.progress)
    extra: dict[str, Any] = {}
    if ctx.job.get("origin") == "reconcile":
        extra["clear_removed_mark"] = False  # only the user's own pull lifts "removed by you"
    # Quantization is its own journaled job (one at a time), not part of the download.
    return pull(
        ctx.cfg, ctx.registry(), ctx.job["definition_id"], quantize=False,
        quantization=params.get("quantization"), dtype=params.get("dtype"),
        all_variants=bool(params.get("all_variants", False)), progress=ctx.progress, **extra,
    )


def run_quantize(ctx: JobContext) -> Any:
    quantize_definition = _capability("tunehub.quant.flow", "quantize_definition", "quantization (tunehub.quant.flow)")
    params = ctx.job["params"]
    return quantize_definition(
        ctx.cfg, ctx.registry(), ctx.job["definition_id"], dtype=params.get("dtype"),
        device=params.get("device", "auto"), force=bool(params.get("force", False)), progress=ctx.progress,
    )


def run_publish(ctx: JobContext) -> Any:
    publish = _capability("tunehub.hub.publish", "publish", "publishing (tunehub.hub.publish)")
    params = ctx.job["params"]
    repo = params.get("repo") or ctx.settings.publish
    if not repo:
        raise ConfigError("a publish job needs a repo: set [daemon] publish = \"ns/name\" or pass repo")
    return publish(
        ctx.cfg, ctx.registry(), ctx.job["definition_id"], repo,
        private=bool(params.get("private", ctx.settings.publish_private)),
        revision=params.get("revision", "main"),
        include_definition=bool(params.get("include_definition", False)), progress=ctx.progress,
    )


def run_generate(ctx: JobContext) -> Any:
    # Here, or on the Ray cluster of [cluster]: one runner interface (tunehub.cluster).
    from tunehub.cluster import generate_runner

    return generate_runner(ctx.cfg).run(ctx)


EXECUTORS: dict[str, Callable[[JobContext], Any]] = {
    "pull": run_pull,
    "quantize": run_quantize,
    "publish": run_publish,
    "generate": run_generate,
}


def capability_status() -> dict[str, str | None]:
    """For /status: which job kinds can run here (None) and why not (a message)."""
    checks = {
        "pull": ("tunehub.hub.pull", "pull"),
        "quantize": ("tunehub.quant.flow", "quantize_definition"),
        "publish": ("tunehub.hub.publish", "publish"),
        "generate": ("tunehub.inference", "generate"),
    }
    found: dict[str, str | None] = {}
    for kind, (module, _name) in checks.items():
        found[kind] = None if importlib.util.find_spec(module) is not None else f"{module} is not installed"
    return found


class JobRunner:
    """Worker threads per job kind, pulling claimed jobs from the journal."""

    def __init__(
        self,
        journal: Journal,
        events: EventBus,
        get_config: Callable[[], tuple[Config, DaemonSettings]],
        on_finished: Callable[[dict[str, Any], str], None],
        downloads_allowed: Callable[[], bool] = lambda: True,
        registry_source: Callable[[], Any] | None = None,
    ) -> None:
        self.registry_source = registry_source
        self.journal = journal
        self.events = events
        self.get_config = get_config
        self.on_finished = on_finished
        self.downloads_allowed = downloads_allowed
        self._wake = threading.Condition()
        self._stopping = False
        self._running: dict[int, JobContext] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    # --- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        _cfg, settings = self.get_config()
        for kind in JOB_KINDS:
            count = settings.concurrency.get(kind, 1)
            if kind == "generate":
                from tunehub.cluster import job_slots

                count = job_slots(_cfg, count)  # a cluster takes [cluster] max_jobs at once
            for index in range(count):
                thread = threading.Thread(target=self._worker, args=(kind,), name=f"job-{kind}-{index}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def wake(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def stop(self, timeout: float) -> list[int]:
        """Stop taking jobs; ask running ones to stop; wait up to ``timeout`` s. Returns ids still running."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        with self._lock:
            for ctx in self._running.values():
                ctx.cancel_reason = "shutdown"
                ctx.cancel.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            return list(self._running)

    def cancel(self, job_id: int) -> bool:
        with self._lock:
            ctx = self._running.get(job_id)
            if ctx is None:
                return False
            ctx.cancel_reason = "cancelled by request"
            ctx.cancel.set()
            return True

    def running(self) -> list[int]:
        with self._lock:
            return list(self._running)

    # --- workers -------------------------------------------------------------------
    def _worker(self, kind: str) -> None:
        while True:
            with self._wake:
                if self._stopping:
                    return
            job = None
            if kind != "pull" or self.downloads_allowed():
                job = self.journal.next_runnable(kind, time.time())
            if job is None:
                with self._wake:
                    if self._stopping:
                        return
                    self._wake.wait(timeout=self._idle_wait())
                continue
            self.run_job(job)

    def _idle_wait(self) -> float:
        upcoming = self.journal.next_wakeup()
        if upcoming is None:
            return 5.0
        return min(5.0, max(0.05, upcoming - time.time()))

    def run_job(self, job: dict[str, Any]) -> str:
        """Run one claimed job to its end state; returns 'done', 'failed', 'cancelled' or 'queued'."""
        cfg, settings = self.get_config()
        last_progress = [0.0]
        last_status: list[Any] = [None]

        def on_progress(event: dict[str, Any]) -> None:
            now = time.monotonic()
            # Throttled, but a new phase and the last step of one always get through.
            milestone = (event.get("status") in ("done", "verified") or event.get("status") != last_status[0]
                         or (event.get("total") is not None and event.get("completed") == event.get("total")))
            if now - last_progress[0] < PROGRESS_EVERY and not milestone:
                return
            last_progress[0] = now
            last_status[0] = event.get("status")
            clean = {k: v for k, v in event.items() if isinstance(v, (str, int, float, bool, type(None)))}
            self.journal.set_progress(job["id"], clean)
            self.events.publish("job.progress", job=job["id"], kind=job["kind"], definition=job["definition_id"], **clean)

        ctx = JobContext(job=job, cfg=cfg, settings=settings, on_progress=on_progress,
                         registry_source=self.registry_source)
        with self._lock:
            self._running[job["id"]] = ctx
        self.events.publish(
            "job.started", job=job["id"], kind=job["kind"], definition=job["definition_id"], attempt=job["attempts"]
        )
        logger.info(
            f"job {job['id']} {job['kind']} {job['definition_id']} started (attempt {job['attempts']})",
            extra={"event": "job.started", "fields": {"job": job["id"], "kind": job["kind"], "definition": job["definition_id"]}},
        )
        try:
            if job["kind"] == "pull" and settings.min_free_gb > 0:
                free_gb = shutil.disk_usage(_existing_parent(cfg.download_dir)).free / 1e9
                if free_gb < settings.min_free_gb:
                    raise DiskFullError(
                        f"{free_gb:.1f} GB free in {cfg.download_dir}, below min_free_gb = {settings.min_free_gb:g}: downloads paused"
                    )
            executor = EXECUTORS.get(job["kind"])
            if executor is None:
                raise DaemonError(f"unknown job kind {job['kind']!r}")
            value = executor(ctx)
            outcome = "done"
            self.journal.finish_job(job["id"], "done", result=_summary(value))
            self.events.publish("job.done", job=job["id"], kind=job["kind"], definition=job["definition_id"])
            logger.info(
                f"job {job['id']} {job['kind']} {job['definition_id']} done",
                extra={"event": "job.done", "fields": {"job": job["id"]}},
            )
        except JobCancelled as exc:
            if exc.reason == "shutdown":
                outcome = "queued"
                self.journal.retry_job(job["id"], "interrupted by shutdown; resumes at next start", 0.0, count_attempt=False)
                self.events.publish("job.interrupted", job=job["id"], kind=job["kind"], definition=job["definition_id"])
            else:
                outcome = "cancelled"
                self.journal.finish_job(job["id"], "cancelled", error=exc.reason)
                self.events.publish("job.cancelled", job=job["id"], kind=job["kind"], definition=job["definition_id"])
        except BaseException as exc:  # every failure is journaled and shown; none stops the daemon
            if ctx.cancel.is_set() and ctx.cancel_reason == "shutdown":
                outcome = "queued"
                self.journal.retry_job(job["id"], "interrupted by shutdown; resumes at next start", 0.0, count_attempt=False)
            else:
                outcome = self._failed(job, exc, settings)
        finally:
            with self._lock:
                self._running.pop(job["id"], None)
        self.on_finished(job, outcome)
        return outcome

    def _failed(self, job: dict[str, Any], exc: BaseException, settings: DaemonSettings) -> str:
        message = redact(f"{type(exc).__name__}: {exc}" if not isinstance(exc, DaemonError) else str(exc))
        permanent = isinstance(exc, PERMANENT_ERRORS) or bool(getattr(exc, "permanent", False))
        attempts = int(job["attempts"])
        max_attempts = int(job.get("max_attempts") or settings.max_attempts)
        if isinstance(exc, DiskFullError):
            # Not the job's fault: wait for space without using up its attempts.
            self.journal.retry_job(job["id"], message, time.time() + 30.0, count_attempt=False)
            self.events.publish("downloads.paused", job=job["id"], definition=job["definition_id"], reason=message)
            logger.warning(message, extra={"event": "downloads.paused", "fields": {"job": job["id"]}})
            return "queued"
        if not permanent and attempts < max_attempts:
            delay = min(3600.0, settings.retry_base * 2 ** (attempts - 1)) * random.uniform(0.8, 1.2)
            if getattr(exc, "retry_after", None) is not None:
                delay = float(exc.retry_after)  # e.g. a cluster node died: retry on another at once
            self.journal.retry_job(job["id"], message, time.time() + delay)
            self.events.publish(
                "job.retry", job=job["id"], kind=job["kind"], definition=job["definition_id"],
                attempt=attempts, retry_in=round(delay, 1), error=message,
            )
            logger.warning(
                f"job {job['id']} {job['kind']} {job['definition_id']} failed (attempt {attempts}/{max_attempts}), retry in {delay:.0f}s: {message}",
                extra={"event": "job.retry", "fields": {"job": job["id"]}},
            )
            return "queued"
        self.journal.finish_job(job["id"], "failed", error=message)
        self.events.publish("job.failed", job=job["id"], kind=job["kind"], definition=job["definition_id"], error=message)
        logger.error(
            f"job {job['id']} {job['kind']} {job['definition_id']} failed: {message}",
            extra={"event": "job.failed", "fields": {"job": job["id"], "trace": redact(traceback.format_exc(limit=5))}},
        )
        return "failed"


def _existing_parent(path: Any) -> Any:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
