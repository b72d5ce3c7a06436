"""Pull throughput: ``hf_hub_download`` vs ``tunehub pull`` vs raw ``curl``, same file, same server, one run.

    python benchmarks/pull.py [--size-mb 1024] [--rounds 2] [--connections 4] [--work DIR]

Starts ``tunehub hub serve`` on a temporary root, imports one random file into a repo,
then downloads it with each tool in turn (alternating, ``--rounds`` times each) into a
fresh folder, and prints MB/s (best and median) and the ratios against the targets of
issue 4: tunehub >= 2x hf_hub_download, and >= 70% of curl. tunehub's time includes the
sha256 verification and the fsync before the final rename; the others verify nothing and
leave their data in the page cache, so a "curl + fsync" row shows the same durability.
Each tool runs in its own process and times only the download itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HF_SNIPPET = r"""
import sys, time
from huggingface_hub import hf_hub_download
start = time.perf_counter()
hf_hub_download(sys.argv[1], sys.argv[2], cache_dir=sys.argv[3])
print(time.perf_counter() - start)
"""

TUNEHUB_SNIPPET = r"""
import sys, time
from tunehub.config import load_config
from tunehub.registry import Registry
from tunehub.hub.pull import pull
cfg = load_config(sys.argv[1])
registry = Registry.load(cfg)
start = time.perf_counter()
result = pull(cfg, registry, "bench_pull", quantization="bf16", connections=int(sys.argv[2]))
elapsed = time.perf_counter() - start
assert result.files[0].status == "downloaded", result.files[0].status
print(elapsed)
"""


def serve_standin(path: str, sha256: str, repo_path: str) -> None:
    """The anchor's server: a plain ThreadingHTTPServer speaking just enough Hub for a download, sendfile."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    size = os.path.getsize(path)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a: object) -> None:
            pass

        def _head(self) -> tuple[int, int] | None:
            if self.path.split("?")[0] != repo_path:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            start, end, status = 0, size, 200
            if "Range" in self.headers:
                a, b = self.headers["Range"].split("=", 1)[1].split("-")
                start, end, status = int(a), (int(b) + 1 if b else size), 206
            self.send_response(status)
            for key, value in (("X-Repo-Commit", "0" * 40), ("ETag", f'"{sha256}"'), ("X-Linked-Etag", f'"{sha256}"'),
                               ("X-Linked-Size", str(size)), ("Accept-Ranges", "bytes"),
                               ("Content-Length", str(end - start))):
                self.send_header(key, value)
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
            self.end_headers()
            return start, end

        def do_HEAD(self) -> None:
            self._head()

        def do_GET(self) -> None:
            span = self._head()
            if span is None:
                return
            self.wfile.flush()
            with open(path, "rb") as handle:
                self.connection.sendfile(handle, span[0], span[1] - span[0])

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"HF_ENDPOINT=http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


