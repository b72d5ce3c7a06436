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
    """Hidden while no job has run; keeps the last few finished ones visible."""

    KEEP_FINISHED = 2

    def start(self, key: str, title: str) -> JobLine:
        line = JobLine(key, title)
        self.mount(line)
        self.display = True
        return line

    def line(self, key: str) -> JobLine | None:
        for line in self.query(JobLine):
            if line.key == key:
                return line
        return None

    def update_job(self, key: str, title: str, event: dict[str, Any]) -> None:
        line = self.line(key)
        if line is None:
            line = self.start(key, title)
        line.update_progress(event)

    def finish_job(self, key: str, title: str, ok: bool, summary: str) -> None:
        line = self.line(key)
        if line is None:
            line = self.start(key, title)
        line.finish(ok, summary)
        finished = [job for job in self.query(JobLine) if job.has_class("-done") or job.has_class("-failed")]
        for old in finished[: max(len(finished) - self.KEEP_FINISHED, 0)]:
            old.remove()
