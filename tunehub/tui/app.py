"""The tunehub Textual app: shared state (config, registry, preferences, jobs) and job dispatch.

Screens live in ``tunehub.tui.screens``, widgets in ``tunehub.tui.widgets``, all
styles in ``tunehub.tcss``. Background work runs in thread workers that post messages
(``tunehub.tui.messages``); the UI only reacts to those.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from tunehub.tui.jobs import CAPABILITIES, run_local
from tunehub.tui.messages import JobFinished, JobUpdate


def first_line(text: Any) -> str:
    """The first non-empty line of an error: what a one-line status shows."""
    return next((line.strip() for line in str(text).splitlines() if line.strip()), str(text))

if TYPE_CHECKING:  # pragma: no cover
    from tunehub.config import Config
    from tunehub.registry import Registry


class TunehubApp(App[None]):
    """Browse the registry, act on a definition, follow the daemon."""

    CSS_PATH = "tunehub.tcss"
    TITLE = "tunehub"
    ENABLE_COMMAND_PALETTE = True
    BINDINGS = [Binding("q", "quit", "Quit", priority=False)]

    def __init__(
        self,
        cfg: Config,
        *,
        registry: Registry | None = None,
        watch: bool = True,
        use_daemon: bool = True,
        editor: str | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.registry: Registry | None = registry
        # Serialises reloads and whole-registry scans between workers.
        self.registry_lock = threading.RLock()
        self.quantization = cfg.quantization
        self.dtype: str | None = None if cfg.dtype == "auto" else cfg.dtype
        self.watch_files = watch
        self.use_daemon = use_daemon
        self.editor = editor
        self.daemon_client: Any = None  # tunehub.daemon.client.DaemonClient when one serves this home
        self.capability_status: dict[str, str | None] = {kind: "checking…" for kind in CAPABILITIES}
        self.updates: set[str] = set()  # ids the daemon reports an update for
        self.jobs: dict[str, dict[str, Any]] = {}
        self._job_numbers = itertools.count(1)
        self.stopping = threading.Event()  # set on quit: running pulls stop now, keeping their partials

    def get_default_screen(self) -> Screen[Any]:
        from tunehub.tui.screens.main import MainScreen

        return MainScreen()

    # -- preferences --------------------------------------------------------------------

    @property
    def preferences_label(self) -> str:
        quant = "int8" if self.quantization == "int8" else ("fp8" if self.quantization == "fp8" else "16-bit")
        # Says which is which: the weights' quantization, then the compute dtype.
        return f"weights {quant} / compute {self.dtype or 'auto'}"

    @property
    def mode_label(self) -> str:
        if self.daemon_client is not None:
            return "daemon: actions are daemon jobs"
        return "local: actions run in this app"

    # -- jobs ---------------------------------------------------------------------------

    @property
    def capabilities_checked(self) -> bool:
        return all(status != "checking…" for status in self.capability_status.values())

    def can_run(self, kind: str) -> bool:
        return self.capability_status.get(kind) is None

    def start_job(self, kind: str, definition_id: str, params: dict[str, Any]) -> str:
        """Start ``kind`` on ``definition_id``: a daemon job if one serves this home, else a
        worker here. Returns the key that JobUpdate / JobFinished messages carry."""
        key = f"{kind}-{next(self._job_numbers)}"
        self.jobs[key] = {"kind": kind, "id": definition_id, "params": params, "state": "running"}
        if self.daemon_client is not None:
            self._submit_to_daemon(key, kind, definition_id, params)
        else:
            self._run_job_here(key, kind, definition_id, params)
        return key

    @work(thread=True, group="jobs")
    def _run_job_here(self, key: str, kind: str, definition_id: str, params: dict[str, Any]) -> None:
        def report(event: dict[str, Any]) -> None:
            self.post_message(JobUpdate(key, kind, definition_id, event))

        report({"status": "started"})
        try:
            summary, result = run_local(kind, self.cfg, self.registry, definition_id, params, report,  # type: ignore[arg-type]
                                        cancel=self.stopping)
        except Exception as exc:  # noqa: BLE001 - shown to the user, the app keeps running
            self.post_message(JobFinished(key, kind, definition_id, False, f"{kind} failed: {first_line(exc)}"))
            return
        self.post_message(JobFinished(key, kind, definition_id, True, summary, result))

    @work(thread=True, group="jobs")
    def _submit_to_daemon(self, key: str, kind: str, definition_id: str, params: dict[str, Any]) -> None:
        try:
            answer = self.daemon_client.submit_job(kind, definition_id, **params)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            self.post_message(JobFinished(key, kind, definition_id, False, f"daemon refused {kind}: {exc}"))
            return
        job = answer.get("job", answer) if isinstance(answer, dict) else {}
        job_id = job.get("id") if isinstance(job, dict) else answer
        self.jobs[key]["daemon_job"] = job_id
        self.post_message(JobUpdate(key, kind, definition_id, {"status": f"queued as daemon job {job_id}"}))
        # The job's events may have arrived before its id did (a quick job is done by now):
        # ask the daemon where it is rather than wait for events already gone by.
        self.sync_daemon_jobs([key])

    def sync_daemon_jobs(self, keys: Iterable[str] | None = None) -> None:
        """Bring the lines of daemon jobs in step with the daemon's journal (``tunehub jobs``)."""
        if self.daemon_client is None:
            return
        # A copy first: the app's thread adds jobs while this runs in a worker thread.
        wanted = {k: job for k, job in list(self.jobs.items()) if job.get("daemon_job") is not None
                  and (keys is None or k in keys) and job.get("state") == "running"}
        if not wanted:
            return
        try:
            daemon_jobs = {str(job.get("id")): job for job in self.daemon_client.jobs()}
        except Exception:  # noqa: BLE001 - the follower reports a lost daemon
            return
        for key, job in wanted.items():
            entry = daemon_jobs.get(str(job["daemon_job"]))
            if entry is None:
                continue
            state = entry.get("state")
            kind, definition_id = job["kind"], job["id"]
            if state == "done":
                result = entry.get("result")
                value = SimpleNamespace(**result) if isinstance(result, dict) else result
                self.post_message(JobFinished(key, kind, definition_id, True,
                                              f"{kind} done (daemon job {job['daemon_job']})", value))
            elif state in ("failed", "cancelled"):
                error = first_line(entry.get("last_error") or state)
                self.post_message(JobFinished(key, kind, definition_id, False, f"{kind} failed: {error}"))

    async def action_quit(self) -> None:
        """Quit at once: a pull running here stops (its partial is kept for the next pull)."""
        self.stopping.set()
        self.exit()

    def job_key_for_daemon(self, job_id: Any) -> str | None:
        """The line of a job this app submitted (None for other clients' jobs, or before its id is known)."""
        for key, job in list(self.jobs.items()):
            if job.get("daemon_job") is not None and str(job.get("daemon_job")) == str(job_id):
                return key
        return None

    def _key_of(self, message: JobUpdate | JobFinished) -> str:
        """A message from the daemon's events carries the daemon's id: here, on the app's
        thread, its key is the app's own for a job it submitted (known once the daemon replied)."""
        own = self.job_key_for_daemon(message.daemon_job) if message.daemon_job is not None else None
        return own or message.key

    def _forward(self, message: JobUpdate | JobFinished) -> None:
        key = self._key_of(message)
        for screen in self.screen_stack:
            if isinstance(message, JobUpdate):
                copy: JobUpdate | JobFinished = JobUpdate(
                    key, message.kind, message.definition_id, message.event, daemon_job=message.daemon_job
                )
            else:
                copy = JobFinished(
                    key, message.kind, message.definition_id, message.ok, message.summary, message.result,
                    daemon_job=message.daemon_job,
                )
            screen.post_message(copy)

    def on_job_update(self, message: JobUpdate) -> None:
        self._forward(message)

    def on_job_finished(self, message: JobFinished) -> None:
        job = self.jobs.get(self._key_of(message))
        if job is not None:
            if job.get("state") in ("done", "failed"):
                return  # already told (by an event and by a sync): once is enough
            job["state"] = "done" if message.ok else "failed"
            job["summary"] = message.summary
        self.notify(message.summary, severity="information" if message.ok else "error", timeout=6)
        self._forward(message)

    # -- command palette ----------------------------------------------------------------

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        commands = getattr(screen, "palette_commands", None)
        if callable(commands):
            yield from commands()
