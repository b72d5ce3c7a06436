"""verify, first and second time: `hf cache verify --local-dir` vs `tunehub verify`, same 2 GB file, one run.

    python benchmarks/disk_verify.py [--size-mb 2048] [--rounds 2]

Seeds a `tunehub hub serve` root with one random file, places the same bytes in a home's
weights folder (as a pull would leave them), then verifies it repeatedly:

  - plain hashlib sha256 of the file (the floor any first verify pays);
  - `hf cache verify REPO --local-dir ckpts` (huggingface_hub, the anchor): it re-hashes every
    file every time;
  - `tunehub verify ID`: the first run hashes (and asks the Hub for the sha256), later runs are
    answered by the hash cache keyed by (device, inode, size, mtime).

Times are of the verify itself, in process for tunehub (``tunehub.disk.verify.verify``) and as
the whole command for both CLIs (interpreter start included). The file stays in the page cache
for every reader (like against like). Target (issue 16): second tunehub verify < 5% of the first.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.hub_server import make_file  # noqa: E402
from tests.fixtures.hub_server import HubServer  # noqa: E402
from tunehub.hub.server.importer import import_folder  # noqa: E402

REPO = "alice/bench-verify"
FILENAME = "wan2.1_bench_verify_mbf16.safetensors"


def timed(command: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    return time.perf_counter() - started, done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    size = args.size_mb * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="tunehub-bench-verify-") as tmp_name:
        tmp = Path(tmp_name)
        source = tmp / "src"
        source.mkdir()
        sha256 = make_file(source / FILENAME, size)
        import_folder(tmp / "root", source, REPO)
        server = HubServer(tmp / "root", home=tmp / "hf-home").start()
        try:
            home = tmp / "home"
            (home / "ckpts").mkdir(parents=True)
            (home / "finetunes").mkdir()
            os.link(source / FILENAME, home / "ckpts" / FILENAME)  # the pulled file, as bytes on disk
            url = f"{server.url}/{REPO}/resolve/main/{FILENAME}"
            (home / "finetunes" / "bench_verify.json").write_text(json.dumps(
                {"model": {"name": "bench", "architecture": "t2v", "URLs": [url]}}))
            env = {**os.environ, **server.env(), "TUNEHUB_HOME": str(home)}
            os.environ.update(server.env())

            started = time.perf_counter()
            digest = hashlib.sha256()
            with open(home / "ckpts" / FILENAME, "rb", buffering=0) as handle:
                while block := handle.read(8 << 20):
                    digest.update(block)
            plain = time.perf_counter() - started
            assert digest.hexdigest() == sha256

            hf_times = []
            for _ in range(args.rounds):
                elapsed, done = timed(["hf", "cache", "verify", REPO, "--local-dir", str(home / "ckpts")], env)
                if done.returncode != 0:
                    print(done.stdout, done.stderr, file=sys.stderr)
                    raise SystemExit("hf cache verify failed")
                hf_times.append(elapsed)

            import huggingface_hub.constants as constants

            constants.ENDPOINT = server.url
            constants.HF_HUB_DISABLE_XET = True
            from tunehub.config import load_config
            from tunehub.disk.verify import verify
            from tunehub.registry import Registry

            cfg = load_config(home)
            registry = Registry.load(cfg)
            ours = []
            for _ in range(args.rounds + 1):
                started = time.perf_counter()
                checked = verify(cfg, registry, ["bench_verify"])
                ours.append(time.perf_counter() - started)
                assert [c.status for c in checked] == ["ok"], checked
            cli, done = timed([sys.executable, "-m", "tunehub", "--home", str(home), "verify", "bench_verify"], env)
            assert done.returncode == 0, done.stdout + done.stderr
        finally:
            server.stop()
    gb = size / 1e9
    print(f"file: {gb:.2f} GB ({args.size_mb} MiB), in the page cache for every reader")
    print(f"plain hashlib sha256            {plain:8.3f} s  ({gb / plain:.2f} GB/s)")
    for index, value in enumerate(hf_times, 1):
        print(f"hf cache verify --local-dir #{index}  {value:8.3f} s  (command, re-hashes every time)")
    for index, value in enumerate(ours, 1):
        print(f"tunehub verify #{index} (in process)   {value:8.3f} s")
    print(f"tunehub verify (command, cached) {cli:8.3f} s  (interpreter start and registry load included)")
    print(f"ratio tunehub first / plain sha256: {ours[0] / plain:.2f}x")
    print(f"ratio tunehub second / first: {ours[1] / ours[0] * 100:.2f}% (target < 5%)")
    print(f"ratio tunehub second / hf cache verify second: {ours[1] / hf_times[-1] * 100:.2f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
