"""Small modal questions: confirm a deletion, ask where to publish."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Static


class ConfirmScreen(ModalScreen[bool]):
    """Yes / no; dismisses with True only on an explicit yes."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, title: str, body: str, yes_label: str = "Yes") -> None:
        super().__init__()
        self.title_text = title
        self.body = body
        self.yes_label = yes_label

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Label(self.title_text, id="dialog-title")
            yield Static(self.body, id="dialog-body", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.yes_label, id="yes", variant="error")
                yield Button("Cancel", id="no", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class PublishScreen(ModalScreen["tuple[str, bool] | None"]):
    """Asks the repo (``namespace/name``) and whether it is private."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, definition_id: str, default_repo: str = "") -> None:
        super().__init__()
        self.definition_id = definition_id
        self.default_repo = default_repo

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Label(f"Publish {self.definition_id}", id="dialog-title")
            yield Label("Repository (namespace/name):")
            yield Input(self.default_repo, placeholder="alice/my-finetunes", id="publish-repo")
            yield Checkbox("Private repository", id="publish-private")
            yield Static("", id="publish-error", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Publish", id="publish", variant="success")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#publish-repo", Input).focus()

    def _submit(self) -> None:
        repo = self.query_one("#publish-repo", Input).value.strip()
        parts = repo.split("/")
        if len(parts) != 2 or not all(parts):
            self.query_one("#publish-error", Static).update("The repository must look like namespace/name.")
            return
        self.dismiss((repo, self.query_one("#publish-private", Checkbox).value))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "publish":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
