"""The generate form: pre-filled from the definition's settings, a progress bar per step,
and the output path and settings when done."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import (
    Button,
    Footer,
    Header,
    Input,
    Label,
    ProgressBar,
    Select,
    Static,
)

from tunehub.tui.messages import JobFinished, JobUpdate

if TYPE_CHECKING:  # pragma: no cover
    from tunehub.registry import Definition
    from tunehub.tui.app import TunehubApp

# (settings key, label, input type): the keys are the definition's own setting names.
FIELDS: tuple[tuple[str, str, str], ...] = (
    ("prompt", "Prompt", "text"),
    ("negative_prompt", "Negative prompt", "text"),
    ("resolution", "Resolution (WxH)", "text"),
    ("video_length", "Frames", "integer"),
    ("num_inference_steps", "Steps", "integer"),
    ("guidance_scale", "Guidance", "number"),
    ("seed", "Seed (-1 random)", "integer"),
)
IMAGE_FIELD = ("image", "Start image (i2v)", "text")
IMAGE_ARCHITECTURES = ("i2v", "i2v_720p", "hunyuan_i2v")
# Multi-GPU generation (docs/parallel.md): not definition settings, but generate()'s own
# ``gpus=`` (empty or 1: one GPU; N; auto) and ``parallel=`` arguments.
GPUS_FIELD = ("gpus", "GPUs (N or auto)", "gpus")
PARALLEL_FIELD = ("parallel", "Parallel", "select")
PARALLEL_MODES = ("auto", "cfg", "context", "both")
# Where the model runs (generate()'s ``device=``: empty is the best one found) and what is
# kept off the GPU between uses (``offload=``, tunehub.inference.pipeline.OFFLOAD_MODES).
DEVICE_FIELD = ("device", "Device (cuda, cpu)", "device")
OFFLOAD_FIELD = ("offload", "Offload", "offload")
OFFLOAD_MODES = ("none", "model", "group")


def form_fields(definition: Definition) -> list[tuple[str, str, str]]:
    fields = list(FIELDS)
    if (definition.architecture or "") in IMAGE_ARCHITECTURES:
        fields.append(IMAGE_FIELD)
    fields.extend((DEVICE_FIELD, OFFLOAD_FIELD, GPUS_FIELD, PARALLEL_FIELD))
    return fields


def _short_label(label: str) -> str:
    return label.split(" (")[0]


def form_error(message: str, fields: list[tuple[str, str, str]]) -> str:
    """A failed generation's first line in the form's words: the field's label for the
    setting it names, without the job prefix, the source or the exception's class name."""
    text = re.sub(r"^generate failed: ", "", message.strip())
    text = re.sub(r"^[A-Z][A-Za-z]*(Error|Exception): ", "", text)
    labels = {key: _short_label(label) for key, label, _ in fields}

    def label_for(match: re.Match[str]) -> str:
        return labels.get(match.group(1), match.group(1))

    # "t2v_x: setting 'video_length' must ..." -> "Frames must ..."
    text = re.sub(r"^[^:]*: setting '([a-z_]+)'", label_for, text)
    return re.sub(r"setting '([a-z_]+)'", label_for, text)


def parse_form(values: dict[str, str], fields: list[tuple[str, str, str]]) -> tuple[dict[str, Any], list[str]]:
    """Typed settings from the form's text, and the errors that name the bad field."""
    settings: dict[str, Any] = {}
    errors: list[str] = []
    for key, label, kind in fields:
        text = values.get(key, "").strip()
        if kind == "select":
            continue  # checked below, with the GPU count it goes with
        if kind == "offload":
            if text and text != "none":
                settings[key] = text
            continue
        if not text:
            continue
        if kind == "gpus":
            if text.lower() == "auto":
                settings[key] = "auto"
            elif text.isdigit() and int(text) >= 1:
                if int(text) > 1:  # 1 is the single-GPU path: nothing to pass
                    settings[key] = int(text)
            else:
                errors.append(f"{label.split(' (')[0]}: '{text}' must be a positive whole number or auto")
        elif kind == "integer":
            try:
                settings[key] = int(text)
            except ValueError:
                errors.append(f"{label}: '{text}' is not a whole number")
        elif kind == "number":
            try:
                settings[key] = float(text)
            except ValueError:
                errors.append(f"{label}: '{text}' is not a number")
        else:
            settings[key] = text
    resolution = settings.get("resolution")
    if isinstance(resolution, str):
        parts = resolution.lower().split("x")
        if len(parts) != 2 or not all(part.isdigit() and int(part) > 0 for part in parts):
            errors.append(f"Resolution: '{resolution}' must look like 832x480")
        elif any(int(part) % 16 for part in parts):
            errors.append(f"Resolution: '{resolution}' must be multiples of 16 (832x480)")
    # What generate() would refuse after loading the model: said here, in the form's words.
    frames = settings.get("video_length")
    if isinstance(frames, int) and (frames < 1 or (frames - 1) % 4):
        errors.append(f"Frames: '{frames}' must be 4k+1 (1, 5, ..., 81): the VAE packs 4 frames into one")
    steps = settings.get("num_inference_steps")
    if isinstance(steps, int) and steps < 1:
        errors.append(f"Steps: '{steps}' must be at least 1")
    if any(key == "parallel" for key, _, _ in fields):
        parallel = values.get("parallel", "").strip().lower() or "auto"
        if parallel not in PARALLEL_MODES:
            errors.append(f"Parallel: '{parallel}' must be one of {', '.join(PARALLEL_MODES)}")
        elif "gpus" in settings:
            settings["parallel"] = parallel
        elif parallel != "auto" and not any(e.startswith("GPUs:") for e in errors):
            errors.append(f"Parallel: '{parallel}' needs GPUs of 2 or more (or auto)")
    return settings, errors