def start_server(root: Path, standin: tuple[str, str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    command = [sys.executable, "-m", "tunehub", "hub", "serve", "--root", str(root), "--port", "0"]
    if standin:
        command = [sys.executable, __file__, "--serve-standin", *standin]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode().strip()
    if not line.startswith("HF_ENDPOINT="):
        process.kill()
        raise SystemExit(f"hub serve did not start: {line!r}")
    url = line.split("=", 1)[1]
    import urllib.request

    if standin:
        return process, url
    for _ in range(200):
        try:
            with urllib.request.urlopen(url + "/api/health", timeout=2):
                return process, url
        except OSError:
            time.sleep(0.05)
    raise SystemExit("hub serve not ready")


def run_timed(command: list[str], env: dict[str, str]) -> float:
    completed = subprocess.run(command, env=env, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"{command[:3]} failed:\n{completed.stdout}\n{completed.stderr}")
    return float(completed.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument(
        "--server",
        choices=("hub", "standin"),
        default="hub",
        help="hub: `tunehub hub serve` (default); standin: the anchor's plain ThreadingHTTPServer with sendfile",
    )
    parser.add_argument("--serve-standin", nargs=3, metavar=("FILE", "SHA256", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_standin:
        serve_standin(*args.serve_standin)
        return 0

    work = Path(args.work or tempfile.mkdtemp(prefix="tunehub-bench-pull-"))
    work.mkdir(parents=True, exist_ok=True)
    size = args.size_mb * 1024 * 1024
    name = "wan2.1_t2v_bench_mbf16.safetensors"
    source_dir = work / "source"
    source_dir.mkdir(exist_ok=True)
    source = source_dir / name
    if not source.exists() or source.stat().st_size != size:
        with open(source, "wb") as handle:
            for _ in range(size // (16 << 20)):
                handle.write(os.urandom(16 << 20))
            handle.write(os.urandom(size % (16 << 20)))
    root = work / "hub-root"
    shutil.rmtree(root, ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "tunehub", "hub", "import", str(source_dir), "--repo", "alice/bench", "--root", str(root)],
        check=True,
        capture_output=True,
    )
    source.unlink()  # keep the page cache for the server's copy, not ours
    standin = None
    if args.server == "standin":
        blob = next(p for p in (root / "blobs").rglob("*") if p.is_file() and p.stat().st_size == size)
        standin = (str(blob), blob.name, f"/alice/bench/resolve/main/{name}")
    server, url = start_server(root, standin)
    file_url = f"{url}/alice/bench/resolve/main/{name}"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    base_env.update({"HF_ENDPOINT": url, "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                     "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HOME": str(work / "hf-home")})
    home = work / "home"
    try:
        results: dict[str, list[float]] = {"curl": [], "curl + fsync": [], "hf_hub_download": [], "tunehub pull": []}
        # warm the server's page cache once so every tool reads the blob from memory
        subprocess.run(["curl", "-s", "-o", "/dev/null", file_url], check=True)
        for round_index in range(args.rounds):
            for tool in results:
                out = work / "out"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                if tool.startswith("curl"):
                    start = time.perf_counter()
                    subprocess.run(["curl", "-s", "-f", "-o", str(out / name), file_url], check=True)
                    if tool == "curl + fsync":  # what tunehub pays for a durable file before its rename
                        fd = os.open(out / name, os.O_RDONLY)
                        os.fsync(fd)
                        os.close(fd)
                    elapsed = time.perf_counter() - start
                elif tool == "hf_hub_download":
                    elapsed = run_timed([sys.executable, "-c", HF_SNIPPET, "alice/bench", name, str(out)], base_env)
                else:
                    shutil.rmtree(home, ignore_errors=True)
                    (home / "finetunes").mkdir(parents=True)
                    (home / "tunehub.toml").write_text(f'weights_dirs = ["{out}"]\n')
                    (home / "finetunes" / "bench_pull.json").write_text(
                        json.dumps({"model": {"name": "bench", "architecture": "t2v", "URLs": [file_url]}})
                    )
                    elapsed = run_timed(
                        [sys.executable, "-c", TUNEHUB_SNIPPET, str(home), str(args.connections)], base_env
                    )
                got = sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and not p.is_symlink())
                if got < size:
                    raise SystemExit(f"{tool} wrote {got} bytes, expected {size}")
                results[tool].append(size / elapsed / 1e6)
                print(f"round {round_index + 1} {tool:<16} {size / elapsed / 1e6:7.0f} MB/s  "
                      f"({elapsed:.2f} s)  load {os.getloadavg()[0]:.2f}", flush=True)
        shutil.rmtree(work / "out", ignore_errors=True)
    finally:
        server.terminate()
        server.wait(10)
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)

    server_label = "tunehub hub serve" if args.server == "hub" else "a plain ThreadingHTTPServer Hub stand-in"
    print(f"\nfile {size / 1e9:.2f} GB on {server_label} (loopback), {args.rounds} round(s), "
          f"{os.cpu_count()} CPUs, load average {tuple(round(x, 2) for x in os.getloadavg())}")
    best = {tool: max(values) for tool, values in results.items()}
    for tool, values in results.items():
        print(f"  {tool:<16} best {best[tool]:7.0f} MB/s   median {statistics.median(values):7.0f} MB/s")
    vs_hf = best["tunehub pull"] / best["hf_hub_download"]
    vs_curl = best["tunehub pull"] / best["curl"]
    print(f"  tunehub / hf_hub_download = {vs_hf:.2f}x  (target >= 2.00x)  {'OK' if vs_hf >= 2 else 'BELOW TARGET'}")
    print(f"  tunehub / curl            = {vs_curl:.0%}   (target >= 70%)   {'OK' if vs_curl >= 0.7 else 'BELOW TARGET'}")
    vs_durable = best["tunehub pull"] / best["curl + fsync"]
    print(f"  tunehub / (curl + fsync)  = {vs_durable:.0%}   (same durability: tunehub fsyncs before placing the file)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
