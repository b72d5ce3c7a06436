"""A file body sent while its connection is already closing: dropped quietly, as uvicorn drops bytes.

The server's own protocol class and uvicorn in this process over real loopback TCP, so the test
can close the connection at the one moment that matters: after a piece went out and before the
next one, with the close seen by the transport but uvicorn's connection_lost not yet run. That
is what a client hanging up mid-download does to a busy server; the last piece's end of message
must not reach h11 (which raised "Too little data for declared Content-Length" and logged a
traceback for each such client).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from tunehub.hub.server.connections import SENDFILE_STATE_KEY, FileRange, LimitedH11Protocol, protocol_class
from tunehub.hub.server.limits import Limits

PIECE = 1024 * 1024


def serve_two_pieces_closing_between(path: Path) -> tuple[list[BaseException], bool, bytes]:
    """(what the app's sends raised, whether it ran on the sendfile path, what the client received)."""
    connections: list[LimitedH11Protocol] = []

    class Recorded(protocol_class(Limits())):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            connections.append(self)

    raised: list[BaseException] = []
    on_sendfile_path: list[bool] = []
    app_done = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        on_sendfile_path.append(bool(scope["state"].get(SENDFILE_STATE_KEY)))
        fd = os.open(path, os.O_RDONLY)
        try:
            headers = [(b"content-length", str(2 * PIECE).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": FileRange(fd, 0, PIECE), "more_body": True})
            # The client hangs up: the transport is closing, connection_lost is only scheduled.
            connections[0].transport.close()
            await send({"type": "http.response.body", "body": FileRange(fd, PIECE, PIECE), "more_body": False})
        except BaseException as error:  # noqa: BLE001 - the test reports what the send raised
            raised.append(error)
        finally:
            os.close(fd)
            app_done.set()

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    config = uvicorn.Config(app, http=Recorded, ws="none", lifespan="off", log_level="warning")
    server = uvicorn.Server(config)

    def client() -> bytes:
        received = bytearray()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /w HTTP/1.1\r\nHost: test\r\n\r\n")
            while chunk := sock.recv(1 << 16):
                received += chunk
        return bytes(received)

    async def main() -> bytes:
        serving = asyncio.create_task(server.serve(sockets=[listener]))
        while not server.started:
            await asyncio.sleep(0.01)
        received = await asyncio.to_thread(client)
        await asyncio.wait_for(app_done.wait(), 30)
        server.should_exit = True
        await serving
        return received

    received = asyncio.run(main())
    return raised, on_sendfile_path[0], received


def test_a_piece_after_the_connection_started_closing_is_dropped_without_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "w.bin"
    data = os.urandom(2 * PIECE)
    path.write_bytes(data)
    with caplog.at_level(logging.WARNING):
        raised, on_sendfile_path, received = serve_two_pieces_closing_between(path)
    if not on_sendfile_path:
        pytest.skip("sendfile needs plain TCP on Linux")
    assert raised == []
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert body == data[:PIECE]  # the first piece whole, then the close: a short body the client can tell
