"""File answers sent by the kernel (sendfile) and by the server itself (`sendfile = false` in hub.toml).

Both paths against a real server subprocess: exact bytes for whole files and ranges (across the
8 MiB pieces the sendfile path hands to the kernel), HEAD without a body, keep-alive requests
after a file answer on the same connection, /metrics and the access log counting the bytes, a
blob shorter than its listing cut instead of hanging, and a mirror transfer in flight.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.hub_server import HubServer
from tests.hub.server.mirror_helpers import file_bytes_served, sha256_of, start_mirror
from tests.hub.test_download_helpers import FaultProxy
from tunehub.hub.server.importer import import_folder
from tunehub.hub.server.storage import HubStore

SIZE = 20 * 1024 * 1024 + 12345  # three sendfile pieces, the last one short
PIECE = 8 * 1024 * 1024


def with_sendfile(root: Path, enabled: bool) -> None:
    root.mkdir(parents=True, exist_ok=True)
    if not enabled:
        (root / "hub.toml").write_text("sendfile = false\n")


def bytes_written_by_syscalls(server: HubServer) -> int:
    """The server's ``wchar``: counts what sendfile sends (from the file), not what send() sends from memory."""
    assert server.process is not None
    for line in Path(f"/proc/{server.process.pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar")


@pytest.fixture(params=[True, False], ids=["sendfile", "no-sendfile"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[HubServer, bytes, bytes, bool]]:
    source = tmp_path / "src"
    source.mkdir()
    data = os.urandom(SIZE)
    small = b'{"dim": 8}'
    (source / "w.safetensors").write_bytes(data)
    (source / "config.json").write_bytes(small)
    root = tmp_path / "root"
    with_sendfile(root, request.param)
    import_folder(root, source, "alice/files")
    server = HubServer(root, home=tmp_path / "home", extra_args=["--access-log"]).start()
    try:
        yield server, data, small, request.param
    finally:
        server.stop()


def read_answer(sock: socket.socket, pending: bytearray) -> tuple[bytes, dict[str, str], bytes]:
    """One HTTP/1.1 answer with a Content-Length from ``sock``; bytes past it stay in ``pending``."""
    while b"\r\n\r\n" not in pending:
        piece = sock.recv(1 << 16)
        assert piece, "the connection closed before an answer's headers"
        pending += piece
    head, _, rest = bytes(pending).partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    length = int(headers["content-length"])
    body = bytearray(rest)
    while len(body) < length:
        piece = sock.recv(1 << 20)
        assert piece, f"the connection closed after {len(body)} of {length} body bytes"
        body += piece
    pending[:] = body[length:]
    return status.encode(), headers, bytes(body[:length])


def test_file_answers_are_exact_and_keep_the_connection(served: tuple[HubServer, bytes, bytes, bool]) -> None:
    server, data, small, sendfile = served
    base = "/alice/files/resolve/main/"
    before = file_bytes_served(server.url)
    ranges = [(0, 0), (PIECE - 100, PIECE + 99), (2 * PIECE, SIZE - 1), (SIZE - 1, SIZE - 1), (12345, 5 * 1024 * 1024)]
    expected_bytes = 0
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    pending = bytearray()
    try:
        # One keep-alive connection: a whole file, ranges, a HEAD and a small file, in turn.
        written = bytes_written_by_syscalls(server)
        sock.sendall(f"GET {base}w.safetensors HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, headers, body = read_answer(sock, pending)
        assert headers["content-length"] == str(SIZE)
        assert status.startswith(b"HTTP/1.1 200") and hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
        expected_bytes += len(body)
        # With sendfile the kernel sent the body from the file; without it, from the server's memory.
        by_sendfile = bytes_written_by_syscalls(server) - written
        assert by_sendfile >= SIZE if sendfile else by_sendfile < 64 * 1024, by_sendfile
        for start, end in ranges:
            sock.sendall(f"GET {base}w.safetensors HTTP/1.1\r\nHost: x\r\nRange: bytes={start}-{end}\r\n\r\n".encode())
            status, _, body = read_answer(sock, pending)
            assert status.startswith(b"HTTP/1.1 206"), (start, end, status)
            assert body == data[start : end + 1], (start, end)
            expected_bytes += len(body)
        sock.sendall(f"HEAD {base}w.safetensors HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        while b"\r\n\r\n" not in pending:
            pending += sock.recv(1 << 16)
        head, _, rest = bytes(pending).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and rest == b""  # no body after a HEAD's headers
        pending.clear()
        sock.sendall(f"GET {base}config.json HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, _, body = read_answer(sock, pending)
        assert status.startswith(b"HTTP/1.1 200") and body == small
        expected_bytes += len(body)
        assert pending == b""
    finally:
        sock.close()
    assert file_bytes_served(server.url) - before == expected_bytes
    deadline = time.monotonic() + 10
    while f" 200 {SIZE} " not in server.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f" 200 {SIZE} " in server.log_text()  # the access log counts a whole file's bytes


def test_a_blob_shorter_than_its_listing_is_cut_not_hung(served: tuple[HubServer, bytes, bytes, bool]) -> None:
    server, data, small, _ = served
    store = HubStore(server.root)
    try:
        blob = store.blob_path(sha256_of(data))
    finally:
        store.close()
    os.chmod(blob, 0o600)
    with open(blob, "r+b") as handle:  # damaged on disk after it was stored
        handle.truncate(SIZE - PIECE - 1000)
    started = time.monotonic()
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"{server.url}/alice/files/resolve/main/w.safetensors", timeout=30)
    assert time.monotonic() - started < 20
    assert httpx.get(f"{server.url}/alice/files/resolve/main/config.json", timeout=30).content == small


@pytest.mark.parametrize("enabled", [True, False], ids=["sendfile", "no-sendfile"])
def test_a_mirror_transfer_in_flight_is_sent_exactly(tmp_path: Path, enabled: bool) -> None:
    from huggingface_hub import CommitOperationAdd

    upstream = HubServer(tmp_path / "upstream", home=tmp_path / "upstream-home").start()
    proxy = None
    mirror = None
    try:
        data = os.urandom(12 * 1024 * 1024 + 7)
        upstream.api().create_repo("alice/big")
        upstream.api().create_commit(
            "alice/big", [CommitOperationAdd(path_in_repo="w.safetensors", path_or_fileobj=data)], commit_message="add"
        )
        token_file = tmp_path / "upstream-token"
        token_file.write_text(upstream.read_token + "\n")
        proxy = FaultProxy(upstream.url)
        proxy.rate_bytes_per_s = 6 * 1024 * 1024  # about 2 s: the clients read while the bytes arrive
        with_sendfile(tmp_path / "mirror", enabled)
        mirror = start_mirror(tmp_path / "mirror", proxy.url, token_file)
        url = f"{mirror.url}/alice/big/resolve/main/w.safetensors"
        auth = {"Authorization": f"Bearer {mirror.read_token}"}
        results: dict[str, bytes] = {}

        def fetch(name: str, headers: dict[str, str]) -> None:
            results[name] = httpx.get(url, headers={**auth, **headers}, timeout=60).content

        threads = [
            threading.Thread(target=fetch, args=("whole", {})),
            threading.Thread(target=fetch, args=("middle", {"Range": "bytes=5000000-9000000"})),
            threading.Thread(target=fetch, args=("tail", {"Range": "bytes=-1000"})),
        ]
        for thread in threads:
            thread.start()
            time.sleep(0.2)
        for thread in threads:
            thread.join(120)
        assert results["whole"] == data
        assert results["middle"] == data[5000000:9000001]
        assert results["tail"] == data[-1000:]
        transfers = [t for t in proxy.transfers if t[0].endswith("w.safetensors")]
        assert len(transfers) == 1  # one upstream transfer for the three
    finally:
        if mirror is not None:
            mirror.stop()
        if proxy is not None:
            proxy.close()
        upstream.stop()
