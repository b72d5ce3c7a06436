"""Registry cost per definition at 1,000 and 10,000 definitions, and `tunehub list --json` wall time.

The anchor (issue 13): a plain Python loop that ``json.load``s the same files (a WanGP-like
``defaults/`` + ``finetunes/``) and prints id/name/architecture as JSON, run as a process the
same way as ``tunehub list --json``, in the same run. Target: tunehub at most 2.0x the anchor.
Earlier target (issue 2): 10,000 definitions in at most 1.0 s on a 2-core machine.

Printed: best of each side, the median ratio of back-to-back pairs (steadier on a shared
machine) and, with ``--instructions``, the instructions each executes under valgrind (the
same however busy the machine is).

    python benchmarks/registry_scale.py [--sizes 1000 10000] [--instructions]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HUB = "https://huggingface.co/community/finetunes/resolve/main/"
ARCHES = ["t2v", "t2v_1.3B", "i2v", "i2v_720p", "vace_14B", "hunyuan", "hunyuan_i2v", "t2v_2_2", "i2v_2_2",
          "ltx2_22B", "flux2_dev", "qwen_image_20B", "z_image", "ace_step_v1", "hunyuan_1_5_t2v", "brand_new"]

# The anchor: read every file as WanGP does (sorted, json.load) and print the rows.
PLAIN_LOOP = """
import glob, json, os, sys
root = sys.argv[1]
rows = {}
for path in sorted([*glob.glob(os.path.join(root, "defaults", "*.json")), *glob.glob(os.path.join(root, "finetunes", "*.json"))]):
    with open(path, encoding="utf-8") as handle:
        model = json.load(handle)["model"]
    row = rows.setdefault(os.path.basename(path)[:-5], {})
    row.update({k: model[k] for k in ("name", "architecture") if k in model})
sys.stdout.write(json.dumps([{"id": k, **v} for k, v in rows.items()]))
"""


def make_home(root: Path, count: int, seed: int = 0) -> None:
    """``count`` definitions: 1 in 10 in WanGP's defaults/, the rest in finetunes/."""
    rng = random.Random(seed)
    for name in ("defaults", "finetunes"):
        (root / name).mkdir(parents=True)
    for index in range(count):
        folder = root / ("defaults" if index % 10 == 3 else "finetunes")
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


def _instructions(root: Path, env: dict[str, str]) -> tuple[int, int] | None:
    """Instructions each command executes (valgrind's callgrind): the same on a busy machine as on an idle one."""
    if shutil.which("valgrind") is None:
        return None
    counts = []
    for command in (
        [sys.executable, "-m", "tunehub", "--home", str(root), "list", "--json"],
        [sys.executable, "-c", PLAIN_LOOP, str(root)],
    ):
        result = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *command],
            capture_output=True, text=True, check=True, env=env,
        )
        match = re.search(r"Collected : (\d+)", result.stderr)
        if match is None:
            return None
        counts.append(int(match.group(1)))
    return counts[0], counts[1]


def measure(count: int, repeats: int = 5, with_instructions: bool = False) -> dict[str, Any]:
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
        # interleaved, best of N each: a busy shared machine slows both alike
        # CPU time (user + sys) of each child too: on a shared machine it varies far less than wall time
        walls, plain, walls_cpu, plain_cpu = [], [], [], []
        # Both children as on a user's machine: with compiled bytecode (pip writes tunehub's .pyc
        # files at install; the stdlib the plain loop imports has its own). A machine with
        # PYTHONDONTWRITEBYTECODE set would otherwise compile tunehub's sources on every run.
        env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
        for _ in range(repeats):
            for command, wall, cpu in (
                ([sys.executable, "-m", "tunehub", "--home", str(root), "list", "--json"], walls, walls_cpu),
                ([sys.executable, "-c", PLAIN_LOOP, str(root)], plain, plain_cpu),
            ):
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                result = subprocess.run(command, capture_output=True, check=True, env=env).stdout
                wall.append(time.perf_counter() - start)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
                if wall is walls:
                    out = result
        assert len(json.loads(out)) >= count and len(summaries) >= count
        instructions = _instructions(root, env) if with_instructions else None
        return {
            # each tunehub run against the plain run right after it: a slow spell of a shared
            # machine (they last seconds) then slows both sides of a pair alike
            "paired_ratio": statistics.median(ours / theirs for ours, theirs in zip(walls, plain)),
            "instructions": instructions,
            "load_us": load_s / count * 1e6,
            "validate_us": validate_s / count * 1e6,
            "resolve_us": resolve_s / len(ids) * 1e6,
            "list_json_s": min(walls),
            "plain_s": min(plain),
            "list_json_cpu_s": min(walls_cpu),
            "plain_cpu_s": min(plain_cpu),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeats", type=int, default=9, help="runs of each command, interleaved")
    parser.add_argument("--instructions", action="store_true",
                        help="also count the instructions of each command at 10,000 under valgrind (about a minute)")
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()}")
    print(f"{'definitions':>11} {'load/def':>10} {'summarise/def':>13} {'resolve/def':>12} {'list --json':>12} "
          f"{'plain loop':>11} {'ratio':>6}")
    for count in args.sizes:
        r = measure(count, args.repeats, with_instructions=args.instructions and count == 10000)
        ratio = r["list_json_s"] / r["plain_s"]
        print(f"{count:>11} {r['load_us']:>8.1f}us {r['validate_us']:>11.1f}us {r['resolve_us']:>10.1f}us "
              f"{r['list_json_s']:>10.3f} s {r['plain_s']:>9.3f} s {ratio:>5.2f}x")
        cpu_ratio = r["list_json_cpu_s"] / r["plain_cpu_s"]
        print(f"{'':>11} CPU time: tunehub {r['list_json_cpu_s']:.3f} s, plain loop {r['plain_cpu_s']:.3f} s: {cpu_ratio:.2f}x")
        print(f"{'':>11} median of {args.repeats} back-to-back pairs: {r['paired_ratio']:.2f}x")
        if r["instructions"]:
            ours, theirs = r["instructions"]
            print(f"{'':>11} instructions: tunehub {ours / 1e9:.2f} G, plain loop {theirs / 1e9:.2f} G: {ours / theirs:.2f}x")
        if count == 10000:
            print(f"tunehub list --json at 10,000: {r['list_json_s']:.3f} s, plain json.load loop {r['plain_s']:.3f} s: "
                  f"{ratio:.2f}x wall (best of each), {r['paired_ratio']:.2f}x (median pair), {cpu_ratio:.2f}x CPU "
                  "(target <= 2.0x)")


if __name__ == "__main__":
    main()
