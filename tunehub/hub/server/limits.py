"""The limits that keep one client (slow, idle, hostile) from taking the server from the others.

Standard library only: the CLI reads the defaults to build ``tunehub hub serve``'s options
without importing the server stack. ``connections`` applies the per-connection ones, ``app``
the per-request ones.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

# Open files the server needs besides its sockets: SQLite, blobs being read or written, threads.
FD_RESERVE = 128


@dataclass(frozen=True)
class Limits:
    header_timeout: float = 15.0  # from a connection's first byte (or its opening) to the end of the headers
    idle_timeout: float = 60.0  # no byte of a request body for this long: the connection is dropped
    send_timeout: float = 60.0  # the client reads nothing of our answer for this long: dropped
    keep_alive: int = 30  # an idle keep-alive connection is closed after this (uvicorn's timeout_keep_alive)
    max_connections: int = 1024  # open connections in total
    max_connections_per_client: int = 128  # open connections from one client address
    # Connections over a cap waiting (briefly) for their 503; beyond this they are closed unanswered.
    max_refused_waiting: int = 1024
    request_timeout: float = 30.0  # storage work of one request, including waiting for a database lock
    login_failures: int = 20  # failed token checks per address per minute before answering 429
    retry_after: int = 5  # seconds, in the 503 answered over a connection cap or past request_timeout
    max_header_bytes: int = 16 * 1024  # request line and headers (h11's limit)
    send_buffer: int = 1024 * 1024  # bytes queued in the process per connection before we wait for the socket
    storage_threads: int = 8  # threads doing database work; requests queue for them
    # File bodies through the kernel's sendfile (plain TCP on Linux); hub.toml's `sendfile = false`
    # makes the server read and write them itself (as nginx's `sendfile off`, for filesystems
    # where sendfile is broken or slow).
    sendfile: bool = True


DEFAULTS = Limits()


def fit_to_open_files(limits: Limits) -> tuple[Limits, str | None]:
    """Raise the soft open-files limit to the hard one and keep the connection cap below it.

    Returns the limits to use and a note for the operator when the cap had to shrink (over the
    fd limit, accept() fails and the server looks dead to everyone).
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return limits, None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    # Connections over a cap are still accepted for a moment (to be answered 503): the file
    # descriptors left after the served ones go to those.
    sockets = max(16, soft - FD_RESERVE)
    note = None
    if limits.max_connections > sockets // 2:
        served = sockets // 2
        note = (
            f"--max-connections {limits.max_connections} lowered to {served}: this process may open {soft} files "
            f"(raise it with `ulimit -n`)"
        )
        limits = replace(limits, max_connections=served, max_connections_per_client=min(limits.max_connections_per_client, served))
    return replace(limits, max_refused_waiting=sockets - limits.max_connections), note


__all__ = ["Limits", "DEFAULTS", "fit_to_open_files", "FD_RESERVE"]
