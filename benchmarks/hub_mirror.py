"""Download throughput through `tunehub hub serve --upstream` against the plain `tunehub hub serve` it mirrors.

In one run, on the same file (1 GB of random bytes by default), each client a fresh
huggingface_hub.hf_hub_download (Xet off) into an empty cache, sha256 checked afterwards:
  - direct:  from the upstream, a plain `tunehub hub serve` holding the file (the anchor),
  - first:   through the mirror with its cache empty (fetched from the upstream while it is sent),
  - cached:  through the mirror again (0 bytes from the upstream).
Targets (issue 17): cached / direct >= 0.9; first / direct >= 0.85. The upstream's /metrics
gives the bytes it sent for each (the file once for `first`, none for `cached`).

    python benchmarks/hub_mirror.py [--size-mb 1024] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.hub_server import FILENAME, REPO, hf_rate, make_file, own_cpu_seconds, process_cpu_seconds  # noqa: E402
from tests.fixtures.hub_server import HubServer  # noqa: E402
from tests.hub.server.mirror_helpers import file_bytes_served, start_mirror  # noqa: E402
from tunehub.hub.server.importer import import_folder  # noqa: E402
from tunehub.hub.server.mirror_store import MirrorStore, evict  # noqa: E402
from tunehub.hub.server.storage import HubStore  # noqa: E402


def empty_mirror_cache(root: Path) -> None:
    store = HubStore(root)
    try:
        evict(MirrorStore(store), max_size=0)
    finally:
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    size = args.size_mb * 1024 * 1024
    direct, first, cached = [], [], []
    sent_first, sent_cached = [], []
    cpu: dict[str, list[float]] = {}  # phase -> [upstream, mirror, client] CPU seconds, summed over rounds
    with tempfile.TemporaryDirectory(prefix="tunehub-bench-mirror-") as tmp_name:
        tmp = Path(tmp_name)
        source = tmp / "src"
        source.mkdir()
        sha256 = make_file(source / FILENAME, size)
        import_folder(tmp / "upstream", source, REPO, link=True)
        upstream = HubServer(tmp / "upstream", home=tmp / "upstream-home").start()
        token_file = tmp / "token"
        token_file.write_text(upstream.read_token)
        mirror = start_mirror(tmp / "mirror", upstream.url, token_file)
        try:
            hf_rate(upstream.url, tmp / "warm", size, sha256, upstream.read_token)  # page cache warm for the anchor
            assert upstream.process is not None and mirror.process is not None
            pids = (upstream.process.pid, mirror.process.pid)

            def measured(phase: str, endpoint: str, token: str) -> float:
                # CPU seconds of each process: the cost per GB does not depend on what else runs.
                before = [process_cpu_seconds(pid) or 0.0 for pid in pids] + [own_cpu_seconds()]
                rate = hf_rate(endpoint, tmp / "cache", size, sha256, token)
                after = [process_cpu_seconds(pid) or 0.0 for pid in pids] + [own_cpu_seconds()]
                totals = cpu.setdefault(phase, [0.0, 0.0, 0.0])
                for i in range(3):
                    totals[i] += after[i] - before[i]
                return rate

            for _ in range(args.rounds):
                empty_mirror_cache(mirror.root)
                direct.append(measured("direct", upstream.url, upstream.read_token))
                before = file_bytes_served(upstream.url)
                first.append(measured("first", mirror.url, mirror.read_token))
                sent_first.append(file_bytes_served(upstream.url) - before)
                before = file_bytes_served(upstream.url)
                cached.append(measured("cached", mirror.url, mirror.read_token))
                sent_cached.append(file_bytes_served(upstream.url) - before)
        except Exception:
            # the servers' logs live in the temporary folder removed below: show them first
            for name, server in (("upstream", upstream), ("mirror", mirror)):
                print(f"--- {name} server log (end) ---\n{server.log_text()}", file=sys.stderr)
            raise
        finally:
            mirror.stop()
            upstream.stop()
    mb = 1e6
    best_direct, best_first, best_cached = max(direct), max(first), max(cached)
    print(f"file: {args.size_mb} MiB, rounds: {args.rounds}, best of each; load average {os.getloadavg()}")
    print(f"hf_hub_download direct from the upstream (plain hub serve): {best_direct / mb:8.0f} MB/s")
    print(f"hf_hub_download first fetch through the mirror:            {best_first / mb:8.0f} MB/s"
          f"   ratio first/direct  {best_first / best_direct:.2f} (target >= 0.85)"
          f"   upstream sent {sent_first} bytes")
    print(f"hf_hub_download cached through the mirror:                  {best_cached / mb:8.0f} MB/s"
          f"   ratio cached/direct {best_cached / best_direct:.2f} (target >= 0.90)"
          f"   upstream sent {sent_cached} bytes")
    gigabytes = size * args.rounds / 1e9
    for phase, (cpu_up, cpu_mirror, cpu_client) in cpu.items():
        print(f"CPU s per GB, {phase:<6}: upstream {cpu_up / gigabytes:.2f}  mirror {cpu_mirror / gigabytes:.2f}  "
              f"client (hf_hub_download + the untimed sha256 check) {cpu_client / gigabytes:.2f}")
    print(f"all rates MB/s: direct {[round(r / mb) for r in direct]}, first {[round(r / mb) for r in first]}, "
          f"cached {[round(r / mb) for r in cached]}")
    # Each round's ratios from runs a few seconds apart: on a shared machine the load drifts between
    # rounds, so the median of the paired ratios is the steadier number beside the best-of ratios.
    for name, rates in (("first/direct", first), ("cached/direct", cached)):
        paired = [rate / anchor for rate, anchor in zip(rates, direct)]
        print(f"per round {name:<14} {[round(r, 2) for r in paired]}  median {statistics.median(paired):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
