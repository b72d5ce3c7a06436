"""Desired state against actual state: what each definition still needs.

Per definition (visible, valid, not built in), in order:

* **pull** when a chosen file is missing and the policy covers it (``pull = "all"``, or
  ``"new"`` and the definition appeared after its source was first seen), or with
  ``update = "auto"`` when the Hub changed one of its files; never for a definition the
  user removed (``tunehub rm``) until ``tunehub pull ID``;
* **quantize** when the quantize policy asks for it (``always``, or ``auto`` and the
  definition's ``auto_quantize``), an int8 file is wanted and the pick is 16-bit;
* **publish** when ``[daemon] publish`` is set and the definition names local files.

One job per definition at a time, in that order. A job that already failed (or was
cancelled) for the same content of the definition is not re-queued: the definition
shows as failed until it changes or the user submits the job again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from tunehub.daemon.policy import DaemonSettings

__all__ = ["Plan", "plan_definition", "fingerprint", "local_entries"]

_LIST_KEYS = ("URLs", "URLs2", "preload_URLs")


@dataclass
class Plan:
    id: str
    name: str
    origin: str
    managed: bool
    valid: bool
    visible: bool
    needs: list[str] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    note: str | None = None
    fingerprint: str = ""
    removed: bool = False  # `tunehub rm`: not pulled again until `tunehub pull ID`
    updates: list[str] = field(default_factory=list)  # files the Hub changed (tunehub outdated)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # job kind -> params

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "origin": self.origin, "managed": self.managed,
            "valid": self.valid, "visible": self.visible, "needs": self.needs, "files": self.files,
            "problems": self.problems, "note": self.note, "removed": self.removed, "updates": self.updates,
        }


def fingerprint(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def local_entries(model: dict[str, Any]) -> list[str]:
    """Entries of URLs/URLs2/preload_URLs/loras/modules that are local paths, not URLs."""
    from tunehub.registry.urls import is_url

    found: list[str] = []
    for key in (*_LIST_KEYS, "loras"):  # local LoRAs are published too
        value = model.get(key)
        if isinstance(value, list):
            found.extend(v for v in value if isinstance(v, str) and not is_url(v))
    modules = model.get("modules")
    if isinstance(modules, list):
        for item in modules:
            if isinstance(item, list):
                found.extend(v for v in item if isinstance(v, str) and not is_url(v))
    return found


def plan_definition(registry: Any, definition: Any, settings: DaemonSettings, is_new: bool, quantization: str,
                    removed: bool = False, updates: list[str] | None = None) -> Plan:
    from tunehub.registry.urls import is_url
    from tunehub.registry import Origin

    origin = definition.origin.value if hasattr(definition.origin, "value") else str(definition.origin)
    plan = Plan(
        id=definition.id, name=definition.name, origin=origin,
        managed=definition.origin is not Origin.BUILTIN and definition.visible,
        valid=definition.valid, visible=definition.visible,
        problems=[str(p) for p in definition.problems], fingerprint=fingerprint(definition.data),
    )
    if not definition.valid:
        plan.note = "invalid: skipped"
        return plan
    try:
        resolution = registry.resolve(definition.id)
    except Exception as exc:  # a definition that cannot resolve is reported, never fatal
        plan.problems.append(str(exc))
        plan.note = "cannot be resolved"
        return plan
    choices = resolution.all_files()
    plan.files = [
        {"role": c.role, "filename": c.filename, "present": c.present, "source": c.source, "path": str(c.path)}
        for c in choices
    ]
    if not plan.managed:
        return plan
    missing = [c for c in choices if not c.present]
    pull_scope = settings.pull == "all" or (settings.pull == "new" and is_new)
    if removed:
        plan.removed = True
        plan.note = f"removed by you (tunehub pull {definition.id} fetches it again)"
        return plan
    plan.updates = list(updates or [])
    if plan.updates and settings.update == "auto" and not missing:
        plan.needs.append("pull")
        plan.params["pull"] = {"update": True}
    if missing:
        if pull_scope and all(is_url(c.source) for c in missing):
            plan.needs.append("pull")
        elif pull_scope:
            plan.note = "local files missing: " + ", ".join(c.filename for c in missing if not is_url(c.source))
        else:
            plan.note = f"files missing; not pulled (pull = {settings.pull})"
    wants_quantize = settings.quantize == "always" or (settings.quantize == "auto" and resolution.auto_quantize)
    urls = definition.model.get("URLs")
    if wants_quantize and quantization == "int8" and resolution.needs_quantization and isinstance(urls, list):
        transformer = resolution.transformer
        if transformer is not None and (transformer.present or "pull" in plan.needs):
            plan.needs.append("quantize")
    local_missing = [c for c in missing if not is_url(c.source)]
    if settings.publish and local_entries(definition.model) and not local_missing:
        plan.needs.append("publish")
    return plan
