"""Validation of definitions: every problem collected, each naming the file, the key and the fix."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from tunehub.registry.model import Origin, Problem

URL_KEYS = ("URLs", "URLs2", "preload_URLs", "text_encoder_URLs")  # and URLs3, URLs4 ... (url_keys)
MAX_REFERENCE_DEPTH = 10  # WanGP stops at this depth with "Circular Reference"
_URLS_N = re.compile(r"URLs[2-9]\d*")


def url_keys(model: dict[str, Any]) -> list[str]:
    """The file-list keys of a model subtree: URLs, URLs2, URLs3 ..., preload_URLs, text_encoder_URLs."""
    extra = [k for k in model if k.startswith("URLs") and k not in ("URLs", "URLs2") and _URLS_N.fullmatch(k)]
    if not extra:  # the common case, kept cheap: this runs for every file of a large folder
        return list(URL_KEYS)
    extra.sort(key=lambda k: int(k[4:]))
    return [*URL_KEYS[:2], *extra, *URL_KEYS[2:]]


_FILE_LIST_KEYS = frozenset(URL_KEYS)
_NUMBER = (int, float)
_Rule = tuple[Callable[[Any], bool], str, frozenset[type]]


def _rule(check: Callable[[Any], bool], words: str, passing: tuple[type, ...] = ()) -> _Rule:
    """(check, expected-type words, the exact types that pass without calling check)."""
    return check, words, frozenset(passing)


# model key -> rule
_MODEL_TYPES: dict[str, _Rule] = {
    "name": _rule(lambda v: isinstance(v, str) and bool(v.strip()), "a non-empty string"),
    "architecture": _rule(lambda v: isinstance(v, str), "a string (an architecture id)", (str,)),
    "description": _rule(lambda v: isinstance(v, str), "a string", (str,)),
    "auto_quantize": _rule(lambda v: isinstance(v, bool), "true or false", (bool,)),
    "visible": _rule(lambda v: isinstance(v, bool), "true or false", (bool,)),
    "loras": _rule(lambda v: isinstance(v, (list, str)), "a list of URLs/files or a definition id", (list, str)),
    "loras_multipliers": _rule(lambda v: isinstance(v, (list, str)), "a list of numbers or a definition id", (list, str)),
}


def _all_http_urls(entries: list[Any]) -> bool:
    for entry in entries:
        if not (isinstance(entry, str) and entry.startswith(("https://", "http://"))):
            return False
    return True


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool)


def _is_resolution(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    width, sep, height = value.partition("x")
    return bool(sep) and width.isdigit() and height.isdigit()


_SETTING_TYPES: dict[str, _Rule] = {
    "prompt": _rule(lambda v: isinstance(v, str), "a string", (str,)),
    "negative_prompt": _rule(lambda v: isinstance(v, str), "a string", (str,)),
    "resolution": _rule(_is_resolution, 'a string "WIDTHxHEIGHT" such as "832x480"'),
    "video_length": _rule(_is_int, "an integer (frames)", (int,)),
    "num_inference_steps": _rule(_is_int, "an integer", (int,)),
    "guidance_scale": _rule(_is_number, "a number", (int, float)),
    "flow_shift": _rule(_is_number, "a number", (int, float)),
    "embedded_guidance_scale": _rule(_is_number, "a number", (int, float)),
    "seed": _rule(_is_int, "an integer (-1 for random)", (int,)),
    "batch_size": _rule(_is_int, "an integer", (int,)),
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
    # Loops over the file's own keys (a handful), not over the tables: this runs for every file.
    # A value of the rule's exact JSON type passes without calling the rule (JSON gives no
    # subclasses, and bool is its own type, so True is no integer here either).
    setting_rule = _SETTING_TYPES.get
    for key, value in data.items():
        rule = setting_rule(key)
        if rule is not None and value.__class__ not in rule[2] and not rule[0](value):
            problems.append(Problem(file, key, f"must be {rule[1]}, got {json.dumps(value)[:60]}"))
    if not model:
        return problems
    model_rule = _MODEL_TYPES.get
    for key, value in model.items():
        rule = model_rule(key)
        if rule is not None:
            if value.__class__ not in rule[2] and not rule[0](value):
                problems.append(Problem(file, f"model.{key}", f"must be {rule[1]}, got {json.dumps(value)[:60]}"))
        elif key in _FILE_LIST_KEYS or (key.startswith("URLs") and _URLS_N.fullmatch(key)):
            if value.__class__ is list and _all_http_urls(value):
                continue  # the common case: every entry an http(s) URL
            problems.extend(_check_file_list(file, f"model.{key}", value, origin))
    if "loras" in model and isinstance(model["loras"], list):
        for index, entry in enumerate(model["loras"]):
            problem = check_entry(file, f"model.loras[{index}]", entry, origin)
            if problem:
                problems.append(problem)
    if "modules" in model:
        problems.extend(_check_modules(file, model["modules"], origin))
    return problems


def _check_file_list(file: str, key: str, value: Any, origin: Origin) -> list[Problem]:
    """A list of URLs/paths, or a string: the id of the definition whose same key is used."""
    if isinstance(value, str):
        if not value.strip():
            return [Problem(file, key, "is an empty string: give a list of files or a definition id")]
        return []  # a reference to another definition, checked after merging
    if not isinstance(value, list):
        return [Problem(file, key, f"must be a list of URLs/paths or a definition id, got {type(value).__name__}")]
    if _all_http_urls(value):
        return []  # the common case: every entry an http(s) URL
    return [p for index, entry in enumerate(value) if (p := check_entry(file, f"{key}[{index}]", entry, origin))]


def _check_modules(file: str, modules: Any, origin: Origin) -> list[Problem]:
    if isinstance(modules, str):
        return [] if modules.strip() else [Problem(file, "model.modules", "is an empty string: give a list or a definition id")]
    if not isinstance(modules, list):
        return [Problem(file, "model.modules", f"must be a list or a definition id, got {type(modules).__name__}")]
    problems: list[Problem] = []
    for index, item in enumerate(modules):
        key = f"model.modules[{index}]"
        if isinstance(item, str):
            continue  # a module id, checked after merging
        if isinstance(item, dict):
            # WanGP loads an object's URLs and URLs2 as extra files of both transformers; it
            # raises "No URLs defined for Module" when either is missing.
            for sub in ("URLs", "URLs2"):
                if sub not in item:
                    problems.append(Problem(file, f"{key}.{sub}", "missing: a module object needs both URLs and URLs2"))
                elif isinstance(item[sub], list):
                    problems.extend(_check_file_list(file, f"{key}.{sub}", item[sub], origin))
                else:
                    problem = check_entry(file, f"{key}.{sub}", item[sub], origin)  # WanGP: one file
                    if problem:
                        problems.append(problem)
            continue
        if not isinstance(item, list) or not item:
            problems.append(
                Problem(file, key, "must be a non-empty list of URLs/paths (variants of one module), an object "
                        "{\"URLs\": [...], \"URLs2\": [...]} or a definition id")
            )
            continue
        problems.extend(_check_file_list(file, key, item, origin))
    return problems


def has_required_keys(model: dict[str, Any]) -> bool:
    """True when :func:`check_merged` has nothing to say: the test the registry runs on every
    definition, without building the problem list."""
    arch = model.get("architecture")
    return "name" in model and arch is not None and (not isinstance(arch, str) or bool(arch.strip()))


def check_merged(file: str, model: dict[str, Any]) -> list[Problem]:
    """Problems of the merged definition: the two keys WanGP requires.

    Any non-empty string is a valid architecture: what tunehub can do with it beyond
    listing, resolving and syncing is the architecture table's business, not a problem.
    """
    if has_required_keys(model):
        return []
    problems: list[Problem] = []
    if "name" not in model:
        problems.append(Problem(file, "model.name", 'missing: add "name", the label shown to users'))
    arch = model.get("architecture")
    if "architecture" not in model:
        problems.append(
            Problem(file, "model.architecture", 'missing: add the base architecture id, for instance "t2v"')
        )
    elif isinstance(arch, str) and not arch.strip():
        problems.append(Problem(file, "model.architecture", 'is empty: give the base architecture id, for instance "t2v"'))
    return problems
