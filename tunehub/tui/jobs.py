"""The actions the TUI starts, run either here (in a worker thread) or as daemon jobs.

No textual import: a job reports through a plain ``report(event)`` callback that the
app turns into messages. Each capability lives in another part of tunehub that may not
be installed or written yet; ``capabilities()`` says which ones can run, by importing
them for real, so an action is never shown as available when its code is missing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from tunehub.config import Config
    from tunehub.registry import Registry

__all__ = ["CAPABILITIES", "Capability", "capabilities", "run_local", "progress_event"]

Report = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Capability:
    kind: str  # job kind, also the daemon's job kind
    label: str
    module: str
    attribute: str


CAPABILITIES = {
    cap.kind: cap
    for cap in (
        Capability("pull", "Pull", "tunehub.flows", "pull_definition"),
        Capability("quantize", "Quantize", "tunehub.quant.flow", "quantize_definition"),
        Capability("publish", "Publish", "tunehub.hub.publish", "publish"),
        Capability("generate", "Generate", "tunehub.inference", "generate"),
    )
}


def capabilities(known: dict[str, Capability] | None = None) -> dict[str, str | None]:
    """kind -> None when it can run, else why not (the import error, in words)."""
    status: dict[str, str | None] = {}
    for kind, cap in (known or CAPABILITIES).items():
        try:
            module = importlib.import_module(cap.module)
        except ImportError as exc:
            status[kind] = f"{cap.module} is not available ({exc})"
            continue
        if not callable(getattr(module, cap.attribute, None)):
            status[kind] = f"{cap.module}.{cap.attribute} is not available"
        else:
            status[kind] = None
    return status


def _function(kind: str) -> Callable[..., Any]:
    cap = CAPABILITIES[kind]
    return getattr(importlib.import_module(cap.module), cap.attribute)


def progress_event(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Normalise what a part passes to ``progress``: an event dict (pull's
    ``{file, total, completed, status}``), or ``(completed, total)`` numbers."""
    if args and isinstance(args[0], dict):
        event = dict(args[0])
    else:
        event = dict(kwargs)
        if len(args) >= 2 and all(isinstance(a, (int, float)) for a in args[:2]):
            event.setdefault("completed", args[0])
            event.setdefault("total", args[1])
        elif len(args) == 1 and isinstance(args[0], (int, float)):
            event.setdefault("completed", args[0])
    for key in ("completed", "total"):
        value = event.get(key)
        if value is not None and not isinstance(value, (int, float)):
            event.pop(key)
    return event


def _summary(kind: str, definition_id: str, result: Any, params: dict[str, Any]) -> str:
    """A one-line account of a finished job, from what its function returned."""
    from tunehub.tui.model import format_size

    if kind == "pull" and hasattr(result, "files"):
        text = f"pulled {definition_id}: {len(result.files)} file(s), {format_size(result.bytes_transferred)} downloaded"
        if getattr(result, "quantized", None):
            text += ", quantized " + ", ".join(p.name for p in result.quantized)
        return text
    if kind == "publish" and hasattr(result, "repo"):
        return f"published {definition_id} to {result.repo}: {format_size(result.bytes_uploaded)} uploaded"
    if kind == "quantize" and isinstance(result, (list, tuple)):
        names = [getattr(item, "name", str(item)) for item in result]
        return "quantize done: " + (", ".join(names) if names else "nothing to do")
    if kind == "generate" and getattr(result, "video", None):
        return f"video written: {result.video}"
    return f"{kind} done"


def run_local(
    kind: str,
    cfg: Config,
    registry: Registry,
    definition_id: str,
    params: dict[str, Any],
    report: Report,
    cancel: Any = None,
) -> tuple[str, Any]:
    """Run one action in this process; returns (summary, result). Errors propagate.

    ``cancel`` (a threading.Event) stops a pull at once when set (the app is quitting)."""

    def progress(*args: Any, **kwargs: Any) -> None:
        report(progress_event(*args, **kwargs))

    function = _function(kind)
    if kind == "pull":
        result = function(
            cfg,
            registry,
            definition_id,
            quantization=params.get("quantization"),
            dtype=params.get("dtype"),
            progress=progress,
            **({"cancel": cancel} if cancel is not None else {}),
        )
    elif kind == "quantize":
        result = function(cfg, registry, definition_id, dtype=params.get("dtype"), progress=progress)
    elif kind == "publish":
        result = function(
            cfg,
            registry,
            definition_id,
            params["repo"],
            private=bool(params.get("private", False)),
            progress=progress,
        )
    elif kind == "generate":
        settings = {key: value for key, value in params.items() if value not in (None, "")}
        result = function(cfg, registry, definition_id, progress=progress, **settings)
    else:  # pragma: no cover - the app only starts known kinds
        raise ValueError(f"unknown job kind {kind!r}")
    return _summary(kind, definition_id, result, params), result
