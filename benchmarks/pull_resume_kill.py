"""How much a resumed pull fetches again after a SIGKILL at full loopback speed (issue 20, item 7).

    python benchmarks/pull_resume_kill.py [--size-mb 600] [--at 0.45] [--rounds 3] [--work DIR]

Starts ``tunehub hub serve``, uploads one random file, runs ``tunehub pull`` (a real
process, no throttle) and SIGKILLs it once ``--at`` of the file is written to the partial
(allocated blocks of the sparse ``.tunehub-part``: what the client really received), then
runs the same pull again and prints what it transferred, as a share of the file. The
target is <= 60% for a kill at 45% of 600 MB. Anchor: the same kill of plain
``hf_hub_download`` (it resumes from its ``.incomplete`` file, written sequentially),
measured the same way, in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from tests.fixtures.hub_server import HubServer  # noqa: E402

HF_SNIPPET = r"""
import sys
from huggingface_hub import hf_hub_download
hf_hub_download(sys.argv[1], sys.argv[2], cache_dir=sys.argv[3])
"""


def _written(path: Path) -> int:
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0


def _kill_when(process: subprocess.Popen[bytes], partial: Any, limit: int) -> int:
    deadline = time.monotonic() + 600
    written = 0
    while process.poll() is None and time.monotonic() < deadline:
        written = partial()
        if written >= limit:
            break
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return written


def _tunehub_round(work: Path, server: HubServer, repo: str, name: str, size: int, at: float) -> dict[str, float]:
    home = Path(tempfile.mkdtemp(dir=work, prefix="home-"))
    (home / "finetunes").mkdir()
    (home / "finetunes" / "t2v_kill.json").write_text(json.dumps(
        {"model": {"name": "k", "architecture": "t2v", "URLs": [f"{server.url}/{repo}/resolve/main/{name}"]}}))
    env = {**os.environ, **server.env()}
    env.pop("TUNEHUB_HOME", None)
    command = [sys.executable, "-m", "tunehub", "--home", str(home), "pull", "t2v_kill", "--quantization", "bf16", "--json"]
    part = home / "ckpts" / f".{name}.tunehub-part"
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    written = _kill_when(first, lambda: _written(part), int(at * size))
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=True)
    again = json.loads(second.stdout)["bytes_transferred"]
    return {"killed_at": written / size, "fetched_again": again / size}


def _hf_round(work: Path, server: HubServer, repo: str, name: str, size: int, at: float) -> dict[str, float]:
    cache = Path(tempfile.mkdtemp(dir=work, prefix="hf-"))
    env = {**os.environ, **server.env()}
    command = [sys.executable, "-c", HF_SNIPPET, repo, name, str(cache)]

    def incomplete() -> int:
        return sum(_written(p) for p in cache.rglob("*.incomplete"))

    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    written = _kill_when(first, incomplete, int(at * size))
    kept = sum(p.stat().st_size for p in cache.rglob("*.incomplete"))
    subprocess.run(command, env=env, capture_output=True, timeout=900, check=True)
    return {"killed_at": written / size, "fetched_again": (size - kept) / size}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=600)
    parser.add_argument("--at", type=float, default=0.45)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tunehub-kill-", dir=args.work))
    size = args.size_mb * 1_000_000
    name = "wan2.1_t2v_killbench_mbf16.safetensors"
    repo = "alice/killbench"
    server = HubServer(work / "hub").start()
    try:
        source = work / name
        with open(source, "wb") as handle:
            left = size
            while left:
                block = os.urandom(min(left, 8 << 20))
                handle.write(block)
                left -= len(block)
        import huggingface_hub.constants

        huggingface_hub.constants.HF_HUB_DISABLE_XET = True
        api = server.api()
        api.create_repo(repo)
        api.upload_file(path_or_fileobj=str(source), path_in_repo=name, repo_id=repo)
        source.unlink()
        rows = []
        for _ in range(args.rounds):
            rows.append(("tunehub pull", _tunehub_round(work, server, repo, name, size, args.at)))
            rows.append(("hf_hub_download", _hf_round(work, server, repo, name, size, args.at)))
        print(f"{args.size_mb} MB over loopback, SIGKILL at {args.at:.0%} written; share of the file fetched again:")
        for tool in ("tunehub pull", "hf_hub_download"):
            values = [row for label, row in rows if label == tool]
            shown = ", ".join(f"{v['fetched_again']:.1%} (killed at {v['killed_at']:.1%})" for v in values)
            print(f"  {tool:<16} {shown}")
        worst = max(row["fetched_again"] for label, row in rows if label == "tunehub pull")
        print(f"tunehub worst: {worst:.1%} (target <= 60%)")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
