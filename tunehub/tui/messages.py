"""Messages that workers post; the screens only react to these."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.message import Message

if TYPE_CHECKING:  # pragma: no cover
    from tunehub.registry import Registry
    from tunehub.tui.model import DefinitionRow


class RegistryLoaded(Message):
    """The registry was (re)loaded; ``rows`` have no state yet."""

    def __init__(self, registry: Registry, rows: list[DefinitionRow]) -> None:
        super().__init__()
        self.registry = registry
        self.rows = rows


class RegistryFailed(Message):
    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class StatesUpdated(Message):
    """Some rows got their state and size; ``done`` when every row has."""

    def __init__(self, generation: int, done: bool) -> None:
        super().__init__()
        self.generation = generation
        self.done = done


class DefinitionFilesChanged(Message):
    """Definition files were added, edited or deleted on disk."""

    def __init__(self, paths: set[Path]) -> None:
        super().__init__()
        self.paths = paths


class CapabilitiesChecked(Message):
    """kind -> None if the action can run, else why it cannot."""

    def __init__(self, status: dict[str, str | None]) -> None:
        super().__init__()
        self.status = status


class DaemonStatus(Message):
    """Whether a daemon serves this home (``detail`` says which one, or why not)."""

    def __init__(self, running: bool, detail: str = "") -> None:
        super().__init__()
        self.running = running
        self.detail = detail


class JobUpdate(Message, bubble=False):
    """Progress of a job, local or the daemon's: ``event`` has completed/total/status.

    Posted to the app, which forwards a copy to each screen; copies must not bubble
    back up to the app. ``daemon_job``: the daemon's id of the job, on messages made from
    its events; the app gives them its own key for the job when it submitted it."""


    def __init__(
        self, key: str, kind: str, definition_id: str, event: dict[str, Any], *, daemon_job: Any = None
    ) -> None:
        super().__init__()
        self.key = key
        self.kind = kind
        self.definition_id = definition_id
        self.event = event
        self.daemon_job = daemon_job


class JobFinished(Message, bubble=False):
    """A job ended: ``ok``, a one-line ``summary`` (or the error), and its result object."""


    def __init__(
        self, key: str, kind: str, definition_id: str, ok: bool, summary: str, result: Any = None,
        *, daemon_job: Any = None,
    ) -> None:
        super().__init__()
        self.key = key
        self.kind = kind
        self.definition_id = definition_id
        self.ok = ok
        self.summary = summary
        self.result = result
        self.daemon_job = daemon_job  # as on JobUpdate


class DeletionPlanned(Message):
    def __init__(self, plan: Any) -> None:
        super().__init__()
        self.plan = plan
