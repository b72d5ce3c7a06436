"""The always-on sync service: watch folders, poll remotes, reconcile, journal, events.

Nothing heavy is imported here: the CLI and the TUI import
:mod:`tunehub.daemon.client` to talk to a running daemon without torch or watchdog.
"""

from __future__ import annotations

SOCKET_NAME = "daemon.sock"
JOURNAL_NAME = "state.db"
LOCK_NAME = "daemon.lock"
LOG_NAME = "daemon.log"

__all__ = ["SOCKET_NAME", "JOURNAL_NAME", "LOCK_NAME", "LOG_NAME"]
