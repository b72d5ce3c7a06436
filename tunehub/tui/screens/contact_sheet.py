"""The contact sheet of a generated video (``clip.png`` beside ``clip.mp4``), shown after a
generation and from the job's line in the jobs panel.

The picture is drawn by textual-image: sixel, the kitty graphics protocol or iTerm's where the
terminal has one, coloured half blocks elsewhere (so it works over SSH). The caption (the
definition, seed and settings) is also printed as text, which half blocks cannot show.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, Static



def prepare_terminal_images() -> Any:
    """textual-image's widget class (None when it is not installed).

    Its import asks the terminal for its cell size and graphics protocols, which must happen
    before Textual takes the terminal over: ``tunehub tui`` calls this before the app runs
    (imported later, under Textual, the query would eat the user's keystrokes)."""
    try:
        from textual_image.widget import Image
    except ImportError:  # pragma: no cover - textual-image comes with the tui extra
        return None
    return Image


def sheet_of(result: Any) -> Path | None:
    """The contact sheet of a generate result (a GenerateResult, or a daemon job's result
    dict read as attributes), when the file is there."""
    sheet = getattr(result, "contact_sheet", None)
    if not sheet:
        video = getattr(result, "video", None)
        sheet = Path(str(video)).with_suffix(".png") if video else None
    if sheet is None:
        return None
    path = Path(str(sheet))
    return path if path.is_file() else None


def caption_for(sheet: Path) -> list[str]:
    """The caption lines stored in the sheet, else made from the settings file beside the
    video (``clip.json``)."""
    from tunehub.inference.contact_sheet import caption_lines, read_caption

    stored = read_caption(sheet)
    if stored:
        return stored
    settings_file = sheet.with_suffix(".json")
    try:
        settings = json.loads(settings_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [sheet.name]
    return caption_lines(settings if isinstance(settings, dict) else {})


def shown_path(app: Any, path: str | Path) -> str:
    """A path relative to the tunehub home when it lies there (``outputs/...``)."""
    home = getattr(getattr(app, "cfg", None), "home", None)
    if home is not None:
        try:
            return str(Path(path).resolve().relative_to(Path(home).resolve()))
        except ValueError:
            pass
    return str(path)


class ContactSheetView(Vertical):
    """The picture and its caption; used by the generate screen and the modal below."""

    DEFAULT_CSS = """
    ContactSheetView { height: auto; }
    ContactSheetView .sheet-image { width: 100%; height: 18; }
    ContactSheetView .sheet-caption { height: auto; color: $text-muted; }
    """

    def __init__(self, sheet: Path, video: str | None = None, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.sheet = sheet
        self.video = video or str(sheet.with_suffix(".mp4"))

    def compose(self) -> ComposeResult:
        terminal_image = prepare_terminal_images()
        if terminal_image is not None:
            yield terminal_image(str(self.sheet), classes="sheet-image")
        else:
            yield Static(f"(install textual-image to see {self.sheet} here)", classes="sheet-image", markup=False)
        lines = [*caption_for(self.sheet), f"video: {shown_path(self.app, self.video)}"]
        yield Static("\n".join(lines), classes="sheet-caption", markup=False)


class ContactSheetScreen(ModalScreen[None]):
    """The frames grid and its caption; Escape closes it."""

    BINDINGS = [Binding("escape,q,enter", "close", "Close")]

    DEFAULT_CSS = """
    ContactSheetScreen { align: center middle; }
    ContactSheetScreen #sheet-dialog {
        width: 90%; height: auto; max-height: 90%; border: round $accent; background: $surface; padding: 0 1;
    }
    ContactSheetScreen #sheet-title { text-style: bold; }
    """

    def __init__(self, sheet: Path, video: str | None = None) -> None:
        super().__init__()
        self.sheet = sheet
        self.video = video or str(sheet.with_suffix(".mp4"))

    def compose(self) -> ComposeResult:
        with Vertical(id="sheet-dialog"):
            yield Label(f"Contact sheet: {Path(self.video).name}", id="sheet-title", markup=False)
            yield ContactSheetView(self.sheet, self.video)

    def action_close(self) -> None:
        self.dismiss(None)
