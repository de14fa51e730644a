"""Change notices: what tells Studio's open pages (and tests) to read the database again.

The database is the truth. A notice only says which chat or approval changed; run threads post
them, the page's event stream and waiting tests receive them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from typing import Any

Change = dict[str, Any]


class Changes:
    """Numbered change notices, posted from any thread, awaited from threads or event loops."""

    def __init__(self, keep: int = 1000):
        self._condition = threading.Condition()
        self._last = 0
        self._recent: deque[tuple[int, Change]] = deque(maxlen=keep)
        self._loop_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self.closed = False

    @property
    def last(self) -> int:
        """The number of the latest notice (0 before the first)."""
        with self._condition:
            return self._last

    def post(self, **change: Any) -> int:
        """Record a notice (``conversation_id=...``, ``approval_id=...``) and wake every waiter."""
        with self._condition:
            self._last += 1
            number = self._last
            self._recent.append((number, change))
            self._condition.notify_all()
            loop_waiters = list(self._loop_waiters)
        for loop, event in loop_waiters:
            # The server's loop may already be closed while Studio stops.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)
        return number

    def close(self) -> None:
        """Studio is stopping: wake every waiter; ``wait_async`` returns ``None`` from now on."""
        with self._condition:
            self.closed = True
            self._condition.notify_all()
            loop_waiters = list(self._loop_waiters)
        for loop, event in loop_waiters:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)

    def since(self, after: int) -> list[tuple[int, Change]]:
        """The notices numbered above ``after``, oldest first. When some of them are no longer
        kept, one notice ``{"everything": True}`` stands for them all."""
        with self._condition:
            if after >= self._last:
                return []
            if not self._recent or self._recent[0][0] > after + 1:
                return [(self._last, {"everything": True})]
            return [(number, change) for number, change in self._recent if number > after]

    def wait(self, after: int, timeout: float) -> list[tuple[int, Change]]:
        """Block until there is a notice above ``after`` (or ``timeout`` passes); return them."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._last <= after:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._condition.wait(remaining)
        return self.since(after)

    async def wait_async(self, after: int, seconds: float) -> list[tuple[int, Change]] | None:
        """``wait`` for an event loop: the loop keeps serving while nothing changes.
        ``None`` once the notices are closed, so the page's event stream can end cleanly."""
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._condition:
            self._loop_waiters.add(waiter)
        try:
            while True:
                waiter[1].clear()
                if self.closed:
                    return None
                # Read after clearing, so a notice posted in between is not missed.
                found = self.since(after)
                if found:
                    return found
                try:
                    await asyncio.wait_for(waiter[1].wait(), seconds)
                except TimeoutError:
                    return self.since(after)
        finally:
            with self._condition:
                self._loop_waiters.discard(waiter)
