"""Uploads and downloads stream: the server's memory does not grow with the file; orphans are collected."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.hub_server import HubServer

SIZE = 256 * 1024 * 1024


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc to read the server's peak RSS")
def test_big_file_never_held_in_memory(hub_server: HubServer, tmp_path: Path) -> None:
    assert hub_server.process is not None
    pid = hub_server.process.pid
    big = tmp_path / "big.safetensors"
    digest = hashlib.sha256()
    block = os.urandom(8 * 1024 * 1024)
    with open(big, "wb") as handle:
        for _ in range(SIZE // len(block)):
            handle.write(block)
            digest.update(block)
    api = hub_server.api()
    api.create_repo("alice/big")
    # Warm up every code path once with a small file, then measure the peak.
    api.upload_file(path_or_fileobj=b"\0" * 1024, path_in_repo="small.bin", repo_id="alice/big")
    httpx.get(f"{hub_server.url}/alice/big/resolve/main/small.bin")
    baseline = peak_rss(pid)

    api.upload_file(path_or_fileobj=str(big), path_in_repo="big.safetensors", repo_id="alice/big")
    received = hashlib.sha256()
    with httpx.stream("GET", f"{hub_server.url}/alice/big/resolve/main/big.safetensors", timeout=120) as answer:
        for piece in answer.iter_bytes(1024 * 1024):
            received.update(piece)
    assert received.hexdigest() == digest.hexdigest()
    growth = peak_rss(pid) - baseline
    assert growth < 64 * 1024 * 1024, f"server peak RSS grew by {growth / 2**20:.0f} MiB for a {SIZE / 2**20:.0f} MiB file"


def test_unreferenced_blobs_are_collected_at_start(hub_server: HubServer) -> None:
    api = hub_server.api()
    api.create_repo("alice/gc")
    kept = os.urandom(100_000)
    api.upload_file(path_or_fileobj=kept, path_in_repo="kept.safetensors", repo_id="alice/gc")
    kept_oid = hashlib.sha256(kept).hexdigest()
    blob_dir = hub_server.root / "blobs" / "sha256"
    orphan_old = blob_dir / "ab" / ("ab" + "1" * 62)
    orphan_new = blob_dir / "ab" / ("ab" + "2" * 62)
    orphan_old.parent.mkdir(parents=True, exist_ok=True)
    orphan_old.write_bytes(b"left by a crash")
    orphan_new.write_bytes(b"maybe an upload about to be committed")
    two_hours_ago = time.time() - 7200
    os.utime(orphan_old, (two_hours_ago, two_hours_ago))
    os.utime(blob_dir / kept_oid[:2] / kept_oid, (two_hours_ago, two_hours_ago))
    dead_pid = 2**22 + 12345  # above pid_max on Linux: surely not running
    (hub_server.root / "tmp" / f"upload-{dead_pid}-dead").write_bytes(b"interrupted")
    # A temp file of a live process (say a `tunehub hub import` running beside) is left alone.
    live = hub_server.root / "tmp" / f"upload-{os.getpid()}-beef"
    live.write_bytes(b"in progress")

    hub_server.kill()
    hub_server.start()
    assert not orphan_old.exists()
    # No writer holds the store's lease: a young unreferenced blob is garbage too (not an age guess).
    assert not orphan_new.exists()
    assert (blob_dir / kept_oid[:2] / kept_oid).exists()
    assert list((hub_server.root / "tmp").iterdir()) == [live]
    live.unlink()
    assert "cleaned 1 interrupted upload(s) and 2 unreferenced blob(s)" in hub_server.log_text()