class GenerateScreen(Screen[None]):
    """One generation for one definition; escape goes back (the job keeps running)."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("ctrl+g", "start", "Generate"),
    ]

    app: TunehubApp  # type: ignore[assignment]

    def __init__(self, definition: Definition) -> None:
        super().__init__()
        self.definition = definition
        self.fields = form_fields(definition)
        self.job_key: str | None = None

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="≋")
        with VerticalScroll(id="generate-body"):
            yield Label(f"Generate with {self.definition.name}", id="generate-title")
            with Grid(id="generate-form"):
                settings = self.definition.settings
                for key, label, kind in self.fields:
                    yield Label(label, classes="form-label")
                    if kind in ("select", "offload"):
                        modes = OFFLOAD_MODES if kind == "offload" else PARALLEL_MODES
                        yield Select(
                            [(mode, mode) for mode in modes],
                            value=modes[0],
                            allow_blank=False,
                            id=f"field-{key}",
                            compact=True,
                        )
                        continue
                    value = settings.get(key)
                    yield Input(
                        "" if value is None else str(value),
                        id=f"field-{key}",
                        type=kind if kind in ("integer", "number") else "text",
                        placeholder={"gpus": "1", "device": "auto"}.get(kind, ""),
                        compact=True,
                    )
            yield Static("", id="generate-errors", markup=False)
            with Horizontal(id="generate-actions"):
                yield Button("Generate", id="generate-start", variant="success")
            yield ProgressBar(total=None, show_eta=True, id="generate-progress")
            yield Static("", id="generate-plan", markup=False)
            yield Static("", id="generate-status", markup=False)
            yield Static("", id="generate-result", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.title = "tunehub · generate"
        self.sub_title = f"{self.definition.id} · {self.app.mode_label} · {self.app.preferences_label}"
        self.query_one("#generate-progress", ProgressBar).display = False
        self.query_one(f"#field-{self.fields[0][0]}", Input).focus()

    def values(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for key, _, kind in self.fields:
            if kind in ("select", "offload"):
                value = self.query_one(f"#field-{key}", Select).value
                values[key] = "" if value is Select.NULL else str(value)
            else:
                values[key] = self.query_one(f"#field-{key}", Input).value
        return values

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "generate-start":
            self.action_start()

    def action_start(self) -> None:
        if self.job_key is not None and self.app.jobs.get(self.job_key, {}).get("state") == "running":
            self.notify("A generation is already running for this form.", severity="warning")
            return
        settings, errors = parse_form(self.values(), self.fields)
        errors_widget = self.query_one("#generate-errors", Static)
        if errors:
            errors_widget.update("\n".join(errors))
            return
        errors_widget.update("")
        settings["quantization"] = self.app.quantization
        if self.app.dtype:
            settings["dtype"] = self.app.dtype
        bar = self.query_one("#generate-progress", ProgressBar)
        bar.display = True
        bar.update(total=None, progress=0)
        self.query_one("#generate-result", Static).update("")
        self.query_one("#generate-plan", Static).update("")
        self.query_one("#generate-status", Static).update("starting…")
        # On a short terminal the bar and the phase line are below the form: bring them into view.
        self.call_after_refresh(self.query_one("#generate-status", Static).scroll_visible, animate=False)
        self.job_key = self.app.start_job("generate", self.definition.id, settings)

    def on_job_update(self, message: JobUpdate) -> None:
        if message.key != self.job_key:
            return
        event = message.event
        if event.get("status") == "parallel":
            # The multi-GPU driver's first event: how the work is split (kept on screen).
            description = event.get("description") or "several processes"
            self.query_one("#generate-plan", Static).update(f"parallel: {description}")
            self.query_one("#generate-status", Static).update("starting the processes…")
            return
        bar = self.query_one("#generate-progress", ProgressBar)
        if event.get("total"):
            bar.update(total=event["total"], progress=event.get("completed") or 0)
        status = event.get("status") or event.get("message")
        if event.get("total"):
            status = f"{status or 'step'} {event.get('completed') or 0}/{event['total']}"
        if status:
            self.query_one("#generate-status", Static).update(str(status))

    def on_job_finished(self, message: JobFinished) -> None:
        if message.key != self.job_key:
            return
        status = self.query_one("#generate-status", Static)
        result = self.query_one("#generate-result", Static)
        if not message.ok:
            status.update(message.summary)
            # A setting the form holds is named by its label, as the form's own checks do.
            if re.search(r"setting '[a-z_]+'", message.summary):
                self.query_one("#generate-errors", Static).update(form_error(message.summary, self.fields))
            return
        bar = self.query_one("#generate-progress", ProgressBar)
        bar.update(total=bar.total or 1, progress=bar.total or 1)
        status.update("done")
        lines = [message.summary]
        used = getattr(message.result, "settings", None)
        if isinstance(used, dict):
            lines.append("Settings used:")
            lines.extend(f"  {key}: {value}" for key, value in used.items())
        result.update("\n".join(lines))
        self._show_contact_sheet(message.result)

    def _show_contact_sheet(self, generated: Any) -> None:
        """The frames grid of the new video, below the settings used."""
        from tunehub.tui.screens.contact_sheet import ContactSheetView, sheet_of

        for old in self.query("#generate-sheet"):
            old.remove()
        sheet = sheet_of(generated)
        if sheet is None:
            return
        view = ContactSheetView(sheet, str(getattr(generated, "video", "") or ""), id="generate-sheet")
        self.query_one("#generate-body").mount(view, after=self.query_one("#generate-result"))
