"""Download throughput of `tunehub hub serve` against a plain Python http.server Hub stand-in.

In one run, on the same file (1 GB of random bytes by default):
  - raw GET with curl from our server and from a ThreadingHTTPServer stand-in (the anchor),
  - huggingface_hub.hf_hub_download (Xet off) from both, each into a fresh cache.
Targets (issue 3): our raw GET >= 1 GB/s on loopback; hf_hub_download from ours no slower
than from the plain one (ratio >= 1.0 within noise).

    python benchmarks/hub_server.py [--size-mb 1024] [--rounds 2]
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures.hub_server import HubServer  # noqa: E402
from tunehub.hub.server.importer import import_folder  # noqa: E402

REPO = "alice/bench"
FILENAME = "model.safetensors"


def make_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    block = os.urandom(16 * 1024 * 1024)
    with open(path, "wb") as handle:
        written = 0
        while written < size:
            chunk = block[: min(len(block), size - written)]
            handle.write(chunk)
            digest.update(chunk)
            written += len(chunk)
    return digest.hexdigest()


def plain_server(file_path: Path, sha256: str) -> tuple[http.server.ThreadingHTTPServer, str]:
    """The anchor: http.server answering the Hub's resolve URL with the metadata headers."""
    size = file_path.stat().st_size

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _headers(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.send_header("ETag", f'"{sha256}"')
            self.send_header("X-Repo-Commit", "0" * 40)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()

        def do_HEAD(self) -> None:  # noqa: N802
            self._headers()

        def do_GET(self) -> None:  # noqa: N802
            self._headers()
            with open(file_path, "rb") as handle:
                self.copyfile(handle, self.wfile)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def process_cpu_seconds(pid: int) -> float | None:
    """user+system CPU of a process (Linux /proc), to compare servers' cost per GB under load."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def curl_rate(url: str) -> float:
    """Bytes per second of one curl GET to /dev/null."""
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{speed_download} %{size_download}", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[0])


def hf_rate(endpoint: str, cache: Path, size: int, sha256: str, token: str | bool = False) -> float:
    """Bytes per second of hf_hub_download into a fresh cache (sha256 checked afterwards, not timed)."""
    import huggingface_hub.constants as constants
    from huggingface_hub import hf_hub_download

    constants.HF_HUB_DISABLE_XET = True
    shutil.rmtree(cache, ignore_errors=True)
    started = time.perf_counter()
    path = hf_hub_download(REPO, FILENAME, endpoint=endpoint, cache_dir=cache, token=token)
    elapsed = time.perf_counter() - started
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(8 << 20):
            digest.update(chunk)
    if digest.hexdigest() != sha256:
        raise SystemExit(f"hf_hub_download from {endpoint} returned wrong bytes")
    shutil.rmtree(cache, ignore_errors=True)
    return size / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    size = args.size_mb * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="tunehub-bench-") as tmp_name:
        tmp = Path(tmp_name)
        source = tmp / "src"
        source.mkdir()
        sha256 = make_file(source / FILENAME, size)
        import_folder(tmp / "root", source, REPO)
        ours = HubServer(tmp / "root", home=tmp / "home").start()
        plain, plain_url = plain_server(source / FILENAME, sha256)
        resolve = f"/{REPO}/resolve/main/{FILENAME}"
        try:
            # Warm the page cache for both paths (same inode content, different files).
            curl_rate(ours.url + resolve)
            curl_rate(plain_url + resolve)
            raw_ours, raw_plain, hf_ours, hf_plain = [], [], [], []
            cpu_ours = cpu_plain = 0.0
            assert ours.process is not None
            server_pid = ours.process.pid
            for _ in range(args.rounds):
                # The plain server runs in this process's threads and curl in its own process,
                # so this process's CPU time during the curl is the plain server's.
                before = own_cpu_seconds()
                raw_plain.append(curl_rate(plain_url + resolve))
                cpu_plain += own_cpu_seconds() - before
                before_ours = process_cpu_seconds(server_pid)
                raw_ours.append(curl_rate(ours.url + resolve))
                after_ours = process_cpu_seconds(server_pid)
                if before_ours is not None and after_ours is not None:
                    cpu_ours += after_ours - before_ours
                hf_plain.append(hf_rate(plain_url, tmp / "cache-plain", size, sha256))
                hf_ours.append(hf_rate(ours.url, tmp / "cache-ours", size, sha256))
            # Upload (no stand-in takes uploads: compared with the anchors.md figure, not re-measured).
            import huggingface_hub.constants as constants

            constants.HF_HUB_DISABLE_XET = True
            api = ours.api()
            make_file(tmp / "upload.safetensors", size)  # new bytes: the server must really receive them
            started = time.perf_counter()
            api.upload_file(path_or_fileobj=str(tmp / "upload.safetensors"), path_in_repo="upload.safetensors", repo_id=REPO)
            upload_rate = size / (time.perf_counter() - started)
        finally:
            plain.shutdown()
            ours.stop()
    mb = 1e6
    print(f"file: {args.size_mb} MiB, rounds: {args.rounds}, best of each; load average {os.getloadavg()}")
    print(f"raw GET (curl)   ours {max(raw_ours) / mb:8.0f} MB/s   plain http.server {max(raw_plain) / mb:8.0f} MB/s"
          f"   ratio {max(raw_ours) / max(raw_plain):.2f}")
    print(f"hf_hub_download  ours {max(hf_ours) / mb:8.0f} MB/s   plain http.server {max(hf_plain) / mb:8.0f} MB/s"
          f"   ratio {max(hf_ours) / max(hf_plain):.2f}")
    gigabytes = size * args.rounds / 1e9
    print(f"server CPU per GB sent (raw GET; load-independent cost): ours {cpu_ours / gigabytes:.3f} s, "
          f"plain {cpu_plain / gigabytes:.3f} s")
    print(f"HfApi.upload_file to ours (client sha256 + LFS PUT + server hash/fsync): {upload_rate / mb:.0f} MB/s "
          f"(anchors.md: 196 MB/s to the plain stand-in, another day)")
    raw_ok = max(raw_ours) >= 1e9
    hf_ok = max(hf_ours) >= 0.95 * max(hf_plain)
    print(f"target raw GET >= 1000 MB/s: {'met' if raw_ok else 'NOT met'}; "
          f"target hf_hub_download ours/plain >= 1.0 (5% noise allowed): {'met' if hf_ok else 'NOT met'}")
    print(f"all rates MB/s: raw ours {[round(r / mb) for r in raw_ours]}, raw plain {[round(r / mb) for r in raw_plain]}, "
          f"hf ours {[round(r / mb) for r in hf_ours]}, hf plain {[round(r / mb) for r in hf_plain]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
