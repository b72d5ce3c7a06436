"""The one place that writes definitions: a change lands in the user's file, or in an override.

WanGP's ``defaults/`` belongs to WanGP (replaced on every update), and tunehub's built-ins
to tunehub; ``readonly_dirs`` names more such folders. A change to a definition whose last
file lives in one of them (an int8 file tunehub made, URLs after publish, a pinned
revision) is written as the smallest override into the user's ``finetunes/``: same id, only
the keys that changed; WanGP's merge (settings, then ``model`` keys) turns it into the
intended definition. A change that changes nothing writes nothing, so running a command
twice leaves the second run without a write.

Callers give a ``mutate(data)`` that edits the *merged* definition (settings at the top
level and ``model``) in place and returns False when there is nothing to do; this module
works out which keys changed and where they go. Quantize, publish and the daemon's jobs
(which run those two) all write through :func:`record_change`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunehub.safeio import atomic_write_text, dump_json_like, update_definition

if TYPE_CHECKING:  # pragma: no cover - typing only
    from tunehub.registry.core import Registry

__all__ = ["ChangeResult", "record_change", "changed_keys", "target_for"]

Mutate = Callable[[dict[str, Any]], "bool | None"]


@dataclass
class ChangeResult:
    path: Path  # the file written (or that would be written)
    written: bool  # False: nothing changed (or a dry run)
    override: bool  # True: an override in the user's folder, beside a read-only definition
    data: dict[str, Any]  # the file's content after the change
    text: str  # the same, as the file's text
    readonly_file: Path | None = None  # the definition file left untouched, when override


def _merge(earlier: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    merged = {k: v for k, v in earlier.items() if k != "model"}
    merged.update({k: v for k, v in data.items() if k != "model"})
    model = dict(earlier.get("model") or {})
    if isinstance(data.get("model"), dict):
        model.update(data["model"])
    merged["model"] = model
    return merged


def changed_keys(before: dict[str, Any], after: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(settings keys, model keys) whose value differs between two merged definitions."""
    settings = [k for k, v in after.items() if k != "model" and before.get(k, _MISSING) != v]
    before_model = before.get("model") or {}
    model = [k for k, v in (after.get("model") or {}).items() if before_model.get(k, _MISSING) != v]
    return settings, model


_MISSING = object()


def _apply(data: dict[str, Any], after: dict[str, Any], settings: list[str], model_keys: list[str]) -> None:
    for key in settings:
        data[key] = copy.deepcopy(after[key])
    if model_keys:
        model = data.get("model")
        if not isinstance(model, dict):
            model = {}
            data["model"] = model
        for key in model_keys:
            model[key] = copy.deepcopy(after["model"][key])


def target_for(registry: Registry, definition_id: str) -> tuple[Path, bool]:
    """The file a change to ``definition_id`` goes to, and whether it is an override."""
    definition = registry.get(definition_id)
    folder = registry.folder_of(definition.path)
    if folder is not None and not folder.readonly:
        return definition.path, False
    return registry.config.override_dir / f"{definition_id}.json", True


def record_change(registry: Registry, definition_id: str, mutate: Mutate, dry_run: bool = False) -> ChangeResult:
    """Apply ``mutate`` to the merged definition and write the keys it changed (see module doc)."""
    definition = registry.get(definition_id)
    target, override = target_for(registry, definition_id)
    readonly_file = definition.path if override else None
    if target.is_file():
        earlier = registry.earlier_data(target)
        changed_flag: list[bool] = []

        def file_mutate(data: dict[str, Any]) -> bool:
            before = _merge(earlier, data)
            after = copy.deepcopy(before)
            if mutate(after) is False:
                changed_flag.append(False)
                return False
            settings, model_keys = changed_keys(before, after)
            if not settings and not model_keys:
                changed_flag.append(False)
                return False
            _apply(data, after, settings, model_keys)
            changed_flag.append(True)
            return not dry_run

        if dry_run:
            from tunehub.safeio import DefinitionDocument

            document = DefinitionDocument.read(target)
            data = json.loads(document.text)
            file_mutate(data)
            return ChangeResult(target, False, override, data, dump_json_like(data, document.text), readonly_file)
        document = update_definition(target, file_mutate)
        written = bool(changed_flag and changed_flag[-1])
        if written:
            registry.reload_file(target)
        return ChangeResult(target, written, override, document.data, document.text, readonly_file)
    # No file of the user's yet: the override holds only what changed.
    before = copy.deepcopy(definition.data)
    before.setdefault("model", {})
    after = copy.deepcopy(before)
    data: dict[str, Any] = {}
    if mutate(after) is not False:
        settings, model_keys = changed_keys(before, after)
        _apply(data, after, settings, model_keys)
    text = json.dumps(data, indent=4, ensure_ascii=False) + "\n"
    if not data or dry_run:
        return ChangeResult(target, False, override, data, text, readonly_file)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, text)
    if registry.folder_of(target) is not None:
        registry.reload_file(target)
    return ChangeResult(target, True, override, data, text, readonly_file)
