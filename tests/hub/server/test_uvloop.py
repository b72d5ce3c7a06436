"""File downloads where uvloop is installed (``uvicorn[standard]`` brings it along).

uvicorn runs on uvloop whenever it can import it, and uvloop's loop has no ``sendfile``: it
raises NotImplementedError. The server sent each answer's head, then dropped the connection
without a byte of the body ("peer closed connection without sending complete message body
(received 0 bytes ...)"), and logged nothing. Two checks: the real `tunehub hub serve` process
in an environment with uvloop, and the connection protocol itself on a uvloop loop, where a
file body must still arrive whole (sent by reads and writes when the loop cannot sendfile).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from huggingface_hub import hf_hub_download

from tests.fixtures.hub_server import HubServer
from tunehub.hub.server.connections import SENDFILE_STATE_KEY, FileRange, protocol_class
from tunehub.hub.server.importer import import_folder
from tunehub.hub.server.limits import Limits

uvloop = pytest.importorskip("uvloop", reason="uvloop (in the test extra) has no build for this platform")

PIECE = 3 * 1024 * 1024 + 123  # not a multiple of any buffer size


def test_hub_serve_sends_whole_files_with_uvloop_installed(hub_server: HubServer, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    data = os.urandom(PIECE)
    (source / "w.safetensors").write_bytes(data)
    import_folder(hub_server.root, source, "alice/uv")
    path = hf_hub_download("alice/uv", "w.safetensors", endpoint=hub_server.url, token=False, cache_dir=tmp_path / "c")
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert "Traceback" not in hub_server.log_text()


def serve_file_bodies_on_uvloop(path: Path, size: int) -> tuple[bool, bytes]:
    """(whether the app was on the sendfile path, what a raw client received) for one answer
    of two FileRange pieces, served by the hub's protocol class on a uvloop loop."""
    on_sendfile_path: list[bool] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        on_sendfile_path.append(bool(scope["state"].get(SENDFILE_STATE_KEY)))
        fd = os.open(path, os.O_RDONLY)
        try:
            half = size // 2
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(size).encode())]})
            await send({"type": "http.response.body", "body": FileRange(fd, 0, half), "more_body": True})
            await send({"type": "http.response.body", "body": FileRange(fd, half, size - half), "more_body": False})
        finally:
            os.close(fd)

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    config = uvicorn.Config(app, http=protocol_class(Limits()), ws="none", lifespan="off", log_level="warning")
    server = uvicorn.Server(config)

    def client() -> bytes:
        received = bytearray()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /w HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            while chunk := sock.recv(1 << 16):
                received += chunk
        return bytes(received)

    async def main() -> bytes:
        assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        serving = asyncio.create_task(server.serve(sockets=[listener]))
        while not server.started:
            await asyncio.sleep(0.01)
        received = await asyncio.wait_for(asyncio.to_thread(client), 60)
        server.should_exit = True
        await serving
        return received

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        received = runner.run(main())
    return on_sendfile_path[0], received


def test_file_bodies_arrive_whole_on_a_loop_without_sendfile(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "w.bin"
    data = os.urandom(2 * PIECE)
    path.write_bytes(data)
    with caplog.at_level(logging.WARNING):
        on_sendfile_path, received = serve_file_bodies_on_uvloop(path, len(data))
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert len(body) == len(data) and body == data
    if on_sendfile_path:
        # the loop cannot sendfile: said once, at the first answer that needed it
        notes = [r.getMessage() for r in caplog.records if "sendfile" in r.getMessage()]
        assert len(notes) == 1 and "uvloop" in notes[0], notes
