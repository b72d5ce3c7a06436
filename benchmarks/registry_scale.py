"""Registry cost per definition at 1,000 and 10,000 definitions, and `tunehub list --json` wall time.

Target (issue 2): `tunehub list --json` over 10,000 definitions in at most 1.0 s on a 2-core machine.
The anchor is WanGP's behaviour of reading every definition at start (218 built-in files).

    python benchmarks/registry_scale.py [--sizes 1000 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HUB = "https://huggingface.co/community/finetunes/resolve/main/"
ARCHES = ["t2v", "t2v_1.3B", "i2v", "i2v_720p", "vace_14B", "hunyuan", "hunyuan_i2v"]


def make_home(root: Path, count: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    folder = root / "finetunes"
    folder.mkdir(parents=True)
    for index in range(count):
        arch = rng.choice(ARCHES)
        stem = f"{arch}_ft{index:05d}"
        model = {
            "name": f"Finetune {index}",
            "architecture": arch,
            "description": "A generated finetune for the scale benchmark " * 3,
            "URLs": [HUB + f"{stem}_bf16.safetensors", HUB + f"{stem}_quanto_bf16_int8.safetensors", HUB + f"{stem}_quanto_fp16_int8.safetensors"],
            "auto_quantize": True,
        }
        if index % 10 == 0:
            model["URLs"] = f"{rng.choice(ARCHES[:4])}"
        data = {"prompt": "a prompt", "resolution": "832x480", "video_length": 81, "num_inference_steps": 30, "model": model}
        (folder / f"{stem}.json").write_text(json.dumps(data, indent=4))


def measure(count: int) -> dict[str, float]:
    from tunehub.config import load_config
    from tunehub.registry import Registry

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_home(root, count)
        cfg = load_config(root)
        start = time.perf_counter()
        registry = Registry.load(cfg)
        load_s = time.perf_counter() - start
        start = time.perf_counter()
        problems = registry.problems()
        summaries = [d.summary() for d in registry.definitions.values()]
        validate_s = time.perf_counter() - start
        assert not problems, problems[:3]
        ids = [d.id for d in registry.definitions.values() if d.id.startswith(tuple(ARCHES))]
        start = time.perf_counter()
        for definition_id in ids:
            registry.resolve(definition_id, "int8", "bf16")
        resolve_s = time.perf_counter() - start
        walls = []
        for _ in range(3):
            start = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-m", "tunehub", "--home", str(root), "list", "--json"],
                capture_output=True, check=True,
            ).stdout
            walls.append(time.perf_counter() - start)
        assert len(json.loads(out)) >= count and len(summaries) >= count
        return {
            "load_us": load_s / count * 1e6,
            "validate_us": validate_s / count * 1e6,
            "resolve_us": resolve_s / len(ids) * 1e6,
            "list_json_s": min(walls),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()}")
    print(f"{'definitions':>11} {'load/def':>10} {'summarise/def':>13} {'resolve/def':>12} {'list --json':>12}")
    for count in args.sizes:
        r = measure(count)
        print(f"{count:>11} {r['load_us']:>8.1f}us {r['validate_us']:>11.1f}us {r['resolve_us']:>10.1f}us {r['list_json_s']:>10.3f} s")
        if count == 10000:
            print(f"tunehub list --json at 10,000: {r['list_json_s']:.3f} s; target <= 1.0 s -> ratio {r['list_json_s'] / 1.0:.2f} of target")


if __name__ == "__main__":
    main()
