"""The browse screen: filter box and facets, the definition list, the detail pane, jobs."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Select
from textual.worker import get_current_worker

from tunehub.errors import TunehubError
from tunehub.tui.messages import (
    CapabilitiesChecked,
    DaemonStatus,
    DefinitionFilesChanged,
    DeletionPlanned,
    JobFinished,
    JobUpdate,
    RegistryFailed,
    RegistryLoaded,
    StatesUpdated,
)
from tunehub.tui.model import (
    PENDING_STATE,
    STATES,
    DefinitionRow,
    WeightsIndex,
    build_rows,
    execute_deletion,
    fill_states,
    filter_rows,
    format_size,
    plan_deletion,
)
from tunehub.tui.widgets.definition_list import DefinitionList
from tunehub.tui.widgets.detail import DetailPane
from tunehub.tui.screens.contact_sheet import ContactSheetScreen, sheet_of
from tunehub.tui.widgets.jobs import JobsPanel

if TYPE_CHECKING:  # pragma: no cover
    from tunehub.tui.app import TunehubApp

# Rows resolved per StatesUpdated message: the first batch covers a screenful quickly.
STATE_BATCH = 400
# Definition-file events within this window are reloaded together.
RELOAD_DEBOUNCE_S = 0.15


class MainScreen(Screen[None]):
    """Everything the user browses; actions work on the highlighted definition."""

    BINDINGS = [
        # First, so that a narrow footer (80 columns) still shows it.
        Binding("q", "app.quit", "Quit"),
        Binding("slash", "focus_filter", "Filter"),
        Binding("escape", "back", "Back", show=False),
        Binding("p", "pull", "Pull"),
        Binding("i", "quantize", "Quantize"),
        Binding("u", "publish", "Publish"),
        Binding("g", "generate", "Generate"),
        Binding("x", "delete", "Delete weights"),
        Binding("e", "edit", "Edit"),
        Binding("s", "toggle_quantization", "int8/16-bit"),
        Binding("d", "toggle_dtype", "bf16/fp16"),
        Binding("r", "reload", "Reload", show=False),
        Binding("v", "view_sheet", "Last video", show=False),
    ]

    app: TunehubApp  # type: ignore[assignment]
    # Escape is ours (action_back): Textual's own minimize would leave the focus in the detail.
    ESCAPE_TO_MINIMIZE = False

    def __init__(self) -> None:
        super().__init__()
        self.all_rows: list[DefinitionRow] = []
        self.index: WeightsIndex | None = None
        self._state_generation = 0
        self._pending_paths: set[Path] = set()
        self._reload_timer: Any = None
        self._observer: Any = None
        self._loaded = False
        # True once every row has its state for the current preferences (tests wait on it).
        self.states_ready = False
        self._just_changed_ids: set[str] = set()
        self.first_rows_shown_at: float | None = None

    # -- layout -------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="≋")
        with Horizontal(id="filter-bar"):
            yield Input(placeholder="filter: id, name, description   ( / )", id="filter", compact=True)
            yield Select([], prompt="any family", id="facet-family", compact=True)
            yield Select([], prompt="any architecture", id="facet-arch", compact=True)
            yield Select([(state, state) for state in STATES], prompt="any state", id="facet-state", compact=True)
        with Horizontal(id="body"):
            yield DefinitionList(id="definitions")
            yield DetailPane(id="detail")
        panel = JobsPanel(id="jobs")
        panel.display = False
        yield panel
        yield Footer()

    def on_mount(self) -> None:
        self._update_titles()
        definitions = self.query_one(DefinitionList)
        definitions.border_title = "Definitions"
        definitions.focus()
        self.query_one(DetailPane).show_message("Loading definitions…")
        self.load_registry()

    def on_unmount(self) -> None:
        if self._observer is not None:
            self._observer.stop()

    def _update_titles(self) -> None:
        self.title = "tunehub"
        self.sub_title = f"{self.app.mode_label} · {self.app.preferences_label}"

    # -- loading ------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="registry")
    def load_registry(self) -> None:
        app = self.app
        try:
            with app.registry_lock:
                if app.registry is None:
                    from tunehub.registry import Registry

                    app.registry = Registry.load(app.cfg)
                rows = build_rows(app.registry)
        except (TunehubError, OSError) as exc:  # shown in the list; the app stays usable
            self.post_message(RegistryFailed(str(exc)))
            return
        self.post_message(RegistryLoaded(app.registry, rows))

    def on_registry_failed(self, message: RegistryFailed) -> None:
        self.query_one(DefinitionList).empty_text = f"Cannot load the registry: {message.error}"
        self.query_one(DefinitionList).refresh()
        self.query_one(DetailPane).show_message(message.error)

    def on_registry_loaded(self, message: RegistryLoaded) -> None:
        previous = {row.id: row for row in self.all_rows}
        for row in message.rows:
            old = previous.get(row.id)
            # Keep the last known state until the re-resolution reaches this row.
            if old is not None and row.state == PENDING_STATE and row.id not in self._just_changed_ids:
                row.state, row.size_bytes = old.state, old.size_bytes
        self.all_rows = message.rows
        self._loaded = True
        self.query_one(DefinitionList).empty_text = "No definition matches."
        self._refresh_arch_facet()
        self.apply_filter()
        if self.first_rows_shown_at is None:
            self.first_rows_shown_at = time.perf_counter()
            # Everything else competes for the GIL with the first paint: start it after.
            self.call_after_refresh(self._after_first_paint)
        else:
            self.refill_states()

    def _after_first_paint(self) -> None:
        self.refill_states()
        if self.app.use_daemon:
            self.check_daemon()
        if self.app.watch_files:
            self._start_watching()
        self.set_timer(0.2, self.check_capabilities)

    def _refresh_arch_facet(self) -> None:
        for facet, values in (
            ("#facet-arch", sorted({row.architecture for row in self.all_rows})),
            ("#facet-family", sorted({row.family for row in self.all_rows})),
        ):
            select: Select[str] = self.query_one(facet, Select)
            current = select.value
            select.set_options([(value, value) for value in values])
            if current in values:
                select.value = current

    def refill_states(self) -> None:
        self.states_ready = False
        self._state_generation += 1
        self.index = WeightsIndex(self.app.cfg.weights_dirs, self.app.cfg.home)
        self._fill_states(self._state_generation, list(self.all_rows), self.index)

    @work(thread=True, exclusive=True, group="states")
    def _fill_states(self, generation: int, rows: list[DefinitionRow], index: WeightsIndex) -> None:
        app = self.app
        worker = get_current_worker()
        # Rows on screen first, so the visible states arrive with the first batch.
        shown = {row.id for row in self.query_one(DefinitionList).rows[:200]}
        ordered = [row for row in rows if row.id in shown] + [row for row in rows if row.id not in shown]
        for start in range(0, len(ordered), STATE_BATCH):
            if worker.is_cancelled or generation != self._state_generation:
                return
            with app.registry_lock:
                fill_states(
                    app.registry,  # type: ignore[arg-type]
                    ordered[start : start + STATE_BATCH],
                    index,
                    app.quantization,
                    app.dtype,
                    app.updates,
                )
            done = start + STATE_BATCH >= len(ordered)
            self.post_message(StatesUpdated(generation, done))
        if not ordered:
            self.post_message(StatesUpdated(generation, True))

    def on_states_updated(self, message: StatesUpdated) -> None:
        if message.generation != self._state_generation:
            return
        if not self.query_one("#facet-state", Select).is_blank():
            self.apply_filter()
        else:
            self.query_one(DefinitionList).refresh_rows()
        if message.done:
            self.states_ready = True
            self._just_changed_ids = set()
            self._show_detail(self.query_one(DefinitionList).highlighted)

    # -- filter and facets ----------------------------------------------------------------

    def apply_filter(self) -> None:
        text = self.query_one("#filter", Input).value
        arch_select: Select[str] = self.query_one("#facet-arch", Select)
        state_select: Select[str] = self.query_one("#facet-state", Select)
        family_select: Select[str] = self.query_one("#facet-family", Select)
        rows = filter_rows(
            self.all_rows,
            text,
            architecture=None if arch_select.is_blank() else str(arch_select.value),
            state=None if state_select.is_blank() else str(state_select.value),
            family=None if family_select.is_blank() else str(family_select.value),
        )
        definitions = self.query_one(DefinitionList)
        definitions.set_rows(rows)
        definitions.border_title = f"Definitions {len(rows)}/{len(self.all_rows)}"

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.apply_filter()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        self.query_one(DefinitionList).focus()

    @on(Select.Changed)
    def _facet_changed(self, event: Select.Changed) -> None:
        if self._loaded:
            self.apply_filter()

    # -- detail -------------------------------------------------------------------------

    def on_definition_list_highlighted(self, message: DefinitionList.Highlighted) -> None:
        # After the list's own frame: typing in the filter repaints the list first.
        self.call_after_refresh(self._show_highlighted)

    def _show_highlighted(self) -> None:
        self._show_detail(self.query_one(DefinitionList).highlighted)

    def on_definition_list_selected(self, message: DefinitionList.Selected) -> None:
        detail = self.query_one(DetailPane)
        self._show_detail(message.row)
        self.maximize(detail)
        detail.focus()

    def _show_detail(self, row: DefinitionRow | None) -> None:
        detail = self.query_one(DetailPane)
        registry = self.app.registry
        if row is None or registry is None:
            detail.show_message("No definition selected." if self._loaded else "Loading definitions…")
            return
        try:
            definition = registry.get(row.id)
        except TunehubError as exc:
            detail.show_message(str(exc))
            return
        resolution = None
        resolve_error = None
        if definition.valid:
            try:
                resolution = registry.resolve(row.id, quantization=self.app.quantization, dtype=self.app.dtype)
            except TunehubError as exc:
                resolve_error = str(exc)
        if self.index is None:
            self.index = WeightsIndex(self.app.cfg.weights_dirs, self.app.cfg.home)
        detail.show(definition, resolution, self.index, resolve_error, home=self.app.cfg.home)

    def highlighted_id(self) -> str | None:
        row = self.query_one(DefinitionList).highlighted
        return row.id if row else None

    # -- live reload --------------------------------------------------------------------

    def _start_watching(self) -> None:
        try:
            from tunehub.tui.watch import DefinitionWatcher
        except ImportError:  # watchdog is a core dependency; keep the UI usable regardless
            return
        cfg = self.app.cfg
        self._observer = DefinitionWatcher(
            cfg.home,
            list(cfg.user_definition_dirs),
            cfg.remote_dir,
            lambda paths: self.post_message(DefinitionFilesChanged(paths)),
        )
        self._observer.start()

    def on_definition_files_changed(self, message: DefinitionFilesChanged) -> None:
        self._pending_paths |= message.paths
        if self._reload_timer is None:
            self._reload_timer = self.set_timer(RELOAD_DEBOUNCE_S, self._flush_reload)

    def _flush_reload(self) -> None:
        self._reload_timer = None
        paths, self._pending_paths = self._pending_paths, set()
        if paths:
            self.reload_paths(paths)

    @work(thread=True, group="reload")
    def reload_paths(self, paths: set[Path]) -> None:
        app = self.app
        if app.registry is None:
            return
        changed: set[str] = set()
        with app.registry_lock:
            from tunehub.registry import Registry

            full_reload = False
            for path in sorted(paths):
                try:
                    definition_id = app.registry.reload_file(path) if path.exists() else app.registry.remove_file(path)
                except (TunehubError, OSError):
                    definition_id = None
                if definition_id is None and path.parent.parent == app.cfg.remote_dir:
                    full_reload = True  # a remote folder the registry did not know yet
                elif definition_id:
                    changed.add(definition_id)
            if full_reload:
                app.registry = Registry.load(app.cfg)
            rows = build_rows(app.registry)
        self._just_changed_ids = changed
        self.post_message(RegistryLoaded(app.registry, rows))

    def action_reload(self) -> None:
        self.app.run_worker(self.app.sync_daemon_jobs, thread=True, group="jobs-sync")
        self.app.registry = None
        self._just_changed_ids = set()
        self.load_registry()

    # -- capabilities and daemon ----------------------------------------------------------

    @work(thread=True, group="capabilities")
    def check_capabilities(self) -> None:
        from tunehub.tui.jobs import capabilities

        self.post_message(CapabilitiesChecked(capabilities()))

    def on_capabilities_checked(self, message: CapabilitiesChecked) -> None:
        self.app.capability_status = message.status
        self.refresh_bindings()
        unavailable = [f"{kind}: {reason}" for kind, reason in message.status.items() if reason]
        if unavailable:
            self.notify("Unavailable here:\n" + "\n".join(unavailable), severity="warning", timeout=8)

    @work(thread=True, exclusive=True, group="daemon")
    def check_daemon(self) -> None:
        try:
            from tunehub.daemon.client import DaemonClient
        except ImportError:
            self.post_message(DaemonStatus(False, "no daemon support installed"))
            return
        home = self.app.cfg.home
        try:
            running = bool(DaemonClient.is_running(home))
        except Exception as exc:  # noqa: BLE001 - an unreachable daemon means local mode
            self.post_message(DaemonStatus(False, str(exc)))
            return
        if not running:
            self.post_message(DaemonStatus(False, "no daemon for this home"))
            return
        self.app.daemon_client = DaemonClient(home)
        self.post_message(DaemonStatus(True, "daemon"))
        self.follow_daemon()

    def on_daemon_status(self, message: DaemonStatus) -> None:
        self._update_titles()

    @work(thread=True, exclusive=True, group="daemon-events")
    def follow_daemon(self) -> None:
        """Long-poll the daemon's /events feed and turn each event into a message."""
        from tunehub.tui.daemon_events import follow

        follow(self.app, self, get_current_worker())

    # -- jobs ---------------------------------------------------------------------------

    def on_job_update(self, message: JobUpdate) -> None:
        title = f"{message.kind} {message.definition_id}"
        self.query_one(JobsPanel).update_job(message.key, title, message.event)
        self._drop_stray_line(message.key)

    def _drop_stray_line(self, key: str) -> None:
        """Events of our daemon job that came before its id made a line of their own: one line per job."""
        daemon_job = self.app.jobs.get(key, {}).get("daemon_job")
        if daemon_job is not None:
            self.query_one(JobsPanel).drop(f"daemon-{daemon_job}")

    def on_job_finished(self, message: JobFinished) -> None:
        title = f"{message.kind} {message.definition_id}"
        self.query_one(JobsPanel).finish_job(message.key, title, message.ok, message.summary)
        self._drop_stray_line(message.key)
        sheet = sheet_of(message.result) if message.kind == "generate" and message.ok else None
        if sheet is not None:
            # the job's line opens it again (click); `v` shows the latest
            line = self.query_one(JobsPanel).line(message.key)
            if line is not None:
                line.contact_sheet = sheet
            self._last_sheet = (sheet, str(getattr(message.result, "video", "") or ""))
            if self.app.screen is self:
                self.notify(f"{message.definition_id}: video ready; press v for its contact sheet")
        # Files and definitions changed: re-read what is on disk.
        if message.kind in ("quantize", "publish"):
            path = self._definition_path(message.definition_id)
            if path is not None:
                self.reload_paths({path})
                return
        self.refill_states()

    def action_view_sheet(self) -> None:
        last = getattr(self, "_last_sheet", None)
        if last is None:
            self.notify("No video generated in this session yet.")
            return
        self.app.push_screen(ContactSheetScreen(*last))

    def _definition_path(self, definition_id: str) -> Path | None:
        registry = self.app.registry
        if registry is None or definition_id not in registry:
            return None
        return registry.get(definition_id).path

    # -- actions ------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        kind = {"pull": "pull", "quantize": "quantize", "publish": "publish", "generate": "generate"}.get(action)
        needs_row = action in ("pull", "quantize", "publish", "generate", "delete", "edit")
        if needs_row and self.highlighted_id() is None:
            return None
        if kind is not None and not self.app.can_run(kind):
            return None  # shown dimmed: the capability is not installed (or not written yet)
        return True

    def _unavailable(self, kind: str) -> bool:
        reason = self.app.capability_status.get(kind)
        if reason is None:
            return False
        self.notify(f"{kind} is unavailable: {reason}", severity="warning")
        return True

    def _valid_highlighted(self) -> str | None:
        definition_id = self.highlighted_id()
        registry = self.app.registry
        if definition_id is None or registry is None:
            return None
        if not registry.get(definition_id).valid:
            self.notify(f"{definition_id} is invalid: fix it first (e to edit)", severity="error")
            return None
        return definition_id

    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_back(self) -> None:
        if self.maximized is not None:
            self.minimize()
            self.query_one(DefinitionList).focus()
        elif self.query_one("#filter", Input).has_focus:
            self.query_one(DefinitionList).focus()

    def action_pull(self) -> None:
        definition_id = self._valid_highlighted()
        if definition_id is None or self._unavailable("pull"):
            return
        self.app.start_job(
            "pull", definition_id, {"quantization": self.app.quantization, "dtype": self.app.dtype}
        )

    def action_quantize(self) -> None:
        definition_id = self._valid_highlighted()
        if definition_id is None or self._unavailable("quantize"):
            return
        self.app.start_job("quantize", definition_id, {"dtype": self.app.dtype})

    def action_publish(self) -> None:
        definition_id = self._valid_highlighted()
        if definition_id is None or self._unavailable("publish"):
            return
        from tunehub.tui.screens.dialogs import PublishScreen

        def publish(answer: tuple[str, bool] | None) -> None:
            if answer is not None:
                repo, private = answer
                self.app.start_job("publish", definition_id, {"repo": repo, "private": private})

        # The daemon's publish target (tunehub.toml [daemon] publish) is the likely answer.
        default_repo = self.app.cfg.daemon.get("publish")
        self.app.push_screen(
            PublishScreen(definition_id, default_repo if isinstance(default_repo, str) else ""), publish
        )

    def action_generate(self) -> None:
        definition_id = self._valid_highlighted()
        if definition_id is None or self._unavailable("generate"):
            return
        from tunehub.registry.architectures import architecture

        arch = self.app.registry.get(definition_id).architecture or ""  # type: ignore[union-attr]
        row = architecture(arch)
        if not row.generate:  # the architecture table decides, as `tunehub generate` does
            self.notify(f"tunehub cannot generate with {arch} ({row.family_label}); it can {row.can()} it", severity="warning")
            return
        from tunehub.tui.screens.generate import GenerateScreen

        # Back from the form, the list has focus (the focus is restored as it was left).
        if self.maximized is not None:
            self.minimize()
        self.query_one(DefinitionList).focus()
        self.app.push_screen(GenerateScreen(self.app.registry.get(definition_id)))  # type: ignore[union-attr]

    def action_delete(self) -> None:
        definition_id = self.highlighted_id()
        if definition_id is not None:
            self._plan_deletion(definition_id)

    @work(thread=True, group="delete")
    def _plan_deletion(self, definition_id: str) -> None:
        with self.app.registry_lock:
            plan = plan_deletion(self.app.cfg, self.app.registry, definition_id)  # type: ignore[arg-type]
        self.post_message(DeletionPlanned(plan))

    def on_deletion_planned(self, message: DeletionPlanned) -> None:
        from tunehub.disk.remove import removal_lines
        from tunehub.tui.screens.dialogs import ConfirmScreen

        plan = message.plan
        lines = removal_lines(plan, self.app.cfg.home)  # the warning `tunehub rm` prints
        if not plan.delete:
            self.notify("\n".join([f"{plan.definition_id}: no local weights to delete.", *lines]), severity="warning")
            return
        body = "\n".join([f"Delete these files ({format_size(plan.bytes_freed)} freed)?", *lines,
                          f"It will not be fetched again until you pull {plan.definition_id}."])

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._delete(plan)

        self.app.push_screen(ConfirmScreen(f"Delete local weights of {plan.definition_id}", body, "Delete"), confirmed)

    @work(thread=True, group="delete")
    def _delete(self, plan: Any) -> None:
        from tunehub.daemon.client import cancel_pulls

        cancel_pulls(self.app.cfg.home, plan.definition_id)  # as `tunehub rm` does
        freed = execute_deletion(self.app.cfg, plan)
        self.app.post_message(
            JobFinished("delete", "delete", plan.definition_id, True, f"deleted {format_size(freed)} of weights")
        )

    def action_edit(self) -> None:
        path = self._definition_path(self.highlighted_id() or "")
        if path is None:
            return
        editor = self.app.editor or os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        try:
            with self.app.suspend():
                subprocess.call([*shlex.split(editor), str(path)])
        except Exception as exc:  # noqa: BLE001 - a missing editor is reported, not fatal
            self.notify(f"cannot run editor {editor!r}: {exc}", severity="error")
        # The watcher sees the change too; reloading here makes it immediate.
        self.reload_paths({path})

    def action_toggle_quantization(self) -> None:
        self.app.quantization = "bf16" if self.app.quantization in ("int8", "fp8") else "int8"
        self._preferences_changed()

    def action_toggle_dtype(self) -> None:
        self.app.dtype = "fp16" if self.app.dtype in (None, "bf16") else "bf16"
        self._preferences_changed()

    def _preferences_changed(self) -> None:
        self._update_titles()
        self._show_detail(self.query_one(DefinitionList).highlighted)
        self.refill_states()

    def palette_commands(self) -> list[SystemCommand]:
        definition_id = self.highlighted_id() or "the highlighted definition"
        commands = [
            ("Pull", f"Download the files of {definition_id}", "pull"),
            ("Quantize", f"Make the int8 file of {definition_id}", "quantize"),
            ("Publish", f"Upload {definition_id} to a Hub repo", "publish"),
            ("Generate", f"Generate a video with {definition_id}", "generate"),
            ("Delete local weights", f"Free the disk space of {definition_id}", "delete"),
            ("Edit definition", f"Open {definition_id} in $EDITOR", "edit"),
            ("Toggle int8 / 16-bit", "Switch the quantization preference", "toggle_quantization"),
            ("Toggle bf16 / fp16", "Switch the dtype preference", "toggle_dtype"),
        ]
        result = []
        for title, help_text, action in commands:
            if self.check_action(action, ()) is not True:
                continue
            result.append(SystemCommand(title, help_text, getattr(self, f"action_{action}")))
        return result
