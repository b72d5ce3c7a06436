"""Generation settings: the definition's defaults, the caller's values on top, and the
WanGP-shaped settings file written beside each video.

Keys are WanGP's (definitions.md, "Settings"): ``prompt``, ``negative_prompt``,
``resolution`` ("WxH"), ``video_length``, ``num_inference_steps``, ``guidance_scale``,
``flow_shift``, ``seed`` (-1 = random), ``embedded_guidance_scale``. Unknown keys are
kept and written back unchanged.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunehub.errors import ConfigError
from tunehub.safeio import atomic_write_text

# Used when neither the definition nor the caller gives a value.
DEFAULTS: dict[str, Any] = {
    "prompt": "",
    "negative_prompt": "",
    "resolution": "832x480",
    "video_length": 81,
    "num_inference_steps": 30,
    "guidance_scale": 5.0,
    "flow_shift": 5.0,
    "seed": -1,
}
HUNYUAN_DEFAULTS: dict[str, Any] = {"guidance_scale": 1.0, "embedded_guidance_scale": 6.0, "flow_shift": 7.0}

_RESOLUTION = re.compile(r"^\s*(\d+)\s*[xX*]\s*(\d+)\s*$")


@dataclass(frozen=True)
class Effective:
    """The values the pipeline gets, checked."""

    prompt: str
    negative_prompt: str
    width: int
    height: int
    frames: int
    steps: int
    guidance_scale: float
    flow_shift: float
    seed: int
    embedded_guidance_scale: float | None


def parse_resolution(value: Any, where: str = "resolution") -> tuple[int, int]:
    """``"832x480"`` -> (width, height)."""
    match = _RESOLUTION.match(str(value))
    if not match:
        raise ConfigError(f"{where}: expected WIDTHxHEIGHT such as 832x480, got {value!r}")
    width, height = int(match.group(1)), int(match.group(2))
    if width <= 0 or height <= 0:
        raise ConfigError(f"{where}: width and height must be positive, got {value!r}")
    return width, height


def merge_settings(definition_settings: dict[str, Any], overrides: dict[str, Any], family: str) -> dict[str, Any]:
    """Defaults < the definition's top-level settings < the caller's non-None values."""
    merged = dict(DEFAULTS)
    if family == "hunyuan":
        merged.update(HUNYUAN_DEFAULTS)
    merged.update(definition_settings)
    merged.update({key: value for key, value in overrides.items() if value is not None})
    return merged


def _number(settings: dict[str, Any], key: str, kind: type, source: str) -> Any:
    value = settings.get(key)
    try:
        if isinstance(value, bool):
            raise ValueError
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: setting '{key}' must be a number, got {value!r}") from None
    return number


def effective(settings: dict[str, Any], source: str, rng_seed: int | None = None) -> Effective:
    """Check the merged settings and turn them into pipeline values; a seed of -1 (or
    absent) becomes a fresh random seed, stored back into ``settings`` so that the
    written file repeats the run."""
    width, height = parse_resolution(settings.get("resolution"), f"{source}: setting 'resolution'")
    frames = _number(settings, "video_length", int, source)
    steps = _number(settings, "num_inference_steps", int, source)
    if frames < 1 or (frames - 1) % 4:
        raise ConfigError(
            f"{source}: setting 'video_length' must be 4k+1 frames (1, 5, ..., 81), got {frames}: "
            "the VAE packs 4 frames into one latent frame"
        )
    if width % 16 or height % 16:
        raise ConfigError(f"{source}: setting 'resolution' must be multiples of 16, got {width}x{height}")
    if steps < 1:
        raise ConfigError(f"{source}: setting 'num_inference_steps' must be at least 1, got {steps}")
    seed = _number(settings, "seed", int, source) if settings.get("seed") is not None else -1
    if seed < 0:
        seed = rng_seed if rng_seed is not None else random.SystemRandom().randrange(0, 2**31 - 1)
        settings["seed"] = seed
    embedded = settings.get("embedded_guidance_scale")
    return Effective(
        prompt=str(settings.get("prompt") or ""),
        negative_prompt=str(settings.get("negative_prompt") or ""),
        width=width,
        height=height,
        frames=frames,
        steps=steps,
        guidance_scale=_number(settings, "guidance_scale", float, source),
        flow_shift=_number(settings, "flow_shift", float, source),
        seed=seed,
        embedded_guidance_scale=None if embedded is None else _number(settings, "embedded_guidance_scale", float, source),
    )


def export_settings(settings: dict[str, Any], model_type: str, model_filename: str) -> dict[str, Any]:
    """WanGP's "export settings" shape: the settings plus ``model_type`` and ``model_filename``."""
    exported = {key: value for key, value in settings.items() if key != "model"}
    exported["model_type"] = model_type
    exported["model_filename"] = model_filename
    return exported


def settings_path_for(video: Path) -> Path:
    """``clip.mp4`` -> ``clip.json``."""
    return video.with_suffix(".json")


def write_settings(video: Path, exported: dict[str, Any]) -> Path:
    path = settings_path_for(video)
    atomic_write_text(path, json.dumps(exported, indent=4, ensure_ascii=False) + "\n")
    return path


def reserve_output(folder: Path, definition_id: str, seed: int) -> Path:
    """A new, unused ``<folder>/<date>_<id>_seed<N>[_k].mp4``, reserved by creating it
    exclusively, so two generations never pick the same name."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    safe_id = re.sub(r"[^A-Za-z0-9._-]+", "_", definition_id)
    for attempt in range(10_000):
        suffix = f"_{attempt}" if attempt else ""
        candidate = folder / f"{stamp}_{safe_id}_seed{seed}{suffix}.mp4"
        if settings_path_for(candidate).exists():
            continue
        try:
            fd = os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise ConfigError(f"{folder}: could not find a free output name for {definition_id}")
