"""Change notices: what tells Studio's open pages (and tests) to read again.

A notice only says which chat changed, or that approvals did; the page then reads what it shows
from the API, so a missed notice costs nothing. Run threads post them; each page's event stream
(one server thread per page) waits for them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

Change = dict[str, Any]


class Changes:
    """Numbered change notices, posted and awaited from any thread."""

    def __init__(self, keep: int = 1000):
        self._condition = threading.Condition()
        self._last = 0
        self._recent: deque[tuple[int, Change]] = deque(maxlen=keep)
        self.closed = False

    @property
    def last(self) -> int:
        """The number of the latest notice (0 before the first)."""
        with self._condition:
            return self._last

    def post(self, **change: Any) -> int:
        """Record a notice (``chat_id=...``, ``approvals=True``) and wake every waiter."""
        with self._condition:
            self._last += 1
            self._recent.append((self._last, change))
            self._condition.notify_all()
            return self._last

    def close(self) -> None:
        """Studio is stopping: wake every waiter; ``wait`` returns at once from now on."""
        with self._condition:
            self.closed = True
            self._condition.notify_all()

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
        """Block until there is a notice above ``after``, ``timeout`` passes or the notices close."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._last <= after and not self.closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
        return self.since(after)
