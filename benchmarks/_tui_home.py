"""Writes N finetune definitions (plus a few weight files) into a temporary tunehub home."""

from __future__ import annotations

import json
import random
from pathlib import Path

ARCHITECTURES = ("t2v", "t2v_1.3B", "i2v", "i2v_720p", "vace_14B", "hunyuan", "hunyuan_i2v")
WORDS = ("fusion", "motion", "anime", "fast", "cine", "dream", "lora", "merge", "realism", "turbo", "pixel", "noir")


def write_home(root: Path, count: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    finetunes = root / "finetunes"
    ckpts = root / "ckpts"
    finetunes.mkdir(parents=True, exist_ok=True)
    ckpts.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        arch = ARCHITECTURES[number % len(ARCHITECTURES)]
        words = rng.sample(WORDS, 2)
        stem = f"{words[0].title()}{words[1].title()}{number:05d}"
        definition_id = f"{arch}_{words[0]}_{words[1]}_{number:05d}"
        base = f"https://huggingface.co/someone/{stem}/resolve/main/{stem}"
        model = {
            "name": f"{words[0].title()} {words[1]} {number}",
            "architecture": arch,
            "description": f"A {words[0]} finetune of {arch} tuned for {words[1]} (number {number}).",
            "URLs": [f"{base}_bf16.safetensors", f"{base}_quanto_bf16_int8.safetensors"],
            "auto_quantize": True,
        }
        if arch == "vace_14B":
            model["URLs"] = "t2v"
            model["modules"] = [[f"{base}_module_bf16.safetensors"]]
        data = {"prompt": f"a {words[1]} scene", "num_inference_steps": 20, "model": model}
        (finetunes / f"{definition_id}.json").write_text(json.dumps(data, indent=4))
        if number % 50 == 0:  # some definitions have a file on disk
            (ckpts / f"{stem}_quanto_bf16_int8.safetensors").write_bytes(b"\0" * 1024)
    return root
