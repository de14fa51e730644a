"""Who else has an approval's page open: best-effort presence kept in the cache (Redis in
production), refreshed by each open page every ``VIEWING_REFRESH_SECONDS``."""

from __future__ import annotations

import time

from django.core.cache import cache

VIEWING_REFRESH_SECONDS = 10
# A page not heard from for this long has been closed (or its reviewer walked away).
VIEWING_TTL_SECONDS = 3 * VIEWING_REFRESH_SECONDS


def _key(approval_id: int) -> str:
    return f"approvals:viewing:{approval_id}"


def approval_viewing(*, approval_id: int, username: str, now: float | None = None) -> list[str]:
    """Note that ``username`` has the page open now; the others who have it open, by name.

    Presence is a hint for reviewers, not a lock: two pages refreshing at the same moment may each
    miss the other once, and the next refresh shows them.
    """
    now = time.time() if now is None else now
    seen = {name: at for name, at in (cache.get(_key(approval_id)) or {}).items() if now - at < VIEWING_TTL_SECONDS}
    seen[username] = now
    cache.set(_key(approval_id), seen, timeout=VIEWING_TTL_SECONDS)
    return sorted(name for name in seen if name != username)


def approval_viewing_stopped(*, approval_id: int, username: str) -> None:
    """The page was closed: drop ``username`` at once."""
    seen = cache.get(_key(approval_id)) or {}
    if seen.pop(username, None) is not None:
        cache.set(_key(approval_id), seen, timeout=VIEWING_TTL_SECONDS)
