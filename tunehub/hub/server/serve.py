"""Run the Hub server with uvicorn until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import os
import socket
import sys
from types import FrameType
from typing import TYPE_CHECKING, TextIO

from tunehub.errors import ServerError
from tunehub.hub.server.limits import DEFAULTS, Limits, fit_to_open_files
from tunehub.hub.server.storage import HubStore

if TYPE_CHECKING:
    from tunehub.hub.server.mirror import MirrorSettings


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind and listen ourselves: port 0 picks a free port, and the URL is known before serving."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on accepted sockets whose proto
    # says TCP; without it Nagle + delayed ACK add 40 ms to every keep-alive request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServerError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def endpoint_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def serve(
    root: str,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    page_size: int | None = None,
    access_log: bool = False,
    log_level: str = "warning",
    out: TextIO | None = None,
    mirror_settings: MirrorSettings | None = None,
    public_url: str | None = None,
    limits: Limits = DEFAULTS,
) -> int:
    """Serve ``root`` until a signal; return the exit status (0 after a clean stop)."""
    import uvicorn

    from tunehub.hub.server.app import ServerSettings, create_app, normalise_public_url
    from tunehub.hub.server.connections import protocol_class

    out = out or sys.stdout
    os.umask(0o077)  # whatever this process creates under the root is the server account's alone
    limits, note = fit_to_open_files(limits)
    public_url = normalise_public_url(public_url) if public_url else None
    store = HubStore(root, busy_timeout=limits.request_timeout)
    lock = store.lock_for_serving()
    cleaned = store.clean_leftovers()
    # The server adds blobs too: from here on a later start's clean-up (of another server on a
    # copy, or after a crash) must see it as a live writer.
    lease = store.writer_lease()
    settings = ServerSettings(
        public_url=public_url,
        request_timeout=limits.request_timeout,
        login_failures=limits.login_failures,
        retry_after=limits.retry_after,
        storage_threads=limits.storage_threads,
    )
    if page_size:
        settings.page_size = page_size
        settings.commits_page_size = min(settings.commits_page_size, page_size)
    settings.access_log = access_log
    if access_log:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        access_logger = logging.getLogger("tunehub.hub.server.access")
        access_logger.addHandler(handler)
        access_logger.setLevel(logging.INFO)
        access_logger.propagate = False
    mirror = None
    if mirror_settings is not None:
        from tunehub.hub.server.mirror import Mirror

        mirror = Mirror(store, mirror_settings)
        mirror.start_background()
    from tunehub.hub.server.metrics import MetricsApp

    app = MetricsApp(create_app(store, settings, mirror), mirror)
    sock = bind_socket(host, port)
    url = endpoint_url(host, sock.getsockname()[1])

    class _Server(uvicorn.Server):
        # A signal means "stop": finish in-flight requests, then return normally (exit 0)
        # instead of re-raising the signal as uvicorn does by default.
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.should_exit:
                self.force_exit = True
            self.should_exit = True

    config = uvicorn.Config(
        app,
        http=protocol_class(limits),
        # asyncio's own loop, not uvloop where that is installed (uvicorn's default): uvloop has no
        # sendfile, the kernel path of file bodies (connections.py falls back to reads and writes).
        loop="asyncio",
        ws="none",
        log_level=log_level,
        access_log=False,  # request lines carry upload signatures: keep them out of logs
        lifespan="off",
        timeout_keep_alive=limits.keep_alive,
        timeout_graceful_shutdown=5,
        h11_max_incomplete_event_size=limits.max_header_bytes,
        server_header=False,
    )
    server = _Server(config)
    server_log = logging.getLogger("tunehub.hub.server")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    server_log.addHandler(handler)
    server_log.setLevel(getattr(logging, log_level.upper(), logging.WARNING))
    server_log.propagate = False
    if note:
        print(note, file=sys.stderr)
    if cleaned["tmp"] or cleaned["blobs"]:
        print(
            f"cleaned {cleaned['tmp']} interrupted upload(s) and {cleaned['blobs']} unreferenced blob(s)",
            file=sys.stderr,
        )
    if cleaned["writers"]:
        print(
            "another writer (a `tunehub hub import`?) is using this root: unreferenced blobs are left for a later start",
            file=sys.stderr,
        )
    print(f"Serving {store.root} at {url}", file=sys.stderr)
    print(f"Clients: export HF_ENDPOINT={url} HF_HUB_DISABLE_XET=1", file=sys.stderr)
    if host in ("0.0.0.0", "::", ""):
        port_bound = sock.getsockname()[1]
        print(f"Listening on all interfaces: other machines use http://<this machine's address>:{port_bound}", file=sys.stderr)
    if mirror is not None:
        assert mirror_settings is not None
        token_note = "with the hub's upstream token" if mirror_settings.token else "public repos only (no upstream token)"
        print(f"Mirroring {mirror.upstream.url} ({token_note}; branches re-checked every {mirror_settings.ttl:g}s)", file=sys.stderr)
    print(f"HF_ENDPOINT={url}", file=out, flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        if mirror is not None:
            mirror.close()
        store.close()
        lease.close()
        lock.close()
    print("Hub server stopped", file=sys.stderr)
    return 0


__all__ = ["serve", "bind_socket", "endpoint_url"]
