"""What this machine adds to a remote definition, kept across fetches.

A remote definition lives twice: the pristine copy as fetched (the *base*, under
``<home>/.tunehub/remote-base/``) and the working file the registry reads (under
``<home>/remote/<ns>--<name>/``), which quantize and publish rewrite (a quantized file
appended to ``URLs``, local names replaced by URLs). The overlay is the difference
between the two. When the remote file changes, the overlay is re-applied to the new
content; entries derived from a source file the remote replaced (a quantized file made
from the old 16-bit file) are dropped instead of left stale, so they get made again.
"""

from __future__ import annotations

import copy
import difflib
from typing import Any

__all__ = ["compute_overlay", "apply_overlay", "rebase"]

_MISSING = object()


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def compute_overlay(base: dict[str, Any], working: dict[str, Any]) -> dict[str, Any]:
    """The local changes, as ``{key: op}`` with ops ``set``, ``del``, ``dict`` and ``list``."""
    ops: dict[str, Any] = {}
    for key, value in working.items():
        old = base.get(key, _MISSING)
        if old is _MISSING:
            ops[key] = ("set", copy.deepcopy(value))
        elif old != value:
            if isinstance(old, dict) and isinstance(value, dict):
                ops[key] = ("dict", compute_overlay(old, value))
            elif _is_str_list(old) and _is_str_list(value):
                ops[key] = ("list", list(old), list(value))
            else:
                ops[key] = ("set", copy.deepcopy(value))
    for key in base:
        if key not in working:
            ops[key] = ("del",)
    return ops


def _is_quantized(name: str) -> bool:
    from tunehub.registry.naming import parse_variant_name

    return parse_variant_name(name).quantization is not None


def _merge_list(old: list[str], work: list[str], new: list[str]) -> list[str]:
    replaced: dict[str, str] = {}
    removed: set[str] = set()
    added: list[str] = []
    matcher = difflib.SequenceMatcher(a=old, b=work, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "replace" and i2 - i1 == j2 - j1:
            replaced.update(zip(old[i1:i2], work[j1:j2]))
        elif tag in ("replace", "delete", "insert"):
            removed.update(old[i1:i2])
            added.extend(work[j1:j2])
    source_changed = bool(old) and bool(new) and old[0] != new[0]
    if source_changed:
        # Made from the old first (16-bit) entry: stale once the remote replaced it.
        added = [item for item in added if not _is_quantized(item)]
        replaced = {k: v for k, v in replaced.items() if not _is_quantized(k) and not _is_quantized(v)}
    result: list[str] = []
    for item in new:
        if item in removed and item in old:
            continue
        mapped = replaced.get(item, item)
        if mapped not in result:
            result.append(mapped)
    for item in added:
        if item not in result:
            result.append(item)
    return result


def apply_overlay(new: dict[str, Any], ops: dict[str, Any]) -> dict[str, Any]:
    """``new`` (the remote's new content) with the local changes ``ops`` applied; a copy."""
    result = copy.deepcopy(new)
    for key, op in ops.items():
        kind = op[0]
        if kind == "set":
            result[key] = copy.deepcopy(op[1])
        elif kind == "del":
            result.pop(key, None)
        elif kind == "dict":
            target = result.get(key)
            result[key] = apply_overlay(target if isinstance(target, dict) else {}, op[1])
        elif kind == "list":
            target = result.get(key)
            if _is_str_list(target):
                result[key] = _merge_list(op[1], op[2], target)
            elif target is None:
                result[key] = list(op[2])
            # else: the remote turned the list into something else (a reference): the remote wins
    return result


def rebase(old_base: dict[str, Any] | None, working: dict[str, Any] | None, new_base: dict[str, Any]) -> dict[str, Any]:
    """The new working content after the remote changed from ``old_base`` to ``new_base``."""
    if old_base is None or working is None or old_base == working:
        return copy.deepcopy(new_base)
    return apply_overlay(new_base, compute_overlay(old_base, working))
