"""The detail pane: description, variant table, modules, preload files, settings, errors."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from tunehub.tui.model import WeightsIndex, format_size, settings_summary, variant_rows

if TYPE_CHECKING:  # pragma: no cover
    from tunehub.registry import Definition, Resolution


class DetailPane(VerticalScroll, can_focus=True):
    """Shows one definition; ``show`` is cheap enough to follow the list cursor."""

    BORDER_TITLE = "Definition"
    # Shown in the footer while the detail view has focus: the way back to the list.
    BINDINGS = [Binding("escape", "screen.back", "Back")]
    ALLOW_MAXIMIZE = True

    def compose(self):  # type: ignore[no-untyped-def]
        yield Static("Select a definition.", id="detail-header", markup=False)
        yield Static("", id="detail-errors", markup=False)
        yield Static("Variants", id="detail-variants-title", classes="section-title")
        table: DataTable[str | Text] = DataTable(id="detail-variants", cursor_type="none", zebra_stripes=False)
        table.add_columns("", "role", "file", "variant", "on disk")
        yield table
        yield Static("", id="detail-files", markup=False)
        yield Static("", id="detail-settings", markup=False)

    def show_message(self, message: str) -> None:
        self.query_one("#detail-header", Static).update(message)
        for widget_id in ("#detail-errors", "#detail-files", "#detail-settings"):
            self.query_one(widget_id, Static).update("")
        self.query_one("#detail-variants", DataTable).clear()
        self.set_class(True, "-empty")

    def show(
        self,
        definition: Definition,
        resolution: Resolution | None,
        index: WeightsIndex,
        resolve_error: str | None = None,
        home: Path | None = None,
    ) -> None:
        self.set_class(False, "-empty")
        self.border_title = definition.id
        header = Text()
        header.append(f"{definition.name}\n", style="bold")
        arch = definition.architecture or "?"
        origin = getattr(definition.origin, "value", str(definition.origin))
        header.append(f"{arch} · {origin} · {definition.path.name}\n", style="dim")
        if definition.description:
            header.append(f"\n{definition.description}\n")
        if resolution is not None:
            # "weights 16-bit / compute bf16", not "bf16 / bf16": each value says what it is.
            weights = resolution.quantization if resolution.quantization in ("int8", "fp8") else "16-bit"
            header.append(
                f"\nPreferences: weights {weights} / compute {resolution.dtype}: {resolution.dtype_reason}",
                style="italic",
            )
        self.query_one("#detail-header", Static).update(header)

        errors = self.query_one("#detail-errors", Static)
        problems = list(getattr(definition, "problems", []))
        if problems or resolve_error:
            text = Text("Invalid definition\n", style="bold red")
            for problem in problems:
                text.append(f"• {_short(problem.file, home)}: {problem.key}: {problem.message}\n", style="red")
            if resolve_error:
                text.append(f"• {resolve_error}\n", style="red")
            errors.update(text)
            errors.display = True
        else:
            errors.update("")
            errors.display = False

        table = self.query_one("#detail-variants", DataTable)
        table.clear()
        # Nothing to pick from for an unresolvable definition: no empty table.
        self.set_class(resolution is None, "-unresolved")
        files_text = Text()
        if resolution is not None:
            for row in variant_rows(resolution, index):
                marker = Text("▶", style="bold green") if row.selected else Text(" ")
                presence = format_size(row.size_bytes) if row.present else "missing"
                table.add_row(
                    marker,
                    row.role,
                    Text(row.file, style="bold" if row.selected else ""),
                    f"{row.quantization} {row.dtype}" if row.dtype != "-" else row.quantization,
                    Text(presence, style="green" if row.present else "yellow"),
                )
                if row.selected and row.reason:
                    # Under the table rather than in a column: it stays readable at 80 columns.
                    files_text.append(f"Why {row.file}: ", style="bold")
                    files_text.append(f"{row.reason}\n")
            modules = [choice.filename for choice in resolution.modules]
            preload = [choice.filename for choice in resolution.preload]
            files_text.append("\nModules: ", style="bold")
            files_text.append(", ".join(modules) if modules else "none")
            files_text.append("\nPreload: ", style="bold")
            files_text.append(", ".join(preload) if preload else "none")
            if resolution.auto_quantize and resolution.needs_quantization:
                files_text.append("\nauto_quantize: an int8 file will be made from the 16-bit one", style="italic")
        self.query_one("#detail-files", Static).update(files_text)

        settings = Text("Settings\n", style="bold")
        pairs = settings_summary(definition.settings)
        if not pairs:
            settings.append("none\n", style="dim")
        for key, value in pairs:
            settings.append(f"  {key}: ", style="cyan")
            settings.append(f"{value}\n")
        self.query_one("#detail-settings", Static).update(settings)


def _short(file: str, home: Path | None) -> str:
    """A problem's file relative to the home: shorter, and the same on every machine."""
    if home is None:
        return file
    try:
        return str(Path(file).relative_to(home))
    except ValueError:
        return file


__all__ = ["DetailPane"]
