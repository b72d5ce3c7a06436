"""Validation of definitions: every problem collected, each naming the file, the key and the fix."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from tunehub.registry.architectures import ARCHITECTURES, is_ltx
from tunehub.registry.model import Origin, Problem

URL_KEYS = ("URLs", "URLs2", "preload_URLs")
MAX_REFERENCE_DEPTH = 10  # WanGP stops at this depth with "Circular Reference"

_NUMBER = (int, float)
# model key -> (check, expected-type words)
_MODEL_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (lambda v: isinstance(v, str) and bool(v.strip()), "a non-empty string"),
    "architecture": (lambda v: isinstance(v, str), "a string (an architecture id)"),
    "description": (lambda v: isinstance(v, str), "a string"),
    "auto_quantize": (lambda v: isinstance(v, bool), "true or false"),
    "visible": (lambda v: isinstance(v, bool), "true or false"),
    "loras": (lambda v: isinstance(v, list), "a list"),
    "loras_multipliers": (lambda v: isinstance(v, (list, str)), "a list"),
    "dtype": (lambda v: v in ("bf16", "fp16"), '"bf16" or "fp16"'),
    "group": (lambda v: isinstance(v, str), "a string"),
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool)


def _is_resolution(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    width, sep, height = value.partition("x")
    return bool(sep) and width.isdigit() and height.isdigit()


_SETTING_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "prompt": (lambda v: isinstance(v, str), "a string"),
    "negative_prompt": (lambda v: isinstance(v, str), "a string"),
    "resolution": (_is_resolution, 'a string "WIDTHxHEIGHT" such as "832x480"'),
    "video_length": (_is_int, "an integer (frames)"),
    "num_inference_steps": (_is_int, "an integer"),
    "guidance_scale": (_is_number, "a number"),
    "flow_shift": (_is_number, "a number"),
    "embedded_guidance_scale": (_is_number, "a number"),
    "seed": (_is_int, "an integer (-1 for random)"),
    "batch_size": (_is_int, "an integer"),
}


def json_syntax_problem(file: str, exc: json.JSONDecodeError) -> Problem:
    return Problem(
        file,
        "(json)",
        f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}; "
        "definitions use plain JSON (no comments, no trailing commas)",
    )


def check_entry(file: str, key: str, entry: Any, origin: Origin) -> Problem | None:
    """One URL-list entry: an http(s) URL or a path; remote definitions stay in the weights folder."""
    if not isinstance(entry, str):
        return Problem(file, key, f"must be a string (an http(s) URL or a file path), got {type(entry).__name__}")
    if not entry.strip():
        return Problem(file, key, "is empty: give an http(s) URL or a file path")
    if "://" in entry:
        if entry.startswith(("http://", "https://")):
            return None
        scheme = entry.split("://", 1)[0]
        return Problem(file, key, f"'{scheme}://' is not supported: use an http(s) URL or a file path")
    if "\x00" in entry:
        return Problem(file, key, "contains a NUL character")
    if origin is Origin.REMOTE:
        posix, windows = PurePosixPath(entry), PureWindowsPath(entry)
        if posix.is_absolute() or windows.is_absolute() or windows.drive or ".." in posix.parts or ".." in windows.parts:
            return Problem(
                file,
                key,
                f"'{entry}' leaves the weights folder (absolute path or '..'): "
                "not allowed in a definition fetched from a remote repo; use a bare file name or a URL",
            )
    return None


def check_file_structure(file: str, data: Any, origin: Origin) -> list[Problem]:
    """Problems visible in one file alone: shape and types."""
    if not isinstance(data, dict):
        return [Problem(file, "(top level)", f"must be a JSON object, got {type(data).__name__}")]
    problems: list[Problem] = []
    model = data.get("model")
    if "model" not in data:
        problems.append(
            Problem(file, "model", 'missing: add a "model" object with at least "name" and "architecture"')
        )
    elif not isinstance(model, dict):
        problems.append(Problem(file, "model", f"must be an object, got {type(model).__name__}"))
        model = None
    for key, (check, words) in _SETTING_TYPES.items():
        if key in data and not check(data[key]):
            problems.append(Problem(file, key, f"must be {words}, got {json.dumps(data[key])[:60]}"))
    if not model:
        return problems
    for key, (check, words) in _MODEL_TYPES.items():
        if key in model and not check(model[key]):
            problems.append(Problem(file, f"model.{key}", f"must be {words}, got {json.dumps(model[key])[:60]}"))
    for key in URL_KEYS:
        if key not in model:
            continue
        value = model[key]
        if isinstance(value, str):
            if not value.strip():
                problems.append(Problem(file, f"model.{key}", "is an empty string: give a list of files or a definition id"))
            continue  # a reference to another definition, checked after merging
        if not isinstance(value, list):
            problems.append(
                Problem(file, f"model.{key}", f"must be a list of URLs/paths or a definition id, got {type(value).__name__}")
            )
            continue
        for index, entry in enumerate(value):
            problem = check_entry(file, f"model.{key}[{index}]", entry, origin)
            if problem:
                problems.append(problem)
    if "modules" in model:
        modules = model["modules"]
        if not isinstance(modules, list):
            problems.append(Problem(file, "model.modules", f"must be a list, got {type(modules).__name__}"))
        else:
            for index, item in enumerate(modules):
                key = f"model.modules[{index}]"
                if isinstance(item, str):
                    continue  # a module id, checked after merging
                if not isinstance(item, list) or not item:
                    problems.append(
                        Problem(file, key, "must be a non-empty list of URLs/paths (variants of one module) or a definition id")
                    )
                    continue
                for entry_index, entry in enumerate(item):
                    problem = check_entry(file, f"{key}[{entry_index}]", entry, origin)
                    if problem:
                        problems.append(problem)
    return problems


def check_merged(file: str, model: dict[str, Any]) -> list[Problem]:
    """Problems of the merged definition: required keys and the architecture."""
    problems: list[Problem] = []
    if "name" not in model:
        problems.append(Problem(file, "model.name", 'missing: add "name", the label shown to users'))
    if "architecture" not in model:
        known = ", ".join(ARCHITECTURES)
        problems.append(Problem(file, "model.architecture", f"missing: add the base architecture id, one of {known}"))
    else:
        arch = model["architecture"]
        if isinstance(arch, str) and arch not in ARCHITECTURES:
            known = ", ".join(ARCHITECTURES)
            if is_ltx(arch):
                problems.append(
                    Problem(file, "model.architecture", f"'{arch}': LTX Video has no finetune support; use one of {known}")
                )
            else:
                problems.append(Problem(file, "model.architecture", f"unknown architecture '{arch}'; known: {known}"))
    return problems
