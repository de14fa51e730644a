"""Decision channels: how a decision wakes the run waiting for it.

The database row is the truth; a channel only cuts the wait short. A waiter always reads the row
before blocking, so a wake-up sent before it blocked is never needed, and a lost wake-up (Redis
restarting) costs at most one wait slice. A wake-up may carry a copy of the committed decision
(it is sent after commit), so the woken waiter need not read the row again; one without it, or
none at all, sends the waiter back to the row.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from functools import cache
from typing import Any, Protocol

import redis
from django.conf import settings

logger = logging.getLogger("anvia.approvals")

# How long one BLPOP blocks before the waiter re-reads the row. It bounds the latency a lost
# wake-up can cost, and must stay below the client's socket timeout.
WAIT_SLICE_SECONDS = 5.0
WAKE_KEY_TTL_SECONDS = 600


class DecisionChannel(Protocol):
    def publish(self, approval_id: int, decision: dict[str, Any] | None = None) -> None:
        """Wake whoever waits on this approval (now or soon), with a copy of the committed
        ``decision`` if given (JSON-ready)."""

    def wait(self, approval_id: int, timeout: float) -> dict[str, Any] | bool:
        """Block up to ``timeout`` seconds for a wake-up: the decision it carried, ``True`` for
        one without, ``False`` if none came."""


class InProcessDecisionChannel:
    """Waiters in one process (Studio, single-process runs): a dict of events."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[int, tuple[threading.Event, float]] = {}
        self._decisions: dict[int, dict[str, Any]] = {}

    def _event(self, approval_id: int) -> threading.Event:
        with self._lock:
            entry = self._events.get(approval_id)
            if entry is None:
                entry = (threading.Event(), time.monotonic())
                self._events[approval_id] = entry
            return entry[0]

    def publish(self, approval_id: int, decision: dict[str, Any] | None = None) -> None:
        if decision is not None:
            with self._lock:
                self._decisions[approval_id] = decision
        self._event(approval_id).set()
        self._forget_stale()

    def wait(self, approval_id: int, timeout: float) -> dict[str, Any] | bool:
        woken = self._event(approval_id).wait(max(0.0, timeout))
        if not woken:
            return False
        with self._lock:
            self._events.pop(approval_id, None)
            return self._decisions.pop(approval_id, None) or True

    def _forget_stale(self) -> None:
        # A wake-up nobody waited for (the waiter had already read the decision) is dropped later.
        cutoff = time.monotonic() - WAKE_KEY_TTL_SECONDS
        with self._lock:
            for key in [k for k, (event, born) in self._events.items() if event.is_set() and born < cutoff]:
                del self._events[key]
                self._decisions.pop(key, None)


class RedisDecisionChannel:
    """Across processes: the decider LPUSHes a token with an expiry; the waiter BLPOPs in slices."""

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 2000,
        slice_seconds: float = WAIT_SLICE_SECONDS,
        key_prefix: str = "anvia",
    ):
        self.slice_seconds = slice_seconds
        # Approval ids are per database: apps (or test runs) sharing one Redis need their own keys,
        # else one wakes the other's waiter and leaves stray tokens behind.
        self.key_prefix = key_prefix
        self.client = redis.Redis.from_url(
            url,
            max_connections=max_connections,
            socket_timeout=slice_seconds + 5,
            socket_connect_timeout=2,
            health_check_interval=30,
        )

    def key(self, approval_id: int) -> str:
        return f"{self.key_prefix}:approval:{approval_id}"

    def publish(self, approval_id: int, decision: dict[str, Any] | None = None) -> None:
        key = self.key(approval_id)
        token = "decided" if decision is None else json.dumps(decision)
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.lpush(key, token).expire(key, WAKE_KEY_TTL_SECONDS).execute()
        except redis.RedisError:
            # The decision is committed; the waiter finds it on its next read of the row.
            logger.warning("approval %s: could not publish the wake-up to Redis", approval_id, exc_info=True)

    def wait(self, approval_id: int, timeout: float) -> dict[str, Any] | bool:
        timeout = min(max(timeout, 0.0), self.slice_seconds)
        if timeout <= 0:
            return False
        try:
            popped = self.client.blpop([self.key(approval_id)], timeout=timeout)
        except redis.RedisError:
            logger.warning("approval %s: Redis unavailable while waiting; re-reading the row", approval_id)
            time.sleep(min(timeout, 0.5))
            return False
        if popped is None:
            return False
        return _carried_decision(popped[1]) or True


def _carried_decision(token: bytes) -> dict[str, Any] | None:
    if token == b"decided":
        return None
    try:
        decision = json.loads(token)
    except ValueError:
        return None
    return decision if isinstance(decision, dict) else None


@cache
def get_decision_channel() -> DecisionChannel:
    """The channel ``settings.ANVIA_DECISION_CHANNEL`` names (one per process)."""
    kind = settings.ANVIA_DECISION_CHANNEL
    if kind == "memory":
        return InProcessDecisionChannel()
    if kind == "redis":
        return RedisDecisionChannel(
            settings.REDIS_URL,
            max_connections=settings.REDIS_MAX_CONNECTIONS,
            key_prefix=settings.ANVIA_REDIS_KEY_PREFIX,
        )
    raise ValueError(f"ANVIA_DECISION_CHANNEL must be 'redis' or 'memory', not {kind!r}.")
