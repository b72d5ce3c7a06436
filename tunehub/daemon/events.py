"""The event feed: every change the daemon sees or makes, with increasing ids.

Events are kept in the journal (so ids keep increasing across restarts) and the most
recent ones in memory for ``GET /events?since=N`` long polls. A client that asks for
``since`` older than what is kept gets ``missed: true`` and can re-read ``/status``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable

from tunehub.daemon.journal import Journal

__all__ = ["EventBus"]

KEEP_IN_MEMORY = 5000
KEEP_IN_JOURNAL = 20000


class EventBus:
    def __init__(self, journal: Journal | None, *, on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        self._journal = journal
        self._recent: deque[dict[str, Any]] = deque(maxlen=KEEP_IN_MEMORY)
        self._cond = threading.Condition()
        self._on_event = on_event
        self._next_id = 1
        if journal is not None:
            journal.trim_events(KEEP_IN_JOURNAL)
            self._recent.extend(journal.recent_events(KEEP_IN_MEMORY))
            self._next_id = journal.last_event_id() + 1

    @property
    def last_id(self) -> int:
        with self._cond:
            return self._next_id - 1

    def publish(self, event_type: str, **data: Any) -> dict[str, Any]:
        now = time.time()
        with self._cond:
            if self._journal is not None:
                event_id = self._journal.add_event(event_type, data, now)
            else:
                event_id = self._next_id
            self._next_id = event_id + 1
            event = {**data, "id": event_id, "time": now, "type": event_type}
            self._recent.append(event)
            self._cond.notify_all()
        if self._on_event is not None:
            self._on_event(event)
        return event

    def since(self, after_id: int, timeout: float = 0.0, limit: int = 1000) -> dict[str, Any]:
        """Events with id > ``after_id``; waits up to ``timeout`` seconds for the first one."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while self._next_id - 1 <= after_id:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            events = [event for event in self._recent if event["id"] > after_id][:limit]
            oldest = self._recent[0]["id"] if self._recent else self._next_id
            return {
                "events": events,
                "last_id": self._next_id - 1,
                "oldest_id": oldest,
                # Ids are consecutive: a gap before the first returned one means some were dropped.
                "missed": after_id + 1 < oldest and self._next_id - 1 > after_id,
            }

    def wake_all(self) -> None:
        with self._cond:
            self._cond.notify_all()
