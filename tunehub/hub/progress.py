"""Progress events ``{file, total, completed, status}`` shown as rich bars (one per file + total).

The same events feed the daemon and the TUI; this is only the terminal view. Not a
terminal (a pipe, a log file): one line per file when its status changes, nothing else.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TextIO

__all__ = ["ProgressDisplay", "iter_events"]

_FINAL = {"done", "present", "linked", "failed", "uploaded", "skipped"}


class ProgressDisplay:
    """A callable progress sink; use as a context manager around the pull or publish."""

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if enabled is None else enabled
        self.lock = threading.Lock()
        self.tasks: dict[str, Any] = {}
        self.totals: dict[str, int] = {}
        self.completed: dict[str, int] = {}
        self.last_status: dict[str, str] = {}
        self.progress: Any = None
        self.total_task: Any = None

    def __enter__(self) -> ProgressDisplay:
        if self.live:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self.progress = Progress(
                TextColumn("{task.description}", justify="left"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                console=Console(file=self.stream),
                transient=False,
            )
            self.progress.start()
            self.total_task = self.progress.add_task("total", total=None, status="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, event: dict[str, Any]) -> None:
        name = str(event.get("file"))
        total = event.get("total")
        completed = int(event.get("completed") or 0)
        status = str(event.get("status") or "")
        with self.lock:
            if isinstance(total, int):
                self.totals[name] = total
            self.completed[name] = completed
            if self.progress is None:
                if status == "retrying" or (
                    self.last_status.get(name) != status
                    and status in _FINAL | {"downloading", "resuming", "hashing", "uploading"}
                ):
                    size = f" ({total / 1e6:.1f} MB)" if isinstance(total, int) else ""
                    why = f": {event['error']}" if event.get("error") else ""
                    print(f"{name}: {status}{size}{why}", file=self.stream, flush=True)
                self.last_status[name] = status
                return
            task = self.tasks.get(name)
            if task is None:
                task = self.progress.add_task(name, total=total, status=status)
                self.tasks[name] = task
            shown = f"{status}: {event['error']}" if status == "retrying" and event.get("error") else status
            self.progress.update(task, total=total, completed=completed, status=shown)
            if status == "retrying":
                self.progress.console.print(f"{name}: {shown}")
            self.progress.update(
                self.total_task,
                total=sum(self.totals.values()) or None,
                completed=sum(self.completed.get(key, 0) for key in self.totals),
            )


def iter_events(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Run ``function(*args, progress=..., **kwargs)`` in a thread and yield its progress events.

    The last item is ``{"status": "finished", "result": <return value>}``; an exception in
    the function is raised from the iterator, after the events that preceded it.
    """
    events: queue.Queue[tuple[str, Any]] = queue.Queue()

    def run() -> None:
        try:
            events.put(("result", function(*args, progress=lambda event: events.put(("event", dict(event))), **kwargs)))
        except BaseException as exc:  # re-raised in the consumer's thread
            events.put(("error", exc))

    worker = threading.Thread(target=run, name="tunehub-progress", daemon=True)
    worker.start()
    while True:
        kind, value = events.get()
        if kind == "event":
            yield value
        elif kind == "error":
            worker.join()
            raise value
        else:
            worker.join()
            yield {"status": "finished", "result": value}
            return
