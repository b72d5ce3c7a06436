"""Per-connection limits on top of uvicorn's h11 protocol.

uvicorn gives us the idle keep-alive timeout (``timeout_keep_alive``), the header size limit
(h11's ``max_incomplete_event_size``) and write flow control. What it does not have, and this
subclass adds:

- a header timeout: from a connection's opening (or the first byte of its next request) to
  the end of the headers, not reset by each byte (a client sending one byte a second holds
  a socket forever otherwise);
- an idle timeout while a request body arrives;
- a send timeout: a client that reads nothing of our answer for that long is dropped;
- caps on open connections per client address and in total, checked when a connection is
  accepted (uvicorn's ``limit_concurrency`` only looks once a request's headers have arrived,
  counts all clients together and sends no Retry-After). Over a cap a connection gets
  ``503`` with ``Retry-After`` (huggingface_hub waits and retries), the others are served;
- a bounded send buffer per connection, and the connection's flow control handed to the app
  (``scope["state"]["tunehub.flow"]``) so that a download stops reading its blob while the
  socket is not writable;
- file bodies sent by the kernel (sendfile, from the page cache to the socket): an app whose
  scope state has ``tunehub.sendfile`` may send a :class:`FileRange` as a body, which costs
  a fraction of the CPU of reading the bytes into the process and writing them out again;
- a JSON body on h11's own ``400`` for requests that are not HTTP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import struct
import sys
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from tunehub.hub.server.limits import Limits

log = logging.getLogger("tunehub.hub.server")

try:  # Linux: bytes a socket's kernel send queue still holds (progress a slow reader makes shows there first)
    import fcntl
    import termios

    _OUTQ: int | None = termios.TIOCOUTQ
except (ImportError, AttributeError):  # pragma: no cover - other platforms count the process's buffer only
    _OUTQ = None

# A connection over a cap gets this long to send its request (and be told to come back later).
REFUSED_HEADER_WAIT_S = 2.0
FLOW_STATE_KEY = "tunehub.flow"
SENDFILE_STATE_KEY = "tunehub.sendfile"
# Plain TCP on Linux: sendfile from a regular file to the socket, and TCP_INFO's count of the
# bytes the client has acknowledged (how a send timeout tells a slow reader from a dead one).
_SENDFILE = sys.platform.startswith("linux") and hasattr(os, "sendfile") and hasattr(socket, "TCP_INFO")
_TCP_INFO_BYTES_ACKED = 120  # offset of tcpi_bytes_acked (u64) in Linux's struct tcp_info (since 4.1)
# Event loop classes whose sendfile raised NotImplementedError (uvloop's): said once, then read and write.
_LOOPS_WITHOUT_SENDFILE: set[type] = set()
_WRITE_CHUNK = 1024 * 1024  # reads and writes on such a loop: one chunk in flight above the socket's buffer


class FileRange:
    """A response body that is ``count`` bytes of the open file ``fd`` from ``offset``.

    An app may send one as the ``body`` of an ``http.response.body`` message when its scope's
    state has :data:`SENDFILE_STATE_KEY`; the connection hands the range to the kernel. It has
    a length, so the send wrappers that count ``len(body)`` (metrics, access log) count it.
    """

    __slots__ = ("fd", "offset", "count")

    def __init__(self, fd: int, offset: int, count: int) -> None:
        self.fd = fd
        self.offset = offset
        self.count = count

    def __len__(self) -> int:
        return self.count


class ConnectionBook:
    """Open connections by client address, shared by every connection of one server (one event loop)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.total = 0
        self.by_client: dict[str, int] = {}
        self.refused_waiting = 0
        self.refused_budget = limits.max_refused_waiting
        self._last_warning = 0.0
        self._unwarned = 0

    def admit(self, client: str) -> str:
        """'serve', 'refuse' (answer 503 + Retry-After) or 'drop' (close at once: too many waiting for a 503)."""
        if self.total < self.limits.max_connections and self.by_client.get(client, 0) < self.limits.max_connections_per_client:
            self.total += 1
            self.by_client[client] = self.by_client.get(client, 0) + 1
            return "serve"
        self._warn_capped(client)
        if self.refused_waiting < self.refused_budget:
            self.refused_waiting += 1
            return "refuse"
        return "drop"

    def release(self, client: str, verdict: str) -> None:
        if verdict == "serve":
            self.total -= 1
            left = self.by_client.get(client, 1) - 1
            if left:
                self.by_client[client] = left
            else:
                self.by_client.pop(client, None)
        elif verdict == "refuse":
            self.refused_waiting -= 1

    def _warn_capped(self, client: str) -> None:
        # One line per 10 s at most: a flood must not become a flood of log lines.
        now = time.monotonic()
        self._unwarned += 1
        if now - self._last_warning < 10.0:
            return
        log.warning(
            "connection cap reached (%d open, %d from %s; caps %d in total, %d per client): "
            "%d connection(s) answered 503 since the last warning",
            self.total,
            self.by_client.get(client, 0),
            client,
            self.limits.max_connections,
            self.limits.max_connections_per_client,
            self._unwarned,
        )
        self._last_warning = now
        self._unwarned = 0


