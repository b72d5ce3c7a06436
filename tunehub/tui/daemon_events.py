"""Follow a daemon's ``/events`` feed and turn its events into the TUI's messages.

Runs in a thread worker. Job events (``job.*``) become JobUpdate / JobFinished for
the job's line in the jobs panel, whether this app submitted the job or another client
did; update events mark definitions "update available"; anything touching definitions
makes the screen re-resolve.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from tunehub.errors import DaemonError
from tunehub.tui.messages import DaemonStatus, JobFinished, JobUpdate

if TYPE_CHECKING:  # pragma: no cover
    from textual.worker import Worker

    from tunehub.tui.app import TunehubApp
    from tunehub.tui.screens.main import MainScreen

LONG_POLL_S = 5.0
FINISHED = ("finished", "done", "succeeded", "completed", "success")
FAILED = ("failed", "error", "cancelled", "canceled", "interrupted")


def _job_id(event: dict[str, Any]) -> Any:
    job = event.get("job")
    if isinstance(job, dict):
        return job.get("id")
    return event.get("job_id", job)


def handle_event(app: TunehubApp, screen: MainScreen, event: dict[str, Any]) -> None:
    """Post the message(s) one daemon event means for the UI."""
    event_type = str(event.get("type", ""))
    job = event.get("job") if isinstance(event.get("job"), dict) else {}
    definition_id = str(event.get("definition") or event.get("definition_id") or job.get("definition_id") or "")
    if event_type.startswith("job."):
        job_id = _job_id(event)
        # Another client's key until the app, on its own thread, finds the job among those
        # it submitted: looked up here, the reply with the id could land between the lookup
        # and the post, and the job's end would make a second line.
        key = f"daemon-{job_id}"
        kind = str(event.get("kind") or job.get("kind") or "job")
        suffix = event_type.split(".")[-1]
        state = str(event.get("state") or job.get("state") or suffix)
        if suffix in FINISHED or state in FINISHED:
            result = _job_result(app, job_id)
            summary = f"{kind} done (daemon job {job_id})"
            if isinstance(result, dict) and result.get("video"):
                summary = f"video written: {result['video']} (daemon job {job_id})"
            # Screens read results by attribute, as they do a local job's result object.
            value = SimpleNamespace(**result) if isinstance(result, dict) else result
            app.post_message(JobFinished(key, kind, definition_id, True, summary, value, daemon_job=job_id))
        elif suffix in FAILED or state in FAILED:
            from tunehub.tui.app import first_line

            error = first_line(event.get("error") or job.get("error") or state)
            app.post_message(JobFinished(key, kind, definition_id, False, f"{kind} failed: {error}", daemon_job=job_id))
        else:
            progress = {k: event[k] for k in ("completed", "total", "status", "file", "message", "description") if k in event}
            progress.setdefault("status", state)
            app.post_message(JobUpdate(key, kind, definition_id, progress, daemon_job=job_id))
    if event_type.startswith(("job.done", "job.failed", "definition", "weights", "remote.changed", "registry")):
        refresh_updates(app, screen)


def _job_result(app: TunehubApp, job_id: Any) -> Any:
    """The summary the daemon journaled for a finished job (None if it cannot be read)."""
    try:
        jobs = app.daemon_client.jobs()
    except (DaemonError, AttributeError):
        return None
    for job in jobs:
        if str(job.get("id")) == str(job_id):
            return job.get("result")
    return None


def refresh_updates(app: TunehubApp, screen: MainScreen) -> None:
    """Definitions the daemon has work pending for (a newer upstream, a file its policy
    wants) are shown as "update available"; re-read them from ``/status``."""
    try:
        status = app.daemon_client.status()
    except (DaemonError, AttributeError):
        return
    pending = {
        entry["id"]
        for entry in status.get("definitions", [])
        if (entry.get("state") == "pending" and entry.get("needs")) or entry.get("update_available")
    }
    if pending != app.updates:
        app.updates = pending
        app.call_from_thread(screen.refill_states)


def follow(app: TunehubApp, screen: MainScreen, worker: Worker[Any]) -> None:
    """Long-poll until the worker is cancelled; on a lost daemon, go back to local mode."""
    client = app.daemon_client
    since = 0
    try:
        since = int(client.events(since=0, timeout=0).get("last_id", 0))
    except DaemonError:
        pass
    refresh_updates(app, screen)
    failures = 0
    while not worker.is_cancelled:
        try:
            answer = client.events(since=since, timeout=LONG_POLL_S)
        except DaemonError as exc:
            failures += 1
            if failures >= 3:
                app.daemon_client = None
                screen.post_message(DaemonStatus(False, f"daemon lost: {exc}"))
                return
            time.sleep(0.5)
            continue
        failures = 0
        if answer.get("missed"):
            app.call_from_thread(screen.refill_states)
            app.sync_daemon_jobs()  # events were lost: read the jobs' states instead
        for event in answer.get("events", []):
            since = max(since, int(event.get("id", since)))
            handle_event(app, screen, event)
        since = max(since, int(answer.get("last_id", since)))
