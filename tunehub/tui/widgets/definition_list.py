"""The definition list: a Line API scroll view that renders only the rows on screen.

With 10,000 definitions a widget per row (or a DataTable rebuilt on every filter
keystroke) is too slow; here a filter only swaps a Python list and refreshes the
visible lines.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size, Spacing
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tunehub.tui.model import DefinitionRow


def _fit(text: str, width: int) -> str:
    """``text`` cut or padded to exactly ``width`` cells (ids and names are ASCII-ish)."""
    if width <= 0:
        return ""
    if len(text) > width:
        return text[: max(width - 1, 0)] + "…"
    return text.ljust(width)


class DefinitionList(ScrollView, can_focus=True):
    """Rows of definitions with a cursor; posts ``Highlighted`` and ``Selected``."""

    COMPONENT_CLASSES = {
        "definition-list--header",
        "definition-list--cursor",
        "definition-list--missing",
        "definition-list--present",
        "definition-list--quantized",
        "definition-list--published",
        "definition-list--update",
        "definition-list--invalid",
    }

    BINDINGS = [
        Binding("up,k", "cursor_up", "Up", show=False),
        Binding("down,j", "cursor_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last", show=False),
        Binding("enter", "select", "Open", show=True),
    ]

    cursor: reactive[int] = reactive(0, always_update=True, init=False)

    class Highlighted(Message):
        """The cursor moved to ``row`` (None when the list is empty)."""

        def __init__(self, row: DefinitionRow | None) -> None:
            super().__init__()
            self.row = row

    class Selected(Message):
        """Enter or a click on ``row``."""

        def __init__(self, row: DefinitionRow) -> None:
            super().__init__()
            self.row = row

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._rows: list[DefinitionRow] = []
        self._highlighted_id: str | None = None
        self.empty_text = "Loading definitions…"

    # -- data -------------------------------------------------------------------------

    @property
    def rows(self) -> list[DefinitionRow]:
        return self._rows

    @property
    def highlighted(self) -> DefinitionRow | None:
        if 0 <= self.cursor < len(self._rows):
            return self._rows[self.cursor]
        return None

    def set_rows(self, rows: Sequence[DefinitionRow], keep_id: str | None = None) -> None:
        """Show ``rows``; the cursor stays on the same definition when it is still shown."""
        self._rows = list(rows)
        target = keep_id if keep_id is not None else self._highlighted_id
        index = 0
        if target is not None:
            for position, row in enumerate(self._rows):
                if row.id == target:
                    index = position
                    break
        self.virtual_size = Size(self._content_width(), len(self._rows) + 1)
        self.cursor = min(index, max(len(self._rows) - 1, 0))
        self.refresh()

    def refresh_rows(self) -> None:
        """Row contents changed in place (states filled in): redraw what is visible."""
        self.refresh()

    def _content_width(self) -> int:
        return max(self.scrollable_content_region.width, 1)

    # -- cursor -----------------------------------------------------------------------

    def watch_cursor(self, old: int, new: int) -> None:
        row = self.highlighted
        self._scroll_cursor_into_view()
        self.refresh()
        new_id = row.id if row else None
        if new_id != self._highlighted_id:
            self._highlighted_id = new_id
            self.post_message(self.Highlighted(row))

    def _scroll_cursor_into_view(self) -> None:
        # Line 0 is the header; row i is drawn on line i + 1 of the virtual area.
        self.scroll_to_region(
            Region(0, self.cursor + 1, 1, 1), animate=False, spacing=Spacing(1, 0, 0, 0), force=True, immediate=True
        )

    def _move(self, delta: int) -> None:
        if self._rows:
            self.cursor = max(0, min(len(self._rows) - 1, self.cursor + delta))

    def action_cursor_up(self) -> None:
        self._move(-1)

    def action_cursor_down(self) -> None:
        self._move(1)

    def action_page_up(self) -> None:
        self._move(-max(self.scrollable_content_region.height - 2, 1))

    def action_page_down(self) -> None:
        self._move(max(self.scrollable_content_region.height - 2, 1))

    def action_first(self) -> None:
        self._move(-len(self._rows))

    def action_last(self) -> None:
        self._move(len(self._rows))

    def action_select(self) -> None:
        row = self.highlighted
        if row is not None:
            self.post_message(self.Selected(row))

    def on_click(self, event: events.Click) -> None:
        line = event.y + int(self.scroll_offset.y)
        if line == int(self.scroll_offset.y):  # the header
            return
        index = line - 1
        if 0 <= index < len(self._rows):
            self.cursor = index
            if event.chain >= 2:
                self.action_select()

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(self._content_width(), len(self._rows) + 1)

    # -- drawing ----------------------------------------------------------------------

    def _columns(self, width: int) -> list[tuple[str, int]]:
        """(field, width) of the columns that fit; id, state and size always do."""
        # Narrow panes get a short state column ("update available" becomes "update").
        state_w = 16 if width >= 70 else 9
        size_w, arch_w = 9, 11
        fixed = state_w + size_w + 2
        rest = max(width - fixed, 8)
        if rest >= 50:
            id_w = min(max(rest // 2 - 4, 22), 40)
            name_w = rest - id_w - arch_w - 2
            return [("id", id_w), ("name", name_w), ("architecture", arch_w), ("size", size_w), ("state", state_w)]
        if rest >= 36:
            id_w = rest - arch_w - 1
            return [("id", id_w), ("architecture", arch_w), ("size", size_w), ("state", state_w)]
        return [("id", rest), ("size", size_w), ("state", state_w)]

    def _line_text(self, row: DefinitionRow | None, columns: list[tuple[str, int]]) -> str:
        cells = []
        for field_name, width in columns:
            if row is None:
                value = field_name.upper() if field_name != "architecture" else "ARCH"
            elif field_name == "size":
                value = row.size_label if row.size_bytes is not None or row.state != "…" else "…"
                cells.append(value.rjust(width))
                continue
            elif field_name == "state" and width < len(row.state):
                value = row.state.split()[0]
            else:
                value = str(getattr(row, field_name))
            cells.append(_fit(value, width))
        return " ".join(cells)

    def _state_style(self, row: DefinitionRow) -> Style:
        key = {"update available": "update"}.get(row.state, row.state)
        if key in {"missing", "present", "quantized", "published", "update", "invalid"}:
            return self.get_component_rich_style(f"definition-list--{key}", partial=True)
        return Style()

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        columns = self._columns(width)
        base_style = self.rich_style
        if y == 0:
            header_style = base_style + self.get_component_rich_style("definition-list--header")
            return Strip([Segment(_fit(self._line_text(None, columns), width), header_style)]).simplify()
        scroll_y = int(self.scroll_offset.y)
        index = scroll_y + y - 1
        if not self._rows:
            if y == 1:
                return Strip([Segment(_fit(" " + self.empty_text, width), base_style + Style(dim=True))])
            return Strip.blank(width, base_style)
        if index >= len(self._rows):
            return Strip.blank(width, base_style)
        row = self._rows[index]
        text = _fit(self._line_text(row, columns), width)
        state_width = columns[-1][1]
        head, tail = text[: width - state_width], text[width - state_width :]
        style = base_style
        if index == self.cursor:
            style = base_style + self.get_component_rich_style("definition-list--cursor")
            if not self.has_focus:
                style += Style(dim=False)
        return Strip([Segment(head, style), Segment(tail, style + self._state_style(row))]).simplify()

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()