def retry_later_app(retry_after: int, reason: str) -> Any:
    """The ASGI app a connection over a cap gets: 503, Retry-After, a JSON error, then close."""
    body = json.dumps({"error": reason}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(retry_after).encode()),
        (b"x-error-code", b"ServiceUnavailable"),
        (b"x-error-message", reason.encode("latin-1", "replace")),
        (b"connection", b"close"),
    ]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return app


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the timeouts and caps described in the module docstring."""

    book: ConnectionBook  # set on the subclass made by protocol_class()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._peer = self.client[0] if self.client else "-"
        self._header_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._unsent = 0  # bytes waiting in the transport when the send timer was (re)armed
        self._verdict = self.book.admit(self._peer)
        limits = self.book.limits
        if self._verdict == "drop":
            transport.abort()
            return
        transport.set_write_buffer_limits(high=limits.send_buffer)
        # Each request's scope["state"] is a copy of this: the app finds the connection's flow control there.
        self.app_state = {**self.app_state, FLOW_STATE_KEY: self.flow}
        if (
            limits.sendfile
            and _SENDFILE
            and transport.get_extra_info("sslcontext") is None
            and transport.get_extra_info("socket") is not None
        ):
            self.app_state[SENDFILE_STATE_KEY] = True
            self.app = self._with_file_bodies(self.app)
        if self._verdict == "refuse":
            reason = (
                f"Too many connections (at most {limits.max_connections_per_client} per client address and "
                f"{limits.max_connections} in total): retry in {limits.retry_after} s."
            )
            self.app = retry_later_app(limits.retry_after, reason)
            self._header_timer = self.loop.call_later(
                min(REFUSED_HEADER_WAIT_S, limits.header_timeout), self._header_timed_out
            )
        else:
            self._header_timer = self.loop.call_later(limits.header_timeout, self._header_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._header_timer, self._idle_timer, self._send_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._idle_timer = self._send_timer = None
        verdict, self._verdict = self._verdict, "gone"
        self.book.release(self._peer, verdict)
        super().connection_lost(exc)

    # --- reading: header and body timeouts -------------------------------------------------

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            # Part of the next request's headers has arrived: it has header_timeout to finish them.
            if self._header_timer is None and self.conn.trailing_data[0]:
                self._header_timer = self.loop.call_later(self.book.limits.header_timeout, self._header_timed_out)
        elif self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if state is h11.SEND_BODY:
            self._idle_timer = self.loop.call_later(self.book.limits.idle_timeout, self._idle_timed_out)

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        seconds = self.book.limits.header_timeout
        if self.conn.trailing_data[0]:
            log.warning("closed a connection from %s: its request headers were not complete after %g s", self._peer, seconds)
            self._write_error(408, "Request Timeout", "RequestTimeout", f"Request headers not complete after {seconds:g} s.")
        else:
            log.info("closed a connection from %s: no request after %g s", self._peer, seconds)
        self.transport.close()

    def _idle_timed_out(self) -> None:
        self._idle_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.SEND_BODY:
            return
        if self.flow.read_paused:
            # We stopped reading (the app is busy with what came): not the client's silence.
            self._idle_timer = self.loop.call_later(self.book.limits.idle_timeout, self._idle_timed_out)
            return
        log.warning(
            "closed a connection from %s: no byte of the request body for %g s", self._peer, self.book.limits.idle_timeout
        )
        self.transport.close()

    # --- writing: bounded buffer, send timeout ------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._unsent = self._unsent_bytes()
            self._send_timer = self.loop.call_later(self.book.limits.send_timeout, self._send_timed_out)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_timed_out(self) -> None:
        self._send_timer = None
        if self.transport.is_closing():
            return
        unsent = self._unsent_bytes()
        if unsent < self._unsent:
            # A slow reader, not a dead one: it took bytes since the last check (nginx's send_timeout
            # is between two successful writes, not for the whole answer).
            self._unsent = unsent
            self._send_timer = self.loop.call_later(self.book.limits.send_timeout, self._send_timed_out)
        else:
            log.warning(
                "dropped a connection from %s: it read nothing of its answer for %g s", self._peer, self.book.limits.send_timeout
            )
            self.transport.abort()

    def _unsent_bytes(self) -> int:
        """What we have written that the client has not taken yet: our buffer plus the kernel's queue."""
        unsent = self.transport.get_write_buffer_size()
        sock = self.transport.get_extra_info("socket")
        if _OUTQ is not None and sock is not None:
            try:
                unsent += struct.unpack("i", fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0"))[0]
            except OSError:
                pass
        return unsent

    # --- file bodies through sendfile ----------------------------------------------------------

    def _with_file_bodies(self, app: Any) -> Any:
        """``app`` with its FileRange bodies sent by the kernel and passed on as empty bodies."""

        async def file_body_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            head = scope.get("method") == "HEAD"

            async def file_send(message: dict[str, Any]) -> None:
                body = message.get("body")
                if isinstance(body, FileRange):
                    if not head and not await self._send_file_range(body):
                        # The connection is gone: uvicorn drops what the app sends now, and so
                        # do we (its end of message would be short of Content-Length for h11).
                        return
                    message = {**message, "body": b""}
                await send(message)

            await app(scope, receive, file_send)

        return file_body_app

    async def _send_file_range(self, body: FileRange) -> bool:
        """Send ``body``; False when the connection is gone (closed, or dropped while sending)."""
        cycle = self.cycle
        if cycle is None or not cycle.response_started:
            raise RuntimeError("Expected ASGI message 'http.response.start' before a file body.")
        if cycle.response_complete:
            return True  # uvicorn's send refuses the message that follows
        if cycle.disconnected:
            return False
        if self.flow.write_paused:
            await self.flow.drain()
        if cycle.disconnected or self.transport.is_closing():
            # Closing, and uvicorn's connection_lost may be still to come: make it run now.
            await self._drop_connection()
            return False
        # h11 counts the range against Content-Length (or frames it as a chunk) without its bytes.
        for part in self.conn.send_with_data_passthrough(h11.Data(data=body)) or []:
            if isinstance(part, FileRange):
                if part.count and not await self._sendfile(part):
                    return False
            else:
                self.transport.write(part)
        return True

    async def _drop_connection(self) -> None:
        self.transport.abort()
        # abort() schedules connection_lost (or it is already scheduled): one turn of the loop
        # runs it, and uvicorn's cycle is marked disconnected before the app sends again.
        await asyncio.sleep(0)

    async def _sendfile(self, part: FileRange) -> bool:
        """Send ``part`` with loop.sendfile; False (connection dropped) if the client stops taking bytes."""
        if type(self.loop) in _LOOPS_WITHOUT_SENDFILE:
            return await self._write_range(part)
        file = open(part.fd, "rb", buffering=0, closefd=False)  # noqa: SIM115, ASYNC230 - a wrapper of an open fd, no I/O
        task = self.loop.create_task(self.loop.sendfile(self.transport, file, part.offset, part.count))
        timeout = self.book.limits.send_timeout
        try:
            acked = self._bytes_acked()
            progress_at = time.monotonic()
            while True:
                # Look a few times per timeout: a client is dropped at most timeout/4 late.
                done, _ = await asyncio.wait({task}, timeout=timeout / 4)
                if done:
                    if task.result() == part.count:
                        return True
                    log.error("a file sent to %s ended before the bytes its answer declared: connection closed", self._peer)
                    break
                now = self._bytes_acked()
                if now is not None and now != acked:
                    acked, progress_at = now, time.monotonic()  # a slow reader: it took bytes
                elif time.monotonic() - progress_at >= timeout:
                    log.warning("dropped a connection from %s: it read nothing of its answer for %g s", self._peer, timeout)
                    break
        except NotImplementedError:
            # uvloop's loop (uvicorn picks it where it is installed) has no sendfile; it says so
            # before sending a byte, so this range and every later one go by reads and writes.
            _LOOPS_WITHOUT_SENDFILE.add(type(self.loop))
            loop_name = f"{type(self.loop).__module__}.{type(self.loop).__qualname__}"
            log.warning("this event loop (%s) cannot sendfile: file bodies are read and written by the server", loop_name)
        except (OSError, RuntimeError):  # the client went away (reset, broken pipe, transport closed)
            pass
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
            file.close()
        if type(self.loop) in _LOOPS_WITHOUT_SENDFILE:
            return await self._write_range(part)
        await self._drop_connection()
        return False

    async def _write_range(self, part: FileRange) -> bool:
        """``part`` read and written here, on a loop that cannot sendfile; False if the connection
        dropped. A client that stops reading is dropped by the send timer (``pause_writing``)."""
        offset, end = part.offset, part.offset + part.count
        while offset < end:
            if self.flow.write_paused:
                await self.flow.drain()  # the client takes bytes, or the send timer drops it
            if self.transport.is_closing() or (self.cycle is not None and self.cycle.disconnected):
                await self._drop_connection()
                return False
            chunk = await asyncio.to_thread(os.pread, part.fd, min(_WRITE_CHUNK, end - offset), offset)
            if not chunk:
                log.error("a file sent to %s ended before the bytes its answer declared: connection closed", self._peer)
                await self._drop_connection()
                return False
            self.transport.write(chunk)
            offset += len(chunk)
        return True

    def _bytes_acked(self) -> int | None:
        sock = self.transport.get_extra_info("socket")
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        except (OSError, AttributeError):
            return None
        if len(info) < _TCP_INFO_BYTES_ACKED + 8:
            return None
        return int(struct.unpack_from("Q", info, _TCP_INFO_BYTES_ACKED)[0])

    # --- h11's own refusals ----------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        self._write_error(400, "Bad Request", "BadRequest", msg)
        self.transport.close()

    def _write_error(self, status: int, phrase: str, code: str, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        head = (
            f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\nx-error-code: {code}\r\n"
            f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n"
        ).encode("latin-1")
        self.transport.write(head + body)


def protocol_class(limits: Limits) -> type[LimitedH11Protocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` whose connections share one ConnectionBook."""
    return type("LimitedH11Protocol", (LimitedH11Protocol,), {"book": ConnectionBook(limits)})


__all__ = ["LimitedH11Protocol", "ConnectionBook", "protocol_class", "FLOW_STATE_KEY", "SENDFILE_STATE_KEY", "FileRange"]
