"""What the TUI shows, computed from the registry without importing textual.

Rows of the definition list, their state and size on disk, the filter and the facets,
the variant table of the detail pane and the plan of a local-weights deletion. Kept
free of textual so that it is cheap to test and to benchmark, and so that workers can
build it off the UI thread.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunehub.disk.remove import RemovalPlan, execute_removal, plan_removal
from tunehub.registry.urls import is_url, local_name, parse_hub_url
from tunehub.registry.naming import parse_variant_name

if TYPE_CHECKING:  # pragma: no cover - typing only
    from tunehub.config import Config
    from tunehub.registry import Definition, Registry, Resolution

__all__ = [
    "STATES",
    "DefinitionRow",
    "VariantRow",
    "DeletionPlan",
    "WeightsIndex",
    "build_rows",
    "compute_state",
    "filter_rows",
    "variant_rows",
    "plan_deletion",
    "format_size",
]

# Every state a row can be in, in the order the state facet lists them.
STATES = ("missing", "present", "quantized", "published", "update available", "invalid")
PENDING_STATE = "…"


def format_size(size_bytes: int | None) -> str:
    """Human size with one decimal, binary units (what `du -h` users expect)."""
    if size_bytes is None:
        return "…"
    if size_bytes == 0:
        return "0 B"
    value = float(size_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size_bytes} B"  # pragma: no cover - loop always returns


class WeightsIndex:
    """Name -> (path, size) of the files in the weights folders, first folder wins.

    One ``scandir`` per folder instead of a ``stat`` per candidate: with 10,000
    definitions of three variants each that is the difference between a few
    milliseconds and a visible pause.
    """

    def __init__(self, weights_dirs: Sequence[Path], home: Path | None = None) -> None:
        self.weights_dirs = list(weights_dirs)
        self.home = home
        self.files: dict[str, tuple[Path, int]] = {}
        for folder in self.weights_dirs:
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                if entry.name in self.files:
                    continue
                try:
                    if entry.is_file():
                        self.files[entry.name] = (Path(entry.path), entry.stat().st_size)
                except OSError:
                    continue

    def find(self, source: str) -> tuple[Path, int] | None:
        """Where the file a definition entry names is on disk, and its size."""
        if not is_url(source):
            path = Path(source).expanduser()
            explicit = path if path.is_absolute() else (self.home / path if self.home and len(path.parts) > 1 else None)
            if explicit is not None:
                try:
                    if explicit.is_file():
                        return explicit, explicit.stat().st_size
                except OSError:
                    pass
        return self.files.get(local_name(source))


@dataclass
class DefinitionRow:
    """One line of the definition list."""

    id: str
    name: str
    architecture: str
    description: str
    origin: str
    valid: bool
    visible: bool
    family: str = "unknown"
    state: str = PENDING_STATE
    size_bytes: int | None = None
    # Lower-cased id + name + description: what the filter box matches.
    haystack: str = ""

    @property
    def size_label(self) -> str:
        # Nothing on disk is "—", not "0 B" (which reads as an empty file).
        return "—" if self.size_bytes == 0 else format_size(self.size_bytes)


def _origin_name(definition: Definition) -> str:
    origin = getattr(definition, "origin", None)
    return str(getattr(origin, "name", origin) or "").lower()


def row_for(definition: Definition) -> DefinitionRow:
    """The cheap part of a row: what the definition itself says (state filled later)."""
    name = str(definition.name or definition.id)
    description = str(definition.description or "")
    row = DefinitionRow(
        id=definition.id,
        name=name,
        architecture=str(definition.architecture or "?"),
        family=str(getattr(definition, "family", "unknown")),
        description=description,
        origin=_origin_name(definition),
        valid=bool(definition.valid),
        visible=bool(definition.visible),
        haystack=f"{definition.id}\n{name}\n{description}".lower(),
    )
    if not row.valid:
        row.state = "invalid"
    return row


def build_rows(registry: Registry, include_hidden: bool = False) -> list[DefinitionRow]:
    """Rows for every definition, sorted by id; hidden ones only when asked."""
    rows = []
    for definition in registry.definitions.values():
        if not include_hidden and not definition.visible:
            continue
        rows.append(row_for(definition))
    rows.sort(key=lambda row: row.id)
    return rows


def _sources(resolution: Resolution) -> list[str]:
    """Every file the definition lists for this resolution (all variants), deduplicated."""
    seen: dict[str, None] = {}
    for choice in resolution.all_files():
        for source in choice.candidates or [choice.source]:
            seen.setdefault(source, None)
    return list(seen)


def compute_state(
    definition: Definition,
    resolution: Resolution | None,
    index: WeightsIndex,
    updates: Iterable[str] = (),
) -> tuple[str, int]:
    """(state, bytes on disk) of a definition for the current preferences.

    - invalid: the definition has validation errors (or cannot be resolved);
    - update available: the daemon found a newer revision of its remote repo;
    - missing: a file picked for the preferences is not on disk;
    - quantized: all there, and an int8 file made here is listed only as a local path
      (not shared yet);
    - published: all there, the user's own definition, and every file it lists is a
      Hub URL (it can be shared as is);
    - present: all there otherwise.
    """
    if not definition.valid or resolution is None:
        return "invalid", 0
    size = 0
    sources = _sources(resolution)
    for source in sources:
        found = index.find(source)
        if found is not None:
            size += found[1]
    if definition.id in set(updates):
        return "update available", size
    selected = resolution.all_files()
    if any(index.find(choice.source) is None and not choice.present for choice in selected):
        return "missing", size
    local_quantized = [s for s in sources if not is_url(s) and parse_variant_name(local_name(s)).quantized]
    if local_quantized:
        return "quantized", size
    if _origin_name(definition) == "local" and sources and all(parse_hub_url(s) for s in sources):
        return "published", size
    return "present", size


def fill_states(
    registry: Registry,
    rows: Sequence[DefinitionRow],
    index: WeightsIndex,
    quantization: str,
    dtype: str | None,
    updates: Iterable[str] = (),
) -> None:
    """Resolve each row for the preferences and set its state and size, in place."""
    update_ids = set(updates)
    definitions = registry.definitions  # a fresh dict per access: take it once
    for row in rows:
        definition = definitions.get(row.id)
        if definition is None:
            continue
        resolution = None
        if definition.valid:
            try:
                resolution = registry.resolve(row.id, quantization=quantization, dtype=dtype)
            except Exception:  # noqa: BLE001 - a broken definition is shown as invalid, not a crash
                resolution = None
        row.state, row.size_bytes = compute_state(definition, resolution, index, update_ids)


def filter_rows(
    rows: Sequence[DefinitionRow],
    text: str = "",
    architecture: str | None = None,
    state: str | None = None,
    family: str | None = None,
) -> list[DefinitionRow]:
    """Rows whose id, name or description contain every word of ``text`` (any case)."""
    words = text.lower().split()
    result = []
    for row in rows:
        if family is not None and row.family != family:
            continue
        if architecture is not None and row.architecture != architecture:
            continue
        if state is not None and row.state != state:
            continue
        haystack = row.haystack
        if words and not all(word in haystack for word in words):
            continue
        result.append(row)
    return result


@dataclass
class VariantRow:
    """One line of the variant table of the detail pane."""

    role: str
    file: str
    dtype: str
    quantization: str
    present: bool
    size_bytes: int | None
    selected: bool
    reason: str


def variant_rows(resolution: Resolution, index: WeightsIndex) -> list[VariantRow]:
    """Every variant of every role, with which one the preferences pick and why."""
    rows: list[VariantRow] = []
    for choice in resolution.all_files():
        for source in choice.candidates or [choice.source]:
            info = parse_variant_name(local_name(source))
            found = index.find(source) if choice.role != "lora" else ((choice.path, 0) if choice.present else None)
            selected = source == choice.source
            rows.append(
                VariantRow(
                    role=choice.role,
                    file=local_name(source),
                    dtype=info.dtype or "-",
                    # what the file is: 16-bit, int8, nvfp4, gguf q4_k_m ... (dtype has its own column)
                    quantization=f"LoRA x{choice.multiplier}" if choice.role == "lora"
                    else f"{info.kind} {info.detail}".strip(),
                    present=found is not None,
                    size_bytes=found[1] if found else None,
                    selected=selected,
                    reason=choice.reason if selected else "",
                )
            )
    return rows


# The delete action is `tunehub rm`'s: same plan, same warning, same "removed by you" mark.
DeletionPlan = RemovalPlan


def plan_deletion(cfg: Config, registry: Registry, definition_id: str) -> RemovalPlan:
    """What deleting a definition's local weights removes, keeps and why (:mod:`tunehub.disk.remove`)."""
    return plan_removal(cfg, registry, definition_id)


def execute_deletion(cfg: Config, plan: RemovalPlan) -> int:
    """Delete the planned files (marking the definition removed); returns the bytes actually freed."""
    return execute_removal(cfg, plan)


def settings_summary(settings: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, value) pairs of a definition's settings, in file order, values as text."""
    pairs = []
    for key, value in settings.items():
        text = value if isinstance(value, str) else repr(value)
        pairs.append((str(key), text))
    return pairs
