"""50 clients downloading different files at once: every byte right, no error."""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from huggingface_hub import hf_hub_download

from tests.fixtures.hub_server import HubServer
from tunehub.hub.server.importer import import_folder

CLIENTS = 50


def test_fifty_concurrent_downloads(hub_server: HubServer, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    expected: dict[str, str] = {}
    for index in range(CLIENTS):
        # Sizes from 64 KiB to ~3 MiB, some LFS (.safetensors), some regular (.json).
        name = f"part-{index:02d}.safetensors" if index % 2 else f"part-{index:02d}.json"
        data = os.urandom(64 * 1024 + index * 61_000)
        (source / name).write_bytes(data)
        expected[name] = hashlib.sha256(data).hexdigest()
    import_folder(hub_server.root, source, "alice/many")
    start = threading.Barrier(CLIENTS)

    def client_download(name: str) -> str:
        start.wait(30)
        if int(name[5:7]) % 5 == 0:
            # Every fifth client is a plain HTTP client reading in small pieces.
            digest = hashlib.sha256()
            with httpx.stream("GET", f"{hub_server.url}/alice/many/resolve/main/{name}", timeout=60) as answer:
                assert answer.status_code == 200
                for piece in answer.iter_bytes(16 * 1024):
                    digest.update(piece)
            return digest.hexdigest()
        path = hf_hub_download(
            "alice/many", name, endpoint=hub_server.url, token=False, cache_dir=tmp_path / f"cache-{name}"
        )
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        results = dict(zip(expected, pool.map(client_download, expected)))
    assert results == expected
    assert "Traceback" not in hub_server.log_text()


def test_clients_that_hang_up_mid_download(hub_server: HubServer, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    data = os.urandom(24 * 1024 * 1024)
    (source / "w.safetensors").write_bytes(data)
    import_folder(hub_server.root, source, "alice/hangup")
    url = f"{hub_server.url}/alice/hangup/resolve/main/w.safetensors"
    for _ in range(10):
        with httpx.stream("GET", url, timeout=30) as answer:
            next(answer.iter_raw(1024 * 1024))  # read a little, then drop the connection
    assert httpx.get(url, headers={"Range": "bytes=-1000"}).content == data[-1000:]
    assert hashlib.sha256(httpx.get(url, timeout=60).content).hexdigest() == hashlib.sha256(data).hexdigest()
    assert "Traceback" not in hub_server.log_text() and "ERROR" not in hub_server.log_text()
