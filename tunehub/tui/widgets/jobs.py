"""The jobs panel: one line per running or recently finished job, with a progress bar."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, ProgressBar


class JobLine(Horizontal):
    def __init__(self, key: str, title: str) -> None:
        super().__init__(classes="job-line")
        self.key = key
        self.title = title
        # Updates can arrive before the children are mounted: keep the latest, apply on mount.
        self._event: dict[str, Any] = {}
        self._outcome: tuple[bool, str] | None = None
        self.contact_sheet: Any = None  # a finished generation's clip.png: a click shows it
        self.leaving = False  # removed: still in the DOM until Textual prunes it

    def compose(self) -> ComposeResult:
        yield Label(self.title, classes="job-title", markup=False)
        yield ProgressBar(total=None, show_eta=False, classes="job-bar")
        yield Label("starting…", classes="job-status", markup=False)

    def on_mount(self) -> None:
        if self._event:
            self.update_progress(self._event)
        if self._outcome is not None:
            self.finish(*self._outcome)

    def _ready(self) -> bool:
        return bool(self.query(ProgressBar))

    def update_progress(self, event: dict[str, Any]) -> None:
        self._event = {**self._event, **event}
        if self._outcome is not None:
            return  # finished: a late progress event must not bring the bar back
        if not self._ready():
            return
        bar = self.query_one(ProgressBar)
        total = event.get("total")
        completed = event.get("completed")
        if total:
            bar.update(total=total, progress=completed or 0)
        status = event.get("status") or event.get("message") or ""
        file_name = event.get("file")
        # a job on the Ray cluster says where it runs: "denoising on 10.0.0.5 (gpu 0)"
        where = f"on {event['node']} ({event.get('gpu') or '-'})" if event.get("node") else None
        text = " ".join(str(part) for part in (status, file_name, where) if part)
        if text:
            self.query_one(".job-status", Label).update(text)

    @property
    def ended_ok(self) -> bool | None:
        """True or False once the job has ended (even before the line is drawn), else None."""
        return None if self._outcome is None else self._outcome[0]

    def finish(self, ok: bool, summary: str) -> None:
        self._outcome = (ok, summary)
        if not self._ready():
            return
        bar = self.query_one(ProgressBar)
        if ok and bar.total:
            bar.update(progress=bar.total)
        elif ok:
            bar.update(total=1, progress=1)
        else:
            bar.update(total=1, progress=0)  # an indeterminate bar would keep moving
            bar.display = False  # and the error gets the whole width
        self.set_class(not ok, "-failed")
        self.set_class(ok, "-done")
        self.query_one(".job-status", Label).update(summary)


    def on_click(self) -> None:
        if self.contact_sheet is not None:
            from tunehub.tui.screens.contact_sheet import ContactSheetScreen

            self.app.push_screen(ContactSheetScreen(self.contact_sheet))


class JobsPanel(Vertical):
    """Hidden while no job has run; keeps the last few finished ones visible, failed ones
    longer (their error is what the user has to read)."""

    KEEP_FINISHED = 2
    KEEP_FAILED = 5

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        # Jobs whose line has ended: a late progress event for one (the journal told of its end
        # before its events were followed) must not mount a new line once the old one is pruned.
        self._ended: set[str] = set()

    def start(self, key: str, title: str) -> JobLine:
        line = JobLine(key, title)
        self.mount(line)
        self.display = True
        return line

    def line(self, key: str) -> JobLine | None:
        for line in self.query(JobLine):
            if line.key == key and not line.leaving:
                return line
        return None

    def update_job(self, key: str, title: str, event: dict[str, Any]) -> None:
        line = self.line(key)
        if line is None:
            if key in self._ended:
                return
            line = self.start(key, title)
        line.update_progress(event)

    def finish_job(self, key: str, title: str, ok: bool, summary: str) -> None:
        line = self.line(key)
        if line is None:
            line = self.start(key, title)
        line.finish(ok, summary)
        self._ended.add(key)
        self._prune()

    def drop(self, key: str) -> None:
        """Remove a job's line (a stray one, made before the job's id was known)."""
        line = self.line(key)
        if line is not None:
            self._remove(line)

    def _prune(self) -> None:
        # By the job's outcome, not the line's classes: a line mounted and finished in one
        # burst of messages gets its classes only once its children are mounted.
        lines = [line for line in self.query(JobLine) if not line.leaving]
        done = [line for line in lines if line.ended_ok is True]
        failed = [line for line in lines if line.ended_ok is False]
        for old in done[: max(len(done) - self.KEEP_FINISHED, 0)] + failed[: max(len(failed) - self.KEEP_FAILED, 0)]:
            self._remove(old)

    def _remove(self, line: JobLine) -> None:
        line.leaving = True
        line.remove()
